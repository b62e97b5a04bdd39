"""What a model-aware method needs to know about the configured backbone, read without allocating it.

Methods check their requirements when the step is traced (stage mixing for ManifoldMix / AlignMix, a class
token's attention for TransMix / TokenMix) and fail with an error that names the models that would work.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
from flax import nnx

from mixjax import models


class ModelInfo(NamedTuple):
  name: str
  mix_stages: tuple[int, ...]
  num_stages: int  # stage0 .. stage{num_stages-1}
  supports_attention: bool
  patch_size: int | None  # pixels per token of the attention map (a ViT's patch, PVT/Swin's last stride)


@functools.lru_cache(maxsize=None)
def _probe(name: str, frozen_kwargs: tuple) -> ModelInfo:
  model = nnx.eval_shape(
    lambda: models.build_model(name, num_classes=2, rngs=nnx.Rngs(0), dtype=jnp.float32, **dict(frozen_kwargs))
  )
  return ModelInfo(
    name=name,
    mix_stages=tuple(model.mix_stages),
    num_stages=len(model.stage_names),
    supports_attention=bool(model.supports_attention),
    patch_size=model.attention_stride,
  )


def _freeze(value):
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  return value


# Keyword arguments that set a backbone's numerics, never its stages, attention or strides: the probe leaves them
# out, so the cells of a table that differ only in them share one abstract build (each is seconds: the dry run
# of all 293 cells spent nearly all its time in 29 probes, now 14).
_NUMERICS_ONLY = frozenset(
  {"bn_group_size", "drop_path_rate", "dropout_rate", "drop_rate", "attn_drop_rate", "dtype", "param_dtype"}
)


def model_info(model_cfg) -> ModelInfo:
  """Stage / attention facts of the backbone ``model_cfg`` (a run's ``config.model``: ``name`` plus keyword
  arguments; cached per model name and the keyword arguments that shape the network)."""
  kwargs = dict(model_cfg)
  name = kwargs.pop("name")
  shaping = {k: v for k, v in kwargs.items() if k not in _NUMERICS_ONLY}
  return _probe(name, tuple(sorted((k, _freeze(v)) for k, v in shaping.items())))


@functools.lru_cache(maxsize=None)
def models_where(predicate_name: str) -> tuple[str, ...]:
  """Registered models with a capability: 'attention' or 'stage_mixing' (mixing after a hidden stage)."""
  names = []
  for name in models.list_models():
    try:
      info = _probe(name, ())
    except Exception:  # a model that cannot be built with defaults is simply not listed
      continue
    if predicate_name == "attention" and info.supports_attention:
      names.append(name)
    elif predicate_name == "stage_mixing" and len(info.mix_stages) > 1:
      names.append(name)
    elif predicate_name == "last_stage_mixing" and info.num_stages - 1 in info.mix_stages:
      names.append(name)
  return tuple(names)


def require_attention(model_cfg, method: str) -> ModelInfo:
  info = model_info(model_cfg)
  if not info.supports_attention:
    raise ValueError(
      f"mixing method {method!r} needs a transformer's token attention map; model "
      f"{info.name!r} has none. Use one of: {', '.join(models_where('attention'))} "
      "(e.g. --config.model.name=deit_small)"
    )
  return info
