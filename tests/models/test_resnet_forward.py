"""Forward-pass behaviour of a tiny ResNet-18 (width 8, CIFAR stem, 16 px inputs), run eagerly.

Covers train/eval BatchNorm semantics, drop path, stage mixing, bf16 compute and the init schemes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax.models import build_model
from mixjax.models.layers import drop_path

TINY = dict(num_classes=5, stem="cifar", width=8)


def fast_rngs(seed: int) -> nnx.Rngs:
  """RBG keys compile much faster than threefry on CPU; per-shape init compiles dominate these tests."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny(seed=0, **kwargs):
  return build_model("resnet18", rngs=fast_rngs(seed), **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(42), (4, 16, 16, 3), jnp.float32)


@pytest.fixture(scope="module")
def model():
  return tiny()


def test_eval_forward_is_deterministic_and_float32(model, images):
  a = model(images, False)
  b = model(images, False)
  assert a.shape == (4, 5) and a.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.all(np.isfinite(np.asarray(a)))


def test_train_mode_uses_batch_stats_and_updates_running_stats_pytorch_style(images):
  model = tiny()
  stem_out = model.stem_conv(images)
  batch_mean = jnp.mean(stem_out, axis=(0, 1, 2))
  batch_var = jnp.var(stem_out, axis=(0, 1, 2))
  train_logits = model(images, True)
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch (running starts at mean 0 / var 1).
  np.testing.assert_allclose(model.stem_bn.mean[...], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(model.stem_bn.var[...], 0.9 + 0.1 * batch_var, rtol=1e-3, atol=1e-5)
  # Train mode normalises with batch statistics, eval with running ones: outputs differ.
  eval_logits = model(images, False)
  assert not np.allclose(np.asarray(train_logits), np.asarray(eval_logits), atol=1e-4)
  # Eval mode must not touch the running statistics.
  before = np.asarray(model.stem_bn.mean[...])
  model(images, False)
  np.testing.assert_array_equal(before, np.asarray(model.stem_bn.mean[...]))


def test_drop_path_is_identity_in_eval_and_stochastic_in_train(images):
  plain, dropped = tiny(seed=3), tiny(seed=3, drop_path_rate=0.5)
  np.testing.assert_allclose(plain(images, False), dropped(images, False), rtol=1e-6, atol=1e-6)
  # Rates increase linearly over blocks from 0 to drop_path_rate (mmcls).
  rates = [blk.drop_path_rate for stage in dropped.stages for blk in stage]
  np.testing.assert_allclose(rates, np.linspace(0, 0.5, 8), atol=1e-7)
  # Train mode: different dropout keys give different outputs only when the rate is > 0.
  t1 = dropped(images, True, nnx.Rngs(dropout=1))
  t2 = dropped(images, True, nnx.Rngs(dropout=2))
  assert not np.allclose(np.asarray(t1), np.asarray(t2), atol=1e-5)
  with pytest.raises(ValueError, match="rngs"):
    dropped(images, True)


def test_drop_path_drops_whole_samples_and_rescales():
  x = jnp.ones((4000, 2, 2, 3))
  y = np.asarray(drop_path(x, 0.25, True, nnx.Rngs(dropout=0)))
  per_sample = y.reshape(4000, -1)
  assert np.all(per_sample.min(1) == per_sample.max(1)), "mask must be per sample"
  kept = per_sample[:, 0] > 0
  np.testing.assert_allclose(per_sample[kept, 0], 1 / 0.75, rtol=1e-6)
  assert abs(kept.mean() - 0.75) < 0.03
  np.testing.assert_array_equal(np.asarray(drop_path(x, 0.25, False, None)), np.asarray(x))


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4])
def test_identity_mix_and_lambda_one_mix_equal_plain_forward(model, images, stage):
  plain = model(images, False)
  ident = model(images, False, mix_stage=stage, mix_fn=lambda h: h)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(ident))
  lam = 1.0
  mixed = model(images, False, mix_stage=stage, mix_fn=lambda h: lam * h + (1 - lam) * h[::-1])
  np.testing.assert_allclose(plain, mixed, rtol=1e-6, atol=1e-6)


def test_mix_fn_sees_documented_stage_shape_and_changes_output(model, images):
  expected = model.feature_shapes(16, 16)
  for stage in (1, 2, 3, 4):
    seen = {}

    def record(h, stage=stage):
      seen[stage] = h.shape
      return 0.5 * h + 0.5 * h[::-1]

    mixed = model(images, False, mix_stage=stage, mix_fn=record)
    assert seen[stage] == (4, *expected[f"stage{stage}"])
    assert not np.allclose(np.asarray(mixed), np.asarray(model(images, False)), atol=1e-5)


def test_mix_at_stage_zero_acts_on_the_input_image(model, images):
  flipped = model(images, False, mix_stage=0, mix_fn=lambda h: h[:, :, ::-1])
  np.testing.assert_allclose(flipped, model(images[:, :, ::-1], False), rtol=1e-6, atol=1e-6)


def test_features_are_recorded_after_mixing(model, images):
  _, feats = model(images, False, return_features=True, mix_stage=2, mix_fn=lambda h: jnp.zeros_like(h))
  assert float(jnp.abs(feats["stage2"]).max()) == 0.0
  assert float(jnp.abs(feats["stage1"]).max()) > 0.0


def test_invalid_mix_arguments_raise(model, images):
  with pytest.raises(ValueError, match="valid mix_stage"):
    model(images, False, mix_stage=7, mix_fn=lambda h: h)
  with pytest.raises(ValueError, match="together"):
    model(images, False, mix_stage=1)
  with pytest.raises(ValueError, match="NHWC"):
    model(jnp.zeros((2, 3, 16, 16)), False)
  with pytest.raises(ValueError, match="attention"):
    model(images, False, return_attention=True)


def test_candidate_stages_mix_where_the_traced_choice_says(model, images):
  """``mix_stage`` as a tuple: ``mix_fn(h, stage)`` runs at every listed stage (in order, once each) and one
  jitted forward with a traced choice equals the single-stage call at the chosen stage, logits and BN
  statistics (ManifoldMix's one-forward stage draw)."""
  graphdef, state = nnx.split(model)
  stages = (0, 1, 2)

  def forward(state, x, chosen):
    m = nnx.merge(graphdef, state)
    seen = []

    def mix_fn(h, stage):
      seen.append(stage)
      w = jnp.where(chosen == stage, 0.3, 1.0)
      return w * h + (1 - w) * h[::-1]

    out = m(x, True, mix_stage=stages, mix_fn=mix_fn)
    return out, nnx.state(m, nnx.BatchStat), seen

  one_forward = jax.jit(lambda s, x, c: forward(s, x, c)[:2])
  assert forward(state, images, jnp.int32(1))[2] == [0, 1, 2]
  for stage in stages:
    got, got_stats = one_forward(state, images, jnp.int32(stage))
    m = nnx.merge(graphdef, state)
    want = m(images, True, mix_stage=stage, mix_fn=lambda h: 0.3 * h + 0.7 * h[::-1])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
      got_stats,
      nnx.state(m, nnx.BatchStat),
    )
  # A choice outside the candidates mixes nowhere (1·h + 0·h[π] = h): the plain forward.
  got, _ = one_forward(state, images, jnp.int32(-1))
  plain = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, True))(state, images)
  np.testing.assert_allclose(np.asarray(got), np.asarray(plain), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="valid mix_stage"):
    model(images, False, mix_stage=(1, 7), mix_fn=lambda h, s: h)
  with pytest.raises(ValueError, match="distinct"):
    model(images, False, mix_stage=(1, 1), mix_fn=lambda h, s: h)
  with pytest.raises(ValueError, match="distinct"):
    model(images, False, mix_stage=(), mix_fn=lambda h, s: h)


def test_bf16_compute_keeps_float32_params_and_logits(images):
  f32, bf16 = tiny(seed=1), tiny(seed=1, dtype=jnp.bfloat16)
  for leaf in jax.tree.leaves(nnx.state(bf16, nnx.Param)):
    assert leaf.dtype == jnp.float32
  _, feats = bf16(images, False, return_features=True)
  assert feats["stage3"].dtype == jnp.bfloat16
  out = bf16(images, False)
  assert out.dtype == jnp.float32
  ref = f32(images, False)
  np.testing.assert_allclose(out, ref, rtol=0.1, atol=0.1 * float(jnp.abs(ref).max()))


def test_kaiming_init_scheme_statistics():
  model = build_model("resnet18", num_classes=1000, rngs=fast_rngs(0), width=16, zero_init_residual=True)
  kernel = np.asarray(model.stages[2][1].conv2.kernel[...])  # 3x3, 64 -> 64
  fan_out = 3 * 3 * kernel.shape[-1]
  assert abs(kernel.std() / math.sqrt(2 / fan_out) - 1) < 0.05
  head = np.asarray(model.head.fc.kernel[...])
  assert abs(head.std() / 0.01 - 1) < 0.05
  assert np.all(np.asarray(model.head.fc.bias[...]) == 0)
  assert np.all(np.asarray(model.stages[0][0].bn2.scale[...]) == 0), "zero_init_residual zeroes last BN"
  assert np.all(np.asarray(model.stages[0][0].bn1.scale[...]) == 1)


def test_torch_default_init_scheme_is_uniform_fan_in():
  model = build_model("resnet18", num_classes=1000, rngs=fast_rngs(0), width=16, init="torch_default")
  kernel = np.asarray(model.stages[2][1].conv2.kernel[...])
  bound = 1 / math.sqrt(3 * 3 * kernel.shape[-2])
  assert kernel.max() <= bound and kernel.min() >= -bound
  assert kernel.max() > 0.95 * bound
  head_b = np.asarray(model.head.fc.bias[...])
  assert np.abs(head_b).max() <= 1 / math.sqrt(128) and np.abs(head_b).max() > 0
  assert np.all(np.asarray(model.stages[0][0].bn2.scale[...]) == 1)


def test_jit_with_sharded_batch_matches_eager(model, images):
  """Under jit over a batch sharded across 4 devices, train-mode BN uses the global batch statistics."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = jax.make_mesh((4,), ("data",))
  x = jax.device_put(images, NamedSharding(mesh, P("data")))
  graphdef, state = nnx.split(model)

  @jax.jit
  def train_forward(state, x):
    m = nnx.merge(graphdef, state)
    return m(x, True)

  np.testing.assert_allclose(train_forward(state, x), nnx.merge(graphdef, state)(images, True), rtol=1e-4, atol=1e-5)


def test_jitted_train_step_with_manifold_mix_learns(images):
  """The pattern the training loop uses: nnx.jit + value_and_grad, rngs passed *into* the loss function
  (closing over them raises a TraceContextError), drop path on, mixing at stage 2."""
  import optax

  model = tiny(seed=4, drop_path_rate=0.1)
  opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  labels = jnp.array([0, 1, 2, 3])

  @nnx.jit
  def step(model, opt, x, rngs):
    def loss_fn(model, rngs):
      logits = model(x, True, rngs, mix_stage=2, mix_fn=lambda h: 0.8 * h + 0.2 * h[::-1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model, rngs)
    opt.update(model, grads)
    return loss

  rngs = nnx.Rngs(dropout=0)
  stem_mean = np.asarray(model.stem_bn.mean[...])
  losses = [float(step(model, opt, images, rngs)) for _ in range(6)]
  assert losses[-1] < losses[0]
  assert not np.allclose(np.asarray(model.stem_bn.mean[...]), stem_mean)
