"""GridMix: a regular grid of holes inside a random crop, filled from the
partner."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, build_result, paste_from_partner
from mixjax.mixing.ops.sampling import lam_or_draw, random_permutation


def grid_region(
  rng: jax.Array,
  lam: jax.Array,
  height: int,
  width: int,
  *,
  n_holes,
  hole_aspect_ratio,
  cut_area_ratio,
  cut_aspect_ratio,
) -> jax.Array:
  """[H, W] bool: the holes (pixels taken from the partner).

  Sampling follows the reference (spec 2.9): holes count n ~ U{n_lo..n_hi},
  crop area ratio ρ ~ U(cut_area_ratio), crop aspect κ ~ U(cut_aspect_ratio),
  crop w = int(sqrt(int(HWρ)/κ)), h = int(w·κ), corner int((W−w)·U),
  int((H−h)·U) (truncated toward zero, so negative when the crop is larger
  than the image); cells of ceil(w/n) x int(cell_w·aspect) with a hole of
  cell·sqrt(1−λ) (clamped to [1, cell−1]) at each cell's top-left.
  """
  k_n, k_area, k_aspect, k_x, k_y = jax.random.split(rng, 5)
  n = jax.random.randint(k_n, (), n_holes[0], n_holes[1] + 1)
  area_ratio = jax.random.uniform(k_area, (), minval=cut_area_ratio[0], maxval=cut_area_ratio[1])
  aspect = jax.random.uniform(k_aspect, (), minval=cut_aspect_ratio[0], maxval=cut_aspect_ratio[1])
  area = jnp.floor(height * width * area_ratio)
  crop_w = jnp.floor(jnp.sqrt(area / aspect)).astype(jnp.int32)
  crop_h = jnp.floor(crop_w * aspect).astype(jnp.int32)
  left = jnp.trunc((width - crop_w) * jax.random.uniform(k_x)).astype(jnp.int32)
  top = jnp.trunc((height - crop_h) * jax.random.uniform(k_y)).astype(jnp.int32)

  cell_w = jnp.maximum(-(-crop_w // n), 1)  # ceil division
  cell_h = jnp.maximum(jnp.floor(cell_w * hole_aspect_ratio).astype(jnp.int32), 1)
  shrink = jnp.sqrt(jnp.clip(1.0 - lam, 0.0, 1.0))
  hole_w = jnp.clip(jnp.floor(cell_w * shrink).astype(jnp.int32), 1, jnp.maximum(cell_w - 1, 1))
  hole_h = jnp.clip(jnp.floor(cell_h * shrink).astype(jnp.int32), 1, jnp.maximum(cell_h - 1, 1))

  rel_y = jnp.arange(height)[:, None] - top
  rel_x = jnp.arange(width)[None, :] - left
  in_crop = (rel_y >= 0) & (rel_y < crop_h) & (rel_x >= 0) & (rel_x < crop_w)
  in_hole = (jnp.mod(rel_y, cell_h) < hole_h) & (jnp.mod(rel_x, cell_w) < hole_w)
  return in_crop & in_hole


@register_method(
  "gridmix",
  paper="Baek, Bang, Shim. GridMix: Strong regularization through local context mapping. Pattern Recognition 109, 2021",
)
def gridmix(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  lam=None,
  n_holes=(2, 6),
  hole_aspect_ratio: float = 1.0,
  cut_area_ratio=(0.5, 1.0),
  cut_aspect_ratio=(0.5, 2.0),
) -> MixResult:
  """GridMix (spec 2.9): holes of a grid inside a random crop come from the
  partner; λ := 1 − (hole area)/(H·W), recomputed from the real mask.

  Deviation from the reference: when the crop is larger than the image the
  reference's negative slice starts wrap holes to the far edge or drop them
  (Python slicing); here the crop is simply clipped to the image, which is
  the evident intent. For non-square images the reference swaps the row and
  column offsets; here rows use H and columns W. As in the reference, a hole
  is never smaller than one pixel, so λ = 1 still pastes one pixel per cell.
  ``lam`` overrides the Beta draw (before recomputation).
  """
  k_lam, k_perm, k_grid = jax.random.split(rng, 3)
  height, width = images.shape[1:3]
  lam = lam_or_draw(k_lam, alpha, lam)
  region_b = grid_region(
    k_grid,
    lam,
    height,
    width,
    n_holes=n_holes,
    hole_aspect_ratio=hole_aspect_ratio,
    cut_area_ratio=cut_area_ratio,
    cut_aspect_ratio=cut_aspect_ratio,
  )
  perm = random_permutation(k_perm, images.shape[0])
  mixed = paste_from_partner(images, images[perm], region_b)
  lam = 1.0 - jnp.mean(region_b.astype(jnp.float32))
  return build_result(mixed, labels, perm, lam)
