"""Methods that need the model: the step plug-in protocol.

Input-level methods (mixup, cutmix, …) are functions of the batch alone and run before the forward pass. The
others need the network itself — hidden features (ManifoldMix, AlignMix), input gradients (PuzzleMix), attention
maps (TransMix, TokenMix), a pretrained extractor (AttentiveMix+), or a second, learned network with its own
optimizer (AutoMix, SAMix). Such a method is a ``ModelAwareMethod`` object: inside the jitted train step it
computes the classifier's loss itself (``loss``), may keep its own state in ``TrainState.aux`` (``init_aux``),
and may update that state after the classifier's optimizer step (``update_aux``). The train step stays one
jitted program; the method only decides what happens inside it.

Register with ``register_model_aware(MyMethod())``; the name then works in ``config.mixing.method`` like any
other, ``config.mixing.args.<name>`` overrides its ``defaults``, and ``list_methods()`` lists it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from mixjax.mixing import registry
from mixjax.mixing.result import MixResult


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a model-aware method may use inside the train step (all static)."""
  config: Any                 # the full run config
  mesh: Any                   # jax.sharding.Mesh (batch axis 'data') or None
  model_fn: Callable          # (params, batch_stats, images, *, train, rng=None, **model_kwargs) -> (out, stats)
  num_classes: int
  compute_dtype: Any
  # The configured classification loss (soft CE / BCE / decoupled) of logits against a MixResult, a scalar.
  classification_loss: Callable[[jax.Array, MixResult], jax.Array]
  steps_per_epoch: int
  total_steps: int


class ModelAwareMethod:
  """Base class; subclasses set ``name``, ``paper``, ``defaults`` and implement ``loss``."""
  name: str = ""
  paper: str = ""
  defaults: Mapping[str, Any] = {}
  uses_alpha: bool = True

  def has_state(self) -> bool:
    """Whether the method keeps state in ``TrainState.aux`` (it overrides ``init_aux``/``update_aux``).

    A stateless model-aware method can be one mode of a multi-mode list (e.g. TransMix with Mixup); a
    stateful one must run alone.
    """
    cls = type(self)
    return cls.init_aux is not ModelAwareMethod.init_aux or cls.update_aux is not ModelAwareMethod.update_aux

  def init_aux(self, ctx: StepContext, rng: jax.Array, params, batch_stats, hp: Mapping[str, Any]) -> Any:
    """Method state kept in ``TrainState.aux`` (checkpointed with the run). Runs inside the jitted init.

    Weights read from disk here (e.g. AttentiveMix+'s pretrained extractor) are host arrays at trace time and
    become constants of the init program; a resumed run restores them from its own checkpoint instead.
    """
    del ctx, rng, params, batch_stats, hp
    return {}

  def loss(self, ctx: StepContext, rng: jax.Array, params, batch_stats, aux, images: jax.Array,
           labels: jax.Array, *, alpha: float, hp: Mapping[str, Any]):
    """The classifier loss, differentiated w.r.t. ``params``.

    ``images`` are normalised float32 NHWC, sharded over ``ctx.mesh``; ``labels`` soft one-hot [B, K].
    Returns ``(loss, (logits, new_batch_stats, metrics))`` with ``metrics`` a dict of scalars.
    """
    raise NotImplementedError

  # For ``python -m mixjax.visualize``: whether the method mixes hidden features rather than pixels (its picture
  # can then only show a pixel-space stand-in), and a short line saying what its picture shows.
  mixes_features: bool = False
  picture_note: str = ""

  def picture_fn(self, images: jax.Array, labels: jax.Array, *, alpha: float,
                 hp: Mapping[str, Any]) -> Callable[[jax.Array], MixResult]:
    """``rng → MixResult``: the method's mixes of ``images`` (real photographs) as one compiled function of the
    key, for ``python -m mixjax.visualize``.

    Builds whatever model the method needs itself (a small random network, briefly trained where the method
    learns) once, since the visualiser has no run to take one from; the visualiser then tries several keys
    without compiling again.
    """
    raise NotImplementedError(f"{self.name} has no picture() yet")

  def picture(self, rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float,
              hp: Mapping[str, Any]) -> MixResult:
    """Mixed samples for ``python -m mixjax.visualize`` (real photographs in, MixResult out): one draw of
    ``picture_fn``."""
    return self.picture_fn(images, labels, alpha=alpha, hp=hp)(rng)

  def update_aux(self, ctx: StepContext, rng: jax.Array, aux, params, batch_stats, images: jax.Array,
                 labels: jax.Array, step: jax.Array, *, alpha: float, hp: Mapping[str, Any]):
    """Updates the method state after the classifier's update; returns ``(aux, metrics)``."""
    del ctx, rng, params, batch_stats, images, labels, step, alpha, hp
    return aux, {}


def register_model_aware(method: ModelAwareMethod) -> ModelAwareMethod:
  """Adds ``method`` to the common registry (same names, errors and config handling as input methods)."""
  registry.register_entry(registry.MixMethod(
      name=method.name, fn=method, defaults=dict(method.defaults), uses_alpha=method.uses_alpha,
      paper=method.paper, model_aware=True))
  return method
