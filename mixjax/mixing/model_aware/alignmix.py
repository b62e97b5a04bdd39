"""AlignMix (Venkataramanan, Kijak, Amsaleg, Avrithis, "AlignMixup: Improving Representations By Interpolating
Aligned Features", CVPR 2022), as OpenMixup configures it for ImageNet (spec 2.11).

The model runs once on the clean batch; its last-stage feature map F (h·w positions × C) is replaced, before
global pooling and the classifier, by an aligned mix with the partner F[π]: an entropic OT plan P between the
positions (cost ‖f_a,i − f_b,j‖², log-domain Sinkhorn with ``eps`` and at most ``max_iter`` rounds, treated as a
constant) re-expresses one map in the other's positions (R = hw·P, direction drawn per batch), then
``λ·F_a + (1−λ)·F̃_b`` (or ``λ·F̃_a + (1−λ)·F_b``). Targets ``λ·y + (1−λ)·y[π]``, λ ~ Beta(α, α).

OpenMixup's ImageNet config trains ``mix_mode=['manifoldmix', 'alignmix']`` with a uniform choice per step; use
the mode list ``method=('manifoldmix', 'alignmix')`` for that, or ``manifoldmix_prob=0.5`` to draw the same
switch inside this one method (ManifoldMix over ``manifoldmix_layer``, same α; default 0: AlignMix alone). Both
run in ONE model call over the candidate stages (``mix_stage`` as a tuple): the plain blend with λ at the drawn
manifold stage and 1 elsewhere, the aligned mix at the last stage under ``lax.cond`` (its Sinkhorn runs only
when drawn), so the program holds one forward's activations, not one per branch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.model_aware.manifoldmix import manifold_layers, staged_feature_mix_fn
from mixjax.mixing.core.protocol import ModelAwareMethod
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.ops.model_info import model_info, models_where
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.ops.sampling import sample_beta_lam
from mixjax.mixing.ops.sinkhorn import sinkhorn_plan, squared_distances


def align_and_mix(
  feat_a: jax.Array, feat_b: jax.Array, lam, flip, *, eps: float, max_iter: int, tol: float = 0.1
) -> jax.Array:
  """Aligned mix of two batches of feature maps [B, h, w, C] (flip: re-express F_a instead of F_b)."""
  b, h, w, c = feat_a.shape
  fa = feat_a.reshape(b, h * w, c).astype(jnp.float32)
  fb = feat_b.reshape(b, h * w, c).astype(jnp.float32)
  plan, _ = sinkhorn_plan(jax.lax.stop_gradient(squared_distances(fa, fb)), eps=eps, max_iter=max_iter, tol=tol)
  rescaled = jax.lax.stop_gradient(plan * (h * w))  # R: rows/columns sum to ≈ 1
  fb_in_a = jnp.einsum("bij,bjc->bic", rescaled, fb)  # F_b re-expressed at F_a's positions
  fa_in_b = jnp.einsum("bij,bic->bjc", rescaled, fa)  # F_a re-expressed at F_b's positions
  mixed_a = lam * fa + (1 - lam) * fb_in_a
  mixed_b = lam * fa_in_b + (1 - lam) * fb
  mixed = jnp.where(flip, mixed_b, mixed_a)
  return mixed.reshape(b, h, w, c).astype(feat_a.dtype)


def alignmix_fn(
  mesh, rng: jax.Array, lam: jax.Array, flip: jax.Array, *, eps: float, max_iter: int, active: jax.Array | None = None
):
  """``h → aligned mix of h and h[π]`` on each device's rows (π from ``rng``); with a traced bool ``active``,
  ``h`` itself unless ``active`` (a ``lax.cond``: the Sinkhorn iterations run only when the mix is drawn)."""

  def aligned(r, lam_, flip_, h):
    partner = per_device.permute_rows(h, per_device.local_permutation(r, h.shape[0]))
    return align_and_mix(h, partner, lam_, flip_, eps=eps, max_iter=max_iter)

  if active is None:
    return lambda h: per_device.on_shards(mesh, aligned, rng, h, replicated=(lam, flip))

  def local(r, lam_, flip_, active_, h):
    return jax.lax.cond(active_, lambda x: aligned(r, lam_, flip_, x), lambda x: x, h)

  return lambda h: per_device.on_shards(mesh, local, rng, h, replicated=(lam, flip, active))


class AlignMix(ModelAwareMethod):
  name = "alignmix"
  paper = (
    "Venkataramanan, Kijak, Amsaleg, Avrithis. AlignMixup: Improving Representations By Interpolating "
    "Aligned Features. CVPR 2022"
  )

  @dataclasses.dataclass(frozen=True)
  class Params:
    eps: float = 0.1  # entropic regularisation of the Sinkhorn plan (on the squared feature distances)
    max_iter: int = 100  # Sinkhorn rounds at most (it stops earlier at tolerance 0.1)
    # Probability of a ManifoldMix draw (over ``manifoldmix_layer``, same α) instead of the aligned mix, in the
    # same model call: 0.5 is OpenMixup's ImageNet 50/50 switch drawn inside this method (0: AlignMix alone).
    manifoldmix_prob: float = 0.0
    manifoldmix_layer: tuple[int, int] = (0, 3)  # the ManifoldMix draw's stages range(*layer)

  def _last_stage(self, model_cfg) -> int:
    info = model_info(model_cfg)
    last = info.num_stages - 1
    if last not in info.mix_stages:
      raise ValueError(
        f"alignmix mixes the last stage's feature map; model {info.name!r} cannot mix there "
        f"(mix_stages {info.mix_stages}). Use one of: {', '.join(models_where('last_stage_mixing'))}"
      )
    return last

  def check_model(self, model_cfg, hp: Params) -> None:
    self._last_stage(model_cfg)
    if hp.manifoldmix_prob > 0:
      manifold_layers(model_cfg, hp.manifoldmix_layer, "alignmix")

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    last = self._last_stage(ctx.model)
    prob = hp.manifoldmix_prob
    if not 0.0 <= prob <= 1.0:
      raise ValueError(f"alignmix manifoldmix_prob must be in [0, 1], got {prob}")
    manifold = manifold_layers(ctx.model, hp.manifoldmix_layer, "alignmix") if prob > 0 else ()
    k_lam, k_perm, k_flip, k_mode, k_layer, k_drop = jax.random.split(rng, 6)
    lam = sample_beta_lam(k_lam, alpha)
    flip = jax.random.bernoulli(k_flip)
    index = jnp.asarray(len(manifold), jnp.int32)
    if manifold:
      use_manifold = jax.random.uniform(k_mode) < prob
      index = jnp.where(use_manifold, jax.random.randint(k_layer, (), 0, len(manifold)), index)
    eps, max_iter = hp.eps, hp.max_iter
    if manifold:
      # One model call over (manifold stages..., last stage): each hook leaves h unchanged unless drawn.
      n = len(manifold)
      chosen = jnp.where(index < n, jnp.asarray(manifold, jnp.int32)[jnp.minimum(index, n - 1)], -1)
      plain = staged_feature_mix_fn(ctx.mesh, k_perm, lam, chosen)  # identity everywhere when aligning
      align = alignmix_fn(ctx.mesh, k_perm, lam, flip, eps=eps, max_iter=max_iter, active=index == n)

      def mix_fn(h, stage):
        h = plain(h, stage) if stage in manifold else h
        return align(h) if stage == last else h

      stages = tuple(sorted(set(manifold) | {last}))
    else:
      stages, mix_fn = last, alignmix_fn(ctx.mesh, k_perm, lam, flip, eps=eps, max_iter=max_iter)
    logits, new_stats = ctx.model_fn(
      params, batch_stats, images.astype(ctx.compute_dtype), train=True, rng=k_drop, mix_stage=stages, mix_fn=mix_fn
    )
    mix = MixResult(
      images=images,
      labels_a=labels,
      labels_b=per_device.partner_labels(ctx.mesh, k_perm, labels),
      lam=jnp.broadcast_to(lam, (labels.shape[0],)),
    )
    metrics = {"lam": lam, "aligned": (index == len(manifold)).astype(jnp.float32)}
    return ctx.classification_loss(logits, mix), (logits, new_stats, metrics)


register_model_aware(AlignMix())
