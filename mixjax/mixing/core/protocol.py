"""The step plug-in protocol: every mixing method is a ``StepMethod`` that computes the classifier's loss.

Input-level methods (mixup, cutmix, …) are functions of the batch alone: a per-shard kernel wrapped by one
adapter, ``InputLevel(kernel)``, whose ``loss`` mixes the batch on each device and runs the forward pass. The
others need the network itself — hidden features (ManifoldMix, AlignMix), input gradients (PuzzleMix), attention
maps (TransMix, TokenMix), a pretrained extractor (AttentiveMix+), or a second, learned network with its own
optimizer (AutoMix, SAMix) — and subclass ``ModelAwareMethod``: inside the jitted train step the method computes
the classifier's loss itself (``loss``); a ``stateful`` one keeps its own state in ``TrainState.aux``
(``init_aux``) and updates it after the classifier's optimizer step (``update_aux``). The train step stays one
jitted program; the method only decides what happens inside it.

Register an input-level kernel with ``@register_method(name, paper=...)`` and a model-aware method with
``register_model_aware(MyMethod())`` (both in ``core/registry.py``); the name then works in
``config.mixing.method``, ``config.mixing.args.<name>`` overrides its ``defaults``, and ``list_methods()`` lists it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax

from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD
from mixjax.mixing.core import hyper_parameters, per_device
from mixjax.mixing.core.result import MixResult


class CheckpointReader(NamedTuple):
  """How a method reads one of our runs' checkpoints (``mixjax.checkpoint`` provides both functions)."""

  run_config: Callable[[str], dict]  # path -> the run's config dict
  weights: Callable[[str], tuple[Any, Any]]  # path -> (params, batch_stats) as host arrays


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a model-aware method may use inside the train step (all static).

  Built once per run by the train step (``train_step.make_step_context``); the training modules' services a
  method needs (the loss, an optimizer) come in as fields, so ``mixing/`` imports nothing from them.
  """

  mesh: Any  # jax.sharding.Mesh (batch axis ``DATA_AXIS``) or None
  model_fn: Callable  # (params, batch_stats, images, *, train, rng=None, **model_kwargs) -> (out, stats)
  model: Mapping[str, Any]  # the backbone's config: ``name`` plus its keyword arguments (config.model)
  num_classes: int
  compute_dtype: Any
  # The configured classification loss (soft CE / BCE / decoupled) of logits against a MixResult, a scalar.
  classification_loss: Callable[[jax.Array, MixResult], jax.Array]
  steps_per_epoch: int
  total_steps: int
  seed: int = 0
  # Per-channel normalisation of the images (0..255 scale): images = (pixels - mean) / std.
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD
  # ``make_optimizer(params, **overrides) -> (tx at unit lr, lr schedule)``: the classifier's optimizer kind and
  # settings with ``overrides`` (lr, min_lr, warmup_epochs, momentum, schedule_by_epoch, grad_clip_norm), for a
  # method that trains a network of its own (AutoMix/SAMix's MixBlock). None where no optimizer is available.
  make_optimizer: Callable[..., tuple[Any, Callable]] | None = None
  # Reads our runs' checkpoints (AttentiveMix+'s pretrained extractor); None where there is no reader.
  checkpoints: "CheckpointReader | None" = None


class StepMethod:
  """A mixing method as a plug-in of the train step; subclasses set ``name``, ``paper`` and ``Params`` (a frozen
  dataclass of the method's hyper-parameters with their defaults, see ``core/hyper_parameters.py``) and implement
  ``loss``. ``hp`` arguments below are instances of ``Params``, built once per run by the plan."""

  name: str = ""
  paper: str = ""
  Params: type = hyper_parameters.NoParams
  # ``{name: default}`` of ``Params`` (what ``config.mixing.args.<name>`` starts from); set from ``Params``.
  defaults: Mapping[str, Any] = {}
  uses_alpha: bool = True
  # Whether the method needs the network (False only for ``InputLevel``: such methods can also mix a batch on
  # their own, ``mix_batch``, e.g. for TensorBoard pictures of the training input).
  model_aware: bool = True
  # Whether the method keeps state in ``TrainState.aux`` (``init_aux``/``update_aux``/``eval_variants``). A
  # stateless method can be one mode of a multi-mode list (e.g. TransMix with Mixup); a stateful one runs alone.
  stateful: bool = False

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "Params" in cls.__dict__:
      cls.defaults = hyper_parameters.defaults_of(cls.Params)

  def hyper_parameters(self, values: Mapping[str, Any] | Any = None, **overrides) -> Any:
    """``Params`` from the defaults, ``values`` (a mapping or a ``Params``) and ``overrides``, type-checked;
    raises ``ConfigError`` naming the key for an unknown name or a value of the wrong type."""
    return hyper_parameters.build(self.Params, self.name, values, **overrides)

  def check_model(self, model_cfg, hp: Any) -> None:
    """Raises ``ValueError`` naming models that would work when the backbone ``model_cfg`` (a run's
    ``config.model``) cannot serve this method with ``hp`` (e.g. ManifoldMix on a ViT, which mixes only its
    input). Called when a config is checked, before anything compiles, and by the benchmark cell list, where a
    pair the method refuses is *not applicable* rather than runnable. The default accepts every model."""
    del model_cfg, hp

  def init_aux(self, ctx: StepContext, rng: jax.Array, params, batch_stats, hp: Any) -> Any:
    """Method state kept in ``TrainState.aux`` (checkpointed with the run). Runs inside the jitted init.

    Weights read from disk here (e.g. AttentiveMix+'s pretrained extractor) are host arrays at trace time and
    become constants of the init program; a resumed run restores them from its own checkpoint instead.
    """
    del ctx, rng, params, batch_stats, hp
    return {}

  def loss(
    self,
    ctx: StepContext,
    rng: jax.Array,
    params,
    batch_stats,
    aux,
    images: jax.Array,
    labels: jax.Array,
    *,
    alpha: float,
    hp: Any,
    dropout_rng: jax.Array | None = None,
  ):
    """The classifier loss, differentiated w.r.t. ``params``.

    ``images`` are normalised float32 NHWC, sharded over ``ctx.mesh``; ``labels`` soft one-hot [B, K]; ``rng``
    the method's key (replicated); ``dropout_rng`` the step's key for the classifier's dropout / drop-path
    (model-aware methods draw theirs from ``rng`` instead, and ignore it).
    Returns ``(loss, (logits, new_batch_stats, metrics))`` with ``metrics`` a dict of scalars.
    """
    raise NotImplementedError

  def update_aux(
    self,
    ctx: StepContext,
    rng: jax.Array,
    aux,
    params,
    batch_stats,
    images: jax.Array,
    labels: jax.Array,
    step: jax.Array,
    *,
    alpha: float,
    hp: Any,
  ):
    """Updates the method state after the classifier's update; returns ``(aux, metrics)``."""
    del ctx, rng, params, batch_stats, images, labels, step, alpha, hp
    return aux, {}

  def eval_variants(self, aux) -> dict:
    """``{name: (params, batch_stats)}`` held in ``aux`` to evaluate beside the classifier (AutoMix/SAMix: the
    momentum encoder); empty for most methods."""
    del aux
    return {}


class ModelAwareMethod(StepMethod):
  """Base class of the methods that need the network (see the module docstring)."""

  model_aware = True


def forward_loss(ctx: StepContext, params, batch_stats, mix: MixResult, dropout_rng, metrics: dict):
  """The common tail of a step: forward the mixed images (train mode), the configured loss on ``mix``'s targets.

  Returns ``(loss, (logits, new_batch_stats, metrics))`` as ``StepMethod.loss`` does.
  """
  logits, new_stats = ctx.model_fn(
    params, batch_stats, mix.images.astype(ctx.compute_dtype), train=True, rng=dropout_rng
  )
  return ctx.classification_loss(logits, mix), (logits, new_stats, metrics)


class InputLevel(StepMethod):
  """The adapter that makes a per-shard kernel a step plug-in.

  ``kernel(rng, images, labels, *, alpha, lam=None, **hyper_parameters) -> MixResult`` runs on one device's
  shard (see ``core/registry.py``); ``mix`` runs it on every device's rows, ``loss`` then forwards the mixed
  batch. Built by ``register_method``.
  """

  model_aware = False

  def __init__(self, kernel: Callable[..., MixResult], *, name: str, paper: str, uses_alpha: bool):
    self.kernel = kernel
    self.name, self.paper, self.uses_alpha = name, paper, uses_alpha
    self.Params = hyper_parameters.params_from_signature(kernel, name)
    self.defaults = hyper_parameters.defaults_of(self.Params)

  def __repr__(self) -> str:
    return f"InputLevel({self.name})"

  def mix(self, mesh, rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float, hp: Any) -> MixResult:
    """The kernel on each device's shard of the batch (``mesh`` None: the whole batch is one shard)."""
    per_device.check_batch(images, labels)
    kwargs = hyper_parameters.as_kwargs(hp)
    return per_device.on_shards(mesh, lambda r, x, y: self.kernel(r, x, y, alpha=alpha, **kwargs), rng, images, labels)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp, dropout_rng=None):
    del aux
    mix = self.mix(ctx.mesh, rng, images, labels, alpha=alpha, hp=hp)
    return forward_loss(ctx, params, batch_stats, mix, dropout_rng, {})
