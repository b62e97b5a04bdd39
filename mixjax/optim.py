"""Optimizers, learning-rate schedules and weight-decay masks of the benchmark's recipes.

Three optimizers cover every table of the benchmark (OpenMixup spec §3):
  * ``sgd``   — PyTorch SGD: weight decay added to the gradient before (Nesterov) momentum (PyTorch-style recipe).
  * ``adamw`` — decoupled weight decay (DeiT / Swin / ConvNeXt / PVT / MogaNet recipes).
  * ``lamb``  — timm's LAMB as the RSB recipes use it: global gradient-norm clip at 1.0 inside the optimizer, Adam
    moments, decoupled decay, and the trust ratio ‖w‖/‖u‖ applied *only to weight-decayed parameters*
    (timm's ``always_adapt=False``); ``optax.lamb`` would adapt every parameter.

The schedule follows mmcv: a cosine from ``lr`` to ``min_lr`` (stepped per epoch or per iteration) multiplied by
a linear warmup factor 1 − (1 − t/W)(1 − warmup_start_ratio) that always steps per iteration.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixjax.config_args import ConfigError

OPTIMIZERS = ("sgd", "adamw", "lamb")


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name="sgd",
      lr=0.1,  # peak learning rate at `base_batch_size`
      base_batch_size=256,  # lr is scaled by global_batch / base_batch_size (None: no scaling)
      min_lr=0.0,
      warmup_epochs=0.0,
      warmup_start_ratio=1e-5,  # warmup starts at lr * ratio (mmcv's warmup_ratio)
      schedule_by_epoch=True,  # cosine stepped per epoch (PyTorch-style, RSB) or per iteration (DeiT family)
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,
      wd_exclude_1d=False,  # no decay on any parameter with ndim <= 1 (all norms and biases)
      wd_exclude=(),  # regexes searched in the '/'-joined parameter path (e.g. 'pos_embed')
      wd_include=(),  # regexes of parameters decayed even where the two options above exclude them
      grad_clip_norm=0.0,  # global-norm clipping before the optimizer (0: off)
    )
  )


def scaled_learning_rate(opt_cfg, global_batch_size: int) -> float:
  """The linear-scaling rule: lr · global_batch / base_batch_size."""
  if not opt_cfg.get("base_batch_size"):
    return float(opt_cfg.lr)
  return float(opt_cfg.lr) * global_batch_size / float(opt_cfg.base_batch_size)


def make_lr_schedule(
  opt_cfg, *, global_batch_size: int, steps_per_epoch: int, total_epochs: int
) -> Callable[[jax.Array], jax.Array]:
  """Warmup × cosine schedule as a function of the optimizer step."""
  peak = scaled_learning_rate(opt_cfg, global_batch_size)
  min_lr = float(opt_cfg.min_lr)
  total_steps = max(1, steps_per_epoch * total_epochs)
  warmup_steps = int(round(float(opt_cfg.warmup_epochs) * steps_per_epoch))
  start_ratio = float(opt_cfg.warmup_start_ratio)
  by_epoch = bool(opt_cfg.schedule_by_epoch)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if by_epoch:
      progress = jnp.floor(step / steps_per_epoch) / max(1, total_epochs)
    else:
      progress = step / total_steps
    progress = jnp.clip(progress, 0.0, 1.0)
    lr = min_lr + (peak - min_lr) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    if warmup_steps > 0:
      factor = 1.0 - (1.0 - jnp.minimum(step / warmup_steps, 1.0)) * (1.0 - start_ratio)
      lr = lr * factor
    return lr

  return schedule


def param_path(path) -> str:
  """'/'-joined name of a pytree path, e.g. 'layer1/0/bn1/scale'."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def weight_decay_mask(params, opt_cfg) -> Any:
  """Pytree of bools: True where the parameter is weight-decayed.

  Excludes 1-D parameters when ``wd_exclude_1d`` and any parameter whose path matches a ``wd_exclude`` regex
  (searched anywhere in the path, like mmcv's paramwise options). A parameter whose path matches a
  ``wd_include`` regex is decayed all the same: how a recipe reproduces a reference whose exclusion rule misses
  some parameters (the RSB configs' regex leaves the ResNet downsample BN scale decayed, spec §3.2 PITFALL)
  without spelling out every excluded name.
  """
  patterns = [re.compile(p) for p in (opt_cfg.get("wd_exclude") or ())]
  included = [re.compile(p) for p in (opt_cfg.get("wd_include") or ())]
  exclude_1d = bool(opt_cfg.get("wd_exclude_1d", False))

  def decide(path, leaf):
    name = param_path(path)
    if any(p.search(name) for p in included):
      return True
    if exclude_1d and jnp.ndim(leaf) <= 1:
      return False
    return not any(p.search(name) for p in patterns)

  return jax.tree_util.tree_map_with_path(decide, params)


def _lamb_timm(schedule, *, b1, b2, eps, weight_decay, mask) -> optax.GradientTransformation:
  """timm-style LAMB (see module docstring): the trust ratio only on the decayed parameter group."""
  return optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    optax.add_decayed_weights(weight_decay, mask),
    optax.masked(optax.scale_by_trust_ratio(), mask),
    optax.scale_by_learning_rate(schedule),
  )


def make_optimizer(opt_cfg, params, schedule) -> optax.GradientTransformation:
  """Builds the configured optimizer for ``params`` (used only for the weight-decay mask's structure)."""
  name = opt_cfg.name
  if name not in OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer {name!r}. Valid optimizers: {', '.join(OPTIMIZERS)}.")
  mask = weight_decay_mask(params, opt_cfg)
  wd = float(opt_cfg.weight_decay)
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(wd, mask),
      optax.sgd(schedule, momentum=float(opt_cfg.momentum) or None, nesterov=bool(opt_cfg.nesterov)),
    )
  elif name == "adamw":
    tx = optax.adamw(
      schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps), weight_decay=wd, mask=mask
    )
  else:
    tx = _lamb_timm(
      schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps), weight_decay=wd, mask=mask
    )
  if opt_cfg.get("grad_clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)), tx)
  return tx


def derived_optimizer(
  main_cfg,
  global_batch_size: int,
  params,
  *,
  steps_per_epoch: int,
  total_steps: int,
  lr: float | None = None,
  min_lr: float | None = None,
  warmup_epochs: float | None = None,
  momentum: float | None = None,
  schedule_by_epoch: bool | None = None,
  grad_clip_norm: float | None = None,
) -> tuple[optax.GradientTransformation, Callable]:
  """An optimizer for a second network trained beside the classifier (AutoMix/SAMix's MixBlock): the
  classifier's optimizer kind and settings ``main_cfg`` with the given overrides (None keeps the classifier's
  value; ``lr`` None is the classifier's peak lr after batch scaling, never batch-scaled again).

  Returns ``(tx, schedule)``: ``tx`` runs at a unit learning rate and the caller multiplies its updates by
  ``schedule(global_step)``. The schedule spans ``total_steps`` rounded up to whole epochs.
  """
  cfg = ml_collections.ConfigDict(main_cfg.to_dict())
  peak = scaled_learning_rate(main_cfg, global_batch_size)
  cfg.lr = float(peak if lr is None else lr)
  cfg.base_batch_size = 0
  if min_lr is not None:
    cfg.min_lr = float(min_lr)
  if warmup_epochs is not None:
    cfg.warmup_epochs = float(warmup_epochs)
  if momentum is not None:
    cfg.momentum = float(momentum)
  if schedule_by_epoch is not None:
    cfg.schedule_by_epoch = bool(schedule_by_epoch)
  if grad_clip_norm is not None:
    cfg.grad_clip_norm = float(grad_clip_norm)
  steps_per_epoch = max(1, steps_per_epoch)
  epochs = max(1, -(-total_steps // steps_per_epoch))
  schedule = make_lr_schedule(
    cfg, global_batch_size=global_batch_size, steps_per_epoch=steps_per_epoch, total_epochs=epochs
  )
  return make_optimizer(cfg, params, 1.0), schedule
