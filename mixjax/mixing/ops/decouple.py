"""DecoupleMix: the decoupled mixup loss, usable with any mixing method.

Liu, Li, Wang, Lin, Li. "Harnessing Hard Mixed Samples with Decoupled
Regularizer." NeurIPS 2023 (spec 2.13).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.result import MixResult


def _log_softmax_without(logits: jax.Array, target: jax.Array, removed: jax.Array) -> jax.Array:
  """log softmax(z)[target] over the classes other than ``removed``, [B]."""
  num_classes = logits.shape[-1]
  keep = jnp.arange(num_classes)[None, :] != removed[:, None]
  masked = jnp.where(keep, logits, -jnp.inf)
  target_logit = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
  return target_logit - jax.nn.logsumexp(masked, axis=-1)


PAIRINGS = ("clean", "reference")


def decoupled_mixup_loss(
  logits: jax.Array, mix: MixResult, *, eta: float = 0.1, min_weight: float = 1e-3, pairing: str = "clean"
) -> jax.Array:
  """Soft-target CE plus the decoupled terms, averaged over the batch.

  For each sample with mixed classes a (weight λ) and b (weight 1−λ)::

      loss = Σ_c −t_c log softmax(z)_c
             + η·λ     · −log( e^{z_a} / Σ_{c≠b} e^{z_c} )
             + η·(1−λ) · −log( e^{z_b} / Σ_{c≠a} e^{z_c} )

  i.e. each mixed class is also scored by a softmax from which the other
  mixed class is removed, so the two no longer compete (OpenMixup's
  ``eta_weight=dict(eta=0.1, mode='both')``, identity λ rescaling).

  Classes are the argmax of ``labels_a`` / ``labels_b`` (works with
  label-smoothed targets). The decoupled terms are dropped for a sample whose
  two classes coincide or whose λ is within ``min_weight`` of 0 or 1, where
  it reduces to soft CE, as in the reference.

  ``pairing='clean'`` (default): η_a pairs with class a's λ for every sample, per-sample λ is honoured and
  λ = 0.5 keeps the decoupled terms. ``pairing='reference'`` reproduces OpenMixup's code (spec 2.13 PITFALL):
  the weights are read off sample 0's target in class-index order, so η·λ goes to class a only when sample 0's
  class a is the lower index and to class b otherwise (a per-batch coin flip), and the decoupled terms are
  skipped for λ = 0.5.

  Args:
    logits: [B, K] class scores.
    mix: the ``MixResult`` the images were mixed with.
    eta: weight of the decoupled terms (0.1 in OpenMixup's configs).
    min_weight: λ margin below which a pair counts as unmixed.
    pairing: 'clean' or 'reference' (see above).

  Returns:
    scalar float32 loss.
  """
  logits = logits.astype(jnp.float32)
  targets = mix.targets.astype(jnp.float32)
  soft_ce = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  class_a = jnp.argmax(mix.labels_a, axis=-1)
  class_b = jnp.argmax(mix.labels_b, axis=-1)
  if pairing not in PAIRINGS:
    raise ValueError(f"decouple pairing must be one of {PAIRINGS}, got {pairing!r}")
  lam = mix.lam.astype(jnp.float32)
  weight_a, weight_b = lam, 1 - lam
  active = (class_a != class_b) & (lam > min_weight) & (lam < 1 - min_weight)
  if pairing == "reference":
    swapped = class_a[0] > class_b[0]
    weight_a, weight_b = jnp.where(swapped, weight_b, weight_a), jnp.where(swapped, weight_a, weight_b)
    active = active & (lam != 0.5)
  decoupled = -(
    eta * weight_a * _log_softmax_without(logits, class_a, class_b)
    + eta * weight_b * _log_softmax_without(logits, class_b, class_a)
  )
  return jnp.mean(soft_ce + jnp.where(active, decoupled, 0.0))
