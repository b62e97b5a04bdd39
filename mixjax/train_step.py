"""The jitted train and eval steps.

One ``jax.jit`` program per step, compiled once per run: the state is replicated and donated, the batch is
sharded along the mesh's ``data`` axis, so the loss is computed over the global batch, and so are BatchNorm
statistics unless ``model.bn_group_size`` asks for the reference's per-GPU groups (XLA inserts the cross-device
reductions). Mixing runs inside the step on device. The step's random numbers are
``fold_in(key(seed), step)``, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mixjax import checkpoint, losses, mixing, optim
from mixjax.sharding import batch_sharded, replicated
from mixjax.models.functional import ModelFn
from mixjax.train_state import (
  TrainState,
  compute_dtype,
  ema_decay_at,
  make_init_fn,
  model_fn_and_shapes,
  parameter_count,
)


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


def make_classification_loss(config) -> Callable:
  """(logits, MixResult) → scalar: the configured loss on the mixed targets.

  ``loss.lam_batch_mean`` replaces every sample's λ by the batch mean first: what OpenMixup's non-multi-label
  heads do to per-sample λ (PuzzleMix, TransMix in the DeiT-family configs; spec §1.2), so the table cells that
  were trained that way can be reproduced. Here the mean is over the global batch (the reference: per GPU).
  """
  name = config.loss.name
  batch_mean = bool(config.loss.get("lam_batch_mean", False))

  def prepare(mix):
    return mix._replace(lam=jnp.broadcast_to(jnp.mean(mix.lam), mix.lam.shape)) if batch_mean else mix

  if name == "decouple":
    kwargs = dict(config.loss.get("decouple", {}))
    return lambda logits, mix: mixing.decoupled_mixup_loss(logits, prepare(mix), **kwargs)
  reduction = config.loss.get("bce_reduction", "sum_classes")
  return lambda logits, mix: jnp.mean(
    losses.classification_loss(name, logits, prepare(mix).targets, bce_reduction=reduction)
  )


def make_step_context(
  config, *, mesh, model_fn: ModelFn, num_classes: int, steps_per_epoch: int, total_steps: int
) -> mixing.StepContext:
  make_optimizer = functools.partial(
    optim.derived_optimizer,
    config.optimizer,
    config.batch_size,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
  )
  return mixing.StepContext(
    mesh=mesh,
    model_fn=model_fn,
    model=config.model,
    num_classes=num_classes,
    compute_dtype=compute_dtype(config),
    classification_loss=make_classification_loss(config),
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    seed=int(config.seed),
    mean=tuple(config.data.mean),
    std=tuple(config.data.std),
    make_optimizer=make_optimizer,
    checkpoints=mixing.CheckpointReader(run_config=checkpoint.read_run_config, weights=checkpoint.read_run_weights),
  )


def make_aux_init_fn(ctx: mixing.StepContext, plan: mixing.MixPlan) -> Callable | None:
  """``init_aux(rng, params, batch_stats)`` of the plan's stateful method (None when it has none)."""
  mode = plan.stateful_mode
  if mode is None:
    return None
  return lambda rng, params, batch_stats: mode.method.step.init_aux(
    ctx, rng, params, batch_stats, mode.hyper_parameters
  )


def _step_inputs(config, step, batch, num_classes: int):
  rng = jax.random.fold_in(jax.random.key(config.seed), step)
  images = normalize_images(batch["image"], config.data)
  labels = losses.one_hot_smoothed(batch["label"], num_classes, config.loss.get("label_smoothing", 0.0))
  return rng, images, labels


def make_mixed_batch_fn(config, plan: mixing.MixPlan, mesh, num_classes: int) -> Callable | None:
  """(step, uint8 batch) → MixResult of input-level methods (for TensorBoard pictures); None otherwise."""
  if not plan.input_level:
    return None

  def mixed_batch(step, batch):
    rng, images, labels = _step_inputs(config, step, batch, num_classes)
    return mixing.mix_batch_with_plan(plan, jax.random.fold_in(rng, 0), images, labels, mesh=mesh)

  return mixed_batch


def make_train_step(
  config, *, ctx: mixing.StepContext, plan: mixing.MixPlan, tx: optax.GradientTransformation, schedule: Callable
) -> Callable:
  """Returns ``train_step(state, batch) -> (state, metrics)``, jitted, with the state donated.

  Every mixing method is a step plug-in that computes the classifier loss (``StepMethod.loss``; input-level
  kernels through the ``InputLevel`` adapter); a stateful one also updates its own state in ``state.aux`` after
  the optimizer step.
  """
  mesh, num_classes = ctx.mesh, ctx.num_classes
  use_ema = bool(config.get("ema", {}).get("decay", 0.0))
  aware = plan.stateful_mode

  def branch_loss(branch, params, batch_stats, aux, images, labels, mix_rng, drop_rng):
    return branch.step.loss(
      ctx, mix_rng, params, batch_stats, aux, images, labels, alpha=branch.alpha, hp=branch.hp, dropout_rng=drop_rng
    )

  # One branch per way the step may go (an input-level plan is one: its mixing call chooses the mode itself);
  # with several, one is drawn per step with lax.switch (all compiled once).
  plan_branches, plan_probs = mixing.step_branches(plan)
  branches = [functools.partial(branch_loss, b) for b in plan_branches]
  probs = None if plan_probs is None else jnp.asarray(plan_probs, jnp.float32)

  def loss_fn(params, state, images, labels, mix_rng, drop_rng):
    args = (params, state.batch_stats, state.aux, images, labels, mix_rng, drop_rng)
    if len(branches) == 1:
      return branches[0](*args)
    # Metrics differ between modes: give every branch the union of keys (zeros where a mode has none).
    shapes = [jax.eval_shape(b, *args)[1][2] for b in branches]
    keys = sorted({k for m in shapes for k in m})

    def padded(branch):
      def run(*a):
        loss, (logits, stats, metrics) = branch(*a)
        return loss, (logits, stats, {k: metrics.get(k, jnp.zeros((), jnp.float32)) for k in keys})

      return run

    index = jax.random.choice(jax.random.fold_in(mix_rng, 7), len(branches), p=probs)
    return jax.lax.switch(index, [padded(b) for b in branches], *args)

  def step_fn(state: TrainState, batch: dict):
    rng, images, labels = _step_inputs(config, state.step, batch, num_classes)
    mix_rng, drop_rng, aux_rng = (jax.random.fold_in(rng, i) for i in range(3))
    (loss, (logits, new_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state, images, labels, mix_rng, drop_rng
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    aux = state.aux
    if aware is not None:
      aux, aux_metrics = aware.method.step.update_aux(
        ctx,
        aux_rng,
        state.aux,
        params,
        new_stats,
        images,
        labels,
        state.step,
        alpha=aware.alpha,
        hp=aware.hyper_parameters,
      )
      extra = {**extra, **aux_metrics}
    ema_params = state.ema_params
    if use_ema:
      m = ema_decay_at(config, state.step, ctx.steps_per_epoch)
      ema_params = jax.tree.map(lambda e, p: m * e + (1.0 - m) * p, state.ema_params, params)
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state, ema_params=ema_params, aux=aux
    )
    metrics = {
      **{f"mix/{k}": v for k, v in extra.items()},
      "loss": loss,
      "top1": jnp.mean(losses.topk_correct(logits, batch["label"], 1)),
      "lr": schedule(state.step),
      "grad_norm": optax.tree.norm(grads),
      "nonfinite": jnp.logical_not(jnp.isfinite(loss)).astype(jnp.float32),
    }
    return new_state, metrics

  return jax.jit(
    step_fn,
    in_shardings=(replicated(mesh), batch_sharded(mesh)),
    out_shardings=(replicated(mesh), replicated(mesh)),
    donate_argnums=(0,),
  )


def make_eval_step(config, *, model_fn: ModelFn, mesh, num_classes: int, head: str = "one") -> Callable:
  """Returns ``eval_step(params, batch_stats, batch) -> sums`` of correct/loss/count over real examples.

  ``head="mix"`` evaluates a model's second head (``config.model.mix_head``) instead of the deployed one.
  """
  dtype = compute_dtype(config)
  head_kwargs = {} if head == "one" else {"head": head}

  def step_fn(params, batch_stats, batch):
    images = normalize_images(batch["image"], config.data).astype(dtype)
    logits, _ = model_fn(params, batch_stats, images, train=False, **head_kwargs)
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

  return jax.jit(
    step_fn, in_shardings=(replicated(mesh), replicated(mesh), batch_sharded(mesh)), out_shardings=replicated(mesh)
  )


def run_evaluation(eval_step: Callable, params, batch_stats, batches) -> dict:
  """Sums the eval step over a one-pass iterator of global batches; returns top1/top5 (%), loss, count."""
  totals = None
  for batch in batches:
    sums = eval_step(params, batch_stats, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {
    "top1": 100.0 * float(totals["correct1"]) / count,
    "top5": 100.0 * float(totals["correct5"]) / count,
    "loss": float(totals["loss_sum"]) / count,
    "count": int(count),
  }


def _no_eval_variants(state: TrainState) -> dict:
  del state
  return {}


def make_eval_variants_fn(plan: mixing.MixPlan) -> Callable[[TrainState], dict]:
  """``eval_variants(state) -> {name: (params, batch_stats)}``: weights to evaluate beside the classifier's.

  Empty for ordinary methods; a stateful model-aware method that keeps another network in ``state.aux``
  names it through its ``eval_variants(aux)`` (AutoMix/SAMix: ``{"momentum": (k params, k BN statistics)}``).
  """
  mode = plan.stateful_mode
  if mode is None:
    return _no_eval_variants
  return lambda state: dict(mode.method.step.eval_variants(state.aux))


class StepFunctions(NamedTuple):
  """Everything a run compiles, built once from the config (shared by training, evaluation and benchmarks)."""

  ctx: mixing.StepContext
  tx: optax.GradientTransformation
  schedule: Callable
  init_state: Callable[[], TrainState]  # jitted, replicated output
  abstract_state: TrainState  # ShapeDtypeStructs with shardings: the Orbax restore target
  train_step: Callable
  eval_step: Callable
  mixed_batch: Callable | None  # for TensorBoard pictures (input-level methods only)
  num_params: int
  # {name: (params, batch_stats)} to evaluate beside state.params (AutoMix/SAMix: {"momentum": ...}).
  eval_variants: Callable[[TrainState], dict] = _no_eval_variants
  # The second head's eval step where the model has one (config.model.mix_head: AutoMix/SAMix cells); None else.
  eval_step_mix_head: Callable | None = None


def build_step_functions(
  config, *, mesh, num_classes: int, steps_per_epoch: int, total_steps: int | None = None
) -> StepFunctions:
  """Model, optimizer, schedule, initial state and the jitted steps of ``config``."""
  plan = mixing.resolve_mixing_config(config.mixing)  # the one resolution of the mixing config per build
  model_fn, abstract_params, _ = model_fn_and_shapes(config, num_classes)
  schedule = optim.make_lr_schedule(
    config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=steps_per_epoch, total_epochs=config.epochs
  )
  tx = optim.make_optimizer(config.optimizer, abstract_params, schedule)
  total_steps = total_steps or steps_per_epoch * config.epochs
  ctx = make_step_context(
    config,
    mesh=mesh,
    model_fn=model_fn,
    num_classes=num_classes,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
  )
  init_fn = make_init_fn(config, num_classes, tx, init_aux=make_aux_init_fn(ctx, plan))
  abstract_state = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated(mesh)), jax.eval_shape(init_fn)
  )
  return StepFunctions(
    ctx=ctx,
    tx=tx,
    schedule=schedule,
    init_state=jax.jit(init_fn, out_shardings=replicated(mesh)),
    abstract_state=abstract_state,
    train_step=make_train_step(config, ctx=ctx, plan=plan, tx=tx, schedule=schedule),
    eval_step=make_eval_step(config, model_fn=model_fn, mesh=mesh, num_classes=num_classes),
    mixed_batch=make_mixed_batch_fn(config, plan, mesh, num_classes),
    num_params=parameter_count(abstract_params),
    eval_variants=make_eval_variants_fn(plan),
    eval_step_mix_head=make_eval_step(config, model_fn=model_fn, mesh=mesh, num_classes=num_classes, head="mix")
    if config.model.get("mix_head")
    else None,
  )
