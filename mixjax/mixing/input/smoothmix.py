"""SmoothMix: blend in the partner through a soft Gaussian window."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, blend, build_result
from mixjax.mixing.ops.sampling import random_permutation


def centred_coordinates(size: int, shift: jax.Array) -> jax.Array:
  """Signed distance of each of ``size`` pixels to the window centre, as the reference computes it.

  The reference builds coordinates 0..2·size−1, rolls them by ``shift``, crops ``[size//2, size//2 + size)``
  and subtracts the grid's middle (2·size − 1)/2; without wrap-around that puts the centre at
  ``size//2 + shift − (2·size − 1)/2``, i.e. on a half pixel (k − ½ for even sizes). The roll is kept, so a
  wrap would be reproduced too.
  """
  span = 2 * size
  coords = (jnp.arange(size) + span // 4 - shift) % span
  return coords.astype(jnp.float32) - (span - 1) / 2


def reference_shift(rng: jax.Array, size: int) -> jax.Array:
  """``int(randint(0, size) − size/2)``: uniform in [−size/2, size/2), truncated towards zero for odd sizes."""
  k = jax.random.randint(rng, (), 0, size)
  return jnp.trunc(k - size / 2).astype(jnp.int32)


def gaussian_window(rng: jax.Array, height: int, width: int) -> jax.Array:
  """[H, W] float32 isotropic Gaussian, peak ≤ 1, σ = (U/4 + 1/4)·H, centred as the reference's roll-and-crop
  of a 2H×2H grid centres it: on half pixels, (row, col) = (k − ½, j − ½) with k, j uniform in 0..H−1, 0..W−1
  for even sizes (``centred_coordinates``)."""
  k_sigma, k_y, k_x = jax.random.split(rng, 3)
  sigma = (jax.random.uniform(k_sigma) / 4 + 0.25) * height
  dy = centred_coordinates(height, reference_shift(k_y, height))[:, None]
  dx = centred_coordinates(width, reference_shift(k_x, width))[None, :]
  return jnp.exp(-(dy**2 + dx**2) / (2 * sigma**2))


@register_method(
  "smoothmix",
  uses_alpha=False,
  paper="Lee, Zaheer, Astrid, "
  "Lee. SmoothMix: a Simple Yet Effective Data Augmentation "
  "to Train Robust Classifiers. CVPR Workshops 2020",
)
def smoothmix(
  rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float = 1.0, lam=None, label_weights: str = "paper"
) -> MixResult:
  """SmoothMix (spec 2.6): ``x = (1−G)·x + G·x[π]`` for a Gaussian window G.

  ``label_weights='paper'`` (default): λ = 1 − mean(G), the share of the
  original image. ``label_weights='reference'``: OpenMixup's λ = mean(G)
  as the weight of the original labels, i.e. inverted (what produced the
  Tiny-ImageNet number). The reference draws a λ and discards it, so
  ``alpha`` and ``lam`` have no effect here.
  """
  del alpha, lam
  if label_weights not in ("paper", "reference"):
    raise ValueError(f"smoothmix label_weights must be 'paper' or 'reference', got {label_weights!r}")
  k_perm, k_window = jax.random.split(rng)
  height, width = images.shape[1:3]
  window_b = gaussian_window(k_window, height, width)
  perm = random_permutation(k_perm, images.shape[0])
  mixed = blend(images, images[perm], (1 - window_b)[:, :, None])
  share_b = jnp.mean(window_b)
  return build_result(mixed, labels, perm, share_b if label_weights == "reference" else 1.0 - share_b)
