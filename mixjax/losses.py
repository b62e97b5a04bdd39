"""Classification losses on soft (mixed) targets.

Mixup-family methods turn every label into a distribution over classes, so all losses here take a soft target
matrix ``targets`` of shape [B, K] whose rows sum to one. Hard labels are the special case of one-hot rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.config_args import ConfigError

LOSSES = ("soft_ce", "bce")


def one_hot_smoothed(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
  """One-hot targets with label smoothing: (1-ε)·onehot + ε/K (the 'original' mode of DeiT/OpenMixup).

  Smoothing is affine, so smoothing before mixing equals mixing the smoothed targets of both partners.
  """
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if smoothing:
    targets = targets * (1.0 - smoothing) + smoothing / num_classes
  return targets


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-sample Σ_k −t_k·log softmax(z)_k, shape [B]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets * logp, axis=-1)


def binary_cross_entropy(logits: jax.Array, targets: jax.Array, *, reduction: str = "sum_classes") -> jax.Array:
  """Per-sample sigmoid BCE against soft targets (the RSB recipes' loss), shape [B].

  ``reduction`` picks the class reduction deliberately, because the two references disagree:
  ``"sum_classes"`` sums over the K classes (OpenMixup's ``ClsMixupHead``: loss ≈ K× timm's), ``"mean_classes"``
  averages over them (timm's ``BinaryCrossEntropy``). Both are then averaged over the batch by the caller.
  """
  logits = logits.astype(jnp.float32)
  # log σ(z) = −softplus(−z); log(1−σ(z)) = −softplus(z): numerically stable for large |z|.
  per_class = targets * jax.nn.softplus(-logits) + (1.0 - targets) * jax.nn.softplus(logits)
  if reduction == "sum_classes":
    return jnp.sum(per_class, axis=-1)
  if reduction == "mean_classes":
    return jnp.mean(per_class, axis=-1)
  raise ConfigError(f"Unknown BCE reduction {reduction!r}; use 'sum_classes' or 'mean_classes'.")


def classification_loss(
  name: str, logits: jax.Array, targets: jax.Array, *, bce_reduction: str = "sum_classes"
) -> jax.Array:
  """Per-sample loss by name (``soft_ce`` | ``bce``)."""
  if name == "soft_ce":
    return soft_cross_entropy(logits, targets)
  if name == "bce":
    return binary_cross_entropy(logits, targets, reduction=bce_reduction)
  raise ConfigError(
    f"Unknown loss {name!r}. Valid losses: {', '.join(LOSSES)} (and 'decouple' via the mixing library)."
  )


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the integer label is among the k largest logits, per sample, shape [B]."""
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
