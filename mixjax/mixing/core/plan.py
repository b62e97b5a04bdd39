"""The mixing section of a training config, and its up-front validation.

Layout (OpenMixup's ``mix_mode`` / ``alpha`` / ``mix_prob`` / ``mix_args``)::

    method: 'cutmix'              or a list, e.g. ['mixup', 'cutmix']
    alpha:  1.0                   or a list of the same length as method
    prob:   None                  (uniform over the list) or a list
    args:   {method_name: {hyper_parameter: value}}   per-method overrides

With a list, each training step picks one mode at random (OpenMixup
multi-mode training); every mode is compiled into the step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import ml_collections

from mixjax.config_args import ConfigError
from mixjax.mixing.core.hyper_parameters import as_kwargs
from mixjax.mixing.core.registry import MixMethod, get_method, list_methods
from mixjax.mixing.core.result import MixResult


def default_mixing_config() -> ml_collections.ConfigDict:
  """Mixup α = 0.2 (the README's MixUp row) plus every method's defaults.

  Not type-safe, so a config file may replace ``method``/``alpha`` by lists.
  """
  args = {}
  for name in list_methods():
    defaults = dict(get_method(name).defaults)
    if defaults:
      args[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()}
  return ml_collections.ConfigDict({"method": "mixup", "alpha": 0.2, "prob": None, "args": args}, type_safe=False)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity
class MixMode:
  """One resolved mode: the method, its α and its typed hyper-parameters (the method's ``Params``)."""

  method: MixMethod
  alpha: float
  hyper_parameters: Any

  def __call__(self, rng: jax.Array, images: jax.Array, labels: jax.Array) -> MixResult:
    return self.method.fn(rng, images, labels, alpha=self.alpha, **as_kwargs(self.hyper_parameters))


@dataclasses.dataclass(frozen=True)
class MixPlan:
  """Validated config: the modes and the probability of each. Resolved once per run (``build_step_functions``)
  and passed down to everything that needs it."""

  modes: tuple[MixMode, ...]
  probs: tuple[float, ...]

  @property
  def input_level(self) -> bool:
    """Every mode is an input-level kernel: the plan can mix a batch without the network (``mix_batch``)."""
    return not any(m.method.model_aware for m in self.modes)

  @property
  def stateful_mode(self) -> MixMode | None:
    """The mode whose method keeps state in ``TrainState.aux`` (it then runs alone), else None."""
    stateful = [m for m in self.modes if m.method.step.stateful]
    return stateful[0] if stateful else None

  def model_conflicts(self, model_cfg) -> list[str]:
    """Why the backbone ``model_cfg`` cannot serve the plan's modes (each mode's ``check_model``); empty when
    it can. One message per refusing mode, each naming models that would work."""
    conflicts = []
    for mode in self.modes:
      try:
        mode.method.step.check_model(model_cfg, mode.hyper_parameters)
      except ValueError as e:
        conflicts.append(str(e))
    return conflicts


def _plain(value):
  """ConfigDict / FieldReference / tuple → plain Python values."""
  if isinstance(value, ml_collections.ConfigDict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, ml_collections.FieldReference):
    return _plain(value.get())
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value


def _get(cfg, key, default=None):
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return getattr(cfg, key, default)


def resolve_mixing_config(cfg) -> MixPlan:
  """Validates ``cfg`` and returns the plan; raises ``ConfigError`` naming the
  fix for any mistake (unknown method or hyper-parameter, list lengths that
  disagree, bad α or probabilities)."""
  raw_method = _plain(_get(cfg, "method"))
  if raw_method is None:
    raise ConfigError(f"mixing config needs 'method' (one of: {', '.join(list_methods())}, or a list of them)")
  names = list(raw_method) if isinstance(raw_method, tuple) else [raw_method]
  if not names:
    raise ConfigError(f"mixing 'method' list is empty; give at least one of: {', '.join(list_methods())}")
  for name in names:
    if not isinstance(name, str):
      raise ConfigError(f"mixing method names must be strings, got {name!r}")
  methods = [get_method(name) for name in names]

  raw_alpha = _plain(_get(cfg, "alpha", 1.0))
  alphas = list(raw_alpha) if isinstance(raw_alpha, tuple) else [raw_alpha] * len(names)
  if len(alphas) != len(names):
    raise ConfigError(
      f"mixing 'alpha' has {len(alphas)} entries but 'method' has "
      f"{len(names)} ({names}); give one α per method or a single float"
    )
  for method, alpha in zip(methods, alphas):
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
      raise ConfigError(f"mixing alpha for {method.name!r} must be a number, got {alpha!r}")
    if method.uses_alpha and not alpha > 0:
      raise ConfigError(
        f"mixing alpha for {method.name!r} must be > 0 for "
        f"Beta(α, α), got {alpha}; use method 'vanilla' to "
        "turn mixing off"
      )

  raw_prob = _plain(_get(cfg, "prob", None))
  if raw_prob is None:
    probs = [1.0 / len(names)] * len(names)
  else:
    probs = list(raw_prob) if isinstance(raw_prob, tuple) else [raw_prob]
    if len(probs) != len(names):
      raise ConfigError(
        f"mixing 'prob' has {len(probs)} entries but 'method' has "
        f"{len(names)} ({names}); give one probability per method, or "
        "None for a uniform choice"
      )
    if any((not isinstance(p, (int, float))) or p < 0 for p in probs):
      raise ConfigError(f"mixing 'prob' entries must be numbers >= 0, got {probs}")
    if not math.isclose(sum(probs), 1.0, abs_tol=1e-4):
      raise ConfigError(f"mixing 'prob' must sum to 1, got {probs} (sum {sum(probs)})")

  raw_args = _plain(_get(cfg, "args", None)) or {}
  if not isinstance(raw_args, Mapping):
    raise ConfigError(f"mixing 'args' must map method names to dicts, got {raw_args!r}")
  typed_args = {}
  for name, overrides in raw_args.items():
    method = get_method(name)  # unknown name → error listing valid ones
    # Every configured method's settings are checked (names and types), also those of modes not in the list.
    typed_args[name] = method.step.hyper_parameters(overrides or {})

  stateful = [m.name for m in methods if m.step.stateful]
  if len(methods) > 1 and stateful:
    raise ConfigError(
      f"mixing methods {names}: {', '.join(stateful)} keeps its own "
      "trained state (e.g. a MixBlock) and cannot share the step with "
      "other modes; use it alone"
    )

  modes = []
  for method, alpha in zip(methods, alphas):
    hyper = typed_args.get(method.name) or method.step.hyper_parameters()
    modes.append(MixMode(method=method, alpha=float(alpha), hyper_parameters=hyper))
  return MixPlan(modes=tuple(modes), probs=tuple(float(p) for p in probs))


def validate_mixing_config(cfg) -> None:
  """Raises ``ConfigError`` (``UnknownMixMethodError`` for names) on a bad
  mixing config; call it when the config is loaded, before compiling."""
  resolve_mixing_config(cfg)
