"""Entropic optimal transport between two uniform point sets (Cuturi, NeurIPS 2013), in the log domain.

Used by AlignMix to align the spatial positions of two feature maps. Log-domain updates keep the plan finite
for the large squared-distance costs of deep features (ε = 0.1 against costs in the thousands would underflow
``exp(−C/ε)`` in the scaling form).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """[..., n, d] × [..., m, d] → [..., n, m] squared Euclidean distances (float32, clipped at 0)."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  cross = jnp.einsum("...nd,...md->...nm", a, b)
  sq = jnp.sum(a * a, -1)[..., :, None] + jnp.sum(b * b, -1)[..., None, :] - 2 * cross
  return jnp.maximum(sq, 0.0)


def sinkhorn_plan(cost: jax.Array, *, eps: float, max_iter: int, tol: float = 0.1):
  """Entropic OT plan between uniform marginals for a batch of costs [B, n, m].

  Alternating log-domain updates of the potentials u (rows) and v (columns), at most ``max_iter`` rounds,
  stopping once the batch mean of Σ|u − u_prev| falls below ``tol`` (OpenMixup's AlignMix rule, spec 2.11).
  The column update comes last, so the column marginals are exact and the row marginals within the
  tolerance. Returns (plan [B, n, m] with total mass 1 per sample, iterations run).
  """
  cost = cost.astype(jnp.float32)
  _, n, m = cost.shape
  log_mu = -jnp.log(float(n))
  log_nu = -jnp.log(float(m))

  def update(u, v):
    u = eps * (log_mu - jax.nn.logsumexp((v[:, None, :] - cost) / eps, axis=2))
    v = eps * (log_nu - jax.nn.logsumexp((u[:, :, None] - cost) / eps, axis=1))
    return u, v

  def cond(carry):
    _, _, err, it = carry
    return jnp.logical_and(it < max_iter, err >= tol)

  def body(carry):
    u, v, _, it = carry
    u_new, v_new = update(u, v)
    err = jnp.mean(jnp.sum(jnp.abs(u_new - u), axis=1))
    return u_new, v_new, err, it + 1

  # Initial carries derived from ``cost`` so they carry its sharding type (varying under shard_map).
  u0 = jnp.zeros_like(cost[:, :, 0])
  v0 = jnp.zeros_like(cost[:, 0, :])
  err0 = jnp.sum(u0) + jnp.inf
  u, v, _, iters = jax.lax.while_loop(cond, body, (u0, v0, err0, jnp.zeros((), jnp.int32)))
  plan = jnp.exp((u[:, :, None] + v[:, None, :] - cost) / eps)
  return plan, iters
