"""mixjax.cpu_backend: the CPU-only XLA flags and the matmul form of 1x1 convolutions.

The matmul form must give ``lax.conv_general_dilated``'s values and gradients (float tolerance), be chosen only
for plain 1x1 convolutions on the CPU backend, and leave whole models' outputs and gradients unchanged.
"""

import json
import os
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from mixjax import cpu_backend
from mixjax.models import build_model

NHWC = lax.conv_dimension_numbers((1, 8, 8, 4), (1, 1, 4, 6), ("NHWC", "HWIO", "NHWC"))  # what nnx.Conv passes


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def reference_conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), ((0, 0), (0, 0)), dimension_numbers=NHWC)


def tuned_conv(x, w, stride):
  return cpu_backend.conv_general_dilated(
    x, w, (stride, stride), ((0, 0), (0, 0)), dimension_numbers=NHWC, out_sharding=None
  )


@pytest.mark.parametrize("size,stride", [(8, 1), (7, 1), (8, 2), (7, 2)])
def test_pointwise_conv_values_and_gradients_match_lax_conv(size, stride):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, size, size, 16))
  w = jax.random.normal(kw, (1, 1, 16, 24)) * 0.2
  y_ref = reference_conv(x, w, stride)
  g = jax.random.normal(kg, y_ref.shape)

  def vjp(fn):
    y, pull = jax.vjp(lambda x, w: fn(x, w, stride), x, w)
    return (y, *pull(g))

  ours, theirs = jax.jit(lambda: vjp(tuned_conv))(), jax.jit(lambda: vjp(reference_conv))()
  for name, a, b in zip(("y", "dx", "dw"), ours, theirs):
    assert a.shape == b.shape and a.dtype == b.dtype, name
    assert rel_err(a, b) < 1e-5, (name, rel_err(a, b))


def test_pointwise_conv_keeps_the_compute_dtype():
  x = jnp.ones((2, 4, 4, 8), jnp.bfloat16)
  w = jnp.full((1, 1, 8, 3), 0.5, jnp.bfloat16)
  y = tuned_conv(x, w, 1)
  assert y.dtype == reference_conv(x, w, 1).dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), 4.0)


def _primitives(fn, *args) -> set[str]:
  return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).eqns}


def test_matmul_form_only_for_plain_1x1_convs_on_cpu(monkeypatch):
  assert jax.default_backend() == "cpu"
  x = jnp.ones((2, 8, 8, 4))
  one = jnp.ones((1, 1, 4, 6))
  assert "conv_general_dilated" not in _primitives(lambda x, w: tuned_conv(x, w, 2), x, one)
  # 3x3, grouped, dilated, padded and sharding-annotated convolutions stay convolutions.
  three = jnp.ones((3, 3, 4, 6))
  assert "conv_general_dilated" in _primitives(lambda x, w: tuned_conv(x, w, 1), x, three)
  # Grouped convolutions: test_grouped_conv_* below.
  padded = lambda x, w: cpu_backend.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
  assert "conv_general_dilated" in _primitives(padded, x, one)
  dilated = lambda x, w: cpu_backend.conv_general_dilated(
    x, w, (1, 1), ((0, 0), (0, 0)), lhs_dilation=(2, 2), dimension_numbers=NHWC
  )
  assert "conv_general_dilated" in _primitives(dilated, x, one)
  # MIXJAX_CPU_TUNING=0 restores XLA's defaults (read at trace time).
  monkeypatch.setenv("MIXJAX_CPU_TUNING", "0")
  assert "conv_general_dilated" in _primitives(lambda x, w: tuned_conv(x, w, 1), x, one)


GROUPED_CASES = {
  # name: (channels in, channels out, groups, kernel, stride, padding, dilation)
  "resnext": (16, 16, 4, 3, 1, ((1, 1), (1, 1)), 1),
  "resnext-stride2-odd": (16, 24, 4, 3, 2, ((1, 1), (1, 1)), 1),
  "depthwise-7x7": (8, 8, 8, 7, 1, ((3, 3), (3, 3)), 1),
  "depthwise-stride2-same": (8, 8, 8, 3, 2, "SAME", 1),
  "depthwise-multiplier": (4, 8, 4, 3, 1, "VALID", 1),
  "moganet-dilated": (6, 6, 6, 5, 1, ((4, 4), (4, 4)), 2),
  "asymmetric-padding": (6, 9, 3, 3, 2, ((0, 2), (1, 0)), 1),
}


def _grouped_convs(jaxpr) -> int:
  count = 0
  for eqn in jaxpr.eqns:
    grouped = eqn.params.get("feature_group_count", 1) > 1 or eqn.params.get("batch_group_count", 1) > 1
    if eqn.primitive.name == "conv_general_dilated" and grouped:  # a kernel gradient groups the batch
      count += 1
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      count += _grouped_convs(sub)
  return count


def _grouped_convs_of_gradient(fn, *args) -> int:
  """Grouped convolutions XLA would run for ``fn``'s value and gradients (forward and backward)."""
  return _grouped_convs(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1)))(*args).jaxpr)


@pytest.mark.parametrize("case", sorted(GROUPED_CASES))
def test_grouped_conv_values_and_gradients_match_lax_conv(monkeypatch, case):
  c_in, c_out, groups, k, stride, padding, dilation = GROUPED_CASES[case]
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 11, 11, c_in))
  w = jax.random.normal(kw, (k, k, c_in // groups, c_out)) * 0.3
  common = dict(rhs_dilation=(dilation, dilation), dimension_numbers=NHWC, feature_group_count=groups)

  def reference(x, w):
    return lax.conv_general_dilated(x, w, (stride, stride), padding, **common)

  def tuned(x, w):
    return cpu_backend.conv_general_dilated(x, w, (stride, stride), padding, **common)

  def per_tap(x, w):
    return cpu_backend.grouped_conv(x, w, (stride, stride), padding, groups=groups, rhs_dilation=(dilation, dilation))

  # Depthwise: a loop over the taps both ways. Wider groups: XLA's grouped forward, per-tap gradients (XLA's are the slow part).
  assert _grouped_convs_of_gradient(tuned, x, w) == (0 if c_in == groups else 1)
  assert _grouped_convs_of_gradient(per_tap, x, w) == 0
  y_ref = reference(x, w)
  g = jax.random.normal(kg, y_ref.shape)

  def vjp(fn):
    y, pull = jax.vjp(fn, x, w)
    return (y, *pull(g))

  expected = jax.jit(lambda: vjp(reference))()
  for fn in (tuned, per_tap):
    for name, a, b in zip(("y", "dx", "dw"), jax.jit(lambda fn=fn: vjp(fn))(), expected):
      assert a.shape == b.shape and a.dtype == b.dtype, name
      assert rel_err(a, b) < 1e-5, (fn.__name__, name, rel_err(a, b))
  monkeypatch.setenv("MIXJAX_CPU_TUNING", "0")  # XLA's convolutions everywhere
  assert _grouped_convs_of_gradient(lambda x, w: tuned(x, w), x, w) == 3


@pytest.mark.parametrize("groups", [2, 8])  # 4 channels per group (XLA forward, per-tap gradients); depthwise
def test_a_gradient_through_a_gradient_stays_on_the_fast_forms(groups):
  """Co-Mixup trains on the loss of the pass whose input gradient is its saliency, so the parameter gradient
  differentiates an input gradient. The custom VJP's forward rule is then differentiated too: written as the bare
  lax convolution, it brought back XLA's grouped gradients (a batch-grouped kernel-gradient convolution; the
  ResNeXt-101 Co-Mixup cell stepped in 334 s instead of ~25). Values must still match XLA's."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 8 // groups, 8)) * 0.3

  def training_loss(conv):
    def loss(w):
      def clean(x):
        return jnp.sum(jnp.tanh(conv(x, w)) ** 2)

      value, saliency = jax.value_and_grad(clean)(x)
      return value + jnp.sum(lax.stop_gradient(saliency) * x)

    return loss

  def tuned(x, w):
    return cpu_backend.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=groups)

  def reference(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=groups)

  jaxpr = jax.make_jaxpr(jax.grad(training_loss(tuned)))(w).jaxpr
  assert _grouped_convs(jaxpr) == (0 if groups == 8 else 1)  # the forward only; no gradient convolution
  got, expected = jax.jit(jax.grad(training_loss(tuned)))(w), jax.jit(jax.grad(training_loss(reference)))(w)
  assert rel_err(got, expected) < 1e-5


def _equations(jaxpr) -> int:
  return sum(1 + sum(_equations(sub) for sub in jax.extend.core.jaxprs_in_params(e.params)) for e in jaxpr.eqns)


def test_depthwise_program_size_does_not_grow_with_the_kernel():
  """ConvNeXt's 7x7 and MogaNet's dilated 5x5/7x7 depthwise layers: one loop step per tap, forward and backward,
  so the traced gradient of a 7x7 layer is as large as that of a 3x3 one (unrolled it was 49 vs 9 taps, each
  several operations, in every block; MogaNet-T took minutes to compile)."""

  def size(k: int, dilation: int) -> int:
    def loss(x, w):
      pad = dilation * (k - 1) // 2
      y = cpu_backend.conv_general_dilated(
        x, w, (1, 1), [(pad, pad)] * 2, rhs_dilation=(dilation,) * 2, dimension_numbers=NHWC, feature_group_count=8
      )
      return jnp.sum(y**2)

    shapes = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32), jax.ShapeDtypeStruct((k, k, 1, 8), jnp.float32)
    return _equations(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(*shapes).jaxpr)

  assert size(3, 1) == size(7, 1) == size(5, 2)


@pytest.mark.parametrize("groups", [2, 4])  # 2 channels per group (einsum) and depthwise (broadcast multiply)
def test_grouped_conv_in_bfloat16_accumulates_in_float32(groups):
  """Nine taps of 1/3 each: summed in bfloat16 a rounding error per tap would show; a conv gives exactly 3."""
  x = jnp.full((1, 5, 5, 4), 1.0 / 3.0, jnp.bfloat16)
  w = jnp.ones((3, 3, 4 // groups, 4), jnp.bfloat16)
  y_ref = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=NHWC, feature_group_count=groups)
  for form in (cpu_backend.grouped_conv, cpu_backend.grouped_conv_fast):  # unrolled taps; the loop (depthwise)
    y = form(x, w, (1, 1), "VALID", groups=groups)
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))


def _logits_and_grads(model_name: str, images, labels, *, train: bool, **kwargs):
  model = build_model(model_name, num_classes=5, rngs=nnx.Rngs(0), **kwargs)

  def loss(m):
    logits = m(images, train)
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1)), logits

  (_, logits), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
  return logits, jax.tree.leaves(nnx.state(grads, nnx.Param))


@pytest.mark.parametrize("train", [False, True])
def test_resnet50_outputs_and_gradients_unchanged(monkeypatch, train):
  """A narrow ResNet-50 (1x1 convs, strided 1x1 shortcuts) against the plain-convolution model.

  Train-mode BatchNorm over few pixels amplifies float rounding in the deepest stage's gradients, so the
  train-mode comparison uses a wider tolerance (measured: both formulations differ from a float64 reference
  by the same amount).
  """
  images = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
  labels = jax.nn.one_hot(jnp.arange(4) % 5, 5)
  kwargs = dict(width=16)
  ours = _logits_and_grads("resnet50", images, labels, train=train, **kwargs)
  monkeypatch.setenv("MIXJAX_CPU_TUNING", "0")
  theirs = _logits_and_grads("resnet50", images, labels, train=train, **kwargs)
  assert rel_err(ours[0], theirs[0]) < 1e-4
  # Measured: 3e-6 in eval mode; in train mode 1.5e-2 of the largest gradient entry with the CPU XLA flag active
  # in this process (1.5e-4 before it was): batch-statistics BN amplifies rounding differences. Eval mode pins
  # the formulation's exactness; train mode guards against gross errors (a wrong stride or layout is O(1)).
  tol = 5e-2 if train else 1e-4
  # Gradient differences relative to the largest gradient entry of the model: a leaf whose own gradient is near
  # zero (e.g. behind a zero-initialised residual BN scale) would make a per-leaf ratio measure rounding noise.
  scale = max(float(np.max(np.abs(np.asarray(b, np.float64)))) for b in theirs[1])
  worst = (
    max(
      float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for a, b in zip(ours[1], theirs[1])
    )
    / scale
  )
  assert worst < tol, worst


def test_resnext_outputs_and_gradients_unchanged(monkeypatch):
  """A one-block-per-stage ResNeXt (8 groups of 4-32 channels) with the per-tap form against plain
  convolutions, in eval mode (no batch-statistics amplification of rounding)."""
  from mixjax.models.resnet import Bottleneck, ResNet

  def logits_and_grads():
    model = ResNet(Bottleneck, (1, 1, 1, 1), num_classes=5, rngs=nnx.Rngs(0), width=16, groups=8, width_per_group=4)

    def loss(m):
      logits = m(images, False)
      return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1)), logits

    (_, logits), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
    return logits, jax.tree.leaves(nnx.state(grads, nnx.Param))

  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(2) % 5, 5)
  ours = logits_and_grads()
  monkeypatch.setenv("MIXJAX_CPU_TUNING", "0")
  theirs = logits_and_grads()
  assert rel_err(ours[0], theirs[0]) < 1e-4
  scale = max(float(np.max(np.abs(np.asarray(b, np.float64)))) for b in theirs[1])
  worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ours[1], theirs[1])) / scale
  assert worst < 1e-4, worst


@pytest.mark.parametrize(
  "model_name", ["resnext101_32x4d", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "moganet_tiny"]
)
def test_every_grouped_conv_of_the_backbones_takes_the_cpu_form(monkeypatch, model_name):
  """Shapes only (no weight initialisation): the traced gradient of the abstract model holds no grouped
  convolution but the forward ones of ResNeXt's wide groups (XLA's backward of them is what is slow)."""
  graphdef, params, rest = nnx.split(
    nnx.eval_shape(lambda: build_model(model_name, num_classes=5, rngs=nnx.Rngs(0))), nnx.Param, ...
  )
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)

  def grouped_convs(gradient: bool) -> int:
    def loss(p, r, x):
      return jnp.sum(nnx.merge(graphdef, p, r)(x, False))

    fn = jax.grad(loss) if gradient else loss
    return _grouped_convs(jax.make_jaxpr(fn)(params, rest, images).jaxpr)

  in_forward = grouped_convs(gradient=False)
  assert grouped_convs(gradient=True) == in_forward
  assert in_forward == (0 if model_name != "resnext101_32x4d" else 33)  # 3 + 4 + 23 + 3 blocks
  monkeypatch.setenv("MIXJAX_CPU_TUNING", "0")
  untuned = grouped_convs(gradient=False)
  assert untuned > 0 and grouped_convs(gradient=True) == 3 * untuned  # forward, input and kernel gradients


def test_configure_xla_flags_adds_cpu_flags_and_respects_the_users():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert cpu_backend.configure_xla_flags(env)
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4", *cpu_backend.CPU_XLA_FLAGS]
  assert cpu_backend.configure_xla_flags(env)  # idempotent
  assert env["XLA_FLAGS"].split().count(cpu_backend.CPU_XLA_FLAGS[0]) == 1
  name = cpu_backend.CPU_XLA_FLAGS[0].split("=")[0]
  mine = {"XLA_FLAGS": f"{name}=-reduce"}
  cpu_backend.configure_xla_flags(mine)
  assert mine["XLA_FLAGS"] == f"{name}=-reduce"  # the user's value wins
  off = {"MIXJAX_CPU_TUNING": "0"}
  assert not cpu_backend.configure_xla_flags(off) and "XLA_FLAGS" not in off


_CONV_STACK = """
import jax, jax.numpy as jnp, numpy as np
from jax import lax
def conv(x, w, s):
  return lax.conv_general_dilated(x, w, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
def loss(ws, x):
  for i, w in enumerate(ws):
    x = jax.nn.relu(conv(x, w, 1 + i % 2))
  return jnp.sum(x * x)
k = jax.random.split(jax.random.key(0), 4)
x = jax.random.normal(k[0], (4, 16, 16, 8))
ws = [jax.random.normal(k[i + 1], (3, 3, 8, 8)) * 0.2 for i in range(3)]
value, grads = jax.jit(jax.value_and_grad(loss))(ws, x)
print(repr(np.concatenate([np.ravel(value)] + [np.ravel(g) for g in grads]).tolist()))
"""


def _run_conv_stack(xla_flags: str) -> np.ndarray:
  env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", _CONV_STACK], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]  # XLA aborts the process on an unknown XLA_FLAGS entry
  return np.asarray(eval(out.stdout.strip().splitlines()[-1]))  # noqa: S307 (our own repr of a float list)


def test_this_jaxlib_accepts_the_cpu_flags_and_they_keep_results():
  """A jaxlib that renamed a flag would abort every mixjax process: caught here. The flags only change which
  library runs a convolution, so values and gradients stay within float tolerance of XLA's defaults."""
  tuned = _run_conv_stack(" ".join(cpu_backend.CPU_XLA_FLAGS))
  default = _run_conv_stack("")
  assert rel_err(tuned[:1], default[:1]) < 1e-5
  assert rel_err(tuned[1:], default[1:]) < 1e-4


def test_cpu_vs_torch_benchmark_runs_its_jax_workers(tmp_path):
  """benchmarks/cpu_vs_torch.py at a tiny size, mixjax sides only: one JSON row with both mixjax columns."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "cpu_vs_torch.json"
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(repo, "benchmarks", "cpu_vs_torch.py"),
      "--cases=resnet18:cifar:16:4",
      "--rounds=1",
      "--steps=1",
      "--warmup=0",
      "--untuned",
      "--no_torch",
      f"--json={out}",
    ],
    cwd=repo,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (row,) = json.loads(out.read_text())
  assert row["case"] == "resnet18:cifar:16:4"
  assert row["mixjax"]["images_per_s"] > 0 and row["mixjax-untuned"]["images_per_s"] > 0
  assert "individual_convolution" in row["mixjax"]["info"]
  assert "individual_convolution" not in row["mixjax-untuned"]["info"]
