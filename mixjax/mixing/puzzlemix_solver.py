"""PuzzleMix's multi-label block labeling, solved on device.

The energy over a g×g grid of labels ℓ ∈ {0..L−1} (t = ℓ/(L−1) is the partner's share of a block) is

    E(ℓ) = Σ_i U_i(ℓ_i) + Σ_(i,j) w_ij · (t_i − t_j)²

with 4-neighbour edges: ``w_v`` [g−1, g] between rows r and r+1, ``w_h`` [g, g−1] between columns c and c+1.
The reference minimises it with pyGCO's α-β swap on the host (spec 2.8). We use block-coordinate descent with
exact chain updates instead: all even rows are conditionally independent given the odd rows, so each is solved
exactly by a Viterbi pass (L² per block) with its neighbours fixed; then the odd rows, then the even and odd
columns. Every update is an exact minimisation over its chains, so the energy never increases; the descent is
run from the unary minimiser, from each constant labeling and from the two extreme checkerboards (which
non-submodular edges, negative weights, favour), and the lowest final energy wins. All shapes are
static and there is no host round trip. ``tests/mixing/test_puzzlemix.py`` measures the gap to the brute-force
minimum on small grids.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def label_distance(n_labels: int) -> jax.Array:
  """V[ℓ, ℓ'] = ((ℓ − ℓ')/(L − 1))², the reference's label-pair cost."""
  t = jnp.arange(n_labels, dtype=jnp.float32) / max(n_labels - 1, 1)
  return (t[:, None] - t[None, :]) ** 2


def labeling_energy(labels: jax.Array, unary: jax.Array, w_v: jax.Array, w_h: jax.Array) -> jax.Array:
  """E(ℓ) for one grid: labels int [g, g], unary [g, g, L], w_v [g−1, g], w_h [g, g−1]."""
  dist = label_distance(unary.shape[-1])
  u = jnp.sum(jnp.take_along_axis(unary, labels[..., None], axis=-1))
  ev = jnp.sum(w_v * dist[labels[:-1, :], labels[1:, :]])
  eh = jnp.sum(w_h * dist[labels[:, :-1], labels[:, 1:]])
  return u + ev + eh


def _viterbi(unary: jax.Array, weights: jax.Array, dist: jax.Array) -> jax.Array:
  """Exact minimiser of Σ_c unary[c, ℓ_c] + Σ_c weights[c]·dist[ℓ_c, ℓ_c+1] over one chain [n, L]."""
  def forward(msg, inputs):
    u, w = inputs
    scores = msg[:, None] + w * dist                      # [previous label, next label]
    return u + jnp.min(scores, axis=0), jnp.argmin(scores, axis=0)

  msg, back = jax.lax.scan(forward, unary[0], (unary[1:], weights))

  def backward(label, pointers):
    previous = pointers[label]
    return previous, previous

  last = jnp.argmin(msg)
  _, earlier = jax.lax.scan(backward, last, back, reverse=True)
  return jnp.concatenate([earlier, last[None]]).astype(jnp.int32)


def _row_sweep(labels, unary, w_v, w_h, dist, parity: int):
  """Exact update of every row of the given parity, its vertical neighbours fixed."""
  g = labels.shape[0]
  pad_w = jnp.zeros((1, g), unary.dtype)
  w_up = jnp.concatenate([pad_w, w_v], axis=0)             # edge to the row above (0 for row 0)
  w_down = jnp.concatenate([w_v, pad_w], axis=0)           # edge to the row below (0 for the last row)
  above = jnp.concatenate([labels[:1], labels[:-1]], axis=0)
  below = jnp.concatenate([labels[1:], labels[-1:]], axis=0)
  eff = (unary + w_up[..., None] * dist[above] + w_down[..., None] * dist[below])
  solved = jax.vmap(_viterbi, in_axes=(0, 0, None))(eff, w_h, dist)
  take = (jnp.arange(g) % 2 == parity)[:, None]
  return jnp.where(take, solved, labels)


def _sweep(labels, unary, w_v, w_h, dist):
  for parity in (0, 1):
    labels = _row_sweep(labels, unary, w_v, w_h, dist, parity)
  labels_t = labels.T
  unary_t = unary.transpose(1, 0, 2)
  for parity in (0, 1):
    labels_t = _row_sweep(labels_t, unary_t, w_h.T, w_v.T, dist, parity)
  return labels_t.T


def solve_labeling(unary: jax.Array, w_v: jax.Array, w_h: jax.Array, sweeps: int = 3) -> jax.Array:
  """Approximate argmin of ``labeling_energy`` for one grid; returns int32 labels [g, g]."""
  g, _, n_labels = unary.shape
  unary = unary.astype(jnp.float32)
  w_v = w_v.astype(jnp.float32)
  w_h = w_h.astype(jnp.float32)
  dist = label_distance(n_labels)
  checker = (jnp.arange(g)[:, None] + jnp.arange(g)[None, :]) % 2 * (n_labels - 1)
  starts = jnp.concatenate([jnp.argmin(unary, axis=-1)[None].astype(jnp.int32),
                            jnp.broadcast_to(jnp.arange(n_labels, dtype=jnp.int32)[:, None, None],
                                             (n_labels, g, g)),
                            jnp.stack([checker, n_labels - 1 - checker]).astype(jnp.int32)], axis=0)
  if g == 1:
    return starts[0]

  def descend(labels):
    return jax.lax.fori_loop(0, sweeps, lambda _, lab: _sweep(lab, unary, w_v, w_h, dist), labels)

  finals = jax.vmap(descend)(starts)
  energies = jax.vmap(labeling_energy, in_axes=(0, None, None, None))(finals, unary, w_v, w_h)
  return finals[jnp.argmin(energies)]
