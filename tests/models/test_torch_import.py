"""Importing a torchvision-layout ResNet state dict, checked against an independent NCHW/OIHW forward pass
written directly on the PyTorch-layout arrays (torch itself is not needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from mixjax.models import build_model, load_torch_state_dict

WIDTH, CLASSES = 8, 6


def torchvision_resnet18_state(rng: np.random.Generator, width=WIDTH, num_classes=CLASSES):
  """Random tensors with torchvision's resnet18 key names and shapes (BasicBlock, depths 2-2-2-2)."""
  sd = {}

  def conv(key, o, i, k):
    sd[key] = rng.normal(0, (2 / (i * k * k)) ** 0.5, (o, i, k, k)).astype(np.float32)

  def bn(key, c):
    sd[f"{key}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{key}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{key}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{key}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{key}.num_batches_tracked"] = np.array(7)

  conv("conv1.weight", width, 3, 7)
  bn("bn1", width)
  inplanes = width
  for i in range(4):
    planes = width * 2**i
    for j in range(2):
      p = f"layer{i + 1}.{j}"
      conv(f"{p}.conv1.weight", planes, inplanes, 3)
      bn(f"{p}.bn1", planes)
      conv(f"{p}.conv2.weight", planes, planes, 3)
      bn(f"{p}.bn2", planes)
      if i > 0 and j == 0:
        conv(f"{p}.downsample.0.weight", planes, inplanes, 1)
        bn(f"{p}.downsample.1", planes)
      inplanes = planes
  sd["fc.weight"] = rng.normal(0, 0.1, (num_classes, inplanes)).astype(np.float32)
  sd["fc.bias"] = rng.normal(0, 0.1, num_classes).astype(np.float32)
  return sd


def reference_forward(sd, x_nchw):
  """Eval-mode torchvision ResNet-18 in NCHW with OIHW weights, independent of mixjax."""

  def conv(x, key, stride, pad):
    return lax.conv_general_dilated(
      x, sd[key], (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )

  def bn(x, key):
    shape = (1, -1, 1, 1)
    scale = sd[f"{key}.weight"] / np.sqrt(sd[f"{key}.running_var"] + 1e-5)
    return (x - sd[f"{key}.running_mean"].reshape(shape)) * scale.reshape(shape) + sd[f"{key}.bias"].reshape(shape)

  h = jax.nn.relu(bn(conv(x_nchw, "conv1.weight", 2, 3), "bn1"))
  h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), [(0, 0), (0, 0), (1, 1), (1, 1)])
  for i in range(4):
    for j in range(2):
      p = f"layer{i + 1}.{j}"
      stride = 2 if i > 0 and j == 0 else 1
      out = jax.nn.relu(bn(conv(h, f"{p}.conv1.weight", stride, 1), f"{p}.bn1"))
      out = bn(conv(out, f"{p}.conv2.weight", 1, 1), f"{p}.bn2")
      short = h
      if f"{p}.downsample.0.weight" in sd:
        short = bn(conv(h, f"{p}.downsample.0.weight", stride, 0), f"{p}.downsample.1")
      h = jax.nn.relu(out + short)
  return h.mean(axis=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]


@pytest.fixture(scope="module")
def setup():
  sd = torchvision_resnet18_state(np.random.default_rng(0))
  model = build_model("resnet18", num_classes=CLASSES, width=WIDTH, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  return sd, model


def test_imported_resnet_matches_reference_forward(setup):
  sd, model = setup
  load_torch_state_dict(model, sd)
  x = np.random.default_rng(1).normal(size=(2, 3, 33, 31)).astype(np.float32)  # odd sizes test padding
  ours = model(jnp.asarray(x.transpose(0, 2, 3, 1)), False)
  np.testing.assert_allclose(ours, reference_forward(sd, x), rtol=1e-4, atol=1e-4)


def test_mmcls_prefixes_and_strictness(setup):
  sd, model = setup
  prefixed = {("head." + k if k.startswith("fc.") else "backbone." + k): v for k, v in sd.items()}
  load_torch_state_dict(model, prefixed)
  np.testing.assert_array_equal(np.asarray(model.head.fc.kernel[...]), sd["fc.weight"].T)
  incomplete = {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}
  with pytest.raises(ValueError, match="layer2.0.bn1.running_var"):
    load_torch_state_dict(model, incomplete)
  wrong = dict(sd, **{"fc.weight": np.zeros((CLASSES + 1, WIDTH * 8), np.float32)})
  with pytest.raises(ValueError, match="fc.weight"):
    load_torch_state_dict(model, wrong)
  with pytest.raises(NotImplementedError, match="ResNet"):
    load_torch_state_dict(nnx.eval_shape(lambda: build_model("pvt_tiny", num_classes=3, rngs=nnx.Rngs(0))), sd)
