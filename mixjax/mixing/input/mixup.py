"""Mixup: a convex combination of two images and of their labels."""

from __future__ import annotations

import jax

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, blend, build_result
from mixjax.mixing.ops.sampling import lam_or_draw, random_permutation


@register_method(
  "mixup", paper="Zhang, Cisse, Dauphin, Lopez-Paz. mixup: Beyond Empirical Risk Minimization. ICLR 2018"
)
def mixup(rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float, lam=None) -> MixResult:
  """``x = λ·x + (1−λ)·x[π]`` with one λ ~ Beta(α, α) per batch (spec 2.1).

  π is a uniform permutation of the local batch. ``lam`` overrides the draw.
  """
  k_lam, k_perm = jax.random.split(rng)
  lam = lam_or_draw(k_lam, alpha, lam)
  perm = random_permutation(k_perm, images.shape[0])
  mixed = blend(images, images[perm], lam)
  return build_result(mixed, labels, perm, lam)
