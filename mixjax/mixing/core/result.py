"""The value every mixing method returns, and the small pieces that build it.

Convention (OpenMixup's, spec section 0): ``lam`` is always the weight of
``labels_a``, the un-permuted sample, and a pixel weight ``M`` is the weight of
the original image, ``x_mix = M * x + (1 - M) * x[perm]``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MixResult(NamedTuple):
  """A mixed batch with the label pair and the per-sample label weight.

  Attributes:
    images: [B, H, W, C] mixed images, same dtype as the input images.
    labels_a: [B, K] labels of the original samples.
    labels_b: [B, K] labels of each sample's mixing partner.
    lam: float32 [B], weight of ``labels_a`` for each sample (a per-batch
      λ is broadcast to every sample).
  """

  images: jax.Array
  labels_a: jax.Array
  labels_b: jax.Array
  lam: jax.Array

  @property
  def targets(self) -> jax.Array:
    """Mixed soft targets ``lam * labels_a + (1 - lam) * labels_b``, [B, K]."""
    lam = self.lam.astype(self.labels_a.dtype)[:, None]
    return lam * self.labels_a + (1 - lam) * self.labels_b


def build_result(mixed_images: jax.Array, labels: jax.Array, perm: jax.Array, lam: jax.Array) -> MixResult:
  """Packs a method's output; ``lam`` may be a scalar or a [B] vector."""
  batch = labels.shape[0]
  lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), (batch,))
  return MixResult(images=mixed_images, labels_a=labels, labels_b=labels[perm], lam=lam)


def blend(a: jax.Array, b: jax.Array, weight_a) -> jax.Array:
  """``weight_a * a + (1 - weight_a) * b`` computed in float32, cast back to ``a``'s dtype.

  The one blend of two images (or feature maps) every method uses; ``weight_a`` is the weight of the FIRST
  argument (OpenMixup's convention: ``blend(x, x[perm], M)`` with ``M`` the weight of the original). The
  arithmetic runs in float32 and is cast back, so a bf16 batch is not mixed with a bf16-rounded λ (that would
  make the pixels disagree with the float32 label weight by up to 0.4 %).

  Args:
    a: [B, ...], e.g. the batch.
    b: same shape, e.g. the permuted batch.
    weight_a: anything broadcastable to ``a`` (a scalar λ, or a [H, W, 1] / [B, H, W, 1] pixel weight).
  """
  w = jnp.asarray(weight_a, jnp.float32)
  out = w * a.astype(jnp.float32) + (1 - w) * b.astype(jnp.float32)
  return out.astype(a.dtype)


def paste_from_partner(images: jax.Array, partner: jax.Array, region_b: jax.Array) -> jax.Array:
  """Takes pixels from ``partner`` where the [H, W] bool ``region_b`` is set.

  A select, not a multiply, so pasted pixels are bit-exact in any dtype.
  """
  return jnp.where(region_b[None, :, :, None], partner, images)
