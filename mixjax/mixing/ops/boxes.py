"""Rectangular regions for the box-pasting methods (CutMix, SaliencyMix,
ResizeMix), built as iota comparisons so shapes stay static under jit.

Boxes are half-open integer ranges ``[top, bottom) x [left, right)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Box(NamedTuple):
  """Half-open pixel box; every field an int32 scalar."""

  top: jax.Array
  bottom: jax.Array
  left: jax.Array
  right: jax.Array

  @property
  def height(self) -> jax.Array:
    return self.bottom - self.top

  @property
  def width(self) -> jax.Array:
    return self.right - self.left

  @property
  def area(self) -> jax.Array:
    return self.height * self.width


def cut_size_for_lam(lam: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """CutMix's box size: sides ``int(H·r)``, ``int(W·r)`` with r = sqrt(1−λ)."""
  ratio = jnp.sqrt(jnp.clip(1.0 - lam, 0.0, 1.0))
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  return cut_h, cut_w


def random_center(rng: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """A centre uniform over the integer pixel positions [0,H) x [0,W)."""
  k_y, k_x = jax.random.split(rng)
  return (jax.random.randint(k_y, (), 0, height), jax.random.randint(k_x, (), 0, width))


def box_around(
  center_y: jax.Array, center_x: jax.Array, cut_h: jax.Array, cut_w: jax.Array, height: int, width: int
) -> Box:
  """Edges ``centre ± size // 2`` clipped to the image (reference CutMix).

  The unclipped box is ``2 * (size // 2)`` wide, so an odd size loses one
  pixel, as in the reference.
  """
  half_h, half_w = cut_h // 2, cut_w // 2
  return Box(
    top=jnp.clip(center_y - half_h, 0, height).astype(jnp.int32),
    bottom=jnp.clip(center_y + half_h, 0, height).astype(jnp.int32),
    left=jnp.clip(center_x - half_w, 0, width).astype(jnp.int32),
    right=jnp.clip(center_x + half_w, 0, width).astype(jnp.int32),
  )


def box_region(box: Box, height: int, width: int) -> jax.Array:
  """[H, W] bool, True inside ``box``."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= box.top) & (rows < box.bottom) & (cols >= box.left) & (cols < box.right)


def lam_outside_box(box: Box, height: int, width: int) -> jax.Array:
  """λ recomputed from the real pasted area: ``1 − area / (H·W)``."""
  return 1.0 - box.area.astype(jnp.float32) / float(height * width)
