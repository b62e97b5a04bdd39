"""PuzzleMix on device: the jittable labeling solver against brute force, transport, and the mix itself."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.puzzlemix_solver import alpha_beta_swap, energy, evaluate, exact_minimum, photo_problems
from mixjax.config_args import ConfigError
from mixjax.mixing.model_aware import puzzlemix
from mixjax.mixing.ops.puzzlemix_solver import labeling_energy, solve_labeling
from mixjax.visualize import pictures
from tests.mixing.conftest import constant_batch, recover_pixel_weight


def _energies_numpy(configs, unary, w_v, w_h):
  """Energy of every labeling in ``configs`` [N, g, g] (brute force, numpy)."""
  n_labels = unary.shape[-1]
  t = np.arange(n_labels) / (n_labels - 1)
  dist = (t[:, None] - t[None]) ** 2
  e = np.take_along_axis(np.broadcast_to(unary, configs.shape + (n_labels,)), configs[..., None], -1)[..., 0]
  e = e.sum((1, 2))
  e += (w_v * dist[configs[:, :-1, :], configs[:, 1:, :]]).sum((1, 2))
  e += (w_h * dist[configs[:, :, :-1], configs[:, :, 1:]]).sum((1, 2))
  return e


@pytest.mark.parametrize("method", ["row_dp", "chain_descent"])
@pytest.mark.parametrize("g,n_labels", [(3, 3), (3, 2), (4, 2)])
def test_solver_energy_close_to_brute_force_minimum(g, n_labels, method):
  rng = np.random.default_rng(g * 10 + n_labels)
  configs = np.array(list(itertools.product(range(n_labels), repeat=g * g))).reshape(-1, g, g)
  solve = jax.jit(jax.vmap(lambda u, v, h: solve_labeling(u, v, h, method=method)))
  trials = 40
  # PuzzleMix-like scales: unaries ~ 1/g², pairwise from 0.1x to 3x of that, some negative (non-submodular).
  unary = rng.random((trials, g, g, n_labels)).astype(np.float32) / g**2
  scale = rng.choice([0.1, 1.0, 3.0], size=(trials, 1, 1)) / g**2
  w_v = ((rng.random((trials, g - 1, g)) - 0.1) * scale).astype(np.float32)
  w_h = ((rng.random((trials, g, g - 1)) - 0.1) * scale).astype(np.float32)
  labels = np.asarray(solve(jnp.asarray(unary), jnp.asarray(w_v), jnp.asarray(w_h)))
  gaps = []
  for i in range(trials):
    ours = _energies_numpy(labels[i][None], unary[i], w_v[i], w_h[i])[0]
    energies = _energies_numpy(configs, unary[i], w_v[i], w_h[i])
    best = energies.min()
    gaps.append((ours - best) / abs(best))
    if method == "row_dp":  # the oracle of the benchmark agrees with brute force too
      assert exact_minimum(unary[i], w_v[i], w_h[i])[0] == pytest.approx(best, rel=1e-6)  # brute force sums in float32
  gaps = np.array(gaps)
  print(
    f"\npuzzlemix solver {method} {g}x{g}, {n_labels} labels: exact in {np.mean(gaps < 1e-5):.0%} of {trials}, "
    f"mean relative energy gap {gaps.mean():.2e}, max {gaps.max():.2e}"
  )
  assert gaps.min() > -1e-5  # never below the true minimum (the energy functions agree)
  if method == "row_dp":
    assert gaps.max() < 1e-5  # exact (up to float32 rounding)
  else:
    assert np.mean(gaps < 1e-5) >= 0.9
    assert gaps.max() < 0.02


@pytest.mark.parametrize("n_labels", [2, 3])
def test_row_dp_is_exact_on_8x8_photo_problems_and_never_worse_than_alpha_beta_swap(n_labels):
  """8×8 problems from scikit-image photos with the benchmark's β, γ, η (``benchmarks/puzzlemix_solver.py``)."""
  problems = photo_problems(8, 8, n_labels, seed=n_labels, saliency="fine_grained", batch=8)
  gaps = evaluate(problems, {"row_dp": solve_labeling}, with_swap=n_labels == 3)
  assert np.mean(gaps["row_dp"] <= 1e-5) >= 0.95 and gaps["row_dp"].mean() <= 1e-4
  assert gaps["row_dp"].min() > -1e-5
  if n_labels == 3:
    assert np.all(gaps["row_dp"] <= gaps["alpha_beta_swap"] + 1e-5)


def test_alpha_beta_swap_oracle_reaches_a_swap_local_minimum():
  """The benchmark's α-β swap: never below the exact minimum, exact on an easy (strong-unary) problem."""
  rng = np.random.default_rng(3)
  unary = rng.random((4, 4, 3))
  w_v, w_h = 0.01 * rng.random((3, 4)), 0.01 * rng.random((4, 3))
  labels = alpha_beta_swap(unary, w_v, w_h)
  best, best_labels = exact_minimum(unary, w_v, w_h)
  assert energy(labels, unary, w_v, w_h) == pytest.approx(best, rel=1e-12)
  np.testing.assert_array_equal(labels, best_labels)


def test_solver_energy_matches_numpy_energy():
  rng = np.random.default_rng(0)
  unary = rng.random((3, 3, 3)).astype(np.float32)
  w_v, w_h = rng.random((2, 3)).astype(np.float32), rng.random((3, 2)).astype(np.float32)
  labels = rng.integers(0, 3, (3, 3))
  ours = float(labeling_energy(jnp.asarray(labels, jnp.int32), unary, w_v, w_h))
  np.testing.assert_allclose(ours, _energies_numpy(labels[None], unary, w_v, w_h)[0], rtol=1e-5)


def test_transport_moves_blocks_without_duplicating_them():
  g, b = 4, 6
  rng = np.random.default_rng(1)
  mask = jnp.asarray(rng.integers(0, 2, (b, g, g)).astype(np.float32)).at[0].set(1.0)
  utility = jnp.asarray(rng.random((b, g, g)).astype(np.float32) + 0.5)
  plan = np.asarray(puzzlemix.transport_plan(mask, utility, t_eps=0.8))
  assert plan.max(axis=2).max() <= 1 and plan.sum(axis=2).max() <= 1 and plan.sum(axis=1).max() <= 1
  images = jnp.asarray(rng.random((b, 16, 16, 3)).astype(np.float32))
  moved = np.asarray(puzzlemix.apply_transport(images, jnp.asarray(plan), g))
  blocks = lambda x: x.reshape(b, g, 4, g, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
  src, dst = blocks(np.asarray(images)), blocks(moved)
  for n in range(b):
    for j in range(g * g):
      winners = np.nonzero(plan[n, :, j])[0]
      expected = src[n, winners[0]] if len(winners) else np.zeros_like(src[n, 0])
      np.testing.assert_array_equal(dst[n, j], expected)
    shown = np.asarray(mask[n]).reshape(-1) > 0
    # every displayed destination got a source, so the displayed blocks are distinct source blocks
    assert plan[n][:, shown].sum(axis=0).min() == 1
  # sample 0 shows every block: the transport is a full permutation, the multiset of blocks is preserved
  assert plan[0].sum() == g * g
  np.testing.assert_array_equal(np.sort(dst[0], axis=0), np.sort(src[0], axis=0))


HP = puzzlemix.PuzzleMix().hyper_parameters()


def _mix(hp, mesh=None, batch=8, seed=0):
  images, labels = constant_batch(batch, size=32)
  saliency = jax.random.uniform(jax.random.key(seed + 1), images.shape[:3])
  fn = jax.jit(
    lambda r, x, s, y: puzzlemix.PuzzleMix().mix(mesh, r, x, s, y, alpha=1.0, hp=hp, mean=(0.0,) * 3, std=(255.0,) * 3)
  )
  return fn(jax.random.key(seed), images, saliency, labels)


def test_label_weight_equals_mask_mean_and_targets_sum_to_one():
  hp = dataclasses.replace(HP, transport=False)
  lams = []
  for seed in range(3):
    result = _mix(hp, seed=seed)
    weight, self_pair = recover_pixel_weight(result)
    lam = np.asarray(result.lam)
    for n in np.nonzero(~self_pair)[0]:
      np.testing.assert_allclose(np.mean(weight[n]), lam[n], atol=1e-5)
      assert set(np.round(np.unique(weight[n]) * 2, 5)) <= {0.0, 1.0, 2.0}  # 3 labels: shares 1, 1/2, 0
    lams.append(lam)
    np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)
  lams = np.concatenate(lams)
  assert np.ptp(lams) > 0  # per-sample λ, not one per batch
  assert np.all((lams >= 0) & (lams <= 1))


def test_puzzlemix_pairs_within_each_device(four_device_mesh):
  result = _mix(HP, mesh=four_device_mesh, batch=16)
  own = np.argmax(np.asarray(result.labels_a), 1)
  partner = np.argmax(np.asarray(result.labels_b), 1)
  assert np.all(own // 4 == partner // 4)
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)


def test_solver_choice_is_checked_and_chain_descent_still_mixes():
  with pytest.raises(ConfigError, match=r"config\.mixing\.args\.puzzlemix\.solver must be 'row_dp' or 'chain_descent'"):
    puzzlemix.PuzzleMix().hyper_parameters(solver="graph_cut")
  with pytest.raises(ValueError, match="chain_descent"):
    puzzlemix.PuzzleMix._check(dataclasses.replace(HP, block_num=8), 64, 64)  # 3^16 states per row
  result = _mix(dataclasses.replace(HP, solver="chain_descent", transport=False, block_num=2))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)


def test_resolution_error_names_the_fix():
  with pytest.raises(ValueError, match="divisible"):
    puzzlemix.check_resolution(36, 36, 4, 4)


def test_picture_mixes_the_photos_with_per_sample_weights():
  """The visualiser's picture (a random small ResNet's saliency): every photo mixed, targets summing to 1."""
  step = puzzlemix.PuzzleMix()
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  draw = pictures.picture_for("puzzlemix").build(step, images, labels, alpha=1.0, hp=step.hyper_parameters())
  result = draw(jax.random.key(1))
  assert result.images.shape == images.shape and np.all(np.isfinite(np.asarray(result.images)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-5)
  assert np.all((np.asarray(result.lam) >= 0) & (np.asarray(result.lam) <= 1))
