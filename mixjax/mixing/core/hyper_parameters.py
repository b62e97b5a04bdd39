"""Typed hyper-parameters: each method's settings as one frozen dataclass, built once from the config.

A model-aware method declares its settings as a nested ``Params`` dataclass::

    @dataclasses.dataclass(frozen=True)
    class Params:
      m_part: int = 16
      m_thres_type: Literal["hard", "soft"] = "hard"
      prior_alpha: float | Literal["alpha"] = 1.0

An input-level kernel declares them as its keyword-only arguments (``register_method`` reads the signature), and
``params_from_signature`` turns those into the same kind of dataclass. The plan (``core/plan.py``) calls
``build`` once per mode; the method then reads ``hp.m_part`` as an ``int`` — no casts in method code, and a value
of the wrong type (``--config.mixing.args.comixup.m_part=four``) stops the run before compiling with a message
naming the key and the type it needs. Checks that need more than the type (a value range, a relation to the image
size) stay with the method.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from typing import Any, Literal, Mapping, Union

from mixjax.config_args import ConfigError


@dataclasses.dataclass(frozen=True)
class NoParams:
  """The settings of a method that has none besides α."""


def field_types(params_cls: type) -> dict[str, Any]:
  """``{field name: resolved annotation}`` of a ``Params`` dataclass."""
  hints = typing.get_type_hints(params_cls)
  return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(params_cls)}


def defaults_of(params_cls: type) -> dict[str, Any]:
  """``{field name: default}`` — what ``config.mixing.args.<method>`` starts from."""
  out = {}
  for f in dataclasses.fields(params_cls):
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
    else:
      raise TypeError(f"{params_cls.__qualname__}.{f.name} needs a default (every hyper-parameter has one)")
  return out


def params_from_signature(fn, name: str) -> type:
  """A frozen dataclass of ``fn``'s keyword-only arguments (except ``alpha``/``lam``), typed by their annotations
  (or by their default's type where unannotated)."""
  hints = typing.get_type_hints(fn)
  fields = []
  for p in inspect.signature(fn).parameters.values():
    if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in ("alpha", "lam"):
      continue
    if p.default is inspect.Parameter.empty:
      raise TypeError(f"mixing method {name!r}: hyper-parameter {p.name!r} needs a default")
    annotation = hints.get(p.name, type(p.default) if p.default is not None else Any)
    fields.append((p.name, annotation, dataclasses.field(default=p.default)))
  class_name = "".join(part.capitalize() for part in name.split("_")) + "Params"
  return dataclasses.make_dataclass(class_name, fields, frozen=True)


def _describe(annotation) -> str:
  origin = typing.get_origin(annotation)
  if origin is Literal:
    return " or ".join(repr(a) for a in typing.get_args(annotation))
  if origin in (Union, types.UnionType):
    return " or ".join(_describe(a) for a in typing.get_args(annotation))
  if origin is tuple:
    return "a list " + str(annotation).replace("typing.", "")
  if annotation is type(None):
    return "None"
  return getattr(annotation, "__name__", str(annotation))


class _Mismatch(Exception):
  pass


def _coerce(value, annotation):
  """``value`` as ``annotation`` says, converting only where nothing is lost (int → float, integral float → int,
  list → tuple); raises ``_Mismatch`` otherwise."""
  if annotation is Any:
    return value
  origin = typing.get_origin(annotation)
  if origin is Literal:
    if any(value == a and type(value) is type(a) for a in typing.get_args(annotation)):
      return value
    raise _Mismatch
  if origin in (Union, types.UnionType):
    for option in typing.get_args(annotation):
      try:
        return _coerce(value, option)
      except _Mismatch:
        continue
    raise _Mismatch
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise _Mismatch
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(v, args[0]) for v in value)
    if args and len(args) != len(value):
      raise _Mismatch
    return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
  if origin in (dict, Mapping) or annotation in (dict, Mapping):
    if isinstance(value, Mapping):
      return dict(value)
    raise _Mismatch
  if annotation is type(None):
    if value is None:
      return None
    raise _Mismatch
  if annotation is bool:
    if isinstance(value, bool):
      return value
    raise _Mismatch
  if annotation is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
      return int(value)
    raise _Mismatch
  if annotation is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise _Mismatch
  if annotation is str:
    if isinstance(value, str):
      return value
    raise _Mismatch
  if isinstance(annotation, type):
    if isinstance(value, annotation):
      return value
    raise _Mismatch
  return value


def build(params_cls: type, method: str, values: Mapping[str, Any] | None = None, **overrides) -> Any:
  """``params_cls`` filled from its defaults, then ``values``, then ``overrides``; every value checked (and
  losslessly converted) against its field's type.

  An instance of ``params_cls`` passes through (with ``overrides`` applied). Unknown keys and wrong types raise
  ``ConfigError`` naming ``config.mixing.args.<method>.<key>`` and what it accepts.
  """
  if isinstance(values, params_cls):
    values = {f.name: getattr(values, f.name) for f in dataclasses.fields(params_cls)}
  merged = dict(values or {})
  merged.update(overrides)
  types_ = field_types(params_cls)
  unknown = sorted(set(merged) - set(types_))
  if unknown:
    valid = ", ".join(sorted(types_)) or "(none)"
    raise ConfigError(f"unknown hyper-parameter(s) {unknown} for mixing method {method!r}; valid: {valid}")
  kwargs = {}
  for key, value in merged.items():
    try:
      kwargs[key] = _coerce(value, types_[key])
    except _Mismatch:
      raise ConfigError(
        f"config.mixing.args.{method}.{key} must be {_describe(types_[key])}, got {value!r} ({type(value).__name__})"
      ) from None
  return params_cls(**kwargs)


def as_kwargs(hp) -> dict[str, Any]:
  """The fields of a ``Params`` instance (or a plain mapping) as keyword arguments."""
  if dataclasses.is_dataclass(hp):
    return {f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)}
  return dict(hp or {})
