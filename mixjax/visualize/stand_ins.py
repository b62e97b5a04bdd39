"""Small randomly initialised networks for ``python -m mixjax.visualize`` pictures of model-aware methods.

The visualiser has no training run to take a model from; these stand-ins make the mechanics of a method visible
(masks, transport, λ bookkeeping). Their saliency/attention is that of an untrained network, so the *placement*
of regions in those pictures says nothing about a trained model.

They are deliberately tiny (one residual block per stage; a 4-block ViT): a picture costs its compile time, and
a deeper random network would only draw the same kind of random saliency more slowly. Built once per shape and
cached.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax import models
from mixjax.models import resnet
from mixjax.models.functional import ModelFn

# Patch grids tried for the small ViT, in order: the first that divides the picture side is used (14 is
# DeiT's grid at 224 px); otherwise the side is cropped to a multiple of 14 patches.
VIT_GRIDS = (14, 16, 12, 8)


def _split(model):
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return ModelFn(graphdef), nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


@functools.lru_cache(maxsize=4)
def small_cnn(num_classes: int):
  """(ModelFn, params, batch_stats) of a random ResNet with one BasicBlock per stage, width 8 (ImageNet stem,
  stages stage0..stage4 as in ResNet-18)."""
  return _split(
    resnet.ResNet(
      resnet.BasicBlock, (1, 1, 1, 1), num_classes=num_classes, rngs=nnx.Rngs(0), width=8, name="picture_resnet"
    )
  )


def vit_patch(image_size: int) -> int:
  """Patch size of ``small_vit`` for square pictures of side ``image_size``."""
  for grid in VIT_GRIDS:
    if image_size % grid == 0:
      return image_size // grid
  return max(image_size // 14, 1)


@functools.lru_cache(maxsize=4)
def small_vit(num_classes: int, image_size: int):
  """(ModelFn, params, batch_stats) of a random 4-block DeiT (width 32) whose patch grid fits ``image_size``
  (``vit_patch``); pictures whose side it does not divide are cropped to ``patch·14``."""
  patch = vit_patch(image_size)
  grid = image_size // patch if image_size % patch == 0 else 14
  return _split(
    models.build_model(
      "deit_tiny",
      num_classes=num_classes,
      rngs=nnx.Rngs(0),
      patch_size=patch,
      img_size=patch * grid,
      depth=4,
      embed_dim=32,
      num_heads=2,
    )
  )


def vit_input_side(image_size: int) -> int:
  """The side the small ViT sees: the picture's, or its crop to 14 patches when no grid divides it."""
  patch = vit_patch(image_size)
  return image_size if image_size % patch == 0 else patch * 14


def input_saliency(net, images: jax.Array, labels: jax.Array) -> jax.Array:
  """Input-gradient saliency [B, H, W] (RMS over channels) of ``net`` = (ModelFn, params, batch_stats)."""
  fn, params, stats = net

  def loss(x):
    logits, _ = fn(params, stats, x, train=False)
    return -jnp.sum(labels * jax.nn.log_softmax(logits))

  grad = jax.grad(loss)(images.astype(jnp.float32))
  return jnp.sqrt(jnp.mean(grad**2, axis=-1))


def small_cnn_saliency(images: jax.Array, labels: jax.Array) -> jax.Array:
  """Input-gradient saliency [B, H, W] of ``small_cnn``."""
  return input_saliency(small_cnn(labels.shape[-1]), images, labels)


def saliency_picture_fn(mix, images: jax.Array, labels: jax.Array):
  """``rng → MixResult`` of a saliency-driven method (PuzzleMix, Co-Mixup, Grafting) for the visualiser:
  ``mix(rng, images, saliency, labels)`` fed with ``small_cnn``'s input-gradient saliency, compiled once."""
  fn, params, stats = small_cnn(labels.shape[-1])

  @jax.jit
  def draw(rng, images, labels, params, stats):
    return mix(rng, images, input_saliency((fn, params, stats), images, labels), labels)

  return lambda rng: draw(rng, images, labels, params, stats)
