"""Method-specific checks for the box and blend methods."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from mixjax.mixing.core import dispatch
from mixjax.mixing.ops import sampling
from mixjax.mixing.input import smoothmix as smoothmix_module
from tests.mixing.conftest import constant_batch, recover_pixel_weight


def _rect_from_weight(weight_a):
  """(top, bottom, left, right) of the region where the original is gone."""
  rows = np.where((weight_a < 0.5).any(axis=1))[0]
  cols = np.where((weight_a < 0.5).any(axis=0))[0]
  if rows.size == 0:
    return (0, 0, 0, 0)
  return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_cutmix_box_is_one_shared_rectangle_sized_from_lambda():
  images, labels = constant_batch(batch=8, size=32)
  fn = jax.jit(mixing.get_method("cutmix").fn, static_argnames=("alpha",))
  for seed in range(6):
    out = fn(jax.random.key(seed), images, labels, alpha=1.0, lam=0.75)
    weight, self_pair = recover_pixel_weight(out)
    rects = {_rect_from_weight(w) for w in weight[~self_pair]}
    assert len(rects) == 1, "one box for the whole batch"
    top, bottom, left, right = rects.pop()
    # the box is a full rectangle, binary, at most 16 x 16 (r = sqrt(0.25)).
    w = weight[~self_pair][0]
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert (w[top:bottom, left:right] == 0).all()
    assert bottom - top <= 16 and right - left <= 16
    area = (bottom - top) * (right - left)
    np.testing.assert_allclose(out.lam, 1 - area / 1024.0, atol=1e-6)


def test_cutmix_box_is_exact_away_from_borders():
  images, labels = constant_batch(batch=4, size=64)
  fn = jax.jit(mixing.get_method("cutmix").fn, static_argnames=("alpha",))
  sides = []
  for seed in range(12):
    out = fn(jax.random.key(seed), images, labels, alpha=1.0, lam=0.75)
    weight, self_pair = recover_pixel_weight(out)
    t, b, l, r = _rect_from_weight(weight[~self_pair][0])
    if 0 < t and b < 64 and 0 < l and r < 64:  # unclipped
      sides.append((b - t, r - l))
  assert sides and all(s == (32, 32) for s in sides)


def test_mixup_weight_is_constant_over_pixels():
  images, labels = constant_batch(batch=8)
  out = mixing.get_method("mixup").fn(jax.random.key(3), images, labels, alpha=1.0)
  weight, self_pair = recover_pixel_weight(out)
  w = weight[~self_pair]
  want = np.broadcast_to(np.asarray(out.lam)[~self_pair, None, None], w.shape)
  np.testing.assert_allclose(w, want, atol=1e-5)


def test_derangement_helper_avoids_self_pairs():
  keys = jax.random.split(jax.random.key(0), 200)
  perms = jax.vmap(lambda k: sampling.permutation_avoiding_fixed_points(k, 8))(keys)
  plain = jax.vmap(lambda k: sampling.random_permutation(k, 8))(keys)
  fixed_free = lambda p: np.mean(np.all(np.asarray(p) != np.arange(8), 1))
  assert fixed_free(perms) > 0.95
  assert fixed_free(plain) < 0.6
  assert all(sorted(p) == list(range(8)) for p in np.asarray(perms))


def test_derangement_helper_draws_eleven_times_like_the_reference():
  """One draw plus up to 10 re-draws (spec 1.3): with 2 samples each draw fails with probability 1/2, so all
  11 fail with probability 2^-11 (10 draws: 2^-10)."""
  draws = 200_000
  keys = jax.random.split(jax.random.key(1), draws)
  perms = jax.jit(jax.vmap(lambda k: sampling.permutation_avoiding_fixed_points(k, 2)))(keys)
  failures = int(np.sum(np.asarray(perms)[:, 0] == 0))
  assert 55 <= failures <= 145  # expected 97.7 (10 draws: 195)


def _reference_smoothmix_window(size, shift_rows, shift_cols, sigma):
  """numpy port of the reference's gaussian_kernel: roll a 2H×2H coordinate grid, crop the middle H×H."""
  s = 2 * size
  x_grid = np.tile(np.arange(s), (s, 1))
  grid = np.stack([x_grid, x_grid.T], axis=-1)
  grid = np.roll(grid, shift_rows, 0)
  grid = np.roll(grid, shift_cols, 1)
  crop = s // 4
  grid = grid[crop : s - crop, crop : s - crop]
  return np.exp(-np.sum((grid - (s - 1) / 2) ** 2, axis=-1) / (2 * sigma**2))


@pytest.mark.parametrize("size", [32, 10])  # odd sizes crash the reference (its crop is size + 1)
def test_smoothmix_window_is_the_reference_roll_and_crop(size):
  for shift_rows, shift_cols in [(0, 0), (-size // 2, size // 2 - 1), (3, -2), (-(size // 2), -(size // 2))]:
    sigma = 0.3 * size
    dy = smoothmix_module.centred_coordinates(size, jnp.int32(shift_rows))[:, None]
    dx = smoothmix_module.centred_coordinates(size, jnp.int32(shift_cols))[None, :]
    ours = np.exp(-(np.asarray(dy) ** 2 + np.asarray(dx) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(
      ours, _reference_smoothmix_window(size, shift_rows, shift_cols, sigma), rtol=1e-5, atol=1e-7
    )


def test_smoothmix_centre_sits_on_half_pixels():
  for seed in range(5):
    window = np.asarray(smoothmix_module.gaussian_window(jax.random.key(seed), 32, 32))
    row = window[:, np.argmax(window.max(axis=0))]
    top = int(np.argmax(row))
    # the centre is at top + ½: two equal maxima (only a centre at −½ has a single one, at row 0)
    assert row[top + 1] == pytest.approx(row[top], rel=1e-6) or top == 0
    shifts = {int(smoothmix_module.reference_shift(k, 32)) for k in jax.random.split(jax.random.key(seed), 64)}
    assert min(shifts) >= -16 and max(shifts) <= 15


def test_smoothmix_label_weights_flag():
  images, labels = constant_batch(batch=4)
  fn = mixing.get_method("smoothmix").fn
  paper = fn(jax.random.key(0), images, labels, label_weights="paper")
  reference = fn(jax.random.key(0), images, labels, label_weights="reference")
  weight, self_pair = recover_pixel_weight(paper)
  n = int(np.argmin(self_pair))
  assert float(paper.lam[n]) == pytest.approx(float(np.mean(weight[n])), abs=1e-5)  # λ = share of x
  np.testing.assert_allclose(np.asarray(reference.lam), 1 - np.asarray(paper.lam), atol=1e-6)


def _timm_switch_plan(mix_prob, switch_prob):
  """timm's Mixup/CutMix switch (DeiT: Mixup α 0.8, CutMix α 1.0) as a mixing plan: mix with probability
  ``mix_prob``, then CutMix with probability ``switch_prob``, else Mixup."""
  cfg = mixing.default_mixing_config()
  cfg.method = ["vanilla", "mixup", "cutmix"]
  cfg.alpha = [1.0, 0.8, 1.0]
  cfg.prob = [1 - mix_prob, mix_prob * (1 - switch_prob), mix_prob * switch_prob]
  return mixing.resolve_mixing_config(cfg)


def _branch_taken(out, images):
  """'vanilla' (untouched), 'cutmix' (pasted: pixel values stay the integers i + 1) or 'mixup' (blended)."""
  mixed = np.asarray(out.images)
  if np.array_equal(mixed, np.asarray(images)) and np.all(np.asarray(out.lam) == 1):
    return "vanilla"
  return "cutmix" if np.array_equal(mixed, np.round(mixed)) else "mixup"


@pytest.mark.parametrize(
  "mix_prob,switch_prob,branch", [(1.0, 1.0, "cutmix"), (1.0, 0.0, "mixup"), (0.0, 0.5, "vanilla")]
)
def test_switch_plan_probabilities_pick_the_branch(mix_prob, switch_prob, branch):
  images, labels = constant_batch(batch=8)
  plan = _timm_switch_plan(mix_prob, switch_prob)
  fn = jax.jit(functools.partial(dispatch.mix_with_plan, plan))
  for seed in range(6):
    out = fn(jax.random.key(seed), images, labels)
    assert _branch_taken(out, images) == branch
    if branch == "mixup":
      weight, self_pair = recover_pixel_weight(out)
      np.testing.assert_allclose(weight[~self_pair].std(axis=(1, 2)), 0, atol=1e-5)  # blended uniformly
    if branch != "vanilla":
      assert (np.asarray(out.lam) < 1).all()
    else:
      np.testing.assert_array_equal(out.lam, np.ones(8))


def test_switch_plan_branch_frequencies():
  """timm's mix_prob 0.8, switch_prob 0.5 → vanilla 0.2, Mixup 0.4, CutMix 0.4 of the steps (each branch
  recognised from the mixed batch; 1500 steps: 4σ ≈ 0.05 for 0.4)."""
  images, labels = constant_batch(batch=8, size=16)
  plan = _timm_switch_plan(0.8, 0.5)
  fn = jax.jit(jax.vmap(functools.partial(dispatch.mix_with_plan, plan), in_axes=(0, None, None)))
  steps = 1500
  out = fn(jax.random.split(jax.random.key(0), steps), images, labels)
  mixed, lam = np.asarray(out.images), np.asarray(out.lam)
  untouched = np.all(mixed == np.asarray(images), axis=(1, 2, 3, 4)) & np.all(lam == 1, axis=1)
  pasted = np.all(mixed == np.round(mixed), axis=(1, 2, 3, 4))  # as _branch_taken, for all steps at once
  freq = {"vanilla": untouched.mean(), "cutmix": (pasted & ~untouched).mean(), "mixup": (~pasted).mean()}
  assert abs(freq["vanilla"] - 0.2) < 0.05 and abs(freq["mixup"] - 0.4) < 0.05 and abs(freq["cutmix"] - 0.4) < 0.05
