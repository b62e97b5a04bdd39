"""Name -> constructor registry for backbones (with their classifier head).

Configs and the CLI name models by string (``"resnet50"``); the registry is the one place that maps those
strings to constructors, so adding a backbone is a decorator away and a typo fails with the valid names.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx

from mixjax.errors import UserError, did_you_mean

ModelBuilder = Callable[..., nnx.Module]

_MODELS: dict[str, ModelBuilder] = {}
_FAMILIES: dict[str, str] = {}

# "cnn" or "transformer": the benchmark reports the median of the last epochs for CNNs and the best epoch for
# transformers (mixjax.report reads the family from here).
FAMILIES = ("cnn", "transformer")


class UnknownModelError(UserError, ValueError):
  """Raised for a model name that is not registered; the message lists the registered names."""


def register_model(name: str, *, family: str = "cnn") -> Callable[[ModelBuilder], ModelBuilder]:
  """Decorator registering ``builder(*, num_classes, rngs, dtype, **kwargs) -> nnx.Module`` under ``name``.

  ``family`` ("cnn" or "transformer") decides the benchmark's reporting rule for the model's table cells.
  """
  if family not in FAMILIES:
    raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")

  def decorate(builder: ModelBuilder) -> ModelBuilder:
    if name in _MODELS and _MODELS[name] is not builder:
      raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__qualname__}")
    _MODELS[name] = builder
    _FAMILIES[name] = family
    return builder

  return decorate


def model_family(name: str) -> str:
  """The registered family of ``name`` ("cnn" or "transformer"); unknown names raise ``UnknownModelError``."""
  get_model_builder(name)
  return _FAMILIES[name]


def list_models() -> list[str]:
  """Registered model names, sorted."""
  return sorted(_MODELS)


def get_model_builder(name: str) -> ModelBuilder:
  """The constructor registered under ``name``; ``UnknownModelError`` lists valid names otherwise."""
  try:
    return _MODELS[name]
  except KeyError:
    raise UnknownModelError(
      f"unknown model {name!r};{did_you_mean(name, list_models())} Registered models: {', '.join(list_models())}."
    ) from None
