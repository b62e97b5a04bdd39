"""Input-gradient saliency of the classifier being trained, inside the jitted step.

PuzzleMix (Kim et al., ICML 2020), Co-Mixup (Kim et al., ICLR 2021) and Saliency Grafting (Park et al., AAAI
2022) all measure how much each pixel matters by the gradient of the classification loss on the clean batch
w.r.t. the input, reduced over channels. The pass runs with the model in eval mode (running BN statistics, no
drop path) under ``stop_gradient``: it steers the mixing and is never differentiated through.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.result import MixResult


def input_gradient(ctx, params, batch_stats, images: jax.Array, labels: jax.Array) -> jax.Array:
  """∂loss/∂x [B, H, W, C] in float32 of the configured loss on the clean batch (model in eval mode)."""

  def clean_loss(x):
    logits, _ = ctx.model_fn(params, batch_stats, x.astype(ctx.compute_dtype), train=False)
    ones = jnp.ones((labels.shape[0],), jnp.float32)
    return ctx.classification_loss(logits, MixResult(images=x, labels_a=labels, labels_b=labels, lam=ones))

  grad = jax.grad(clean_loss)(jax.lax.stop_gradient(images))
  return jax.lax.stop_gradient(grad.astype(jnp.float32))


def input_saliency(ctx, params, batch_stats, images: jax.Array, labels: jax.Array) -> jax.Array:
  """‖∂loss/∂x‖ per pixel as PuzzleMix defines it: root mean square over channels, [B, H, W]."""
  grad = input_gradient(ctx, params, batch_stats, images, labels)
  return jnp.sqrt(jnp.mean(grad**2, axis=-1))
