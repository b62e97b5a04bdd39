"""The jitted train and eval steps.

One ``jax.jit`` program per step, compiled once per run: the state is replicated and donated, the batch is
sharded along the mesh's ``data`` axis, so BatchNorm statistics and the loss are computed over the global batch
(XLA inserts the cross-device reductions). Mixing runs inside the step on device. The step's random numbers are
``fold_in(key(seed), step)``, so a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from mixjax import losses, mixing
from mixjax.sharding import batch_sharded, replicated
from mixjax.train_state import ModelFn, TrainState, compute_dtype, ema_decay_at


def normalize_images(images_uint8: jax.Array, data_cfg) -> jax.Array:
  """uint8 NHWC → float32 (x − mean)/std, done on device so the host sends 1 byte per pixel."""
  mean = jnp.asarray(data_cfg.mean, jnp.float32)
  std = jnp.asarray(data_cfg.std, jnp.float32)
  return (images_uint8.astype(jnp.float32) - mean) / std


def denormalize_images(images: jax.Array, data_cfg) -> jax.Array:
  """Inverse of ``normalize_images`` back to uint8 (for pictures of mixed samples)."""
  mean = jnp.asarray(data_cfg.mean, jnp.float32)
  std = jnp.asarray(data_cfg.std, jnp.float32)
  return jnp.clip(jnp.round(images.astype(jnp.float32) * std + mean), 0, 255).astype(jnp.uint8)


def make_mixed_batch_fn(config, mesh, num_classes: int) -> Callable:
  """(step, uint8 batch) → MixResult: the step's input side, shared by the train step and the TB pictures."""

  def mixed_batch(step, batch):
    rng = jax.random.fold_in(jax.random.key(config.seed), step)
    mix_rng = jax.random.fold_in(rng, 0)
    images = normalize_images(batch["image"], config.data)
    labels = losses.one_hot_smoothed(batch["label"], num_classes, config.loss.get("label_smoothing", 0.0))
    return mixing.mix_batch(config.mixing, mix_rng, images, labels, mesh=mesh)

  return mixed_batch


def make_train_step(config, *, model_fn: ModelFn, tx: optax.GradientTransformation,
                    schedule: Callable, mesh, num_classes: int, steps_per_epoch: int) -> Callable:
  """Returns ``train_step(state, batch) -> (state, metrics)``, jitted, with the state donated."""
  dtype = compute_dtype(config)
  loss_name = config.loss.name
  use_ema = bool(config.get("ema", {}).get("decay", 0.0))
  mixed_batch = make_mixed_batch_fn(config, mesh, num_classes)

  def step_fn(state: TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
    drop_rng = jax.random.fold_in(rng, 1)
    mix = mixed_batch(state.step, batch)

    def loss_fn(params):
      logits, new_stats = model_fn(params, state.batch_stats, mix.images.astype(dtype), train=True,
                                   rng=drop_rng)
      if loss_name == "decouple":
        loss = mixing.decoupled_mixup_loss(logits, mix, **dict(config.loss.get("decouple", {})))
      else:
        loss = jnp.mean(losses.classification_loss(
            loss_name, logits, mix.targets, bce_reduction=config.loss.get("bce_reduction", "sum_classes")))
      return loss, (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if use_ema:
      m = ema_decay_at(config, state.step, steps_per_epoch)
      ema_params = jax.tree.map(lambda e, p: m * e + (1.0 - m) * p, state.ema_params, params)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state, ema_params=ema_params)
    labels = batch["label"]
    metrics = {
        "loss": loss,
        "top1": jnp.mean(losses.topk_correct(logits, labels, 1)),
        "lr": schedule(state.step),
        "grad_norm": optax.tree.norm(grads),
        "nonfinite": jnp.logical_not(jnp.isfinite(loss)).astype(jnp.float32),
    }
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=(0,))


def make_eval_step(config, *, model_fn: ModelFn, mesh, num_classes: int) -> Callable:
  """Returns ``eval_step(params, batch_stats, batch) -> sums`` of correct/loss/count over real examples."""
  dtype = compute_dtype(config)

  def step_fn(params, batch_stats, batch):
    images = normalize_images(batch["image"], config.data).astype(dtype)
    logits, _ = model_fn(params, batch_stats, images, train=False)
    logits = logits.astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    labels = batch["label"]
    ce = losses.soft_cross_entropy(logits, jax.nn.one_hot(labels, num_classes))
    k5 = min(5, num_classes)
    return {
        "correct1": jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
        "correct5": jnp.sum(losses.topk_correct(logits, labels, k5) * mask),
        "loss_sum": jnp.sum(ce * mask),
        "count": jnp.sum(mask),
    }

  return jax.jit(step_fn, in_shardings=(replicated(mesh), replicated(mesh), batch_sharded(mesh)),
                 out_shardings=replicated(mesh))


def run_evaluation(eval_step: Callable, params, batch_stats, batches) -> dict:
  """Sums the eval step over a one-pass iterator of global batches; returns top1/top5 (%), loss, count."""
  totals = None
  for batch in batches:
    sums = eval_step(params, batch_stats, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {"top1": 100.0 * float(totals["correct1"]) / count, "top5": 100.0 * float(totals["correct5"]) / count,
          "loss": float(totals["loss_sum"]) / count, "count": int(count)}
