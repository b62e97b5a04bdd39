"""ResizeMix: paste the whole partner image, shrunk, into a random box."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.ops import boxes
from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, build_result
from mixjax.mixing.ops.sampling import random_permutation


def sample_scale(rng: jax.Array, alpha: float, scope, use_alpha: bool) -> jax.Array:
  """τ: Beta(α, α) redrawn from U(scope) when outside scope, or U(scope)."""
  k_beta, k_uniform = jax.random.split(rng)
  uniform = jax.random.uniform(k_uniform, (), minval=scope[0], maxval=scope[1])
  if not use_alpha:
    return uniform
  tau = jax.random.beta(k_beta, alpha, alpha)
  inside = (tau >= scope[0]) & (tau <= scope[1])
  return jnp.where(inside, tau, uniform).astype(jnp.float32)


def nearest_resize_into_box(partner: jax.Array, box: boxes.Box) -> jax.Array:
  """[B, H, W, C]: inside ``box``, ``partner`` resized (nearest) to the box.

  Inverse mapping as in PyTorch's nearest mode: destination row r reads
  source row floor((r − top)·H / box_h), computed in exact integers. Pixels
  outside the box hold arbitrary partner pixels and must be masked.
  """
  height, width = partner.shape[1:3]
  box_h = jnp.maximum(box.height, 1)
  box_w = jnp.maximum(box.width, 1)
  src_rows = jnp.clip((jnp.arange(height) - box.top) * height // box_h, 0, height - 1)
  src_cols = jnp.clip((jnp.arange(width) - box.left) * width // box_w, 0, width - 1)
  return jnp.take(jnp.take(partner, src_rows, axis=1), src_cols, axis=2)


@register_method(
  "resizemix",
  paper="Qin, Fang, Lu, Zhang, Huang, Li, Wang. "
  "ResizeMix: Mixing Data with Preserved Object Information "
  "and True Labels. arXiv:2012.11101, 2020",
)
def resizemix(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  lam=None,
  scope=(0.1, 0.8),
  use_alpha: bool = True,
) -> MixResult:
  """ResizeMix (spec 2.10).

  Scale τ ~ Beta(α, α), redrawn from U(scope) when it falls outside scope
  (``use_alpha=True``, the OpenMixup ImageNet setting and this default; with
  α = 1 that is τ ~ U(0.1, 0.8)), or τ ~ U(scope). Box sides int(τ·H),
  int(τ·W), uniform centre, clipped like CutMix; the whole partner is
  resized (nearest) to the clipped box and pasted, so the aspect ratio
  changes when clipping happened, as in the reference. λ := 1 − box/(H·W).

  ``lam`` overrides τ (0 pastes nothing).
  """
  k_tau, k_perm, k_box = jax.random.split(rng, 3)
  height, width = images.shape[1:3]
  if lam is None:
    tau = sample_scale(k_tau, alpha, scope, use_alpha)
  else:
    tau = jnp.asarray(lam, jnp.float32)
  cut_h = jnp.floor(tau * height).astype(jnp.int32)
  cut_w = jnp.floor(tau * width).astype(jnp.int32)
  cy, cx = boxes.random_center(k_box, height, width)
  box = boxes.box_around(cy, cx, cut_h, cut_w, height, width)
  perm = random_permutation(k_perm, images.shape[0])
  pasted = nearest_resize_into_box(images[perm], box)
  region_b = boxes.box_region(box, height, width)
  mixed = jnp.where(region_b[None, :, :, None], pasted, images)
  return build_result(mixed, labels, perm, boxes.lam_outside_box(box, height, width))
