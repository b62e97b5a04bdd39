"""'vanilla': no mixing, the baseline every mixup is compared against."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult


@register_method("vanilla", paper="no mixing (plain one-hot / smoothed targets)", uses_alpha=False)
def vanilla(rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float = 1.0, lam=None) -> MixResult:
  """Returns the batch unchanged with ``lam = 1`` and ``labels_b = labels_a``.

  ``rng``, ``alpha`` and ``lam`` are accepted for a uniform signature (so it
  can sit in a multi-mode list) and ignored.
  """
  del rng, alpha, lam
  return MixResult(images=images, labels_a=labels, labels_b=labels, lam=jnp.ones((labels.shape[0],), jnp.float32))
