"""Parity with the PyTorch originals: a randomly initialised torchvision/timm model, imported with
``load_torch_state_dict``, must give the same eval-mode logits as PyTorch on the same batch (1e-4 relative).

Needs the ``torch`` extra (``pip install -e .[torch]``); skipped without it. Before the comparison every
normalisation layer, bias, layer-scale and relative-position table of the PyTorch model is re-drawn at random:
their defaults (BN identity statistics, zero biases, ConvNeXt layer scale 1e-6, near-zero Swin bias tables)
would let a wrong mapping of those tensors pass unnoticed; BatchNorm statistics are then measured on other random
images so that the eval-mode nets stay sensitive to their input.
"""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax.models import build_model, list_models, load_torch_state_dict
from mixjax.models.torch_import import TORCH_IMPORTABLE_MODELS

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

CLASSES, BATCH = 10, 2


def randomise_(net: "torch.nn.Module", calibration_images: np.ndarray, seed: int) -> None:
    """Re-draw the tensors whose defaults are degenerate (see module docstring), in place.

    BatchNorm statistics are then measured on ``calibration_images`` (NHWC), as training would: with default
    (0, 1) statistics deep nets in eval mode saturate (e.g. every ReLU6 of MobileNetV2 at 6) and become
    insensitive to their input, which would hide mapping errors too.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    batch_norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                uniform(module.weight, 0.5, 1.5)
                normal(module.bias, 0.1)
            elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                normal(module.bias, 0.05)
        for name, param in net.named_parameters():
            if name.endswith("gamma"):  # ConvNeXt layer scale
                uniform(param, 0.2, 0.6)
            elif name.endswith("relative_position_bias_table"):
                normal(param, 0.5)
            elif name in ("cls_token", "pos_embed"):
                normal(param, 0.2)
        if batch_norms:
            for bn in batch_norms:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the calibration pass
            net.train()
            net(torch.from_numpy(calibration_images.transpose(0, 3, 1, 2).copy()))
            net.eval()


def torch_eval_logits(net, x_nhwc: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def relative_error(ours, theirs) -> float:
    return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


def with_bn_eps(net, eps: float = 1e-3):
    """Our EfficientNet-B0 follows the mmcls port used by the reference (BN eps 1e-3, spec sec. 4); timm and
    torchvision build it with eps 1e-5, so their eps is aligned before comparing."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eps = eps
    return net


# id -> (our registered name, our kwargs, PyTorch constructor, input size); CNNs run at small sizes for speed
CASES = {
    "resnet18-torchvision": ("resnet18", {}, lambda: torchvision.models.resnet18(num_classes=CLASSES), 64),
    "resnet50-torchvision": ("resnet50", {}, lambda: torchvision.models.resnet50(num_classes=CLASSES), 64),
    "resnext101_32x4d-timm": ("resnext101_32x4d", {},
                              lambda: timm.create_model("resnext101_32x4d", num_classes=CLASSES), 32),
    "mobilenet_v2-timm": ("mobilenet_v2", {}, lambda: timm.create_model("mobilenetv2_100", num_classes=CLASSES),
                          64),
    "mobilenet_v2-torchvision": ("mobilenet_v2", {}, lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES),
                                 64),
    "efficientnet_b0-timm": ("efficientnet_b0", {},
                             lambda: with_bn_eps(timm.create_model("efficientnet_b0", num_classes=CLASSES)), 64),
    "efficientnet_b0-torchvision": ("efficientnet_b0", {},
                                    lambda: with_bn_eps(torchvision.models.efficientnet_b0(num_classes=CLASSES)),
                                    64),
    "deit_tiny-timm-112px": ("deit_tiny", {"img_size": 112}, lambda: timm.create_model(
        "deit_tiny_patch16_224", num_classes=CLASSES, img_size=112), 112),
    "deit_small-timm": ("deit_small", {}, lambda: timm.create_model("deit_small_patch16_224", num_classes=CLASSES),
                        224),
    "convnext_tiny-timm": ("convnext_tiny", {}, lambda: timm.create_model("convnext_tiny", num_classes=CLASSES), 64),
    "swin_tiny-timm": ("swin_tiny", {}, lambda: timm.create_model("swin_tiny_patch4_window7_224",
                                                                  num_classes=CLASSES), 224),
}


@pytest.mark.parametrize("case", list(CASES))
def test_imported_torch_weights_give_torch_logits(case):
    name, kwargs, make_torch, size = CASES[case]
    torch.manual_seed(0)
    net = make_torch()
    images = np.random.default_rng(2).normal(size=(BATCH + 4, size, size, 3)).astype(np.float32)
    x = images[:BATCH]
    randomise_(net, calibration_images=images[BATCH:], seed=1)
    theirs = torch_eval_logits(net, x)

    model = build_model(name, num_classes=CLASSES, rngs=nnx.Rngs(0), **kwargs)
    load_torch_state_dict(model, net.state_dict())
    ours = nnx.jit(lambda m, images: m(images, False))(model, jnp.asarray(x))

    assert np.std(theirs) > 0 and not np.allclose(theirs[0], theirs[1])  # a real, input-dependent output
    err = relative_error(ours, theirs)
    print(f"{case}: max relative error {err:.2e}")
    assert err < 1e-4, f"{case}: logits differ from PyTorch by {err:.2e} (relative to max |logit|)"


def abstract_model(name: str, **kwargs):
    return nnx.eval_shape(lambda: build_model(name, num_classes=CLASSES, rngs=nnx.Rngs(0), **kwargs))


def test_every_model_of_the_zoo_is_importable_or_rejected_with_the_supported_list():
    assert set(TORCH_IMPORTABLE_MODELS) <= set(list_models())
    tested = {name for name, *_ in CASES.values()}
    for name in list_models():
        if name in TORCH_IMPORTABLE_MODELS:
            continue
        with pytest.raises(NotImplementedError, match=f"no PyTorch import for {name}.*swin_tiny"):
            load_torch_state_dict(abstract_model(name), {})
    # the untested names are depth variants of a tested family (ResNet-34/101)
    assert set(TORCH_IMPORTABLE_MODELS) - tested <= {"resnet34", "resnet101"}


def test_checkpoint_of_another_architecture_is_rejected_naming_the_expected_layout():
    deit = timm.create_model("deit_tiny_patch16_224", num_classes=CLASSES).state_dict()
    expected = r"convnext_tiny \(expected layout: ConvNeXt \(timm\)\): missing .*stages\.1\.downsample\.0\.weight"
    with pytest.raises(ValueError, match=expected):
        load_torch_state_dict(abstract_model("convnext_tiny"), deit)
    # 17 MobileNetV2 blocks cannot fill EfficientNet-B0's 16
    mobilenet = timm.create_model("mobilenetv2_100", num_classes=CLASSES).state_dict()
    with pytest.raises(ValueError, match="16 inverted-residual blocks but the checkpoint has 17"):
        load_torch_state_dict(abstract_model("efficientnet_b0"), mobilenet)
    # DeiT at 224 px has a 14x14 position embedding; a 112 px model has 7x7
    with pytest.raises(ValueError, match=r"pos_embed: checkpoint \(1, 197, 192\) vs model \(1, 50, 192\)"):
        load_torch_state_dict(abstract_model("deit_tiny", img_size=112), deit)
