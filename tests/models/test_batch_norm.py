"""mixjax's BatchNorm (cheaper to trace) computes exactly what flax's does, in both modes, statistics included."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixjax.models import layers


def test_batch_norm_equals_flax_batch_norm_and_updates_the_same_statistics():
  ours = layers.batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  flax_bn = nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert isinstance(ours, nnx.BatchNorm)
  for step in range(3):
    x = jax.random.normal(jax.random.key(step), (8, 5, 5, 4)) * 3 + 1
    np.testing.assert_array_equal(ours(x, use_running_average=False), flax_bn(x, use_running_average=False))
    np.testing.assert_array_equal(ours.mean[...], flax_bn.mean[...])
    np.testing.assert_array_equal(ours.var[...], flax_bn.var[...])
  assert float(jnp.abs(ours.mean[...]).max()) > 0.1  # the statistics moved
  np.testing.assert_array_equal(ours(x, use_running_average=True), flax_bn(x, use_running_average=True))
