"""The ``config.py:arg`` grammar shared by all recipe configs (big_vision style).

``arg`` is a comma-separated list: a bare first item names the method (and is returned under ``method``), the
rest are ``key=value`` pairs such as ``model=resnet18,epochs=300``. Values are parsed as Python literals where
possible (``epochs=300`` → int), else kept as strings.
"""

from __future__ import annotations

import ast

from mixjax.errors import UserError


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message says which key and what would."""


class ConfigArgError(ConfigError):
  """A malformed ``config.py:arg`` string."""


def parse_arg(arg: str | None, *, allowed: dict[str, object]) -> dict:
  """Parses ``arg`` against ``allowed`` (key → default); unknown keys are an error that lists the valid ones."""
  result = dict(allowed)
  if not arg:
    return result
  for i, item in enumerate(p.strip() for p in arg.split(",")):
    if not item:
      continue
    if "=" not in item:
      if i != 0:
        raise ConfigArgError(
          f"Config argument {item!r} in {arg!r} must be key=value (only the first item may be a bare method name)."
        )
      key, value = "method", item
    else:
      key, value = (s.strip() for s in item.split("=", 1))
    if key not in allowed:
      raise ConfigArgError(f"Unknown config argument {key!r} in {arg!r}. Valid keys: {', '.join(sorted(allowed))}.")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    result[key] = value
  return result
