"""Pictures of the methods that mix hidden features or use attention maps: ManifoldMix, AlignMix, TransMix,
TokenMix, AttentiveMix+ (see ``pictures.py`` for the builder protocol)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.result import MixResult, blend
from mixjax.mixing.model_aware import attentivemix
from mixjax.mixing.ops.sampling import sample_beta_lam
from mixjax.mixing.ops.sinkhorn import sinkhorn_plan, squared_distances
from mixjax.visualize import stand_ins
from mixjax.visualize.pictures import register_picture

ALIGN_GRID = 8  # the AlignMix picture aligns the photos' ALIGN_GRID × ALIGN_GRID colour patches


@register_picture(
  "manifoldmix",
  note="mixes hidden features at a random stage; shown: stage 0 (the input), where it is a pixel blend",
  mixes_features=True,
)
def manifoldmix(step, images, labels, *, alpha, hp):
  """Only layer 0 (the input) is visible: the picture is the input-level mix ManifoldMix does there."""
  del step, hp

  @jax.jit
  def draw(rng, images, labels):
    k_lam, k_perm = jax.random.split(rng)
    lam = sample_beta_lam(k_lam, alpha)
    perm = per_device.local_permutation(k_perm, images.shape[0])
    return MixResult(
      images=blend(images, images[perm], lam),
      labels_a=labels,
      labels_b=labels[perm],
      lam=jnp.broadcast_to(lam, (labels.shape[0],)),
    )

  return lambda rng: draw(rng, images, labels)


@register_picture(
  "alignmix",
  note=(
    "mixes last-stage feature maps aligned by optimal transport; shown: the same alignment on "
    "the photos' 8×8 colour patches, blended with λ"
  ),
  mixes_features=True,
)
def alignmix(step, images, labels, *, alpha, hp):
  """The alignment made visible: the partner's 8×8 patches moved by the OT plan between the two images'
  patch colours (the method aligns feature maps; a random network's features would show nothing), then
  blended with λ."""
  del step
  b, hh, ww, c = images.shape
  g = ALIGN_GRID

  @jax.jit
  def draw(rng, images, labels):
    k_lam, k_perm = jax.random.split(rng)
    lam = sample_beta_lam(k_lam, alpha)
    perm = per_device.local_permutation(k_perm, b)
    patches = images.reshape(b, g, hh // g, g, ww // g, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
    means = images.reshape(b, g, hh // g, g, ww // g, c).mean(axis=(2, 4)).reshape(b, g * g, c)
    cost = squared_distances(means, means[perm])
    plan, _ = sinkhorn_plan(cost / jnp.maximum(jnp.mean(cost), 1e-6), eps=hp.eps, max_iter=hp.max_iter)
    moved = jnp.einsum("bij,bjd->bid", plan * g * g, patches[perm])
    moved = moved.reshape(b, g, g, hh // g, ww // g, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hh, ww, c)
    return MixResult(
      images=blend(images, moved, lam), labels_a=labels, labels_b=labels[perm], lam=jnp.broadcast_to(lam, (b,))
    )

  return lambda rng: draw(rng, images, labels)


@register_picture(
  "transmix", note="λ = ½ box area + ½ class-token attention outside the box, of an untrained 4-block ViT"
)
def transmix(step, images, labels, *, alpha, hp):
  """CutMix boxes relabelled by a small random ViT's attention (its attention is untrained); λ weighs the two
  with the configured ``ratio``."""
  side = stand_ins.vit_input_side(images.shape[1])
  fn, params, stats = stand_ins.small_vit(labels.shape[-1], images.shape[1])
  patch = stand_ins.vit_patch(images.shape[1])
  images = images[:, :side, :side]

  @jax.jit
  def draw(rng, images, labels, params, stats):
    mixed, region_b, lam0, labels_b = step.draw(None, rng, images, labels, alpha=alpha, hp=hp)
    (_, feats), _ = fn(params, stats, mixed, train=False, return_attention=True)
    lam = step.reweight(lam0, region_b, feats["attention"], hp.ratio, patch)
    return MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam)

  return lambda rng: draw(rng, images, labels, params, stats)


@register_picture("tokenmix", note="λ from an untrained 4-block ViT's class-token attention")
def tokenmix(step, images, labels, *, alpha, hp):
  """Token masks relabelled by a small random ViT's attention (its attention is untrained). Under
  ``label_rule='openmixup'`` the tiles show its batch-mean λ; the loss scale it also implies is not drawn."""
  side = stand_ins.vit_input_side(images.shape[1])
  fn, params, stats = stand_ins.small_vit(labels.shape[-1], images.shape[1])
  patch = stand_ins.vit_patch(images.shape[1])
  images = images[:, :side, :side]

  @jax.jit
  def draw(rng, images, labels, params, stats):
    (_, feats), _ = fn(params, stats, images, train=False, return_attention=True)
    mix, _, _ = step.mix(None, rng, images, labels, feats["attention"], alpha=alpha, hp=hp, patch=patch)
    return mix

  return lambda rng: draw(rng, images, labels, params, stats)


@register_picture("attentivemix", note="cells picked by an untrained ResNet-18 (width 8) extractor")
def attentivemix_picture(step, images, labels, *, alpha, hp):
  """With the configured extractor, else a random ResNet-18 of width 8 (then the chosen cells mean nothing,
  and a narrow one picks them as well as a wide one)."""
  if not hp.extractor_checkpoint:
    hp = dataclasses.replace(
      hp, allow_random_extractor=True, extractor_kwargs=dict(hp.extractor_kwargs or {"width": 8})
    )
  ext_params, ext_stats = attentivemix.load_extractor_weights(hp)
  ext = {"params": ext_params, "batch_stats": ext_stats}
  draw = jax.jit(lambda r, x, y, e: step.mix(None, r, x, y, e, alpha=alpha, hp=hp))
  return lambda rng: draw(rng, images, labels, ext)
