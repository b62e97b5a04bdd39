"""The jitted train step on its own: EMA rule, bf16 compute with float32 params, donation, determinism."""

import jax
import jax.numpy as jnp
import numpy as np

from mixjax.sharding import host_batch_to_global, make_mesh
from mixjax.train_step import build_step_functions
from tests.helpers import demo_config


def _demo_config(method="vanilla"):
  return demo_config(method)


def _setup(config, steps_per_epoch=10):
  mesh = make_mesh()
  fns = build_step_functions(config, mesh=mesh, num_classes=10, steps_per_epoch=steps_per_epoch)
  return mesh, fns.init_state(), fns.train_step


def _batches(mesh, n, batch_size=16):
  rng = np.random.default_rng(0)
  return [
    host_batch_to_global(
      {
        "image": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, (batch_size,), dtype=np.int32),
      },
      mesh,
    )
    for _ in range(n)
  ]


def test_ema_follows_the_rule_and_bf16_keeps_float32_params():
  config = _demo_config("mixup")
  config.batch_size = 16
  config.compute_dtype = "bfloat16"
  config.ema.decay = 0.75
  config.ema.warmup_epochs = 0.0
  config.loss.name = "bce"
  config.loss.label_smoothing = 0.1
  config.optimizer.name = "lamb"
  config.optimizer.lr = 1e-3
  config.model.drop_path_rate = 0.1
  mesh, state, step = _setup(config)
  ema = jax.device_get(state.params)
  for batch in _batches(mesh, 3):
    state, metrics = step(state, batch)
    params = jax.device_get(state.params)
    ema = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * p, ema, params)
    assert np.isfinite(float(metrics["loss"]))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), jax.device_get(state.ema_params), ema
  )
  assert int(state.step) == 3


def test_step_is_a_pure_function_of_state_and_batch():
  """Same state and batch → bitwise-identical result (what exact resume relies on); the state is donated."""
  config = _demo_config("cutmix")
  config.batch_size = 16
  mesh, state, step = _setup(config)
  batch = _batches(mesh, 1)[0]
  saved = jax.tree.map(jnp.copy, state)  # a device copy: a host view of a CPU buffer would block donation
  s1, m1 = step(state, batch)
  deleted = [x.is_deleted() for x in jax.tree.leaves(state)]
  assert all(deleted), f"the train state must be donated ({sum(deleted)}/{len(deleted)})"
  s2, m2 = step(saved, batch)
  assert float(m1["loss"]) == float(m2["loss"])
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(s1.params), jax.device_get(s2.params))
