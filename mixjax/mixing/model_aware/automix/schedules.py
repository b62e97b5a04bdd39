"""The per-iteration schedules of AutoMix/SAMix: encoder momentum, mask-loss weight, MixBlock optimizer.

Spec 2.14 steps 8 and 12, and the MixBlock's parameter group (2.14 "Optimiser", review note 3).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixjax import optim

MASK_LOSS_SCHEDULES = ("cosine", "compounding", "constant")


def encoder_momentum(step: jax.Array, total_steps: int, *, base: float, end: float,
                     scope_start: float) -> jax.Array:
  """OpenMixup's ``CosineScheduleHook`` (constant warm-up): ``base`` for t < scope_start·T, then
  ``end − (end − base)·(1 + cos(π t/T))/2`` (the cosine measured from t = 0, so it starts just above ``base``)."""
  t = jnp.asarray(step, jnp.float32) / float(max(1, total_steps))
  cosine = end - (end - base) * 0.5 * (1.0 + jnp.cos(math.pi * jnp.minimum(t, 1.0)))
  return jnp.where(t < scope_start, jnp.float32(base), cosine).astype(jnp.float32)


def mask_loss_weight(step: jax.Array, previous: jax.Array, total_steps: int, *, base: float,
                     schedule: str) -> jax.Array:
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
  main = ctx.config.optimizer
  cfg = ml_collections.ConfigDict(main.to_dict())
  peak = optim.scaled_learning_rate(main, ctx.config.batch_size)
  cfg.lr = float(peak if hp["mixblock_lr"] is None else hp["mixblock_lr"])
  cfg.base_batch_size = 0
  cfg.min_lr = float(hp["mixblock_min_lr"])
  cfg.warmup_epochs = float(hp["mixblock_warmup_epochs"])
  if hp["mixblock_momentum"] is not None:
    cfg.momentum = float(hp["mixblock_momentum"])
  if hp["mixblock_lr_by_epoch"] is not None:
    cfg.schedule_by_epoch = bool(hp["mixblock_lr_by_epoch"])
  if hp["mixblock_grad_clip"] is not None:
    cfg.grad_clip_norm = float(hp["mixblock_grad_clip"])
  steps_per_epoch = max(1, ctx.steps_per_epoch)
  epochs = max(1, -(-ctx.total_steps // steps_per_epoch))
  schedule = optim.make_lr_schedule(cfg, global_batch_size=ctx.config.batch_size,
                                    steps_per_epoch=steps_per_epoch, total_epochs=epochs)
  return optim.make_optimizer(cfg, mixblock_params, 1.0), schedule
