"""SmoothMix: blend in the partner through a soft Gaussian window."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.registry import register_method
from mixjax.mixing.result import MixResult, blend_with_partner, build_result
from mixjax.mixing.sampling import random_permutation


def gaussian_window(rng: jax.Array, height: int, width: int) -> jax.Array:
  """[H, W] float32 isotropic Gaussian, peak 1, σ = (U/4 + 1/4)·H, centred at
  a uniform integer pixel (the reference's roll-and-crop of a 2H x 2H grid
  amounts to exactly this)."""
  k_sigma, k_y, k_x = jax.random.split(rng, 3)
  sigma = (jax.random.uniform(k_sigma) / 4 + 0.25) * height
  cy = jax.random.randint(k_y, (), 0, height)
  cx = jax.random.randint(k_x, (), 0, width)
  dy = (jnp.arange(height) - cy)[:, None].astype(jnp.float32)
  dx = (jnp.arange(width) - cx)[None, :].astype(jnp.float32)
  return jnp.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2))


@register_method("smoothmix", uses_alpha=False, paper="Lee, Zaheer, Astrid, "
                 "Lee. SmoothMix: a Simple Yet Effective Data Augmentation "
                 "to Train Robust Classifiers. CVPR Workshops 2020")
def smoothmix(rng: jax.Array, images: jax.Array, labels: jax.Array, *,
              alpha: float = 1.0, lam=None) -> MixResult:
  """SmoothMix (spec 2.6): ``x = (1−G)·x + G·x[π]`` for a Gaussian window G.

  Label weight follows the paper: λ = 1 − mean(G), the share of the
  original image. The reference returns mean(G) as the weight of the
  original labels, i.e. inverted; that is not reproduced. The reference
  draws a λ and discards it, so ``alpha`` and ``lam`` have no effect here.
  """
  del alpha, lam
  k_perm, k_window = jax.random.split(rng)
  height, width = images.shape[1:3]
  window_b = gaussian_window(k_window, height, width)
  perm = random_permutation(k_perm, images.shape[0])
  mixed = blend_with_partner(images, images[perm], (1 - window_b)[:, :, None])
  return build_result(mixed, labels, perm, 1.0 - jnp.mean(window_b))
