"""GridMix: a regular grid of holes inside a random crop, filled from the
partner."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, build_result, paste_from_partner
from mixjax.mixing.ops.sampling import lam_or_draw, random_permutation

CROPS = ("clipped", "reference")


class GridDraw(NamedTuple):
  """The random numbers of one GridMix mask (one per batch, spec 2.9), as float32 / int32 scalars.

  Attributes:
    n_holes: holes across the crop's width, n ~ U{n_lo..n_hi}.
    area_ratio: crop area / image area, ρ ~ U(cut_area_ratio).
    aspect: crop height / crop width, κ ~ U(cut_aspect_ratio).
    u_x, u_y: U[0, 1) draws placing the crop's left and top edges (the reference's ``cx``, ``cy``).
  """

  n_holes: jax.Array
  area_ratio: jax.Array
  aspect: jax.Array
  u_x: jax.Array
  u_y: jax.Array


def draw_grid(rng: jax.Array, *, n_holes, cut_area_ratio, cut_aspect_ratio) -> GridDraw:
  """The per-batch draws of the reference's sampling (spec 2.9)."""
  k_n, k_area, k_aspect, k_x, k_y = jax.random.split(rng, 5)
  return GridDraw(
    n_holes=jax.random.randint(k_n, (), n_holes[0], n_holes[1] + 1),
    area_ratio=jax.random.uniform(k_area, (), minval=cut_area_ratio[0], maxval=cut_area_ratio[1]),
    aspect=jax.random.uniform(k_aspect, (), minval=cut_aspect_ratio[0], maxval=cut_aspect_ratio[1]),
    u_x=jax.random.uniform(k_x),
    u_y=jax.random.uniform(k_y),
  )


def _reference_axis(length: int, corner, extent, patch, hole) -> jax.Array:
  """[length] bool: the positions of one image axis that the reference's hole slices write.

  Along this axis hole k is the slice ``[corner + s_k, corner + e_k)`` with ``s_k = patch·k`` and
  ``e_k = min(s_k + hole, extent)`` for every ``s_k < extent`` (spec 2.9), taken with Python's slice rules on an
  axis of ``length``: a negative bound counts from the far end (``+ length``, then clamped at 0), bounds past
  the end are truncated, and a slice whose normalised stop is not after its start is empty. So a hole whose
  bounds are both negative wraps to the far edge, one that starts negative and ends at or after 0 is dropped,
  unless it is longer than the axis (never with a grid of at least two holes).

  Without a loop over holes: the holes are disjoint (``hole < patch``), so any raw slice coordinate p lies in at
  most one hole, found by ``(p − corner) // patch``. Image position r is written when its direct coordinate
  p = r lies in a hole that starts at ``≥ 0`` (or, starting negative, is long enough that its normalised start
  ``s + length ≤ r``), or when its wrapped coordinate p = r − length lies in a hole that ends below 0.
  """
  pos = jnp.arange(length)

  def hole_containing(raw):
    offset = raw - corner
    start_in_crop = (offset // patch) * patch
    inside = (offset >= 0) & (offset < extent) & (offset - start_in_crop < hole)
    return inside, corner + start_in_crop, corner + jnp.minimum(start_in_crop + hole, extent)

  inside, start, _ = hole_containing(pos)
  direct = inside & ((start >= 0) | (start + length <= pos))
  inside, _, end = hole_containing(pos - length)
  wrapped = inside & (end < 0)
  return direct | wrapped


def grid_mask(height: int, width: int, lam: jax.Array, draw: GridDraw, *, hole_aspect_ratio, crop: str) -> jax.Array:
  """[H, W] bool: the holes (pixels taken from the partner) for the draws ``draw`` and the mixing ratio λ.

  The sizes follow the reference's ``rand_grid`` (spec 2.9), in float32 where the reference computes in
  float64 (its ``int()`` of a product then differs only when the product lies within float32 rounding of an
  integer): crop area ``int(HWρ)``, crop width ``w = int(sqrt(area/κ))``, height ``h = int(w·κ)``; cells of
  ``ceil(w/n)`` × ``int(cell_w·hole_aspect_ratio)``, a hole of ``int(cell·sqrt(1−λ))`` clamped to
  ``[1, cell−1]`` at each cell's top-left, holes clipped to the crop.

  ``crop='clipped'``: corner ``int((W−w)·u_x)``, ``int((H−h)·u_y)`` (truncated toward zero, so negative when the
  crop is larger than the image) and the crop clipped to the image. ``crop='reference'``: the reference's own
  placement, the corner from the swapped image sides (``int((H−w)·u_x)`` for the columns, ``int((W−h)·u_y)`` for
  the rows: ``rand_grid`` names ``size[2]`` W and ``size[3]`` H of an N×C×H×W tensor) and its holes written with
  Python slicing (``_reference_axis``). Where the reference raises (a cell height of 0 with a small
  ``hole_aspect_ratio``, a crop narrower than two pixels per hole), this writes what the sizes give instead: no
  row holes, or the holes as computed.
  """
  if crop not in CROPS:
    raise ValueError(f"gridmix crop must be one of {CROPS}, got {crop!r}")
  n = draw.n_holes
  area = jnp.floor(height * width * draw.area_ratio)
  crop_w = jnp.floor(jnp.sqrt(area / draw.aspect)).astype(jnp.int32)
  crop_h = jnp.floor(crop_w * draw.aspect).astype(jnp.int32)
  cell_w = jnp.maximum(-(-crop_w // n), 1)  # ceil division
  cell_h = jnp.maximum(jnp.floor(cell_w * hole_aspect_ratio).astype(jnp.int32), 1)
  shrink = jnp.sqrt(jnp.clip(1.0 - lam, 0.0, 1.0))
  hole_w = jnp.floor(cell_w * shrink).astype(jnp.int32)
  hole_h = jnp.floor(cell_h * shrink).astype(jnp.int32)

  if crop == "reference":
    left = jnp.trunc((height - crop_w) * draw.u_x).astype(jnp.int32)
    top = jnp.trunc((width - crop_h) * draw.u_y).astype(jnp.int32)
    # The reference's min(max(hole, 1), cell − 1): no hole at all in a one-pixel cell.
    hole_w = jnp.minimum(jnp.maximum(hole_w, 1), cell_w - 1)
    hole_h = jnp.minimum(jnp.maximum(hole_h, 1), cell_h - 1)
    rows = _reference_axis(height, top, crop_h, cell_h, hole_h)
    cols = _reference_axis(width, left, crop_w, cell_w, hole_w)
    return rows[:, None] & cols[None, :]

  left = jnp.trunc((width - crop_w) * draw.u_x).astype(jnp.int32)
  top = jnp.trunc((height - crop_h) * draw.u_y).astype(jnp.int32)
  hole_w = jnp.clip(hole_w, 1, jnp.maximum(cell_w - 1, 1))
  hole_h = jnp.clip(hole_h, 1, jnp.maximum(cell_h - 1, 1))
  rel_y = jnp.arange(height)[:, None] - top
  rel_x = jnp.arange(width)[None, :] - left
  in_crop = (rel_y >= 0) & (rel_y < crop_h) & (rel_x >= 0) & (rel_x < crop_w)
  in_hole = (jnp.mod(rel_y, cell_h) < hole_h) & (jnp.mod(rel_x, cell_w) < hole_w)
  return in_crop & in_hole


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
  crop: str = "clipped",
) -> jax.Array:
  """[H, W] bool: the holes of one random grid (``draw_grid`` then ``grid_mask``)."""
  draw = draw_grid(rng, n_holes=n_holes, cut_area_ratio=cut_area_ratio, cut_aspect_ratio=cut_aspect_ratio)
  return grid_mask(height, width, lam, draw, hole_aspect_ratio=hole_aspect_ratio, crop=crop)


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
  crop: Literal["clipped", "reference"] = "clipped",
) -> MixResult:
  """GridMix (spec 2.9): holes of a grid inside a random crop come from the
  partner; λ := 1 − (hole area)/(H·W), recomputed from the real mask.

  ``crop`` decides what happens when the crop is larger than the image (about half of all draws, spec 2.9
  PITFALL). ``'clipped'`` (default) clips the crop to the image, the evident intent, and places the crop by
  the image's own sides. ``'reference'`` reproduces OpenMixup's ``rand_grid`` exactly: its holes are written
  with Python slicing at (corner + hole offset), so a hole whose bounds are both negative wraps to the bottom
  or right edge, one that straddles 0 disappears and slices past the far edge are truncated; and the crop
  corner is computed from the swapped image sides (matters only for non-square images). Either way λ is
  recomputed from the written mask, so labels agree with pixels. As in the reference, a hole is never smaller
  than one pixel, so λ = 1 still pastes one pixel per cell. ``lam`` overrides the Beta draw (before
  recomputation).
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
    crop=crop,
  )
  perm = random_permutation(k_perm, images.shape[0])
  mixed = paste_from_partner(images, images[perm], region_b)
  lam = 1.0 - jnp.mean(region_b.astype(jnp.float32))
  return build_result(mixed, labels, perm, lam)
