"""Saliency Grafting: calibrated label weights, grafts from the partner, temperature, determinism, devices, bf16.

The constant batches of ``conftest.py`` make each mix invertible: the recovered pixel weight M of the original
is 0 on grafted patches and 1 elsewhere, so the label weight can be recomputed in numpy from M and the saliency
handed in.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing.model_aware import grafting
from mixjax.visualize import pictures
from tests.mixing.conftest import constant_batch, recover_pixel_weight

METHOD = grafting.Grafting()
HP = METHOD.hyper_parameters()


@functools.lru_cache(maxsize=None)
def _mix_fn(hp, *, mesh=None, share=0.5):
  """The jitted mix, compiled once per setting (``share=None`` draws p ~ Beta(1, 1), whose sampler is slow to
  compile; most tests fix p)."""
  return jax.jit(lambda r, x, s, y: METHOD.mix(mesh, r, x, s, y, alpha=1.0, hp=hp, share=share))


def _calibrated_lam_numpy(weight, sal_own, sal_partner):
  """λ = kept / (kept + grafted), each image's saliency mass normalised to 1, from the pixel weight M."""
  grafted = 1.0 - weight
  kept = np.sum(sal_own * weight) / np.sum(sal_own)
  taken = np.sum(sal_partner * grafted) / np.sum(sal_partner)
  return kept / (kept + taken)


def _ramp_saliency(batch, size, grid, order_seed=0):
  """Every image: patch k of a grid×grid grid has saliency rank[k] + 1 (a fixed shuffled ramp), [B, H, W]."""
  rank = np.random.default_rng(order_seed).permutation(grid * grid).reshape(grid, grid) + 1.0
  cell = size // grid
  sal = np.repeat(np.repeat(rank, cell, 0), cell, 1)
  return jnp.asarray(np.broadcast_to(sal, (batch, size, size)).astype(np.float32)), rank


def test_label_weight_is_the_saliency_mass_kept_not_the_area():
  images, labels = constant_batch(8, size=32)
  checked, gaps = 0, []
  for seed in range(3):
    # Uneven saliency (a few hot pixels dominate) so that saliency and area weights differ.
    sal = jax.random.uniform(jax.random.key(100 + seed), images.shape[:3]) ** 6
    result = _mix_fn(HP, share=None)(jax.random.key(seed), images, sal, labels)
    weight, self_pair = recover_pixel_weight(result)
    own = np.argmax(np.asarray(result.labels_a), 1)
    partner = np.argmax(np.asarray(result.labels_b), 1)
    lam, sal = np.asarray(result.lam), np.asarray(sal, np.float64)
    for n in np.nonzero(~self_pair)[0]:
      expected = _calibrated_lam_numpy(weight[n], sal[own[n]], sal[partner[n]])
      np.testing.assert_allclose(lam[n], expected, atol=1e-5)
      gaps.append(abs(lam[n] - np.mean(weight[n])))
      checked += 1
    targets = np.asarray(result.targets)
    assert np.all(targets >= 0) and np.all((lam >= 0) & (lam <= 1))
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
  assert checked >= 15
  assert max(gaps) > 0.05  # an area-based weight would fail the comparison above


def test_calibrated_weight_on_a_constructed_case_differs_from_area():
  """All of the original's saliency lies in the one patch that is grafted over: λ = 0 though 15/16 of its pixels
  remain; a background-only graft leaves λ = 1; zero saliency falls back to the area."""
  g = 4
  own = np.full((1, g, g), 0.0, np.float32)
  own[0, 0, 0] = 5.0
  partner = np.ones((1, g, g), np.float32)
  graft_hot = np.zeros((1, g, g), bool)
  graft_hot[0, 0, 0] = True
  graft_cold = np.zeros((1, g, g), bool)
  graft_cold[0, 3, 3] = True
  partner_cold = np.zeros((1, g, g), np.float32)  # the grafted partner patch carries no saliency either
  partner_cold[0, 0, 0] = 1.0
  lam = lambda s_own, s_partner, graft: float(grafting.calibrated_lam(s_own, s_partner, graft)[0])
  assert lam(own, partner, graft_hot) == pytest.approx(0.0, abs=1e-7)
  assert lam(own, partner_cold, graft_cold) == pytest.approx(1.0, abs=1e-7)
  assert lam(own, partner, graft_cold) == pytest.approx(1.0 / (1.0 + 1.0 / 16), rel=1e-6)
  zero = np.zeros((1, g, g), np.float32)
  assert lam(zero, zero, graft_hot) == pytest.approx(15 / 16, rel=1e-6)


def test_grafted_patches_come_from_the_partner_on_the_patch_grid():
  images, labels = constant_batch(8, size=32)
  sal = jax.random.uniform(jax.random.key(3), images.shape[:3])
  result = _mix_fn(HP)(jax.random.key(1), images, sal, labels)
  weight, self_pair = recover_pixel_weight(result)
  cell = 32 // HP.grid
  grafted_any = False
  for n in np.nonzero(~self_pair)[0]:
    assert set(np.unique(weight[n])) <= {0.0, 1.0}  # pixels are the original's or the partner's, never blended
    blocks = weight[n].reshape(HP.grid, cell, HP.grid, cell)
    assert np.all(blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3)))  # whole patches
    grafted_any |= bool(np.any(weight[n] == 0))
  assert grafted_any


def _graft_frequencies(temperatures, thresholds, *, keys=48, share=0.25):
  """Per-patch frequency of being grafted [len(temperatures), g, g] over ``keys`` draws of the per-device kernel
  (non-self pairs), one compiled program for every setting; and the patches' saliency ranks."""
  grid, size, batch = 4, 32, 8
  images, labels = constant_batch(batch, size=size)
  sal, rank = _ramp_saliency(batch, size, grid)

  def draw(rng, temperature, threshold):
    hp = dataclasses.replace(HP, grid=grid, temperature=temperature, threshold=threshold)
    return grafting.graft_local(rng, 1.0, jnp.asarray(True), share, images, sal, labels, hp=hp)

  per_key = jax.vmap(draw, in_axes=(0, None, None))
  per_setting = jax.jit(jax.vmap(per_key, in_axes=(None, 0, 0)))
  mixed, _, partner_labels = per_setting(
    jax.random.split(jax.random.key(7), keys), jnp.asarray(temperatures), jnp.asarray(thresholds)
  )
  own = np.arange(1.0, batch + 1)[None, None, :, None, None]
  partner = (np.argmax(np.asarray(partner_labels), -1) + 1.0)[..., None, None]
  cell = size // grid
  values = np.asarray(mixed)[..., 0][..., ::cell, ::cell]  # [settings, keys, batch, g, g]
  pairs = own != partner  # [settings, keys, batch, 1, 1]
  grafted = (values == partner) & pairs
  return grafted.sum(axis=(1, 2)) / pairs.sum(axis=(1, 2)), rank


def test_temperature_moves_grafts_between_the_most_salient_patches_and_uniform():
  (cold, mid, hot), rank = _graft_frequencies([0.05, 0.5, 20.0], [0.0, 0.0, 0.0])
  top4 = lambda freq: freq[rank > 12].sum() / freq.sum()
  # Low T: the grafts sit on the most salient patches; high T: every patch about equally often (ρ ≈ p = 0.25).
  assert top4(cold) > 0.9
  assert top4(cold) > top4(mid) > top4(hot)
  assert abs(top4(hot) - 0.25) < 0.1
  assert hot.max() / hot.min() < 2.0 and abs(hot.mean() - 0.25) < 0.05
  entropy = lambda f: -np.sum((f / f.sum()) * np.log(f / f.sum() + 1e-12))
  assert entropy(cold) < entropy(mid) < entropy(hot)


def test_threshold_never_grafts_patches_below_it():
  (freq,), rank = _graft_frequencies([20.0], [0.5], keys=8)
  assert np.all(freq[rank / rank.max() < 0.5] == 0)
  assert np.all(freq[rank / rank.max() >= 0.5] > 0)


def test_deterministic_under_a_fixed_key():
  images, labels = constant_batch(8, size=32)
  sal = jax.random.uniform(jax.random.key(5), images.shape[:3])
  fn = _mix_fn(HP, share=None)
  a, b = fn(jax.random.key(11), images, sal, labels), fn(jax.random.key(11), images, sal, labels)
  c = fn(jax.random.key(12), images, sal, labels)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert not np.array_equal(np.asarray(a.images), np.asarray(c.images))


def test_pairs_within_each_device(four_device_mesh):
  images, labels = constant_batch(16, size=32)
  sal = jax.random.uniform(jax.random.key(2), images.shape[:3])
  result = _mix_fn(HP, mesh=four_device_mesh)(jax.random.key(0), images, sal, labels)
  own = np.argmax(np.asarray(result.labels_a), 1)
  partner = np.argmax(np.asarray(result.labels_b), 1)
  assert np.all(own // 4 == partner // 4)
  values = np.asarray(result.images)[..., 0]
  assert np.all((values == (own + 1)[:, None, None]) | (values == (partner + 1)[:, None, None]))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)


def test_bfloat16_images_are_grafted_exactly():
  images, labels = constant_batch(8, size=32, dtype=jnp.bfloat16)
  sal = jax.random.uniform(jax.random.key(4), images.shape[:3])
  result = _mix_fn(HP)(jax.random.key(3), images, sal, labels)
  assert result.images.dtype == jnp.bfloat16 and result.lam.dtype == jnp.float32
  own = np.argmax(np.asarray(result.labels_a), 1) + 1.0
  partner = np.argmax(np.asarray(result.labels_b), 1) + 1.0
  values = np.asarray(result.images, np.float32)
  assert np.all((values == own[:, None, None, None]) | (values == partner[:, None, None, None]))


def test_prob_zero_leaves_the_batch_unmixed():
  images, labels = constant_batch(8, size=32)
  sal = jax.random.uniform(jax.random.key(6), images.shape[:3])
  result = _mix_fn(dataclasses.replace(HP, prob=0.0))(jax.random.key(0), images, sal, labels)
  np.testing.assert_array_equal(np.asarray(result.images), np.asarray(images))
  np.testing.assert_array_equal(np.asarray(result.lam), 1.0)


@pytest.mark.parametrize(
  "override,match",
  [
    ({"grid": 5}, "common divisor"),
    ({"grid": 0}, "positive integer"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"threshold": 1.5}, r"use 0 to graft from any patch"),
    ({"prob": 2.0}, r"must be in \[0, 1\]"),
  ],
)
def test_bad_hyper_parameters_raise_naming_the_fix(override, match):
  with pytest.raises(ValueError, match=match):
    grafting.Grafting._check(dataclasses.replace(HP, **override), 32, 32)


def test_picture_grafts_patches_of_the_photos():
  """The visualiser's picture (a random small ResNet's saliency): patch-wise grafts, calibrated label weights."""
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  result = pictures.picture_for("grafting").build(METHOD, images, labels, alpha=1.0, hp=HP)(jax.random.key(1))
  assert result.images.shape == images.shape and np.all(np.isfinite(np.asarray(result.images)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-5)
  mixed, own = np.asarray(result.images), np.asarray(images)
  partner = own[np.argmax(np.asarray(result.labels_b), 1)]
  # every pixel is the photo's own or its partner's (whole patches are grafted, nothing is blended)
  assert np.all(np.isclose(mixed, own).all(-1) | np.isclose(mixed, partner).all(-1))
