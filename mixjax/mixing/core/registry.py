"""Name → mixing method. Every method module registers itself here.

A method is a pure function on ONE device's shard::

    fn(rng, images, labels, *, alpha, lam=None, **hyper_parameters) -> MixResult

* ``rng`` is the key shared by all devices, so λ, boxes and mode choices
  agree across devices (OpenMixup draws them in the main process with the
  same seed on every rank, spec section 0).
* ``lam`` bypasses the method's random draw of its Beta variable (tests and
  visualisation use it); each method documents what it means for it.
* Shapes are static and there are no Python loops over samples, so the
  function traces once and runs inside a jitted train step.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from mixjax.errors import UserError, did_you_mean
from mixjax.mixing.core.protocol import InputLevel, StepMethod
from mixjax.mixing.core.result import MixResult

MixFn = Callable[..., MixResult]


class UnknownMixMethodError(UserError, ValueError):
  """Raised for a method name that is not registered; lists the valid ones."""


@dataclasses.dataclass(frozen=True)
class MixMethod:
  """A registered method.

  Attributes:
    name: registry name (the config's ``method``).
    fn: what was registered: the per-shard kernel of an input-level method (see module docstring), or the
      ``ModelAwareMethod`` object.
    defaults: hyper-parameters the method accepts besides ``alpha``, with
      their defaults; ``config.args.<name>`` overrides them.
    uses_alpha: whether the global ``alpha`` matters for this method.
    paper: citation of the paper the method comes from.
    step: the method as a train-step plug-in (``InputLevel(fn)`` for a kernel, ``fn`` itself otherwise); the
      train step calls only this.
  """

  name: str
  fn: Any
  defaults: Mapping[str, Any]
  uses_alpha: bool
  paper: str
  step: StepMethod

  @property
  def model_aware(self) -> bool:
    """Whether the method needs the network (it is not an input-level kernel)."""
    return self.step.model_aware


_METHODS: dict[str, MixMethod] = {}


def register_method(name: str, *, paper: str, uses_alpha: bool = True) -> Callable[[MixFn], MixFn]:
  """Decorator registering ``fn`` under ``name``.

  The hyper-parameters, their types and defaults are read off the function's
  keyword-only parameters (everything except ``alpha`` and ``lam``), so the
  signature is the one place they are written down (``InputLevel.Params``).
  """

  def decorate(fn: MixFn) -> MixFn:
    if name in _METHODS:
      raise ValueError(f"mixing method {name!r} registered twice")
    params = inspect.signature(fn).parameters
    for required in ("alpha", "lam"):
      if required not in params:
        raise TypeError(f"mixing method {name!r} must accept {required!r}")
    step = InputLevel(fn, name=name, paper=paper, uses_alpha=uses_alpha)
    _METHODS[name] = MixMethod(
      name=name, fn=fn, defaults=dict(step.defaults), uses_alpha=uses_alpha, paper=paper, step=step
    )
    return fn

  return decorate


def register_model_aware(method: StepMethod) -> StepMethod:
  """Adds a model-aware ``method`` object (same names, errors and config handling as input methods)."""
  if method.name in _METHODS:
    raise ValueError(f"mixing method {method.name!r} registered twice")
  _METHODS[method.name] = MixMethod(
    name=method.name,
    fn=method,
    defaults=dict(method.defaults),
    uses_alpha=method.uses_alpha,
    paper=method.paper,
    step=method,
  )
  return method


def list_methods(kind: str = "all") -> list[str]:
  """Registered method names, sorted; ``kind`` = 'all' | 'input' (batch-only kernels) | 'model_aware'."""
  if kind not in ("all", "input", "model_aware"):
    raise ValueError(f"kind must be 'all', 'input' or 'model_aware', not {kind!r}")
  return sorted(n for n, m in _METHODS.items() if kind == "all" or m.model_aware == (kind == "model_aware"))


def get_method(name: str) -> MixMethod:
  """The method registered as ``name``; unknown names raise with the list."""
  try:
    return _METHODS[name]
  except (KeyError, TypeError):
    raise UnknownMixMethodError(
      f"unknown mixing method {name!r};{did_you_mean(name, _METHODS)} Valid names: {', '.join(sorted(_METHODS))}."
    ) from None
