"""Shared fixtures for the mixing tests: batches whose mixing can be undone.

Each sample i is a constant image of value ``i + 1`` and its label is the
one-hot of i, so a mixed pixel ``M·(i+1) + (1−M)·(j+1)`` reveals the weight
``M`` of the original sample once ``labels_b`` names the partner j.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing  # noqa: F401  (registers every method)


def constant_batch(batch=8, size=32, channels=3, dtype=jnp.float32):
  values = jnp.arange(1, batch + 1, dtype=jnp.float32)
  images = values[:, None, None, None] * jnp.ones((batch, size, size, channels))
  labels = jax.nn.one_hot(jnp.arange(batch), batch, dtype=jnp.float32)
  return images.astype(dtype), labels


def recover_pixel_weight(result):
  """Per-sample [H, W] weight of the original image, NaN for self-pairs."""
  images = np.asarray(result.images, np.float64)[..., 0]
  own = np.argmax(np.asarray(result.labels_a), axis=1) + 1.0
  partner = np.argmax(np.asarray(result.labels_b), axis=1) + 1.0
  denom = (own - partner)[:, None, None]
  with np.errstate(invalid="ignore", divide="ignore"):
    weight = (images - partner[:, None, None]) / denom
  weight[own == partner] = np.nan
  return weight, own == partner


@pytest.fixture(scope="session")
def four_device_mesh():
  if jax.device_count() < 4:
    pytest.skip("needs 4 (fake) devices; run through tests/conftest.py")
  return jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
