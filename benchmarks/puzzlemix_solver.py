"""How close PuzzleMix's on-device labeling solvers come to the true minimum, on problems built from photos.

Problems: random crops of scikit-image photographs at the training resolution, normalised with ImageNet's mean/std,
saliency = input gradient of a randomly initialised ResNet-18 (what PuzzleMix computes, on an untrained model),
a random pairing, the mixing prior a ~ Beta(1, 1), and the benchmark's β = 1.2, γ = 0.5, η = 0.2
(``mixjax.mixing.model_aware.puzzlemix.labeling_problem``). Ground truth: an exact dynamic program over grid rows in float64
numpy (``exact_minimum``; it agrees with brute force on small grids, ``tests/mixing/test_puzzlemix.py``). Compared: mixjax's ``row_dp`` (default) and ``chain_descent`` solvers, and an
α-β swap graph cut (``alpha_beta_swap``: pyGCO's algorithm as the reference runs it — start from all-zero labels,
sweep the label pairs until no swap lowers the energy — with networkx min cuts).

    python benchmarks/puzzlemix_solver.py                    # 8×8 and the other grids of the recipes (2×2, 4×4)
    python benchmarks/puzzlemix_solver.py --grids=8 --problems=400

Prints, per grid and number of labels: the fraction of problems solved exactly (relative gap ≤ 1e-5), mean and
max relative gap (E − E_min)/E_min, and how often each solver is worse / better than the α-β swap. Nothing is
asserted here; ``tests/mixing/test_puzzlemix.py`` asserts the goals (≥ 95% exact, mean gap ≤ 1e-4, never worse
on average than α-β swap) on a smaller sample.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

EXACT_TOL = 1e-5


def label_distance(n_labels: int) -> np.ndarray:
  t = np.arange(n_labels) / (n_labels - 1)
  return (t[:, None] - t[None, :]) ** 2


def energy(labels: np.ndarray, unary: np.ndarray, w_v: np.ndarray, w_h: np.ndarray) -> float:
  """E(ℓ) of one labeling [g, g] (float64)."""
  dist = label_distance(unary.shape[-1])
  g = labels.shape[0]
  rows, cols = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
  e = unary[rows, cols, labels].sum()
  e += (w_v * dist[labels[:-1, :], labels[1:, :]]).sum()
  e += (w_h * dist[labels[:, :-1], labels[:, 1:]]).sum()
  return float(e)


def exact_minimum(unary: np.ndarray, w_v: np.ndarray, w_h: np.ndarray) -> tuple[float, np.ndarray]:
  """(E_min, argmin labels) by dynamic programming over rows, in float64 numpy.

  A row's state is its labeling (L^g of them, an array of shape (L,)*g). The message of row r+1 is its own cost
  plus min over row r's states of (message + Σ_c w_v[r, c]·V(ℓ_c, ℓ'_c)); the vertical cost is a sum over
  columns, so the minimum is taken one column at a time (row r's label of column c replaced by row r+1's),
  keeping the argmin of every step for the backtrack. Checked against brute force on small grids.
  """
  unary, w_v, w_h = (np.asarray(x, np.float64) for x in (unary, w_v, w_h))
  g, _, n_labels = unary.shape
  dist = label_distance(n_labels)
  shape = (n_labels,) * g

  def along(values, axes, ndim):
    view = [1] * ndim
    for size, axis in zip(values.shape, axes):
      view[axis] = size
    return values.reshape(view)

  def row_cost(r):
    cost = np.zeros(shape)
    for c in range(g):
      cost = cost + along(unary[r, c], (c,), g)
    for c in range(g - 1):
      cost = cost + along(w_h[r, c] * dist, (c, c + 1), g)
    return cost

  message = row_cost(0)
  steps = []  # per row transition: the argmin table of each column step
  for r in range(1, g):
    tables = []
    for c in range(g):
      # axis c holds row r−1's label; append row r's label as a new axis c+1, minimise over axis c
      total = np.expand_dims(message, c + 1) + along(w_v[r - 1, c] * dist, (c, c + 1), g + 1)
      tables.append(np.argmin(total, axis=c))
      message = np.min(total, axis=c)
    steps.append(tables)
    message = message + row_cost(r)
  state = list(np.unravel_index(int(np.argmin(message)), shape))
  rows = [list(state)]
  for tables in reversed(steps):
    # undo the column steps in reverse: step c chose row r−1's label of column c given the labels after it
    prev = list(rows[0])
    for c in reversed(range(g)):
      prev[c] = int(tables[c][tuple(prev)])
    rows.insert(0, prev)
  labels = np.array(rows, np.int64)
  return energy(labels, unary, w_v, w_h), labels


def alpha_beta_swap(unary: np.ndarray, w_v: np.ndarray, w_h: np.ndarray, max_sweeps: int = 100) -> np.ndarray:
  """α-β swap (Boykov, Veksler, Zabih, PAMI 2001) from all-zero labels, as pyGCO's ``cut_grid_graph`` runs it.

  Each move relabels the blocks currently labelled α or β optimally between the two by a min cut; moves over all
  label pairs are repeated until a whole sweep lowers the energy no more. Edge weights are ≥ 0 for PuzzleMix
  energies (β' plus a term ≥ −β'γ), so every move is a submodular binary problem.
  """
  import networkx as nx

  unary, w_v, w_h = (np.asarray(x, np.float64) for x in (unary, w_v, w_h))
  g, _, n_labels = unary.shape
  dist = label_distance(n_labels)
  labels = np.zeros((g, g), np.int64)
  edges = [((r, c), (r + 1, c), w_v[r, c]) for r in range(g - 1) for c in range(g)]
  edges += [((r, c), (r, c + 1), w_h[r, c]) for r in range(g) for c in range(g - 1)]
  neighbours = {(r, c): [] for r in range(g) for c in range(g)}
  for p, q, w in edges:
    neighbours[p].append((q, w))
    neighbours[q].append((p, w))
  best = energy(labels, unary, w_v, w_h)
  for _ in range(max_sweeps):
    improved = False
    for alpha, beta in itertools.combinations(range(n_labels), 2):
      active = [p for p in neighbours if labels[p] in (alpha, beta)]
      if not active:
        continue
      members = set(active)
      graph = nx.DiGraph()
      for p in active:
        cost = {}
        for lab in (alpha, beta):
          cost[lab] = unary[p][lab] + sum(w * dist[lab, labels[q]] for q, w in neighbours[p] if q not in members)
        low = min(cost.values())
        graph.add_edge("s", p, capacity=cost[beta] - low)  # cut (p on the sink side) ⇒ p takes β
        graph.add_edge(p, "t", capacity=cost[alpha] - low)  # cut (p on the source side) ⇒ p takes α
      for p, q, w in edges:
        if p in members and q in members:
          graph.add_edge(p, q, capacity=max(w, 0.0) * dist[alpha, beta])
          graph.add_edge(q, p, capacity=max(w, 0.0) * dist[alpha, beta])
      _, (source_side, _) = nx.minimum_cut(graph, "s", "t")
      proposal = labels.copy()
      for p in active:
        proposal[p] = alpha if p in source_side else beta
      e = energy(proposal, unary, w_v, w_h)
      if e < best - 1e-12 * abs(best):
        labels, best, improved = proposal, e, True
    if not improved:
      break
  return labels


def photo_problems(
  count: int, g: int, n_labels: int, size: int = 224, seed: int = 0, batch: int = 16, saliency: str = "gradient"
):
  """``count`` labeling problems (unary [g, g, L], w_v, w_h as float32 numpy) built from scikit-image photos.

  ``saliency='gradient'``: PuzzleMix's input-gradient saliency of a random ResNet-18 (diffuse: an untrained
  net). ``'fine_grained'``: the photo's fine-grained static saliency, a peaked, object-centred stand-in for
  the concentrated saliency of a trained net.
  """
  import jax
  import jax.numpy as jnp
  from skimage import data, transform

  from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD
  from mixjax.mixing.model_aware import puzzlemix
  from mixjax.visualize.stand_ins import small_cnn_saliency

  names = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "moon",
    "page",
    "motorcycle_left",
    "cat",
  )
  photos = []
  for name in names:
    try:
      image = getattr(data, name)()
    except Exception:  # noqa: BLE001  (a photo that needs a download: skip it)
      continue
    if image.ndim == 2:
      image = np.stack([image] * 3, -1)
    photos.append(image[..., :3])
  rng = np.random.default_rng(seed)
  hp = puzzlemix.PuzzleMix().hyper_parameters(n_labels=n_labels)
  mean = jnp.asarray(IMAGENET_MEAN)
  std = jnp.asarray(IMAGENET_STD)
  problem = jax.jit(lambda x, s, p, a: puzzlemix.labeling_problem(x, s, p, a, g=g, hp=hp, mean=mean, std=std)[1:])
  from mixjax.mixing.ops.saliency import fine_grained_saliency

  if saliency == "gradient":
    saliency_fn = jax.jit(small_cnn_saliency)
  else:
    saliency_fn = jax.jit(lambda x, _: jax.vmap(lambda im: fine_grained_saliency(im * std + mean))(x))
  out = []
  while len(out) < count:
    crops = []
    for _ in range(batch):
      photo = photos[rng.integers(len(photos))]
      h, w = photo.shape[:2]
      side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
      top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
      crop = transform.resize(photo[top : top + side, left : left + side], (size, size), preserve_range=True)
      crops.append(crop)
    images = ((np.stack(crops) - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).astype(np.float32)
    labels = jax.nn.one_hot(rng.integers(0, 10, batch), 10)
    saliency = saliency_fn(jnp.asarray(images), labels)
    perm = jnp.asarray(rng.permutation(batch))
    a = jnp.float32(rng.beta(1.0, 1.0))
    unary, w_v, w_h = (np.asarray(v) for v in problem(jnp.asarray(images), saliency, perm, a))
    for i in range(batch):
      out.append((unary[i], w_v[i], w_h[i]))
  return out[:count]


def evaluate(problems, solvers: dict, with_swap: bool = True) -> dict:
  """Per solver: relative gaps to the exact minimum, and the α-β swap's gaps (key 'alpha_beta_swap')."""
  import jax
  import jax.numpy as jnp

  unary = jnp.asarray(np.stack([p[0] for p in problems]))
  w_v = jnp.asarray(np.stack([p[1] for p in problems]))
  w_h = jnp.asarray(np.stack([p[2] for p in problems]))
  minima = np.array([exact_minimum(*p)[0] for p in problems])
  gaps = {}
  for name, solve in solvers.items():
    labels = np.asarray(jax.jit(jax.vmap(solve))(unary, w_v, w_h))
    energies = np.array([energy(labels[i], *problems[i]) for i in range(len(problems))])
    gaps[name] = (energies - minima) / np.abs(minima)
  if with_swap:
    energies = np.array([energy(alpha_beta_swap(*p), *p) for p in problems])
    gaps["alpha_beta_swap"] = (energies - minima) / np.abs(minima)
  return gaps


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grids", default="2,4,8")
  parser.add_argument("--labels", default="2,3")
  parser.add_argument("--problems", type=int, default=160)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--sweeps", type=int, default=3, help="chain_descent sweeps (the default hp)")
  parser.add_argument("--saliency", default="gradient,fine_grained", help="problem families (photo_problems)")
  args = parser.parse_args()

  from mixjax.mixing.ops.puzzlemix_solver import solve_labeling

  solvers = {
    "row_dp": lambda u, v, h: solve_labeling(u, v, h, method="row_dp"),
    "chain_descent": lambda u, v, h: solve_labeling(u, v, h, sweeps=args.sweeps, method="chain_descent"),
  }
  print(
    f"{'saliency':>12} {'grid':>5} {'L':>2} {'solver':>16} {'exact':>7} {'mean gap':>10} {'max gap':>10} "
    f"{'worse than swap':>16} {'better than swap':>17}"
  )
  for family, g, n_labels in itertools.product(
    args.saliency.split(","), (int(x) for x in args.grids.split(",")), (int(x) for x in args.labels.split(","))
  ):
    problems = photo_problems(args.problems, g, n_labels, size=args.size, seed=g * 10 + n_labels, saliency=family)
    gaps = evaluate(problems, solvers)
    swap = gaps["alpha_beta_swap"]
    for name, gap in gaps.items():
      worse = np.mean(gap > swap + EXACT_TOL) if name != "alpha_beta_swap" else float("nan")
      better = np.mean(gap < swap - EXACT_TOL) if name != "alpha_beta_swap" else float("nan")
      print(
        f"{family:>12} {g:>5} {n_labels:>2} {name:>16} {np.mean(gap <= EXACT_TOL):>7.1%} {gap.mean():>10.2e} "
        f"{gap.max():>10.2e} {worse:>16.1%} {better:>17.1%}"
      )


if __name__ == "__main__":
  main()
