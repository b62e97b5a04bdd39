"""Small randomly initialised networks for ``python -m mixjax.visualize`` pictures of model-aware methods.

The visualiser has no training run to take a model from; these stand-ins make the mechanics of a method visible
(masks, transport, λ bookkeeping). Their saliency/attention is that of an untrained network, so the *placement*
of regions in those pictures says nothing about a trained model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax import models
from mixjax.train_state import ModelFn


def _split(model):
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return ModelFn(graphdef), nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


def small_cnn(num_classes: int):
  return _split(models.build_model("resnet18", num_classes=num_classes, rngs=nnx.Rngs(0), width=8))


def small_vit(num_classes: int, image_size: int):
  patch = max(image_size // 14, 1)
  return _split(models.build_model("deit_tiny", num_classes=num_classes, rngs=nnx.Rngs(0), patch_size=patch,
                                   img_size=patch * 14, depth=4, embed_dim=32, num_heads=2))


def small_cnn_saliency(images: jax.Array, labels: jax.Array) -> jax.Array:
  """Input-gradient saliency [B, H, W] of a random ResNet-18 (width 8)."""
  fn, params, stats = small_cnn(labels.shape[-1])

  def loss(x):
    logits, _ = fn(params, stats, x, train=False)
    return -jnp.sum(labels * jax.nn.log_softmax(logits))
  grad = jax.grad(loss)(images.astype(jnp.float32))
  return jnp.sqrt(jnp.mean(grad ** 2, axis=-1))
