"""The per-iteration schedules of AutoMix/SAMix: encoder momentum, mask-loss weight, MixBlock optimizer.

Spec 2.14 steps 8 and 12, and the MixBlock's parameter group (2.14 "Optimiser", review note 3).
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import jax
import jax.numpy as jnp
import optax

MaskLossSchedule = Literal["cosine", "compounding", "constant"]
MASK_LOSS_SCHEDULES = typing.get_args(MaskLossSchedule)


def encoder_momentum(step: jax.Array, total_steps: int, *, base: float, end: float, scope_start: float) -> jax.Array:
  """OpenMixup's ``CosineScheduleHook`` (constant warm-up): ``base`` for t < scope_start·T, then
  ``end − (end − base)·(1 + cos(π t/T))/2`` (the cosine measured from t = 0, so it starts just above ``base``)."""
  t = jnp.asarray(step, jnp.float32) / float(max(1, total_steps))
  cosine = end - (end - base) * 0.5 * (1.0 + jnp.cos(math.pi * jnp.minimum(t, 1.0)))
  return jnp.where(t < scope_start, jnp.float32(base), cosine).astype(jnp.float32)


def mask_loss_weight(
  step: jax.Array, previous: jax.Array, total_steps: int, *, base: float, schedule: str
) -> jax.Array:
  """Weight of the mask regulariser at iteration ``step`` (``previous``: the weight used at step − 1, or
  ``base`` before the first step).

  * ``"cosine"`` — the stated intent: ``base·(1 + cos(π t/T))/2``, on for the whole run.
  * ``"compounding"`` — what the reference code runs (review note 1): its hook restarts the cosine from the
    current value every iteration, so w(t) = w(t−1)·(1 + cos(π t/T))/2 = base·Π_{s≤t}(1 + cos(π s/T))/2, which
    is ≈ 0 after a few epochs. Needs the previous value, hence it is carried in the method state.
  * ``"constant"`` — ``base`` throughout: configs without the annealing hook (the reference's Tiny-ImageNet
    AutoMix/SAMix configs).
  """
  if schedule not in MASK_LOSS_SCHEDULES:
    raise ValueError(f"mask_loss_schedule={schedule!r} is not valid; use one of {MASK_LOSS_SCHEDULES}")
  if schedule == "constant":
    return jnp.float32(base)
  t = jnp.asarray(step, jnp.float32) / float(max(1, total_steps))
  factor = 0.5 * (1.0 + jnp.cos(math.pi * jnp.minimum(t, 1.0)))
  start = jnp.float32(base) if schedule == "cosine" else previous
  return (start * factor).astype(jnp.float32)


def mixblock_optimizer(ctx, hp, mixblock_params) -> tuple[optax.GradientTransformation, object]:
  """The MixBlock's own optimizer and lr schedule: the classifier's optimizer kind and settings with the
  MixBlock's overrides (the reference's ``mix_block`` parameter group plus its ``addtional_scheduler``).

  Returns ``(tx, schedule)`` where ``tx`` runs at a unit learning rate and the caller multiplies its updates
  by ``schedule(global_step)``: the lr follows the iteration count even on iterations that skip the MixBlock
  update (``mixblock_update_prob`` < 1), as the reference's per-iteration lr hook does, while the optimizer's
  own statistics (momentum, Adam moments and their bias-correction count) stay frozen on skipped iterations,
  as PyTorch leaves parameters without a gradient untouched. Every optimizer here applies its lr last
  (SGD, AdamW with decoupled decay, LAMB), so scaling the unit-lr update is exactly the scheduled update.

  * lr: ``mixblock_lr`` (None → the classifier's peak lr after batch scaling), cosine to ``mixblock_min_lr``;
  * warmup: ``mixblock_warmup_epochs`` (0 by default — the ViT configs list warmup but never enable it);
  * ``mixblock_momentum`` / ``mixblock_lr_by_epoch`` / ``mixblock_grad_clip``: None → the classifier's value.
  """
  if ctx.make_optimizer is None:
    raise ValueError("AutoMix/SAMix train a MixBlock and need StepContext.make_optimizer (the train step sets it)")
  return ctx.make_optimizer(
    mixblock_params,
    lr=hp.mixblock_lr,
    min_lr=hp.mixblock_min_lr,
    warmup_epochs=hp.mixblock_warmup_epochs,
    momentum=hp.mixblock_momentum,
    schedule_by_epoch=hp.mixblock_lr_by_epoch,
    grad_clip_norm=hp.mixblock_grad_clip,
  )
