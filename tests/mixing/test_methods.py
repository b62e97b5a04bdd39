"""Properties every registered method must have (run per method).

The batch is built so the mixing can be undone (see conftest): the weight of
the original image at every pixel is recovered from the output and compared
with the returned label weight λ.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from tests.mixing.conftest import constant_batch, recover_pixel_weight

ALL_METHODS = mixing.list_methods("input")
KEYS = [jax.random.key(seed) for seed in (0, 1, 2, 3)]

# λ value (the override of each method's Beta draw) that must return the
# original batch. GridMix (holes never shrink below one pixel, as in the
# reference) and SmoothMix (λ is discarded) have no such value.
IDENTITY_LAM = {
  "vanilla": 1.0,
  "mixup": 1.0,
  "cutmix": 1.0,
  "fmix": 1.0,
  "saliencymix": 1.0,
  "resizemix": 0.0,
}


@functools.lru_cache(maxsize=None)
def jitted_method(name, alpha=1.0):
  method = mixing.get_method(name)
  return jax.jit(functools.partial(method.fn, alpha=alpha, **method.defaults))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_label_weight_equals_pixel_weight(name):
  images, labels = constant_batch()
  mixed_some_pair = False
  for key in KEYS:
    out = jitted_method(name)(key, images, labels)
    assert out.images.shape == images.shape and out.images.dtype == images.dtype
    assert out.labels_a.shape == labels.shape == out.labels_b.shape
    assert out.lam.shape == (8,) and out.lam.dtype == jnp.float32
    np.testing.assert_array_equal(out.labels_a, labels)
    targets = np.asarray(out.targets)
    assert (targets >= -1e-7).all()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)

    weight, self_pair = recover_pixel_weight(out)
    np.testing.assert_array_equal(  # a self-pair must come out unchanged
      np.asarray(out.images)[self_pair], np.asarray(images)[self_pair]
    )
    real = ~self_pair
    if real.any():
      w = weight[real]
      assert np.nanmin(w) >= -1e-5 and np.nanmax(w) <= 1 + 1e-5
      np.testing.assert_allclose(w.mean(axis=(1, 2)), np.asarray(out.lam)[real], atol=2e-5, err_msg=name)
      lam = np.asarray(out.lam)[real]
      mixed_some_pair |= bool(((lam > 0.01) & (lam < 0.99)).any())
  if name != "vanilla":
    assert mixed_some_pair, f"{name} never mixed a pair in {len(KEYS)} draws"


@pytest.mark.parametrize("name", ALL_METHODS)
def test_same_rng_same_output_other_rng_other_output(name):
  images, labels = constant_batch()
  fn = jitted_method(name)
  first = fn(KEYS[0], images, labels)
  again = fn(KEYS[0], images, labels)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  if name != "vanilla":
    others = [fn(k, images, labels) for k in KEYS[1:]]
    assert any(not np.array_equal(first.images, o.images) for o in others)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_bfloat16_batches_keep_their_dtype(name):
  images, labels = constant_batch(dtype=jnp.bfloat16)
  out = jitted_method(name)(KEYS[1], images, labels)
  assert out.images.dtype == jnp.bfloat16
  assert out.images.shape == images.shape
  assert out.lam.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out.targets).sum(axis=1), 1.0, atol=1e-6)
  weight, self_pair = recover_pixel_weight(out)
  if (~self_pair).any():  # bf16 rounding of the pixels only
    np.testing.assert_allclose(weight[~self_pair].mean(axis=(1, 2)), np.asarray(out.lam)[~self_pair], atol=0.02)


@pytest.mark.parametrize("name", sorted(set(IDENTITY_LAM) & set(ALL_METHODS)))
def test_identity_lambda_returns_the_original_batch(name):
  images, labels = constant_batch()
  images = images + jax.random.normal(jax.random.key(9), images.shape)
  method = mixing.get_method(name)
  out = method.fn(KEYS[2], images, labels, alpha=1.0, lam=IDENTITY_LAM[name], **method.defaults)
  np.testing.assert_array_equal(out.images, images)
  np.testing.assert_array_equal(out.lam, np.ones(8, np.float32))
  np.testing.assert_array_equal(out.targets, labels)
