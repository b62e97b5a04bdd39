"""Co-Mixup's joint block labelling of a group of m inputs into m outputs, solved on device (jittable).

Kim, Choo, Jeong, Song, "Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity", ICLR 2021, §3-4.
Every output j is a g×g grid of blocks; each block shows one input (a *pure* label i) or, after the first
iteration, a 50/50 blend of two of the inputs the output already uses (a *pair* label {a, b}; the authors'
``graphcut_wrapper``, comix-imagenet/lib/utils.py). With c_j ∈ R^m the input counts of output j (a pair block
counts ½ for each of its inputs) and K = g² the objective is

    F(z) = Σ_j Σ_blocks [u(ℓ) − ε·[ℓ is a pair]] + β/K · Σ_j Σ_edges V(ℓ, ℓ')
           + γ/K · Σ_j Σ_i h((A P_j)_i) · c_ji,        P_j = Σ_{j'≠j} c_j'

* u = −(block saliency, normalised to sum 1 per input) − η/K·log π_i, π ~ Dirichlet (the prior), a pair's u
  the mean of its two inputs', ε = 5e-4 (the authors' ``cost_add = mean − 5e-4``);
* V = 0 for equal labels, 1/4 between a pair and either of its inputs, 1 otherwise (the authors' graph-cut
  ``pairwise`` matrix);
* the supermodular diversity term with the authors' threshold τ·K and compatibility A = (1−ω)I + ω·A_dist
  (h(x) = x·[x > τK] for ``thres_type='hard'``, (x − τK)₊ for 'soft'). With τ = 0 and A = I it is exactly
  γ/K·Σ_{j≠j'} c_j·c_j', the quantity the authors' ``obj_fn`` monitors, and with pure labels and A = I it is
  their ``obj_fn_thres`` (match.py).

Algorithm (the authors' ``get_onehot_matrix``, iterative modular approximation): random pure labels; ``niter``
Gauss-Seidel passes over the outputs; output j's labelling is re-solved with the supermodular term replaced by
its modular approximation at the other outputs, 2γ/K·h(A P_j)_i per block showing input i (exact for τ = 0), plus
γ/K on the first/second input of outputs whose sets of inputs coincide (``set_resolve``, added after pass
niter−2); a pass that changes the authors' ``obj_fn`` by < 1e-6 (relative) ends the loop. The difference to
the authors: they solve each output's labelling (a Potts-like multi-label problem on the g×g grid, m + 3 labels)
with pyGCO's α-β swap graph cut on the CPU, a local minimum; ``solve`` here finds its exact minimum on device by
dynamic programming over grid rows (``solver='row_dp'``: a row is one of L^g states; the Potts structure of V
makes the min over the previous row's state O(L^g) per column), or, for grids where L^g is too large, with
block-coordinate descent by exact chain (Viterbi) updates of rows and columns (``solver='chain'``).

Measured by ``python benchmarks/comixup_solver.py --problems=100 --tiny_problems=100`` (same random start, saliency
and prior for both; the reference is ``reference_solve``: the authors' passes in float64 numpy with an exact α-β
swap from all-zero labels per output step, as pyGCO's ``cut_grid_graph(algorithm='swap')`` runs it, without
pyGCO's integer rounding of the costs). ImageNet setting: groups of m = 16 random 224-px crops of scikit-image
photographs, 4×4 grid, the registered defaults; saliency of a random ResNet (diffuse) or the photos'
fine-grained saliency (peaked). "reached" = F ≤ F_ref + 1e-6·max(|F_ref|, 1); gap/m = (F − F_ref)/m in units of
one image's total saliency (negative: lower F than the reference):

    setting                 vs          reached  better  worse   mean gap/m   max gap/m   mean F/m (ref)
    ImageNet, ResNet grad   authors     97%      5%      3%      −0.023       +0.50       −0.793 (−0.770)
    ImageNet, fine-grained  authors     51%      51%     49%     −0.015       +1.85       −0.216 (−0.201)
    m=2, 2×2 (pure labels)  brute force 86%      –       14%     +0.060       +0.74       the authors': the same
    m=3, 2×2 (pure labels)  brute force 22%      –       78%     +0.153       +0.93       the authors': 21%, +0.155
    m=2, 3×3 (pure labels)  brute force 70%      –       30%     +0.162       +0.86       the authors': the same

On average the on-device solver is as good as the authors' algorithm or slightly better, but problem by problem it
is a different run of the same heuristic: with peaked saliency the thresholded diversity term makes the outcome of
the three passes sensitive to each step, and either run lands in the better local solution about half the time.
Both are far from a random labelling (F/m ≈ +10.6) and reach the exact optimum of tiny problems equally often.
With two labels per output the α-β swap is exact, so there the two runs coincide.

``reference_solve`` and ``brute_force`` are float64 numpy references for tests and the benchmark only.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mixjax.mixing.ops.puzzlemix_solver import chain_viterbi

PAIR_BONUS = 5e-4  # the authors' "− 5e-4" on a pair label's unary (graphcut_wrapper)
PAIR_WEIGHT = 0.25  # the authors' pairwise cost between a pair label and either of its inputs
BIG = 1e4  # unary of a label slot that is not available to an output (never chosen)
SOLVERS = ("row_dp", "chain")
MAX_ROW_STATES = 2**21  # row_dp keeps g tables of L^g floats per output


def num_labels(m: int, pair_labels: bool) -> int:
  """Label slots per block: m pure labels, plus the pair slots (3, or 1 for a group of two inputs)."""
  return m + ((3 if m >= 3 else 1) if pair_labels else 0)


def row_states(m: int, g: int, pair_labels: bool) -> int:
  return num_labels(m, pair_labels) ** g


# ----------------------------------------------------------------------------------------------------------------
# One output's labelling
# ----------------------------------------------------------------------------------------------------------------


def label_tables(counts: jax.Array, allow_pairs, pair_labels: bool):
  """The label slots of one output: (first [L], second [L], active [L] bool).

  Pure label i is (i, i); a pair slot (a, b) with a < b blends inputs a and b. As the authors'
  ``graphcut_wrapper``: from the second pass on (``allow_pairs``), an output that shows exactly two inputs may
  blend those two; one that shows three or more may blend any two of its three most used inputs (by count, ties
  to the lower index) — slots (a, b), (a, c), (b, c) with a < b < c.
  """
  m = counts.shape[0]
  pure = jnp.arange(m, dtype=jnp.int32)
  if not pair_labels:
    return pure, pure, jnp.ones((m,), bool)
  used = jnp.where(allow_pairs, jnp.sum(counts > 0), 0)
  if m < 3:
    first, second = jnp.array([0], jnp.int32), jnp.array([1], jnp.int32)
    active = jnp.reshape(used == 2, (1,))
  else:
    _, top = jax.lax.top_k(counts, 3)
    top3 = jnp.sort(top).astype(jnp.int32)
    top2 = jnp.sort(top[:2]).astype(jnp.int32)
    three = used >= 3
    first = jnp.where(three, top3[jnp.array([0, 0, 1])], top2[0])
    second = jnp.where(three, top3[jnp.array([1, 2, 2])], top2[1])
    active = jnp.where(three, jnp.ones((3,), bool), jnp.array([True, False, False]) & (used == 2))
  return (
    jnp.concatenate([pure, first]),
    jnp.concatenate([pure, second]),
    jnp.concatenate([jnp.ones((m,), bool), active]),
  )


def pair_distance(first: jax.Array, second: jax.Array, active: jax.Array):
  """V [L, L] (0 same slot, 1/4 pair–its input, 1 otherwise) and partners [L, 2]: for each slot the (up to two)
  active slots at distance 1/4, padded with the slot itself."""
  n = first.shape[0]
  pure = first == second
  contains = (first[:, None] == first[None, :]) | (first[:, None] == second[None, :])  # pure ℓ ∈ pair ℓ'
  near = pure[:, None] & ~pure[None, :] & contains
  near = (near | near.T) & active[:, None] & active[None, :]
  eye = jnp.eye(n, dtype=bool)
  dist = jnp.where(eye, 0.0, jnp.where(near, PAIR_WEIGHT, 1.0)).astype(jnp.float32)
  flag, idx = jax.lax.top_k(near.T.astype(jnp.int32), 2)  # row ℓ': the slots ℓ near ℓ'
  partners = jnp.where(flag > 0, idx, jnp.arange(n)[:, None]).astype(jnp.int32)
  return dist, partners


def _view(values: jax.Array, axes: tuple[int, ...], ndim: int) -> jax.Array:
  shape = [1] * ndim
  for size, axis in zip(values.shape, axes):
    shape[axis] = size
  return values.reshape(shape)


def _row_costs(unary_row: jax.Array, dist: jax.Array, beta) -> jax.Array:
  """Σ_c U[c, ℓ_c] + β Σ_c V(ℓ_c, ℓ_c+1) over a row's states, shape (L,)*g."""
  g = unary_row.shape[0]
  cost = sum(_view(unary_row[c], (c,), g) for c in range(g))
  for c in range(g - 1):
    cost = cost + _view(beta * dist, (c, c + 1), g)
  return cost


def _min_over_previous_row(message: jax.Array, partners: jax.Array, beta) -> jax.Array:
  """out[ℓ'] = min_ℓ message[ℓ] + β Σ_c V(ℓ_c, ℓ'_c), one column at a time.

  V only takes 0 (ℓ_c = ℓ'_c), 1/4 (partners) and 1, so min_ℓc (m[ℓc] + βV(ℓc, ℓ'c)) = min(m[ℓ'c],
  min m + β, m[partners of ℓ'c] + β/4): O(L^g) per column instead of O(L^(g+1)).
  """
  g = message.ndim
  for c in range(g):
    low = jnp.min(message, axis=c, keepdims=True) + beta
    near = jnp.minimum(jnp.take(message, partners[:, 0], axis=c), jnp.take(message, partners[:, 1], axis=c))
    message = jnp.minimum(jnp.minimum(message, low), near + PAIR_WEIGHT * beta)
  return message


def solve_output_exact(unary: jax.Array, dist: jax.Array, partners: jax.Array, beta) -> jax.Array:
  """Global argmin over labels [g, g] of Σ U[r, c, ℓ] + β Σ_edges V (4-neighbour grid) by DP over rows.

  ``unary`` [g, g, L], ``dist`` [L, L] with values in {0, 1/4, 1} (0 only on the diagonal), ``partners`` [L, 2]
  (``pair_distance``). Backtracking recomputes each row's argmin given the row below.
  """
  g, _, n = unary.shape
  states = (n,) * g
  messages = [_row_costs(unary[0], dist, beta)]
  for r in range(1, g):
    messages.append(_row_costs(unary[r], dist, beta) + _min_over_previous_row(messages[-1], partners, beta))

  def unravel(flat):
    return jnp.stack(jnp.unravel_index(flat, states)).astype(jnp.int32)

  rows = [unravel(jnp.argmin(messages[-1]))]
  for r in range(g - 2, -1, -1):
    below = rows[0]
    link = sum(_view(beta * dist[:, below[c]], (c,), g) for c in range(g))
    rows.insert(0, unravel(jnp.argmin(messages[r] + link)))
  return jnp.stack(rows)


def _chain_pass(labels, unary, dist, beta, parity: int):
  """Exact update of the rows of one parity given their vertical neighbours."""
  g = labels.shape[0]
  has_up = (jnp.arange(g) > 0)[:, None, None]
  has_down = (jnp.arange(g) < g - 1)[:, None, None]
  above = jnp.concatenate([labels[:1], labels[:-1]], axis=0)
  below = jnp.concatenate([labels[1:], labels[-1:]], axis=0)
  eff = unary + beta * (has_up * dist[above] + has_down * dist[below])
  weights = jnp.full(eff.shape[:2], beta, jnp.float32)[:, 1:]  # one β per link of each chain
  solved = jax.vmap(chain_viterbi, in_axes=(0, 0, None))(eff, weights, dist)
  return jnp.where((jnp.arange(g) % 2 == parity)[:, None], solved, labels)


def solve_output_chain(unary: jax.Array, dist: jax.Array, beta, sweeps: int) -> jax.Array:
  """Approximate argmin (``solve_output_exact``'s energy) for large grids: from the per-block best label,
  ``sweeps`` rounds of exact chain updates of the even/odd rows, then the even/odd columns."""
  labels = jnp.argmin(unary, axis=-1).astype(jnp.int32)

  def sweep(_, labels):
    for parity in (0, 1):
      labels = _chain_pass(labels, unary, dist, beta, parity)
    labels_t = labels.T
    for parity in (0, 1):
      labels_t = _chain_pass(labels_t, unary.transpose(1, 0, 2), dist, beta, parity)
    return labels_t.T

  return jax.lax.fori_loop(0, sweeps, sweep, labels)


# ----------------------------------------------------------------------------------------------------------------
# The group
# ----------------------------------------------------------------------------------------------------------------


def block_masks(first: jax.Array, second: jax.Array, m: int) -> jax.Array:
  """[..., g, g] label pairs → [..., g, g, m] input weights (1 for a pure block, ½ + ½ for a pair)."""
  return 0.5 * jax.nn.one_hot(first, m, dtype=jnp.float32) + 0.5 * jax.nn.one_hot(second, m, dtype=jnp.float32)


def monitored_objective(masks: jax.Array, unary: jax.Array, beta_k, gamma_k) -> jax.Array:
  """The authors' ``obj_fn`` (comix-imagenet/lib/utils.py), which decides when the passes stop: unary + β/2
  Σ|Δ mask| + γ Σ_{j≠j'} c_j·c_j' (no threshold, no A). masks [m, g, g, m], unary [m, g, g]."""
  counts = masks.sum((1, 2))
  e = jnp.sum(unary.transpose(1, 2, 0)[None] * masks)
  e += beta_k / 2 * (jnp.abs(masks[:, :-1] - masks[:, 1:]).sum() + jnp.abs(masks[:, :, :-1] - masks[:, :, 1:]).sum())
  e += gamma_k * (jnp.sum(counts.sum(0) ** 2) - jnp.sum(counts**2))
  return e


def modular_penalty(others: jax.Array, compat: jax.Array, tau, thres_type: str) -> jax.Array:
  """h(A·P): the per-input penalty of the thresholded supermodular term ([m])."""
  q = jnp.matmul(compat, others, precision=jax.lax.Precision.HIGHEST)  # counts up to m·K: no TF32 rounding
  return jnp.where(q > tau, q - tau if thres_type == "soft" else q, 0.0)


def resolve_costs(counts: jax.Array) -> jax.Array:
  """The authors' ``resolve_label``: [m_out, m_in] 0/1 extra costs. For every pair of outputs j < j' that show
  the same set of (two or more) inputs, output j pays on the first input of the set and j' on the second."""
  m_out, m_in = counts.shape
  shown = counts > 0
  same = jnp.all(shown[:, None, :] == shown[None, :, :], axis=-1)
  many = jnp.sum(shown, -1) > 1
  later = jnp.any(jnp.triu(same, 1), axis=1) & many
  earlier = jnp.any(jnp.triu(same, 1), axis=0) & many
  order = jnp.cumsum(shown, axis=-1)
  first = shown & (order == 1)
  second = shown & (order == 2)
  return jnp.maximum(later[:, None] & first, earlier[:, None] & second).astype(jnp.float32)


def _varying_axes(x: jax.Array) -> frozenset:
  """The manual mesh axes (inside ``shard_map``) over which ``x`` varies."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", None) or ())


def _varying_like(x: jax.Array, ref: jax.Array) -> jax.Array:
  """``x`` marked as varying over the manual mesh axes ``ref`` varies over (inside ``shard_map`` a loop's initial
  carry must have the type of its result, which depends on the device's data)."""
  missing = tuple(sorted(_varying_axes(ref) - _varying_axes(x)))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def solve(
  init_labels: jax.Array,
  unary: jax.Array,
  compat: jax.Array,
  *,
  beta: float,
  gamma: float,
  thres: float,
  thres_type: str = "hard",
  niter: int = 3,
  set_resolve: bool = True,
  pair_labels: bool = True,
  solver: str = "row_dp",
  sweeps: int = 4,
) -> tuple[jax.Array, jax.Array]:
  """Co-Mixup labelling of one group: (first, second) int32 [m, g, g] input indices per block of each output
  (equal for a pure block).

  ``init_labels`` [m, g, g] the random start (pure labels), ``unary`` [m_in, g, g] (saliency + prior, as in the
  module docstring), ``compat`` A [m, m]; ``beta``, ``gamma``, ``thres`` as the authors pass them (scaled by
  K = g² here). Jittable, static shapes; vmap it over groups.
  """
  if solver not in SOLVERS:
    raise ValueError(f"comixup solver must be one of {SOLVERS}, got {solver!r}")
  m, g, _ = unary.shape
  k = g * g
  beta_k, gamma_k, tau = beta / k, gamma / k, thres * k
  unary = unary.astype(jnp.float32)
  compat = compat.astype(jnp.float32)
  first = _varying_like(init_labels.astype(jnp.int32), unary)
  second = first
  counts = block_masks(first, second, m).sum((1, 2))

  def output_step(j, carry, allow_pairs, add_cost):
    first, second, counts = carry
    own = counts[j]
    extra = 2 * gamma_k * modular_penalty(counts.sum(0) - own, compat, tau, thres_type) + gamma_k * add_cost[j]
    cost = unary + extra[:, None, None]
    f, s, active = label_tables(own, allow_pairs, pair_labels)
    u = 0.5 * (cost[f] + cost[s]).transpose(1, 2, 0)
    u = u - PAIR_BONUS * (f != s) + BIG * (~active)
    dist, partners = pair_distance(f, s, active)
    if solver == "row_dp":
      labels = solve_output_exact(u, dist, partners, beta_k)
    else:
      labels = solve_output_chain(u, dist, beta_k, sweeps)
    nf, ns = f[labels], s[labels]
    return first.at[j].set(nf), second.at[j].set(ns), counts.at[j].set(block_masks(nf, ns, m).sum((0, 1)))

  def iteration(t, state):
    first, second, counts, add_cost, done, previous = state
    new = jax.lax.fori_loop(0, m, lambda j, c: output_step(j, c, t > 0, add_cost), (first, second, counts))
    first, second, counts = (jnp.where(done, old, n) for old, n in zip((first, second, counts), new))
    if set_resolve:
      add_cost = jnp.where((t == niter - 2) & ~done, resolve_costs(counts), add_cost)
    loss = monitored_objective(block_masks(first, second, m), unary, beta_k, gamma_k)
    converged = jnp.abs(previous - loss) / jnp.abs(loss) < 1e-6
    return first, second, counts, add_cost, done | converged, jnp.where(done, previous, loss)

  start = monitored_objective(block_masks(first, second, m), unary, beta_k, gamma_k)
  state = (first, second, counts, jnp.zeros((m, m), jnp.float32), jnp.zeros((), bool), start)
  state = tuple(_varying_like(x, unary) for x in state)
  first, second, *_ = jax.lax.fori_loop(0, niter, iteration, state)
  return first, second


# ----------------------------------------------------------------------------------------------------------------
# float64 numpy references (tests and benchmarks/comixup_solver.py)
# ----------------------------------------------------------------------------------------------------------------


def pair_distance_np(first: np.ndarray, second: np.ndarray, first2: np.ndarray, second2: np.ndarray) -> np.ndarray:
  """V between blocks given as input pairs (broadcasting): 0 same, 1/4 pair vs either of its inputs, 1 else."""
  same = (first == first2) & (second == second2)
  pure, pure2 = first == second, first2 == second2
  near = (pure & ~pure2 & ((first == first2) | (first == second2))) | (
    pure2 & ~pure & ((first2 == first) | (first2 == second))
  )
  return np.where(same, 0.0, np.where(near, PAIR_WEIGHT, 1.0))


def objective_np(first, second, unary, compat, *, beta, gamma, thres, thres_type="hard") -> np.ndarray:
  """F (module docstring) in float64 of labellings [..., m, g, g] (leading axes: problems), unary [..., m, g, g],
  compat [..., m, m]."""
  first, second = np.asarray(first), np.asarray(second)
  unary = np.asarray(unary, np.float64)
  compat = np.asarray(compat, np.float64)
  m, g = unary.shape[-3], unary.shape[-1]
  k = g * g
  lead = first.shape[:-3]
  u_blocks = np.broadcast_to(np.moveaxis(unary, -3, -1)[..., None, :, :, :], lead + (m, g, g, m))

  def take(idx):
    return np.take_along_axis(u_blocks, idx[..., None], -1)[..., 0]

  e = 0.5 * (take(first) + take(second)) - PAIR_BONUS * (first != second)
  total = e.sum((-3, -2, -1))
  smooth = pair_distance_np(first[..., :-1, :], second[..., :-1, :], first[..., 1:, :], second[..., 1:, :]).sum(
    (-3, -2, -1)
  ) + pair_distance_np(first[..., :, :-1], second[..., :, :-1], first[..., :, 1:], second[..., :, 1:]).sum((-3, -2, -1))
  total = total + beta / k * smooth
  onehot = lambda x: (x[..., None] == np.arange(m)).astype(np.float64)
  counts = (0.5 * onehot(first) + 0.5 * onehot(second)).sum((-3, -2))  # [..., m_out, m_in]
  others = counts.sum(-2, keepdims=True) - counts
  q = np.einsum("...ik,...jk->...ji", compat, others)
  tau = thres * k
  h = np.where(q > tau, q - tau if thres_type == "soft" else q, 0.0)
  return total + gamma / k * (h * counts).sum((-2, -1))


def _bits(g: int) -> np.ndarray:
  return ((np.arange(2**g)[:, None] >> np.arange(g)[None, :]) & 1).astype(np.int64)  # [S, g]


def _grid_energy_np(labels, unary, dist, beta_k):
  """Σ U[ℓ] + β Σ_edges V[ℓ, ℓ'] for [P, g, g] labels, unary [P, g, g, L], dist [P, L, L]."""
  p = np.arange(labels.shape[0])[:, None, None]
  e = np.take_along_axis(unary, labels[..., None], -1)[..., 0].sum((1, 2))
  e += beta_k * dist[p, labels[:, :-1, :], labels[:, 1:, :]].sum((1, 2))
  e += beta_k * dist[p, labels[:, :, :-1], labels[:, :, 1:]].sum((1, 2))
  return e


def alpha_beta_swap_np(unary: np.ndarray, dist: np.ndarray, beta_k: float, max_sweeps: int = 30) -> np.ndarray:
  """α-β swap (Boykov, Veksler, Zabih 2001) from all-zero labels, vectorised over problems: unary [P, g, g, L],
  dist [P, L, L] → labels [P, g, g].

  As pyGCO's ``cut_grid_graph(algorithm='swap')`` runs it: sweeps over the label pairs (α < β) in order, each move
  relabelling the blocks labelled α or β optimally between the two (a submodular binary problem since V is a
  semimetric; solved exactly here by DP over rows, 2^g states, instead of a min cut) and kept if it lowers the
  energy, until a sweep lowers it no more.
  """
  num, g, _, n = unary.shape
  size = g * g
  bits = _bits(g)  # [S, g]
  states = bits.shape[0]
  diff_h = (bits[:, :-1] != bits[:, 1:]).astype(np.float64)  # [S, g−1]
  diff_v = (bits[:, None, :] != bits[None, :, :]).astype(np.float64).reshape(states * states, g).T  # [g, S·S]
  labels = np.zeros((num, g, g), np.int64)
  pidx = np.arange(num)
  for _ in range(max_sweeps):
    improved = np.zeros(num, bool)
    for a, b in itertools.combinations(range(n), 2):
      active = (labels == a) | (labels == b)
      if not active.any():
        continue
      # each block's cost of taking a / b: its unary plus the edges to neighbours that keep their label
      nb = np.take_along_axis(dist[:, [a, b], :], labels.reshape(num, 1, size), 2).reshape(num, 2, g, g)
      padded = np.pad(nb * ~active[:, None], ((0, 0), (0, 0), (1, 1), (1, 1)))
      around = padded[:, :, :-2, 1:-1] + padded[:, :, 2:, 1:-1] + padded[:, :, 1:-1, :-2] + padded[:, :, 1:-1, 2:]
      ua = np.where(active, unary[..., a] + beta_k * around[:, 0], 0.0)
      ub = np.where(active, unary[..., b] + beta_k * around[:, 1], 1e18)  # inactive blocks keep their label
      w = beta_k * dist[:, a, b][:, None, None]
      wh = w * (active[:, :, :-1] & active[:, :, 1:])  # [P, g, g−1]
      wv = w * (active[:, :-1, :] & active[:, 1:, :])  # [P, g−1, g]
      row_cost = ua @ (1 - bits).T + ub @ bits.T + wh @ diff_h.T  # [P, g, S]
      current = (labels == b) @ (1 << np.arange(g))  # [P, g] the present labelling's row states
      now = np.take_along_axis(row_cost, current[..., None], 2)[..., 0].sum(1)
      message = row_cost[:, 0]
      back = []
      for r in range(1, g):
        pair_cost = (wv[:, r - 1] @ diff_v).reshape(num, states, states)
        now = now + pair_cost[pidx, current[:, r - 1], current[:, r]]
        trans = message[:, :, None] + pair_cost
        back.append(np.argmin(trans, axis=1))
        message = row_cost[:, r] + np.min(trans, axis=1)
      state = np.argmin(message, axis=1)
      best = message[pidx, state]
      chosen = [state]
      for r in range(g - 2, -1, -1):
        state = back[r][pidx, state]
        chosen.insert(0, state)
      take_b = bits[np.stack(chosen, 1)].astype(bool)  # [P, g, g]
      better = best < now - 1e-12 * np.maximum(np.abs(now), 1.0)
      labels = np.where(better[:, None, None] & active, np.where(take_b, b, a), labels)
      improved |= better
    if not improved.any():
      break
  return labels


def _label_tables_np(counts: np.ndarray, allow_pairs: bool, pair_labels: bool):
  """``label_tables`` for [P, m] counts in numpy: (first, second, active) [P, L]."""
  num, m = counts.shape
  pure = np.broadcast_to(np.arange(m), (num, m))
  if not pair_labels:
    return pure, pure, np.ones((num, m), bool)
  used = (counts > 0).sum(1) if allow_pairs else np.zeros(num, np.int64)
  if m < 3:
    first, second = np.zeros((num, 1), np.int64), np.ones((num, 1), np.int64)
    active = (used == 2)[:, None]
  else:
    top = np.argsort(-counts, axis=1, kind="stable")[:, :3]
    top3, top2 = np.sort(top, 1), np.sort(top[:, :2], 1)
    three = (used >= 3)[:, None]
    first = np.where(three, top3[:, [0, 0, 1]], top2[:, [0, 0, 0]])
    second = np.where(three, top3[:, [1, 2, 2]], top2[:, [1, 1, 1]])
    active = np.where(three, True, np.array([True, False, False])[None] & (used == 2)[:, None])
  return (
    np.concatenate([pure, first], 1),
    np.concatenate([pure, second], 1),
    np.concatenate([np.ones((num, m), bool), active], 1),
  )


def _monitored_np(first, second, unary, beta_k, gamma_k):
  m = unary.shape[1]
  masks = 0.5 * (first[..., None] == np.arange(m)) + 0.5 * (second[..., None] == np.arange(m))  # [P, m, g, g, m]
  counts = masks.sum((2, 3))
  e = (np.moveaxis(unary, 1, -1)[:, None] * masks).sum((1, 2, 3, 4))
  e += (
    beta_k
    / 2
    * (
      np.abs(masks[:, :, :-1] - masks[:, :, 1:]).sum((1, 2, 3, 4))
      + np.abs(masks[:, :, :, :-1] - masks[:, :, :, 1:]).sum((1, 2, 3, 4))
    )
  )
  e += gamma_k * ((counts.sum(1) ** 2).sum(1) - (counts**2).sum((1, 2)))
  return e, counts


def reference_solve(
  init_labels,
  unary,
  compat,
  *,
  beta,
  gamma,
  thres,
  thres_type="hard",
  niter=3,
  set_resolve=True,
  pair_labels=True,
  output_solver=None,
):
  """The authors' ``get_onehot_matrix`` in float64 numpy, vectorised over P problems: init_labels [P, m, g, g],
  unary [P, m, g, g], compat [P, m, m] → (first, second) [P, m, g, g].

  ``output_solver(unary [P, g, g, L], dist [P, L, L], beta_k) → labels [P, g, g]`` solves each output step;
  default the α-β swap as the authors run it (``alpha_beta_swap_np``).
  """
  output_solver = output_solver or alpha_beta_swap_np
  init_labels = np.asarray(init_labels, np.int64)
  unary = np.asarray(unary, np.float64)
  compat = np.asarray(compat, np.float64)
  num, m, g, _ = unary.shape
  k = g * g
  beta_k, gamma_k, tau = beta / k, gamma / k, thres * k
  first, second = init_labels.copy(), init_labels.copy()
  previous, counts = _monitored_np(first, second, unary, beta_k, gamma_k)
  add_cost = np.zeros((num, m, m))
  done = np.zeros(num, bool)
  for t in range(niter):
    if done.all():
      break
    for j in range(m):
      own = counts[:, j]
      q = np.einsum("pik,pk->pi", compat, counts.sum(1) - own)
      h = np.where(q > tau, q - tau if thres_type == "soft" else q, 0.0)
      cost = unary + (2 * gamma_k * h + gamma_k * add_cost[:, j])[:, :, None, None]  # [P, m, g, g]
      f, s, active = _label_tables_np(own, t > 0, pair_labels)
      cf = np.take_along_axis(cost, f[:, :, None, None], 1)
      cs = np.take_along_axis(cost, s[:, :, None, None], 1)
      u = np.moveaxis(0.5 * (cf + cs), 1, -1) - PAIR_BONUS * (f != s)[:, None, None] + BIG * (~active)[:, None, None]
      near = pair_distance_np(f[:, :, None], s[:, :, None], f[:, None, :], s[:, None, :]) == PAIR_WEIGHT
      near &= active[:, :, None] & active[:, None, :]
      dist = np.where(np.eye(f.shape[1], dtype=bool)[None], 0.0, np.where(near, PAIR_WEIGHT, 1.0))
      labels = output_solver(u, dist, beta_k)
      nf = np.take_along_axis(f, labels.reshape(num, -1), 1).reshape(num, g, g)
      ns = np.take_along_axis(s, labels.reshape(num, -1), 1).reshape(num, g, g)
      keep = done[:, None, None]
      first[:, j] = np.where(keep, first[:, j], nf)
      second[:, j] = np.where(keep, second[:, j], ns)
      _, counts = _monitored_np(first, second, unary, beta_k, gamma_k)
    if set_resolve and t == niter - 2:
      shown = counts > 0
      same = np.all(shown[:, :, None] == shown[:, None, :], -1)
      upper = np.triu(np.ones((m, m), bool), 1)[None]
      many = shown.sum(-1) > 1
      later = np.any(same & upper, 2) & many
      earlier = np.any(same & upper, 1) & many
      order = np.cumsum(shown, -1)
      new_add = np.maximum(later[..., None] & shown & (order == 1), earlier[..., None] & shown & (order == 2))
      add_cost = np.where(done[:, None, None], add_cost, new_add.astype(np.float64))
    loss, _ = _monitored_np(first, second, unary, beta_k, gamma_k)
    converged = np.abs(previous - loss) / np.abs(loss) < 1e-6
    previous = np.where(done, previous, loss)
    done = done | converged
  return first, second


def brute_force(unary, compat, *, beta, gamma, thres, thres_type="hard"):
  """Exact minimum of F over all pure labellings of all outputs (m^(m·g²) of them: tiny problems only):
  (F_min, first [m, g, g]).

  Every output draws from the same m^(g²) labellings, with the same unary and smoothness cost e[n] and input
  counts C[n]; F of a combination (n_0, …, n_{m−1}) is Σ_j e[n_j] + γ/K Σ_j h(A (T − C[n_j]))·C[n_j] with
  T = Σ_j C[n_j], evaluated for all combinations at once by broadcasting.
  """
  unary = np.asarray(unary, np.float64)
  compat = np.asarray(compat, np.float64)
  m, g, _ = unary.shape
  k = g * g
  n = m**k
  if n**m > 20_000_000:
    raise ValueError(f"brute force over {n**m} labellings is too large")
  labels = ((np.arange(n)[:, None] // (m ** np.arange(k))[None, :]) % m).reshape(n, g, g)
  rows, cols = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
  e = unary[labels, rows, cols].sum((1, 2))
  e += beta / k * ((labels[:, :-1] != labels[:, 1:]).sum((1, 2)) + (labels[:, :, :-1] != labels[:, :, 1:]).sum((1, 2)))
  counts = (labels.reshape(n, k)[..., None] == np.arange(m)).sum(1).astype(np.float64)  # [n, m]

  def along(x, j):  # x [n, ...] on combination axis j of m
    return x.reshape((1,) * j + (n,) + (1,) * (m - 1 - j) + x.shape[1:])

  total_counts = sum(along(counts, j) for j in range(m))  # (n,)*m + (m,)
  f = sum(along(e, j) for j in range(m))
  tau = thres * k
  for j in range(m):
    own = along(counts, j)
    q = (total_counts - own) @ compat.T
    h = np.where(q > tau, q - tau if thres_type == "soft" else q, 0.0)
    f = f + gamma / k * (h * own).sum(-1)
  best = np.unravel_index(int(np.argmin(f)), f.shape)
  return float(f[best]), labels[list(best)]
