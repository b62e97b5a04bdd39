"""TokenMix (Liu, Li, Chen, Shen, Shen, Qiao, "TokenMix: Rethinking Image Mixing for Data Augmentation in
Vision Transformers", ECCV 2022), spec 2.17.

λ ~ Beta(α, α) sets n = min(P, int((1−λ)·P) + m) partner tokens on the model's P-token patch grid (OpenMixup:
P = 196 and m = ``minimum_tokens`` = 14 at 224 px; we scale m by P/196 on other grids). ``mask_type='block'``
paints BEiT-style random rectangles (aspect log-uniform in [0.3, 1/0.3], area uniform up to the remaining
budget, 10 tries per rectangle) per sample; ``'random'`` picks a uniform subset of exactly n tokens. The token
mask is nearest-upsampled to pixels and those pixels come from the partner x[π] (local permutation).

Labels from the clean batch's class-token attention of the current model (head mean, an extra eval-mode forward
under ``stop_gradient``): with a_x the normalised attention of sample x,
w_a = Σ (1−mask)·a_x (what survives of x), w_b = Σ mask·a_x[π] (what is pasted of the partner),
λ = w_a / (w_a + w_b) per sample. This is the paper's rule. OpenMixup's code weights y_a by x's attention inside
the *replaced* region and does not normalise (spec pitfall 2.17); we deliberately do not reproduce that.

The DeiT recipe pairs TokenMix with Mixup (α 0.8) 50/50 through the mixing plan's mode list
(``mixing.method=('mixup', 'tokenmix')``, ``configs/deit.py``), not through a switch inside this method.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, forward_loss
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.model_aware.picture_models import small_vit, vit_input_side, vit_patch
from mixjax.mixing.ops.model_info import require_attention
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.ops.sampling import random_permutation, sample_beta_lam

ASPECT = 0.3
TRIES = 10


def tokens_to_mix(lam: jax.Array, num_tokens: int, minimum_tokens: int) -> jax.Array:
  """n = min(P, int((1−λ)·P) + m), m = round(minimum_tokens·P/196)."""
  m = int(round(minimum_tokens * num_tokens / 196))
  return jnp.minimum(num_tokens, jnp.floor((1 - lam) * num_tokens).astype(jnp.int32) + m)


def random_token_mask(rng, gh: int, gw: int, count) -> jax.Array:
  """[gh, gw] bool with exactly ``count`` tokens set, uniformly chosen."""
  rank = jnp.argsort(jax.random.uniform(rng, (gh * gw,)))
  return (jnp.argsort(rank) < count).reshape(gh, gw)


def block_token_mask(rng, gh: int, gw: int, count, min_block: int = 4) -> jax.Array:
  """[gh, gw] bool painted with BEiT-style rectangles until ``count`` tokens are set (or tries run out)."""
  rows = jnp.arange(gh)[:, None]
  cols = jnp.arange(gw)[None, :]
  rounds = gh * gw // max(min_block, 1) + 4

  def paint(i, mask):
    remaining = count - jnp.sum(mask)
    k_area, k_aspect, k_top, k_left = jax.random.split(jax.random.fold_in(rng, i), 4)
    area = jax.random.uniform(k_area, (TRIES,), minval=min_block, maxval=jnp.maximum(remaining, min_block))
    aspect = jnp.exp(jax.random.uniform(k_aspect, (TRIES,), minval=math.log(ASPECT), maxval=-math.log(ASPECT)))
    h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (h < gh) & (w < gw) & (h > 0) & (w > 0)
    top = jnp.floor(jax.random.uniform(k_top, (TRIES,)) * (gh - h + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_left, (TRIES,)) * (gw - w + 1)).astype(jnp.int32)
    rects = (
      (rows[None] >= top[:, None, None])
      & (rows[None] < (top + h)[:, None, None])
      & (cols[None] >= left[:, None, None])
      & (cols[None] < (left + w)[:, None, None])
    )
    new = jnp.sum(rects & ~mask[None], axis=(1, 2))
    ok = fits & (new > 0) & (new <= remaining)
    pick = jnp.argmax(ok)
    return jnp.where(jnp.any(ok), mask | rects[pick], mask)

  return jax.lax.fori_loop(0, rounds, paint, jnp.zeros((gh, gw), bool))


def attention_label_weight(attn_a: jax.Array, attn_b: jax.Array, partner_tokens: jax.Array) -> jax.Array:
  """λ = w_a/(w_a+w_b): w_a = x's attention on its kept tokens, w_b = the partner's on the pasted ones."""
  a = attn_a / jnp.maximum(jnp.sum(attn_a, -1, keepdims=True), 1e-12)
  b = attn_b / jnp.maximum(jnp.sum(attn_b, -1, keepdims=True), 1e-12)
  w_a = jnp.sum((1 - partner_tokens) * a, -1)
  w_b = jnp.sum(partner_tokens * b, -1)
  return w_a / jnp.maximum(w_a + w_b, 1e-12)


def tokenmix_local(rng, lam, images, attn, labels, *, patch: int, hp: Mapping):
  b, h, w, _ = images.shape
  gh, gw = h // patch, w // patch
  k_perm, k_mask = jax.random.split(rng)
  perm = random_permutation(k_perm, b)
  count = tokens_to_mix(lam, gh * gw, int(hp["minimum_tokens"]))
  keys = jax.random.split(k_mask, b)
  if hp["mask_type"] == "block":
    tokens = jax.vmap(lambda k: block_token_mask(k, gh, gw, count))(keys)
  else:
    tokens = jax.vmap(lambda k: random_token_mask(k, gh, gw, count))(keys)
  rows = jnp.minimum(jnp.arange(h) // patch, gh - 1)
  cols = jnp.minimum(jnp.arange(w) // patch, gw - 1)
  pixels = tokens[:, rows][:, :, cols]
  token_mixed = jnp.where(pixels[..., None], images[perm], images)
  flat = tokens.reshape(b, -1).astype(jnp.float32)
  lam_tok = attention_label_weight(attn, attn[perm], flat)
  return token_mixed, lam_tok, labels[perm], flat


class TokenMix(ModelAwareMethod):
  name = "tokenmix"
  paper = (
    "Liu, Li, Chen, Shen, Shen, Qiao. TokenMix: Rethinking Image Mixing for Data Augmentation in Vision "
    "Transformers. ECCV 2022"
  )
  defaults = {"mask_type": "block", "minimum_tokens": 14}

  def mix(self, mesh, rng, images, labels, attention, *, alpha, hp, patch: int):
    if hp["mask_type"] not in ("block", "random"):
      raise ValueError(f"tokenmix mask_type must be 'block' or 'random', got {hp['mask_type']!r}")
    k_lam, k_local = jax.random.split(rng)
    lam = sample_beta_lam(k_lam, alpha)
    attn = jax.lax.stop_gradient(jnp.mean(attention.astype(jnp.float32), axis=1))

    def local(r, l_, x, a, y):
      return tokenmix_local(r, l_, x, a, y, patch=patch, hp=hp)

    mixed, lam_n, labels_b, tokens = per_device.on_shards(mesh, local, k_local, images, attn, labels, replicated=(lam,))
    return MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam_n), tokens

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Mapping, dropout_rng=None):
    del dropout_rng  # drawn from rng
    info = require_attention(ctx.model, self.name)
    k_mix, k_drop = jax.random.split(rng)
    (_, clean), _ = ctx.model_fn(
      params, batch_stats, images.astype(ctx.compute_dtype), train=False, return_attention=True
    )
    mix, _ = self.mix(ctx.mesh, k_mix, images, labels, clean["attention"], alpha=alpha, hp=hp, patch=info.patch_size)
    return forward_loss(ctx, params, batch_stats, mix, k_drop, {"lam": jnp.mean(mix.lam)})

  picture_note = "λ from an untrained 4-block ViT's class-token attention"

  def picture_fn(self, images, labels, *, alpha, hp):
    """Token masks relabelled by a small random ViT's attention (its attention is untrained)."""
    side = vit_input_side(images.shape[1])
    fn, params, stats = small_vit(labels.shape[-1], images.shape[1])
    patch = vit_patch(images.shape[1])
    images = images[:, :side, :side]

    @jax.jit
    def draw(rng, images, labels, params, stats):
      (_, feats), _ = fn(params, stats, images, train=False, return_attention=True)
      return self.mix(None, rng, images, labels, feats["attention"], alpha=alpha, hp=hp, patch=patch)[0]

    return lambda rng: draw(rng, images, labels, params, stats)


register_model_aware(TokenMix())
