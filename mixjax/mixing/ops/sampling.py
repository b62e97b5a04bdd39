"""Random draws shared by the methods: λ from Beta(α, α) and the pairing.

Pairing is a permutation of the local (per-device) batch, as in OpenMixup
(spec 1.3); fixed points, where a sample is mixed with itself, are allowed
for most methods. CutMix and FMix use the reference's "try for a derangement"
helper instead. timm's batch-mode Mixup/CutMix (the DeiT and RSB papers' code)
pairs by flipping the batch instead (``batch_flip``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_beta_lam(rng: jax.Array, alpha: float) -> jax.Array:
  """One λ ~ Beta(α, α) as a float32 scalar."""
  return jax.random.beta(rng, alpha, alpha).astype(jnp.float32)


def lam_or_draw(rng: jax.Array, alpha: float, lam) -> jax.Array:
  """``lam`` as float32 when given (a test override), else a Beta(α, α) draw."""
  if lam is None:
    return sample_beta_lam(rng, alpha)
  return jnp.asarray(lam, jnp.float32)


def random_permutation(rng: jax.Array, size: int) -> jax.Array:
  """Uniform permutation of ``range(size)``; fixed points are possible."""
  return jax.random.permutation(rng, size)


def permutation_avoiding_fixed_points(rng: jax.Array, size: int, tries: int = 11) -> jax.Array:
  """First derangement among ``tries`` permutations, else the last one.

  Mirrors the reference's ``_no_repeat_shuffle_idx`` (spec 1.3): one draw plus
  up to 10 re-draws while any index maps to itself, 11 draws in all, keeping
  the last on failure (``ignore_failure=True``). Without a data-dependent loop:
  all draws are made at once (``tries`` small sorts of the local batch) and
  the first good one is picked.
  """
  perms = jax.vmap(lambda k: jax.random.permutation(k, size))(jax.random.split(rng, tries))
  is_derangement = jnp.all(perms != jnp.arange(size), axis=1)
  pick = jnp.where(jnp.any(is_derangement), jnp.argmax(is_derangement), tries - 1)
  return perms[pick]


PAIRINGS = ("permutation", "flip")


def batch_flip(size: int) -> jax.Array:
  """timm's batch-mode pairing (spec 1.3): sample i is mixed with sample ``size − 1 − i`` (``x.flip(0)``).

  Deterministic; with an odd ``size`` the middle sample is paired with itself.
  """
  return jnp.arange(size - 1, -1, -1)


def partners(rng: jax.Array, size: int, pairing: str, *, method: str, avoid_fixed_points: bool) -> jax.Array:
  """The partner index of each sample for a kernel's ``pairing`` option: ``'flip'`` is ``batch_flip``;
  ``'permutation'`` a random permutation (``permutation_avoiding_fixed_points`` where the reference re-draws)."""
  if pairing not in PAIRINGS:
    raise ValueError(f"{method} pairing must be one of {PAIRINGS}, got {pairing!r}")
  if pairing == "flip":
    return batch_flip(size)
  if avoid_fixed_points:
    return permutation_avoiding_fixed_points(rng, size)
  return random_permutation(rng, size)
