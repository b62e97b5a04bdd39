"""The functional view of an NNX model: its graph definition applied to plain parameter/statistics dicts.

Inside ``jax.jit`` the model's graph definition is static and its parameters and BatchNorm statistics travel
as plain nested dicts (``TrainState``); ``ModelFn`` is the pure apply function over them. It lives with the
models so that both the training modules and the mixing methods can use it without importing each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelFn:
  """Applies a model given its parameter and statistics dicts (pure, jit-friendly)."""

  graphdef: Any

  def __call__(self, params, batch_stats, images, *, train: bool, rng: jax.Array | None = None, **kwargs):
    model = nnx.merge(self.graphdef, params, batch_stats)
    rngs = nnx.Rngs(dropout=rng) if rng is not None else None
    out = model(images, train=train, rngs=rngs, **kwargs)
    new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    return out, new_stats
