"""Parity with the PyTorch originals: a randomly initialised torchvision/timm model, imported with
``load_torch_state_dict``, must give the same eval-mode logits as PyTorch on the same batch (1e-4 relative).

Needs the ``torch`` extra (``pip install -e .[torch]``); skipped without it. The PyTorch side runs in a separate
process (``torch_reference.py``: importing torchvision into a process that holds TensorFlow crashes), which
re-draws every normalisation layer, bias, layer scale and relative-position table before computing logits: their
defaults (BN identity statistics, zero biases, ConvNeXt layer scale 1e-6, near-zero Swin bias tables) would let a
wrong mapping of those tensors pass unnoticed, and BatchNorm statistics are measured on other random images so the
eval-mode nets stay sensitive to their input.
"""

import importlib.util
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax.models import build_model, list_models, load_torch_state_dict
from mixjax.models.torch_import import TORCH_IMPORTABLE_MODELS

if any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision", "timm")):
  pytest.skip("the torch extra (torch, torchvision, timm) is not installed", allow_module_level=True)

CLASSES = 10

# case id (see torch_reference.CASES) -> (our registered name, our kwargs)
CASES = {
  "resnet18-torchvision": ("resnet18", {}),
  "resnet50-torchvision": ("resnet50", {}),
  "resnext101_32x4d-timm": ("resnext101_32x4d", {}),
  "mobilenet_v2-timm": ("mobilenet_v2", {}),
  "mobilenet_v2-torchvision": ("mobilenet_v2", {}),
  "efficientnet_b0-timm": ("efficientnet_b0", {}),
  "efficientnet_b0-torchvision": ("efficientnet_b0", {}),
  "deit_tiny-timm-112px": ("deit_tiny", {"img_size": 112}),
  "deit_small-timm": ("deit_small", {}),
  "convnext_tiny-timm": ("convnext_tiny", {}),
  "swin_tiny-timm": ("swin_tiny", {}),
}


@pytest.fixture(scope="module")
def torch_outputs(tmp_path_factory):
  """Runs the PyTorch side once for all cases; returns a loader of its .npz files."""
  out = tmp_path_factory.mktemp("torch_reference")
  script = os.path.join(os.path.dirname(__file__), "torch_reference.py")
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, script, str(out)], capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]

  def load(case):
    with np.load(out / f"{case}.npz") as f:
      data = dict(f)
    state = {k[3:]: v for k, v in data.items() if k.startswith("sd/")}
    return state, data.get("x"), data.get("logits")

  return load


def relative_error(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.parametrize("case", list(CASES))
def test_imported_torch_weights_give_torch_logits(case, torch_outputs):
  name, kwargs = CASES[case]
  state, x, theirs = torch_outputs(case)
  model = build_model(name, num_classes=CLASSES, rngs=nnx.Rngs(0), **kwargs)
  load_torch_state_dict(model, state)
  ours = nnx.jit(lambda m, images: m(images, False))(model, jnp.asarray(x))

  assert np.std(theirs) > 0 and not np.allclose(theirs[0], theirs[1])  # a real, input-dependent output
  err = relative_error(ours, theirs)
  print(f"{case}: max relative error {err:.2e}")
  assert err < 1e-4, f"{case}: logits differ from PyTorch by {err:.2e} (relative to max |logit|)"


def abstract_model(name: str, **kwargs):
  return nnx.eval_shape(lambda: build_model(name, num_classes=CLASSES, rngs=nnx.Rngs(0), **kwargs))


def test_every_model_of_the_zoo_is_importable_or_rejected_with_the_supported_list():
  assert set(TORCH_IMPORTABLE_MODELS) <= set(list_models())
  tested = {name for name, _ in CASES.values()}
  for name in list_models():
    if name in TORCH_IMPORTABLE_MODELS:
      continue
    with pytest.raises(NotImplementedError, match=f"no PyTorch import for {name}.*swin_tiny"):
      load_torch_state_dict(abstract_model(name), {})
  # the untested names are depth variants of a tested family (ResNet-34/101)
  assert set(TORCH_IMPORTABLE_MODELS) - tested <= {"resnet34", "resnet101"}


def test_checkpoint_of_another_architecture_is_rejected_naming_the_expected_layout(torch_outputs):
  deit, _, _ = torch_outputs("deit_tiny-224-state")
  expected = r"convnext_tiny \(expected layout: ConvNeXt \(timm\)\): missing .*stages\.1\.downsample\.0\.weight"
  with pytest.raises(ValueError, match=expected):
    load_torch_state_dict(abstract_model("convnext_tiny"), deit)
  # 17 MobileNetV2 blocks cannot fill EfficientNet-B0's 16
  mobilenet, _, _ = torch_outputs("mobilenetv2_100-state")
  with pytest.raises(ValueError, match="16 inverted-residual blocks but the checkpoint has 17"):
    load_torch_state_dict(abstract_model("efficientnet_b0"), mobilenet)
  # DeiT at 224 px has a 14x14 position embedding; a 112 px model has 7x7
  with pytest.raises(ValueError, match=r"pos_embed: checkpoint \(1, 197, 192\) vs model \(1, 50, 192\)"):
    load_torch_state_dict(abstract_model("deit_tiny", img_size=112), deit)
