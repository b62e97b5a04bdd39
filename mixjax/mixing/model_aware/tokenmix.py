"""TokenMix (Liu, Li, Chen, Shen, Shen, Qiao, "TokenMix: Rethinking Image Mixing for Data Augmentation in
Vision Transformers", ECCV 2022), spec 2.17.

λ ~ Beta(α, α) sets n = min(P, int((1−λ)·P) + m) partner tokens on the model's P-token patch grid (OpenMixup:
P = 196 and m = ``minimum_tokens`` = 14 at 224 px; we scale m by P/196 on other grids). ``mask_type='block'``
paints BEiT-style random rectangles (aspect log-uniform in [0.3, 1/0.3], area uniform up to the remaining
budget, 10 tries per rectangle) per sample; ``'random'`` picks a uniform subset of exactly n tokens. The token
mask is nearest-upsampled to pixels and those pixels come from the partner x[π] (local permutation).

Labels from the clean batch's class-token attention of the current model (head mean, an extra eval-mode forward
under ``stop_gradient``); a_x is sample x's attention from the class token to the P patches (a row of the last
block's softmax over all 1 + P tokens, so it sums to less than 1). ``label_rule`` picks how it weighs the labels:

* ``'paper'`` (default, the paper's rule and the TokenMix table cell, whose 📖 number comes from the authors'
  code): with a_x normalised to sum 1, w_a = Σ (1−mask)·a_x (what survives of x), w_b = Σ mask·a_x[π] (what is
  pasted of the partner), λ = w_a / (w_a + w_b) per sample.
* ``'openmixup'``: OpenMixup's ``tokenmix`` (spec pitfall 2.17). It weights y_a by x's attention inside the
  region that was *replaced* by the partner, w_a = Σ mask·a_x, and y_b by the partner's attention where x
  survives, w_b = Σ (1−mask)·a_x[π], both unnormalised, and hands (y_a, y_b, w_a, w_b) to its heads' 4-tuple
  path, whose loss is mean_i(L̄_a·w_a,i + L̄_b·w_b,i) with L̄ the batch-mean criterion: per-sample weights
  collapse to their batch means W_a, W_b. A ``MixResult`` carries one weight per sample that sums to 1 with its
  partner's, so this rule is represented exactly as λ = W_a / (W_a + W_b) for every sample and the classifier
  loss multiplied by S = W_a + W_b: the configured losses (soft CE, BCE, label smoothing) are affine in the target
  with coefficients summing to 1, so S·mean_i L(λ·y_a + (1−λ)·y_b) = W_a·L̄_a + W_b·L̄_b, the reference's loss
  and gradient scale. The means are over the global batch (the reference: per GPU), as for
  ``loss.lam_batch_mean``. (The decoupled loss is not affine: with it, the reference's 4-tuple path runs the
  plain criterion, mixjax the decoupled loss of those targets, times S.)

The DeiT recipe pairs TokenMix with Mixup (α 0.8) 50/50 through the mixing plan's mode list
(``mixing.method=('mixup', 'tokenmix')``, ``configs/deit.py``), not through a switch inside this method.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, forward_loss
from mixjax.mixing.core.registry import register_model_aware
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


def paper_label_weights(attn_a: jax.Array, attn_b: jax.Array, partner_tokens: jax.Array):
  """(w_a, w_b) per sample, the paper's rule: x's normalised attention on its kept tokens, the partner's on the
  pasted ones (``partner_tokens`` [B, P]: 1 where the partner's token was pasted)."""
  a = attn_a / jnp.maximum(jnp.sum(attn_a, -1, keepdims=True), 1e-12)
  b = attn_b / jnp.maximum(jnp.sum(attn_b, -1, keepdims=True), 1e-12)
  return jnp.sum((1 - partner_tokens) * a, -1), jnp.sum(partner_tokens * b, -1)


def openmixup_label_weights(attn_a: jax.Array, attn_b: jax.Array, partner_tokens: jax.Array):
  """(w_a, w_b) per sample as OpenMixup's ``tokenmix`` computes them (spec 2.17): x's attention inside the
  replaced region, the partner's outside it, both unnormalised."""
  return jnp.sum(partner_tokens * attn_a, -1), jnp.sum((1 - partner_tokens) * attn_b, -1)


LABEL_WEIGHTS = {"paper": paper_label_weights, "openmixup": openmixup_label_weights}


def attention_label_weight(attn_a: jax.Array, attn_b: jax.Array, partner_tokens: jax.Array) -> jax.Array:
  """The paper's λ = w_a/(w_a+w_b): w_a = x's attention on its kept tokens, w_b = the partner's on the pasted
  ones."""
  w_a, w_b = paper_label_weights(attn_a, attn_b, partner_tokens)
  return w_a / jnp.maximum(w_a + w_b, 1e-12)


def label_weights_as_lam(w_a: jax.Array, w_b: jax.Array, label_rule: str) -> tuple[jax.Array, jax.Array]:
  """(λ [B], loss scale) representing the label weights (w_a, w_b) of ``label_rule`` in a ``MixResult``.

  'paper': λ = w_a/(w_a+w_b) per sample, scale 1. 'openmixup': the reference's 4-tuple loss
  mean_i(L̄_a·w_a,i + L̄_b·w_b,i) = W_a·L̄_a + W_b·L̄_b (batch means W) as λ = W_a/(W_a+W_b) for every sample and
  the loss times S = W_a + W_b (exact for losses affine in the target; see the module docstring).
  """
  if label_rule == "paper":
    return w_a / jnp.maximum(w_a + w_b, 1e-12), jnp.ones((), jnp.float32)
  mean_a, mean_b = jnp.mean(w_a), jnp.mean(w_b)
  total = mean_a + mean_b
  return jnp.broadcast_to(mean_a / jnp.maximum(total, 1e-12), w_a.shape), total


def tokenmix_local(rng, lam, images, attn, labels, *, patch: int, hp: TokenMix.Params):
  """One device's token mix: (mixed images, w_a [b], w_b [b] of ``hp.label_rule``, partner labels, the
  partner-token mask [b, P] as float)."""
  b, h, w, _ = images.shape
  gh, gw = h // patch, w // patch
  k_perm, k_mask = jax.random.split(rng)
  perm = random_permutation(k_perm, b)
  count = tokens_to_mix(lam, gh * gw, hp.minimum_tokens)
  keys = jax.random.split(k_mask, b)
  if hp.mask_type == "block":
    tokens = jax.vmap(lambda k: block_token_mask(k, gh, gw, count))(keys)
  else:
    tokens = jax.vmap(lambda k: random_token_mask(k, gh, gw, count))(keys)
  rows = jnp.minimum(jnp.arange(h) // patch, gh - 1)
  cols = jnp.minimum(jnp.arange(w) // patch, gw - 1)
  pixels = tokens[:, rows][:, :, cols]
  token_mixed = jnp.where(pixels[..., None], images[perm], images)
  flat = tokens.reshape(b, -1).astype(jnp.float32)
  w_a, w_b = LABEL_WEIGHTS[hp.label_rule](attn, attn[perm], flat)
  return token_mixed, w_a, w_b, labels[perm], flat


class TokenMix(ModelAwareMethod):
  name = "tokenmix"
  paper = (
    "Liu, Li, Chen, Shen, Shen, Qiao. TokenMix: Rethinking Image Mixing for Data Augmentation in Vision "
    "Transformers. ECCV 2022"
  )

  @dataclasses.dataclass(frozen=True)
  class Params:
    mask_type: Literal["block", "random"] = "block"  # BEiT-style rectangles, or a uniform token subset
    minimum_tokens: int = 14  # m: tokens pasted beyond int((1−λ)·P), on a 196-token grid (scaled by P/196)
    # How attention weighs the labels: the paper's rule, or OpenMixup's (inverted, unnormalised; module docstring).
    label_rule: Literal["paper", "openmixup"] = "paper"

  def mix(self, mesh, rng, images, labels, attention, *, alpha, hp: Params, patch: int):
    """(MixResult, partner-token mask [B, P], loss scale): the classifier loss on the MixResult's targets is to
    be multiplied by the scale (1 under the paper's rule)."""
    if hp.minimum_tokens < 0:
      raise ValueError(f"tokenmix minimum_tokens must be >= 0, got {hp.minimum_tokens}")
    k_lam, k_local = jax.random.split(rng)
    lam = sample_beta_lam(k_lam, alpha)
    attn = jax.lax.stop_gradient(jnp.mean(attention.astype(jnp.float32), axis=1))

    def local(r, l_, x, a, y):
      return tokenmix_local(r, l_, x, a, y, patch=patch, hp=hp)

    mixed, w_a, w_b, labels_b, tokens = per_device.on_shards(
      mesh, local, k_local, images, attn, labels, replicated=(lam,)
    )
    lam_n, scale = label_weights_as_lam(w_a, w_b, hp.label_rule)
    return MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam_n), tokens, scale

  def check_model(self, model_cfg, hp: Params) -> None:
    del hp
    require_attention(model_cfg, self.name)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    info = require_attention(ctx.model, self.name)
    k_mix, k_drop = jax.random.split(rng)
    (_, clean), _ = ctx.model_fn(
      params, batch_stats, images.astype(ctx.compute_dtype), train=False, return_attention=True
    )
    mix, _, scale = self.mix(
      ctx.mesh, k_mix, images, labels, clean["attention"], alpha=alpha, hp=hp, patch=info.patch_size
    )
    metrics = {"lam": jnp.mean(mix.lam)}
    if hp.label_rule == "openmixup":
      metrics["label_scale"] = scale
    loss, out = forward_loss(ctx, params, batch_stats, mix, k_drop, metrics)
    return loss * scale, out


register_model_aware(TokenMix())
