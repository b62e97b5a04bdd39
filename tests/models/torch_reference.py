"""PyTorch side of the parity tests, run as a separate process: ``python torch_reference.py OUT_DIR``.

PyTorch (torchvision → triton) crashes when imported into a process that already loaded TensorFlow, so the tests
never import torch themselves: this script builds each randomly initialised torchvision/timm model, re-draws the
tensors whose defaults are degenerate (see ``randomise_``), computes eval-mode logits on a fixed batch and writes
``OUT_DIR/<case>.npz`` with the state dict (``sd/<key>``), the input batch (``x``, NHWC) and the logits.
"""

import os
import sys

import numpy as np
import timm
import torch
import torchvision

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


# case id -> (PyTorch constructor, input size); CNNs run at small sizes for speed
CASES = {
  "resnet18-torchvision": (lambda: torchvision.models.resnet18(num_classes=CLASSES), 64),
  "resnet50-torchvision": (lambda: torchvision.models.resnet50(num_classes=CLASSES), 64),
  "resnext101_32x4d-timm": (lambda: timm.create_model("resnext101_32x4d", num_classes=CLASSES), 32),
  "mobilenet_v2-timm": (lambda: timm.create_model("mobilenetv2_100", num_classes=CLASSES), 64),
  "mobilenet_v2-torchvision": (lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES), 64),
  "efficientnet_b0-timm": (lambda: with_bn_eps(timm.create_model("efficientnet_b0", num_classes=CLASSES)), 64),
  "efficientnet_b0-torchvision": (lambda: with_bn_eps(torchvision.models.efficientnet_b0(num_classes=CLASSES)), 64),
  "deit_tiny-timm-112px": (lambda: timm.create_model("deit_tiny_patch16_224", num_classes=CLASSES, img_size=112), 112),
  "deit_small-timm": (lambda: timm.create_model("deit_small_patch16_224", num_classes=CLASSES), 224),
  "convnext_tiny-timm": (lambda: timm.create_model("convnext_tiny", num_classes=CLASSES), 64),
  "swin_tiny-timm": (lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=CLASSES), 224),
}

# Plain state dicts (no logits) for the wrong-architecture tests.
STATE_ONLY = {
  "deit_tiny-224-state": lambda: timm.create_model("deit_tiny_patch16_224", num_classes=CLASSES),
  "mobilenetv2_100-state": lambda: timm.create_model("mobilenetv2_100", num_classes=CLASSES),
}


def state_arrays(net) -> dict:
  return {f"sd/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def main(out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  for case, (make, size) in CASES.items():
    torch.manual_seed(0)
    net = make()
    images = np.random.default_rng(2).normal(size=(BATCH + 4, size, size, 3)).astype(np.float32)
    x = images[:BATCH]
    randomise_(net, calibration_images=images[BATCH:], seed=1)
    np.savez(os.path.join(out_dir, f"{case}.npz"), x=x, logits=torch_eval_logits(net, x), **state_arrays(net))
  for case, make in STATE_ONLY.items():
    torch.manual_seed(0)
    np.savez(os.path.join(out_dir, f"{case}.npz"), **state_arrays(make()))


if __name__ == "__main__":
  main(sys.argv[1])
