"""How Co-Mixup's on-device solver compares with the authors' algorithm and with the exact optimum.

Objective: F of ``mixjax.mixing.ops.comixup_solver`` (saliency + prior, smoothness β, thresholded supermodular
diversity γ with compatibility A), in float64.

Settings:

* ``imagenet/<saliency>``: the benchmark's ImageNet setting — groups of m = 16 random crops (224 px) of
  scikit-image photographs (``mixjax.visualize.load_photos``), a 4×4 label grid and every registered default of
  ``comixup`` (β 0.32, γ 1, η 0.05, τ 0.83, ω 0.001, 3 passes, set_resolve, blended pair blocks); the unary,
  prior and A built exactly as the method builds them (``comixup.group_unary``/``compatibility``). Saliency
  ``gradient``: the input gradient of a randomly initialised ResNet (what the method computes, on an untrained
  net: diffuse); ``fine_grained``: the photos' fine-grained static saliency (peaked, object-centred, a stand-in for
  a trained net's). Compared: mixjax's ``solve`` (exact DP per output step) against the authors' algorithm
  (``reference_solve``: the same passes with an α-β swap from all-zero labels per output step, as pyGCO runs it),
  both from the same random start.
* ``tiny m×g²``: small random problems (peaked random saliency, the same defaults, pure labels only) where every
  labelling can be enumerated (``brute_force``): both solvers against the exact minimum.

Columns: ``reached`` = share of problems with F ≤ F_ref + 1e-6·max(|F_ref|, 1); ``better`` = F < F_ref − that
tolerance; gaps (F − F_ref)/|F_ref| (negative: better than the reference); ``gap/m`` = (F − F_ref)/m in units of
one image's total saliency; time per problem (CPU, after compiling).

    python benchmarks/comixup_solver.py            # about 2 minutes of CPU time on 2 cores (mostly compiling)
    python benchmarks/comixup_solver.py --quick    # ~15 s: 2 groups of 4 small crops, one tiny setting
    python benchmarks/comixup_solver.py --problems=100 --tiny_problems=100   # the solver docstring's table
"""

from __future__ import annotations

import argparse
import time

import numpy as np

PHOTO_NAMES = (
  "astronaut",
  "coffee",
  "chelsea",
  "rocket",
  "motorcycle_left",
  "immunohistochemistry",
  "hubble_deep_field",
)
TOL = 1e-6


def _hp(**overrides):
  from mixjax.mixing.model_aware.comixup import CoMixup

  return CoMixup().hyper_parameters(**overrides)


def _objective_kwargs(hp):
  return dict(beta=hp.m_beta, gamma=hp.m_gamma, thres=hp.m_thres, thres_type=hp.m_thres_type)


def photo_problems(count: int, *, saliency: str, m: int = 16, size: int = 224, seed: int = 0, hp=None):
  """``count`` groups (init [m, g, g], unary [m, g, g], A [m, m]) from random photo crops."""
  import jax
  import jax.numpy as jnp
  from skimage import transform

  from mixjax import visualize
  from mixjax.mixing.model_aware import comixup
  from mixjax.visualize.stand_ins import small_cnn_saliency
  from mixjax.mixing.ops.saliency import fine_grained_saliency

  hp = hp or _hp()
  names = []
  for name in PHOTO_NAMES:
    try:
      visualize.load_photos(8, (name,))
      names.append(name)
    except Exception:  # noqa: BLE001  (a photo that needs a download: skip it)
      continue
  photos = visualize.load_photos(2 * size, names)  # [N, 2s, 2s, 3] in [0, 1]
  mean, std = visualize.IMAGENET_MEAN, visualize.IMAGENET_STD
  rng = np.random.default_rng(seed)
  if saliency == "gradient":
    saliency_fn = jax.jit(small_cnn_saliency)
  else:
    saliency_fn = jax.jit(lambda x, _: jax.vmap(lambda im: fine_grained_saliency(255.0 * (im * std + mean)))(x))
  grid = hp.m_block_num

  @jax.jit
  def build(key, sal):
    k_prior, k_init = jax.random.split(key)
    unary = comixup.group_unary(k_prior, sal, grid=grid, eta=hp.m_eta, prior_alpha=comixup.prior_concentration(hp, 2.0))
    compat = comixup.compatibility(sal, hp.m_omega, hp.dist_pool)
    return jax.random.randint(k_init, (m, grid, grid), 0, m), unary, compat

  out = []
  for i in range(count):
    crops = []
    for _ in range(m):
      photo = photos[rng.integers(len(photos))]
      side = int(rng.integers(size // 2, 2 * size + 1))
      top, left = rng.integers(0, 2 * size - side + 1, size=2)
      crops.append(transform.resize(photo[top : top + side, left : left + side], (size, size), order=1))
    images = ((np.stack(crops) - mean) / std).astype(np.float32)
    labels = jax.nn.one_hot(rng.integers(0, 10, m), 10)
    sal = saliency_fn(jnp.asarray(images), labels)
    out.append(tuple(np.asarray(v) for v in build(jax.random.key(seed * 100_003 + i), sal)))
  return out


def tiny_problems(count: int, m: int, g: int, seed: int = 0, hp=None):
  """Random problems small enough for brute force: peaked block saliency (exp of a Gaussian), the prior, A = I."""
  hp = hp or _hp()
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    sal = np.exp(2.0 * rng.normal(size=(m, g, g)))
    sal /= sal.sum((1, 2), keepdims=True)
    prior = rng.dirichlet(np.ones(m))
    unary = -sal - hp.m_eta / g**2 * np.log(prior + 1e-8)[:, None, None]
    out.append((rng.integers(0, m, (m, g, g)), unary.astype(np.float32), np.eye(m, dtype=np.float32)))
  return out


_COMPILED = {}


def run_ours(problems, hp):
  """(first, second) [P, m, g, g] and seconds per problem (compiled once per shape and settings, before timing)."""
  import jax

  from mixjax.mixing.model_aware import comixup
  from mixjax.mixing.ops.comixup_solver import solve

  kwargs = dict(comixup.pass_arguments(hp), solver=hp.solver, sweeps=hp.solver_sweeps)
  init, unary, compat = (np.stack([p[i] for p in problems]) for i in range(3))
  key = (tuple(sorted(kwargs.items())), init.shape)
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(jax.vmap(lambda i, u, a: solve(i, u, a, **kwargs))).lower(init, unary, compat).compile()
  fn = _COMPILED[key]
  start = time.perf_counter()
  first, second = jax.block_until_ready(fn(init, unary, compat))
  return np.asarray(first), np.asarray(second), (time.perf_counter() - start) / len(problems)


def run_reference(problems, hp):
  from mixjax.mixing.model_aware import comixup
  from mixjax.mixing.ops.comixup_solver import reference_solve

  init, unary, compat = (np.stack([p[i] for p in problems]) for i in range(3))
  start = time.perf_counter()
  first, second = reference_solve(init, unary, compat, **comixup.pass_arguments(hp))
  return first, second, (time.perf_counter() - start) / len(problems)


def objectives(problems, first, second, hp):
  from mixjax.mixing.ops.comixup_solver import objective_np

  unary = np.stack([p[1] for p in problems])
  compat = np.stack([p[2] for p in problems])
  return objective_np(first, second, unary, compat, **_objective_kwargs(hp))


def row(setting, solver, versus, f, f_ref, m, seconds):
  tol = TOL * np.maximum(np.abs(f_ref), 1.0)
  rel = (f - f_ref) / np.abs(f_ref)
  per_output = (f - f_ref) / m
  return (
    f"{setting:>21} {solver:>14} {versus:>7} {len(f):>4} {np.mean(f <= f_ref + tol):>7.0%}"
    f" {np.mean(f < f_ref - tol):>6.0%} {np.mean(f > f_ref + tol):>6.0%} {np.mean(f) / m:>+9.4f}"
    f" {per_output.mean():>+10.2e} {per_output.max():>+10.2e}"
    f" {rel.mean():>+10.2e} {rel.max():>+10.2e} {seconds * 1e3:>9.1f}"
  )


HEADER = (
  f"{'setting':>21} {'solver':>14} {'vs':>7} {'n':>4} {'reached':>7} {'better':>6} {'worse':>6} {'F/m':>9}"
  f" {'mean gap/m':>10} {'max gap/m':>10} {'mean rel':>10} {'max rel':>10} {'ms/problem':>9}"
)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--problems", type=int, default=16, help="groups per ImageNet-setting saliency family")
  parser.add_argument("--tiny_problems", type=int, default=20, help="problems per brute-force setting")
  parser.add_argument("--tiny", default="2x2,3x2,2x3", help="brute-force settings: m x grid side")
  parser.add_argument("--saliency", default="gradient,fine_grained")
  parser.add_argument("--group", type=int, default=16, help="inputs per group (m_part) of the ImageNet setting")
  parser.add_argument("--quick", action="store_true", help="a handful of small problems (groups of 4, 64 px)")
  args = parser.parse_args(argv)
  size = 224
  if args.quick:
    args.problems, args.tiny_problems, size, args.saliency, args.tiny, args.group = 2, 3, 64, "fine_grained", "2x2", 4

  from mixjax.mixing.ops.comixup_solver import brute_force

  print(HEADER)
  hp = _hp()
  for family in args.saliency.split(","):
    problems = photo_problems(args.problems, saliency=family, m=args.group, size=size, seed=1)
    rf, rs, rt = run_reference(problems, hp)
    of, os_, ot = run_ours(problems, hp)
    f_ref, f_ours = objectives(problems, rf, rs, hp), objectives(problems, of, os_, hp)
    f_rand = objectives(problems, *(np.stack([p[0] for p in problems]),) * 2, hp)
    setting = f"imagenet/{family}" if args.group == 16 else f"m={args.group}/{family}"
    print(row(setting, "mixjax row_dp", "authors", f_ours, f_ref, args.group, ot))
    print(row(setting, "authors (α-β)", "authors", f_ref, f_ref, args.group, rt))
    print(row(setting, "random start", "authors", f_rand, f_ref, args.group, 0.0), flush=True)
  tiny_hp = _hp(pair_labels=False)
  for m, g in (tuple(int(v) for v in t.split("x")) for t in args.tiny.split(",")):
    problems = tiny_problems(args.tiny_problems, m, g, seed=m * 10 + g, hp=tiny_hp)
    start = time.perf_counter()
    exact = np.array([brute_force(p[1], p[2], **_objective_kwargs(tiny_hp))[0] for p in problems])
    bt = (time.perf_counter() - start) / len(problems)
    rf, rs, rt = run_reference(problems, tiny_hp)
    of, os_, ot = run_ours(problems, tiny_hp)
    setting = f"tiny m={m} {g}x{g}"
    print(row(setting, "mixjax row_dp", "exact", objectives(problems, of, os_, tiny_hp), exact, m, ot))
    print(row(setting, "authors (α-β)", "exact", objectives(problems, rf, rs, tiny_hp), exact, m, rt))
    print(row(setting, "brute force", "exact", exact, exact, m, bt), flush=True)


if __name__ == "__main__":
  main()
