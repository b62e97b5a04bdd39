"""The train state pytree and the functional view of an NNX model.

The model is an NNX module, but inside ``jax.jit`` we treat it functionally: its graph definition is static and
its parameters and BatchNorm statistics travel as plain nested dicts in ``TrainState``. Plain dicts keep Optax
masks, Orbax checkpoints and parameter paths simple and independent of Flax internals.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mixjax import models
from mixjax.config_args import ConfigError
from mixjax.models.functional import ModelFn  # noqa: F401  (re-exported: train_state.ModelFn)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@struct.dataclass
class TrainState:
  step: jax.Array  # optimizer steps taken (int32 scalar)
  params: Any  # nested dict of float32 parameters
  batch_stats: Any  # nested dict of BatchNorm running statistics ({} for norm-free models)
  opt_state: Any
  ema_params: Any  # EMA of params, or {} when EMA is off
  aux: Any = struct.field(default_factory=dict)  # state of a model-aware mixing method (e.g. AutoMix's MixBlock)


def compute_dtype(config) -> Any:
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f"Unknown compute_dtype {name!r}; valid: {', '.join(COMPUTE_DTYPES)}.")
  return COMPUTE_DTYPES[name]


def build_model(config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
  """The configured backbone: ``config.model.name`` plus its keyword arguments."""
  kwargs = dict(config.model)
  name = kwargs.pop("name")
  return models.build_model(name, num_classes=num_classes, rngs=rngs, dtype=compute_dtype(config), **kwargs)


def _split_model(model: nnx.Module):
  graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  leftovers = jax.tree.leaves(rest)
  if leftovers:
    raise TypeError(
      f"Model {type(model).__name__} holds state other than Param/BatchStat ({rest}); models must "
      "take their random streams at call time (rngs=...) instead of storing them."
    )
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def model_fn_and_shapes(config, num_classes: int):
  """The model's apply function and the abstract shapes of its params (no memory allocated)."""
  abstract = nnx.eval_shape(lambda: build_model(config, num_classes, nnx.Rngs(config.seed)))
  graphdef, params, batch_stats = _split_model(abstract)
  return ModelFn(graphdef), params, batch_stats


def parameter_count(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def make_init_fn(config, num_classes: int, tx: optax.GradientTransformation, init_aux=None):
  """A function creating the initial TrainState (jit it with replicated out_shardings).

  ``init_aux(rng, params, batch_stats)``, when given, creates the mixing method's own state.
  """
  use_ema = bool(config.get("ema", {}).get("decay", 0.0))

  def init() -> TrainState:
    model = build_model(config, num_classes, nnx.Rngs(config.seed))
    _, params, batch_stats = _split_model(model)
    aux = {}
    if init_aux is not None:
      aux = init_aux(jax.random.fold_in(jax.random.key(config.seed), 0x7FFFFFFF), params, batch_stats)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=tx.init(params),
      ema_params=params if use_ema else {},
      aux=aux,
    )

  return init


def ema_decay_at(config, step: jax.Array, steps_per_epoch: int) -> jax.Array:
  """mmcv's EMA momentum with linear warmup: m·(1 − (1 − t/W)·(1 − 0.9)), W = warmup steps."""
  decay = float(config.ema.decay)
  warmup = float(config.ema.get("warmup_epochs", 0.0)) * steps_per_epoch
  if warmup <= 0:
    return jnp.asarray(decay, jnp.float32)
  t = jnp.minimum(step.astype(jnp.float32) / warmup, 1.0)
  return decay * (1.0 - (1.0 - t) * (1.0 - 0.9))
