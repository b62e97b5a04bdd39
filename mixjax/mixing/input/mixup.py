"""Mixup: a convex combination of two images and of their labels."""

from __future__ import annotations

from typing import Literal

import jax

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, blend, build_result
from mixjax.mixing.ops.sampling import lam_or_draw, partners


@register_method(
  "mixup", paper="Zhang, Cisse, Dauphin, Lopez-Paz. mixup: Beyond Empirical Risk Minimization. ICLR 2018"
)
def mixup(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  lam=None,
  pairing: Literal["permutation", "flip"] = "permutation",
) -> MixResult:
  """``x = λ·x + (1−λ)·x[π]`` with one λ ~ Beta(α, α) per batch (spec 2.1).

  ``pairing='permutation'`` (default): π is a uniform permutation of the local batch, as in OpenMixup
  (spec 1.3). ``pairing='flip'``: π(i) = B−1−i of the local batch, as timm's batch-mode Mixup that the DeiT
  (Touvron et al., ICML 2021) and RSB (Wightman et al., 2021) recipes ran. ``lam`` overrides the draw.
  """
  k_lam, k_perm = jax.random.split(rng)
  lam = lam_or_draw(k_lam, alpha, lam)
  perm = partners(k_perm, images.shape[0], pairing, method="mixup", avoid_fixed_points=False)
  mixed = blend(images, images[perm], lam)
  return build_result(mixed, labels, perm, lam)
