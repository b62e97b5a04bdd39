"""BatchNorm per group of samples (``bn_group_size``, the reference's per-GPU BN): numbers against numpy, a model
against separate runs on each group, sharded jit without cross-device normalisation, errors, and the cells."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax import models
from mixjax.models import layers
from mixjax.models.functional import ModelFn
from mixjax.recipes import cells
from mixjax.sharding import batch_sharded, make_mesh, replicated

EPS = 1e-5


def _numpy_grouped_bn(x, group, scale, bias, old_mean, old_var):
  """Per-group normalisation and the running update towards the mean over groups of the group statistics."""
  xg = x.reshape((-1, group) + x.shape[1:]).astype(np.float64)
  mean = xg.mean(axis=(1, 2, 3))  # [groups, C]
  var = xg.var(axis=(1, 2, 3))
  y = (xg - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + EPS) * scale + bias
  return y.reshape(x.shape), 0.9 * old_mean + 0.1 * mean.mean(0), 0.9 * old_var + 0.1 * var.mean(0)


def test_grouped_batch_norm_matches_numpy_per_group_statistics():
  bn = layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0), group_size=4)
  rng = np.random.default_rng(0)
  scale, bias = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
  bn.scale.set_value(jnp.asarray(scale))
  bn.bias.set_value(jnp.asarray(bias))
  mean, var = np.zeros(4), np.ones(4)
  for step in range(2):
    # Groups with very different statistics, so a whole-batch normalisation would be far off.
    x = (rng.normal(size=(16, 3, 3, 4)) * np.repeat([1.0, 3.0, 0.5, 2.0], 4)[:, None, None, None]).astype(np.float32)
    x += np.repeat([0.0, 5.0, -2.0, 1.0], 4)[:, None, None, None].astype(np.float32)
    y_ref, mean, var = _numpy_grouped_bn(x, 4, scale, bias, mean, var)
    y = bn(jnp.asarray(x), use_running_average=False)
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.var[...]), var, rtol=1e-5, atol=1e-6)
  whole = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + EPS) * scale + bias
  assert np.abs(whole - y_ref).max() > 0.5  # groups really differ from the whole batch
  # Evaluation uses the running statistics, whatever the group size.
  y_eval = bn(jnp.asarray(x), use_running_average=True)
  np.testing.assert_allclose(np.asarray(y_eval), (x - mean) / np.sqrt(var + EPS) * scale + bias, rtol=1e-4, atol=1e-4)


def test_batch_no_larger_than_the_group_is_one_group_bit_identical():
  x = jax.random.normal(jax.random.key(1), (8, 5, 5, 4)) * 3 + 1
  ref = layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  y_ref = ref(x, use_running_average=False)
  for group in (8, 64):
    bn = layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0), group_size=group)
    np.testing.assert_array_equal(bn(x, use_running_average=False), y_ref)
    np.testing.assert_array_equal(bn.mean[...], ref.mean[...])
    np.testing.assert_array_equal(bn.var[...], ref.var[...])


def test_bad_group_sizes_name_the_config_key():
  bn = layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0), group_size=3)
  with pytest.raises(layers.BatchNormGroupError, match=r"config\.model\.bn_group_size=3"):
    bn(jnp.ones((8, 2, 2, 4)), use_running_average=False)
  bn(jnp.ones((8, 2, 2, 4)), use_running_average=True)  # evaluation does not group
  for bad in (0, -4, 2.5, True, "64"):
    with pytest.raises(layers.BatchNormGroupError, match=r"config\.model\.bn_group_size"):
      layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0), group_size=bad)


def test_bfloat16_compute_keeps_float32_statistics():
  bn = layers.batch_norm(4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), group_size=2)
  x = jax.random.normal(jax.random.key(2), (8, 3, 3, 4)).astype(jnp.bfloat16)
  y = bn(x, use_running_average=False)
  assert y.dtype == jnp.bfloat16 and bn.mean[...].dtype == jnp.float32 and bn.var[...].dtype == jnp.float32
  _, mean, var = _numpy_grouped_bn(np.asarray(x, np.float32), 2, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))
  np.testing.assert_allclose(np.asarray(bn.mean[...]), mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn.var[...]), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "moganet_tiny"])
def test_every_batch_norm_of_the_backbone_takes_the_group_size(name):
  small = {"resnet18": dict(stem="cifar", width=8), "moganet_tiny": dict(depths=(1, 1, 2, 1))}
  kwargs = small.get(name, {})
  model = nnx.eval_shape(lambda: models.build_model(name, num_classes=10, rngs=nnx.Rngs(0), bn_group_size=32, **kwargs))
  sizes = [m.group_size for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
  assert len(sizes) > 10 and set(sizes) == {32}
  default = nnx.eval_shape(lambda: models.build_model(name, num_classes=10, rngs=nnx.Rngs(0), **kwargs))
  assert {m.group_size for _, m in nnx.iter_modules(default) if isinstance(m, nnx.BatchNorm)} == {None}


def _collectives(compiled_text: str) -> dict:
  counts = {}
  for op in re.findall(
    r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", compiled_text
  ):
    counts[op] = counts.get(op, 0) + 1
  return counts


def test_sharded_model_equals_separate_runs_per_group_without_cross_device_normalisation():
  """ResNet-18 (width 8) in training mode, batch 16 sharded over 4 devices, groups of 2: logits equal the model run
  on each group alone (only BN mixes samples), and the running statistics the mean of those runs' statistics."""
  assert len(jax.devices()) == 4
  mesh = make_mesh()

  def build(group):
    model = models.build_model("resnet18", num_classes=10, rngs=nnx.Rngs(0), stem="cifar", width=8, bn_group_size=group)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return ModelFn(graphdef), nnx.to_pure_dict(params), nnx.to_pure_dict(stats)

  grouped_fn, params, stats = build(2)
  whole_fn, _, _ = build(None)
  shardings = (replicated(mesh), replicated(mesh), batch_sharded(mesh))
  grouped = jax.jit(lambda p, s, x: grouped_fn(p, s, x, train=True), in_shardings=shardings)
  x = jax.random.normal(jax.random.key(3), (16, 16, 16, 3)) * jnp.arange(1.0, 17.0)[:, None, None, None]
  logits, new_stats = grouped(params, stats, x)
  alone = jax.jit(lambda p, s, x: whole_fn(p, s, x, train=True))
  parts = [alone(params, stats, x[i : i + 2]) for i in range(0, 16, 2)]
  np.testing.assert_allclose(logits, jnp.concatenate([p[0] for p in parts]), rtol=2e-4, atol=2e-4)
  expected_stats = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), 0), *[p[1] for p in parts])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), new_stats, expected_stats)
  whole = jax.jit(lambda p, s, x: whole_fn(p, s, x, train=True), in_shardings=shardings)
  whole_logits, _ = whole(params, stats, x)
  assert float(jnp.abs(whole_logits - logits).max()) > 1e-2  # not the global-batch BN

  # Groups inside a device: normalising needs no communication. What remains is the running statistics' mean
  # over the groups (XLA combines those sums into one all-reduce; the global-batch BN needs one per layer).
  x_sharded = jax.device_put(x, batch_sharded(mesh))
  per_group = _collectives(grouped.lower(params, stats, x_sharded).compile().as_text())
  global_bn = _collectives(whole.lower(params, stats, x_sharded).compile().as_text())
  assert set(per_group) <= {"all-reduce"}, per_group
  assert per_group.get("all-reduce", 0) < global_bn["all-reduce"], (per_group, global_bn)


def test_benchmark_cells_set_the_reference_bn_groups():
  pt = cells.load_recipe("pytorch_style")
  for model in ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x4d"):
    assert pt.get_config(f"mixup,model={model}").model.bn_group_size == 64, model
  for recipe, size in (("rsb_a3", 512), ("rsb_a2", 256)):
    module = cells.load_recipe(recipe)
    assert module.get_config("rsb").model.bn_group_size is None  # SyncBN; the key is there for the CLI
    for model in ("efficientnet_b0", "mobilenet_v2"):
      assert module.get_config(f"rsb,model={model}").model.bn_group_size == size, (recipe, model)
  deit = cells.load_recipe("deit")
  assert deit.get_config("mixup,model=moganet_tiny").model.bn_group_size == 256
  assert "bn_group_size" not in deit.get_config("mixup,model=deit_small").model
