"""Co-Mixup on device: the per-output labelling against brute force, the whole solver against the authors'
algorithm and the exact optimum, and the mix itself (label weights = pixel areas, groups stay on their device)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing.model_aware import comixup
from mixjax.mixing.ops import comixup_solver as cs
from mixjax.visualize import pictures
from tests.mixing.conftest import constant_batch
from tests.mixing.test_model_aware import _small_ctx

HP = comixup.CoMixup().hyper_parameters()


def _hp(**overrides):
  return dataclasses.replace(HP, **overrides)


SOLVE_KW = dict(beta=0.32, gamma=1.0, thres=0.83)


def _grid_energy(labels, unary, dist, beta):
  """Σ U + β Σ_edges V of labellings [N, g, g] (numpy brute force)."""
  n_labels = unary.shape[-1]
  e = np.take_along_axis(np.broadcast_to(unary, labels.shape + (n_labels,)), labels[..., None], -1)[..., 0]
  e = e.sum((1, 2))
  e += beta * dist[labels[:, :-1], labels[:, 1:]].sum((1, 2)) + beta * dist[labels[:, :, :-1], labels[:, :, 1:]].sum(
    (1, 2)
  )
  return e


def _output_problem(rng, m, g, allow_pairs=True):
  counts = jnp.asarray((rng.integers(0, 3, m) * rng.integers(0, 2, m)).astype(np.float32))
  first, second, active = cs.label_tables(counts, allow_pairs, True)
  f, s, a = (np.asarray(x) for x in (first, second, active))
  cost = (rng.normal(size=(m, g, g)) * 0.1).astype(np.float32)
  unary = 0.5 * (cost[f] + cost[s]).transpose(1, 2, 0) - cs.PAIR_BONUS * (f != s) + cs.BIG * ~a
  dist, partners = cs.pair_distance(first, second, active)
  return unary.astype(np.float32), dist, partners


def _exact_output_solver(unary, dist, beta_k):
  """``reference_solve``'s per-output step done by the jittable exact DP (partners recovered from V)."""

  def one(u, d):
    flag, idx = jax.lax.top_k((d == cs.PAIR_WEIGHT).astype(jnp.int32), 2)
    partners = jnp.where(flag > 0, idx, jnp.arange(d.shape[0])[:, None])
    return cs.solve_output_exact(u, d, partners, beta_k)

  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(unary, jnp.float32), jnp.asarray(dist, jnp.float32)))


def _problems(rng, count, m, g, omega=0.0):
  sal = np.exp(2.0 * rng.normal(size=(count, m, g, g)))
  sal /= sal.sum((2, 3), keepdims=True)
  prior = rng.dirichlet(np.ones(m), size=count)
  unary = (-sal - 0.05 / g**2 * np.log(prior + 1e-8)[:, :, None, None]).astype(np.float32)
  dist = rng.integers(1, 6, (count, m, m)).astype(np.float32)
  dist = (dist + dist.transpose(0, 2, 1)) * (1 - np.eye(m))
  dist = dist / dist.sum((1, 2), keepdims=True) * m
  compat = ((1 - omega) * np.eye(m) + omega * dist).astype(np.float32)
  return rng.integers(0, m, (count, m, g, g)), unary, compat


# ---------------------------------------------------------------- the solver


@pytest.mark.parametrize("m,g", [(3, 2), (4, 2), (2, 3)])
def test_output_labelling_is_the_brute_force_minimum_and_never_worse_than_alpha_beta_swap(m, g):
  rng = np.random.default_rng(m * 10 + g)
  solve = jax.jit(cs.solve_output_exact)
  for beta in (0.01, 0.1, 0.5):
    unary, dist, partners = _output_problem(rng, m, g)
    n_labels = unary.shape[-1]
    configs = np.array(list(itertools.product(range(n_labels), repeat=g * g))).reshape(-1, g, g)
    energies = _grid_energy(configs, unary, np.asarray(dist), beta)
    ours = _grid_energy(np.asarray(solve(unary, dist, partners, beta))[None], unary, np.asarray(dist), beta)[0]
    assert ours == pytest.approx(energies.min(), abs=1e-5)
    swap = cs.alpha_beta_swap_np(unary[None].astype(np.float64), np.asarray(dist, np.float64)[None], beta)
    assert ours <= _grid_energy(swap, unary, np.asarray(dist), beta)[0] + 1e-5
    assert ours < np.median(energies) - 1e-3  # a wrong solver would land anywhere in the distribution


@pytest.mark.parametrize("omega,thres,thres_type", [(0.0, 0.83, "hard"), (0.3, 0.5, "soft"), (0.0, 0.0, "hard")])
def test_solver_runs_the_authors_passes(omega, thres, thres_type):
  """``solve`` (jitted, vmapped) gives the labels of the numpy transcription of the authors' algorithm when both
  solve each output step exactly: the passes, modular penalties, pair labels, set_resolve and early stop agree."""
  rng = np.random.default_rng(int(thres * 100) + int(omega * 10))
  init, unary, compat = _problems(rng, 12, 5, 3, omega=omega)
  kw = dict(SOLVE_KW, thres=thres, thres_type=thres_type)
  first, second = jax.jit(jax.vmap(lambda i, u, a: cs.solve(i, u, a, **kw)))(init, unary, compat)
  ref_first, ref_second = cs.reference_solve(init, unary, compat, output_solver=_exact_output_solver, **kw)
  same = np.all((np.asarray(first) == ref_first) & (np.asarray(second) == ref_second), axis=(1, 2, 3))
  assert same.mean() >= 0.9  # float32 vs float64 costs may break an exact tie differently
  if thres > 0:  # (τ = 0 penalises any reuse of an input: the outputs become copies)
    assert np.any(np.asarray(first) != np.asarray(second))  # pair (blended) blocks were used
  ours = cs.objective_np(first, second, unary, compat, thres=thres, thres_type=thres_type, beta=0.32, gamma=1.0)
  start = cs.objective_np(init, init, unary, compat, thres=thres, thres_type=thres_type, beta=0.32, gamma=1.0)
  assert np.all(ours < start)


def test_solver_on_tiny_problems_reaches_the_brute_force_optimum_as_often_as_the_authors_algorithm():
  """Two inputs: the authors' α-β swap is exact on two labels, so both run the same algorithm here."""
  rng = np.random.default_rng(7)
  init, unary, compat = _problems(rng, 24, 2, 2)
  kw = dict(SOLVE_KW, pair_labels=False)
  first, second = jax.jit(jax.vmap(lambda i, u, a: cs.solve(i, u, a, **kw)))(init, unary, compat)
  obj = dict(SOLVE_KW)
  ours = cs.objective_np(first, second, unary, compat, **obj)
  ref = cs.objective_np(*cs.reference_solve(init, unary, compat, **kw), unary, compat, **obj)
  exact = np.array([cs.brute_force(unary[i], compat[i], **obj)[0] for i in range(len(unary))])
  rand = cs.objective_np(rng.integers(0, 2, init.shape), rng.integers(0, 2, init.shape), unary, compat, **obj)
  assert np.all(ours >= exact - 1e-5) and np.all(ref >= exact - 1e-5)
  assert np.mean(ours <= exact + 1e-5) >= 0.7  # the modular approximation is a heuristic (measured: 70-96%)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
  assert np.mean(rand <= exact + 1e-5) < 0.5  # random labellings do not pass this test


def test_objective_is_the_authors_obj_fn_without_threshold():
  """τ = 0, A = I, pure labels: F = unary + β/2 Σ|Δ mask| + γ Σ_{j≠j'} c_j·c_j' (the authors' obj_fn), the
  quantity ``monitored_objective`` stops the passes on."""
  rng = np.random.default_rng(3)
  init, unary, compat = _problems(rng, 4, 4, 3)
  labels = rng.integers(0, 4, init.shape)
  f = cs.objective_np(labels, labels, unary, compat, beta=0.32, gamma=1.0, thres=0.0)
  for i in range(4):
    masks = np.eye(4)[labels[i]]  # [m, g, g, m]
    counts = masks.sum((1, 2))
    k = 9
    expected = (unary[i].transpose(1, 2, 0)[None] * masks).sum()
    expected += 0.32 / k / 2 * (np.abs(np.diff(masks, axis=1)).sum() + np.abs(np.diff(masks, axis=2)).sum())
    expected += 1.0 / k * ((counts.sum(0) ** 2).sum() - (counts**2).sum())
    assert f[i] == pytest.approx(expected, rel=1e-6)
    monitored = cs.monitored_objective(jnp.asarray(masks, jnp.float32), jnp.asarray(unary[i]), 0.32 / k, 1.0 / k)
    assert float(monitored) == pytest.approx(expected, rel=1e-5)


def test_resolve_costs_separate_outputs_with_the_same_inputs():
  counts = jnp.asarray([[2.0, 0, 3, 0], [1, 0, 4, 0], [0, 5, 0, 0], [0, 5, 0, 0], [1, 0, 1, 0]])
  add = np.asarray(cs.resolve_costs(counts))
  expected = np.zeros((5, 4))
  expected[0, 0] = 1  # pairs (0, 1), (0, 4), (1, 4) show {0, 2}: earlier output pays on 0, later on 2
  expected[1, 0] = expected[1, 2] = 1
  expected[4, 2] = 1
  np.testing.assert_array_equal(add, expected)  # outputs 2 and 3 show one input each: no cost


# ---------------------------------------------------------------- the mix


def _encoded_batch(batch, size=32, dtype=jnp.float32):
  """Constant images (conftest): channel 0 = i + 1, channel 1 = (i + 1)², so a ½/½ blend can be decoded."""
  images, labels = constant_batch(batch, size=size)
  v = images[..., :1]
  return jnp.concatenate([v, v**2, jnp.zeros_like(v)], -1).astype(dtype), labels


def _decode_sources(images):
  """Per pixel the two inputs (0-based) it blends, equal for a pure pixel: [B, H, W] each."""
  x = np.asarray(images, np.float64)
  s, q = 2 * x[..., 0], 2 * x[..., 1]
  p = (s**2 - q) / 2
  root = np.sqrt(np.maximum(s**2 / 4 - p, 0))
  return np.rint(s / 2 - root).astype(int) - 1, np.rint(s / 2 + root).astype(int) - 1


def _peaked_saliency(seed, batch, size=32, grid=4):
  blocks = jnp.exp(3 * jax.random.normal(jax.random.key(seed), (batch, grid, grid)))
  return jnp.repeat(jnp.repeat(blocks, size // grid, 1), size // grid, 2)


def _mix(hp, batch=8, seed=0, mesh=None, dtype=jnp.float32):
  images, labels = _encoded_batch(batch, dtype=dtype)
  saliency = _peaked_saliency(seed + 100, batch)
  fn = jax.jit(lambda r, x, s, y: comixup.CoMixup().mix(mesh, r, x, s, y, alpha=2.0, hp=hp))
  return fn(jax.random.key(seed), images, saliency, labels)


def test_label_weights_are_the_pixel_areas_and_targets_sum_to_one():
  hp = _hp(m_part=4)
  mixed_outputs = pair_pixels = 0
  for seed in range(3):
    result = _mix(hp, seed=seed)
    a, b = _decode_sources(result.images)
    area = 0.5 * (np.eye(8)[a] + np.eye(8)[b]).mean((1, 2))  # [B, inputs]
    targets = np.asarray(result.targets)
    np.testing.assert_allclose(targets, area, atol=1e-6)
    assert np.all(targets >= 0)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(result.lam), area.max(1), atol=1e-6)
    np.testing.assert_array_equal(np.argmax(np.asarray(result.labels_a), 1), np.argmax(area, 1))
    assert np.all((area > 0)[:4, 4:] == 0) and np.all((area > 0)[4:, :4] == 0)  # groups of 4 consecutive samples
    mixed_outputs += int(np.sum((area > 0).sum(1) >= 2))
    pair_pixels += int(np.sum(a != b))
  assert mixed_outputs > 0 and pair_pixels > 0  # the check above saw real mixes and blended blocks


def test_same_key_same_mix():
  hp = _hp(m_part=4)
  first, second = _mix(hp, seed=1), _mix(hp, seed=1)
  for x, y in zip(first, second):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_groups_stay_within_each_device(four_device_mesh):
  result = _mix(_hp(m_part=2), batch=16, mesh=four_device_mesh)
  targets = np.asarray(result.targets)
  device = np.arange(16) // 4
  group = np.arange(16) // 2
  assert np.all((targets > 0) <= (device[:, None] == device[None, :]))
  assert np.all((targets > 0) <= (group[:, None] == group[None, :]))
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_bfloat16_images_keep_their_dtype():
  result = _mix(_hp(m_part=4), dtype=jnp.bfloat16)
  assert result.images.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(result.images, np.float32)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)


def test_chain_solver_and_soft_threshold_still_mix():
  result = _mix(_hp(m_part=4, solver="chain", m_thres_type="soft", prior_alpha="alpha"))
  a, b = _decode_sources(result.images)
  area = 0.5 * (np.eye(8)[a] + np.eye(8)[b]).mean((1, 2))
  np.testing.assert_allclose(np.asarray(result.targets), area, atol=1e-6)


@pytest.mark.parametrize(
  "overrides,match",
  [
    (dict(m_part=3), "m_part"),  # 8 samples per device
    (dict(m_block_num=5), "m_block_num"),
    (dict(m_omega=2.0), "m_omega"),
    (dict(prior_alpha=0.0), "prior_alpha"),
    (dict(m_part=8, m_block_num=8), "solver='chain'"),
  ],
)
def test_bad_hyper_parameters_name_the_fix(overrides, match):
  with pytest.raises(ValueError, match=match):
    _mix(_hp(**overrides))


def test_clean_pass_is_trained_with_weight_clean_lam():
  """With clean_lam > 0 the step's loss is CE(mixed) + clean_lam·CE(clean, train mode); the mix does not depend
  on clean_lam, so two weights differ by exactly the clean loss. (The demo trains through its gradient.)"""
  ctx, state, images, labels = _small_ctx()
  method = comixup.CoMixup()
  key = jax.random.key(0)

  @jax.jit
  def losses(params, stats, images, labels):
    out = [
      method.loss(
        ctx,
        key,
        params,
        stats,
        None,
        images,
        labels,
        alpha=2.0,
        hp=_hp(m_part=4, m_block_num=2, m_niter=1, clean_lam=w),
      )
      for w in (1.0, 2.0)
    ]
    logits, _ = ctx.model_fn(params, stats, images, train=True, rng=jax.random.split(key, 3)[1])
    clean = jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits), -1))
    return out[0][0], out[1][0], out[0][1][2]["clean_loss"], clean

  one, two, reported, clean = (float(v) for v in losses(state.params, state.batch_stats, images, labels))
  assert reported == pytest.approx(clean, rel=1e-5)
  assert two - one == pytest.approx(clean, rel=1e-4)


def test_picture_mixes_the_photos_as_one_group():
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  step = comixup.CoMixup()
  result = pictures.picture_for("comixup").build(step, images, labels, alpha=1.0, hp=HP)(jax.random.key(1))
  assert result.images.shape == images.shape and np.all(np.isfinite(np.asarray(result.images)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)
