"""TransMix (Chen, Li, Zhang, Shi, Zhou, Zhu, Gao, Ouyang, "TransMix: Attend to Mix for Vision Transformers",
CVPR 2022), as OpenMixup runs it for DeiT (spec 2.12).

The batch is CutMix-ed (λ₀ from the clipped box area, local derangement-attempt pairing); the ViT's forward on
the mixed batch also returns the class token's last-block attention over the patches, averaged over heads (a).
With the box nearest-downsampled to the patch grid (1 = pasted from the partner), λ₁ = Σ(1−box)·a / Σa per
sample and the label weight is λ = (1−ratio)·λ₀ + ratio·λ₁ (OpenMixup's ratio 0.5; the paper uses λ₁ alone,
ratio = 1). The attention is taken under ``stop_gradient``: targets are not trained through.

OpenMixup's DeiT recipe alternates plain Mixup (α 0.8, p 0.2) with TransMix (α 1.0, p 0.8): that is the mixing
plan's mode list (``mixing.method=('mixup', 'transmix')``, ``prob=(0.2, 0.8)``, ``configs/deit.py``), not a
switch inside this method.

Per-sample λ: each sample is weighted by its own λ; the collapse to the batch mean of the reference's
label-smoothing head (spec pitfall 1.2) is the loss's ``lam_batch_mean`` option, which the DeiT cells set.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mixjax.mixing.ops import boxes
from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.ops.model_info import require_attention
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.ops.sampling import permutation_avoiding_fixed_points, sample_beta_lam


def patch_region(region: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """Nearest downsampling of an [H, W] region to the [grid_h, grid_w] patch grid (PyTorch 'nearest')."""
  h, w = region.shape
  rows = (jnp.arange(grid_h) * h) // grid_h
  cols = (jnp.arange(grid_w) * w) // grid_w
  return region[rows][:, cols]


def attention_lam(attention: jax.Array, partner_patches: jax.Array) -> jax.Array:
  """λ₁ per sample: the share of the head-mean attention [B, heads, P] outside the partner's patches [.., P]."""
  a = jnp.mean(attention.astype(jnp.float32), axis=1)
  inside = jnp.sum(a * partner_patches, axis=-1)
  total = jnp.sum(a, axis=-1)
  return 1.0 - inside / jnp.maximum(total, 1e-12)


def transmix_inputs_local(rng, images, labels, *, alpha: float):
  """One device's CutMix-ed images; (images, partner region [b, H, W], λ₀ per sample, partner labels)."""
  b, h, w, _ = images.shape
  k_lam, k_perm, k_box = jax.random.split(rng, 3)
  lam = sample_beta_lam(k_lam, alpha)
  perm = permutation_avoiding_fixed_points(k_perm, b)
  cut_h, cut_w = boxes.cut_size_for_lam(lam, h, w)
  cy, cx = boxes.random_center(k_box, h, w)
  box = boxes.box_around(cy, cx, cut_h, cut_w, h, w)
  region = boxes.box_region(box, h, w)
  cut = jnp.where(region[None, :, :, None], images[perm], images)
  lam0 = boxes.lam_outside_box(box, h, w)
  return cut, jnp.broadcast_to(region, (b, h, w)), jnp.broadcast_to(lam0, (b,)), labels[perm]


class TransMix(ModelAwareMethod):
  name = "transmix"
  paper = "Chen, Li, Zhang, Shi, Zhou, Zhu, Gao, Ouyang. TransMix: Attend to Mix for Vision Transformers. CVPR 2022"

  @dataclasses.dataclass(frozen=True)
  class Params:
    # Weight of the attention-based λ₁ in the label weight (1 − ratio: the box area λ₀); OpenMixup's 0.5, the
    # paper's 1.0.
    ratio: float = 0.5

  def draw(self, mesh, rng, images, labels, *, alpha, hp: Params):
    del hp
    return per_device.on_shards(mesh, lambda r, x, y: transmix_inputs_local(r, x, y, alpha=alpha), rng, images, labels)

  @staticmethod
  def reweight(lam0, region_b, attention, ratio: float, patch_size: int):
    b, h, w = region_b.shape
    partner = jax.vmap(lambda r: patch_region(r, h // patch_size, w // patch_size))(region_b)
    lam1 = attention_lam(jax.lax.stop_gradient(attention), partner.reshape(b, -1).astype(jnp.float32))
    return (1 - ratio) * lam0 + ratio * lam1

  def check_model(self, model_cfg, hp: Params) -> None:
    del hp
    require_attention(model_cfg, self.name)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    if not 0.0 <= hp.ratio <= 1.0:
      raise ValueError(f"transmix ratio must be in [0, 1], got {hp.ratio}")
    info = require_attention(ctx.model, self.name)
    k_mix, k_drop = jax.random.split(rng)
    mixed, region_b, lam0, labels_b = self.draw(ctx.mesh, k_mix, images, labels, alpha=alpha, hp=hp)
    (logits, feats), new_stats = ctx.model_fn(
      params, batch_stats, mixed.astype(ctx.compute_dtype), train=True, rng=k_drop, return_attention=True
    )
    lam = self.reweight(lam0, region_b, feats["attention"], hp.ratio, info.patch_size)
    mix = MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam)
    metrics = {"lam": jnp.mean(lam), "lam_area": jnp.mean(lam0)}
    return ctx.classification_loss(logits, mix), (logits, new_stats, metrics)


register_model_aware(TransMix())
