"""``--config=FILE[:ARG]`` and ``--config.key=value``: loading a config file and applying overrides.

big_vision's grammar: ``FILE`` is a Python file with ``get_config(arg)``, ``ARG`` the text after the first
``:``. Overrides name any existing key by its dotted path; values are parsed by the type the key already has
(``--config.epochs=5`` is an int, ``--config.data.mean=(1,2,3)`` a tuple, strings are taken verbatim). Every
mistake is a :class:`~mixjax.config_args.ConfigError` naming the key and, for typos, the closest valid key.

Loading happens before jax or TensorFlow are imported, so a bad config is reported in a second or two.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import Any, Iterable, Sequence

import ml_collections

from mixjax.config_args import ConfigError
from mixjax.errors import did_you_mean

_PREFIX = "--config."


def split_config_args(argv: Sequence[str], flag: str = "config") -> tuple[list[str], str | None, list[tuple[str, str]]]:
  """Separates ``--config=...`` and ``--config.key=value`` items from the other command-line arguments.

  Returns (the other arguments, the config spec or None, [(dotted key, raw value)] in command-line order).
  ``--config FILE`` and ``--config.key value`` (space-separated) are accepted too.
  """
  rest, spec, overrides = [], None, []
  items = list(argv)
  i = 0
  while i < len(items):
    item = items[i]
    dashed = "--" + flag
    if item == dashed or item.startswith(dashed + "=") or item.startswith(dashed + "."):
      name, has_value, value = item[2:].partition("=")
      if not has_value:
        if i + 1 >= len(items):
          raise ConfigError(f"{item} needs a value, e.g. {item}=VALUE.")
        value = items[i + 1]
        i += 1
      if name == flag:
        spec = value
      else:
        key = name[len(flag) + 1 :]
        if not key:
          raise ConfigError(f"Malformed override {item!r}: write --{flag}.KEY=VALUE, e.g. --{flag}.epochs=5.")
        overrides.append((key, value))
    else:
      rest.append(item)
    i += 1
  return rest, spec, overrides


def _config_files_near(path: str) -> list[str]:
  directory = os.path.dirname(path) or "."
  try:
    return sorted(f for f in os.listdir(directory) if f.endswith(".py") and not f.startswith("_"))
  except OSError:
    return []


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` of the file named by ``spec`` (``FILE[:ARG]``, relative to the working directory)."""
  path, _, arg = spec.partition(":")
  if not path:
    raise ConfigError(f"--config={spec!r} names no file; e.g. --config=configs/demo.py.")
  if not os.path.isfile(path):
    near = _config_files_near(path)
    listing = f" Config files in {os.path.dirname(path) or '.'}/: {', '.join(near)}." if near else ""
    raise ConfigError(
      f"Config file {path!r} not found (relative to {os.getcwd()}).{did_you_mean(os.path.basename(path), near)}"
      f"{listing}",
      hint="run from the repository root, or give the config file's full path",
    )
  module_name = "mixjax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[module_name] = module
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path!r} has no get_config(arg) function.")
  config = module.get_config(arg) if arg else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {path!r} returned {type(config).__name__}, not an ml_collections.ConfigDict.")
  return config


def dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> Iterable[str]:
  """Every key of ``config`` as a dotted path (sections and leaves)."""
  for key in config.keys():
    path = f"{prefix}{key}"
    yield path
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from dotted_keys(value, path + ".")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _field_type(config: ml_collections.ConfigDict, leaf: str) -> type | None:
  """The declared type of a leaf (placeholders keep theirs while empty), or None when it has none."""
  field = config._fields[leaf]  # pylint: disable=protected-access
  if isinstance(field, ml_collections.FieldReference):
    return field.get_type()
  return None if field is None else type(field)


def parse_value(raw: str, kind: type | None, key: str) -> Any:
  """``raw`` as a value of ``kind`` (the key's current type); a mismatch names the key and the expected form."""

  def fail(expected: str):
    raise ConfigError(f"--config.{key}={raw}: expected {expected}.")

  text = raw.strip()
  if text.lower() in ("none", "null") and kind not in (str,):
    return None
  if kind is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    fail("true or false")
  if kind is int:
    try:
      return int(text)
    except ValueError:
      try:
        as_float = float(text)
      except ValueError:
        as_float = None
      if as_float is not None and as_float.is_integer():
        return int(as_float)
      fail("an integer")
  if kind is float:
    try:
      return float(text)
    except ValueError:
      fail("a number")
  if kind is str:
    return raw
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if kind in (tuple, list):
      fail(f"a {kind.__name__}, e.g. (1, 2, 3)")
    return raw
  if kind in (tuple, list):
    if isinstance(value, (tuple, list)):
      return kind(value)
    return kind((value,))
  return value


# Sections named ``*_kwargs`` hold keyword arguments passed on as given (e.g. a pretrained network's model
# arguments, empty by default): new keys may be added to them, or the whole section given as a dict literal.
FREE_FORM_SUFFIX = "_kwargs"
# ``config.model`` holds the backbone's keyword arguments besides ``name``: a model-specific keyword the recipe
# does not set (e.g. ``--config.model.init=torch_default``) may be added; the model builder rejects one it does
# not take, naming the key (``models.build_model``).
MODEL_SECTION = "model"


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
  """Sets each ``(dotted key, raw value)``; only existing keys may be set (a typo is an error, not a new key),
  except inside a ``*_kwargs`` section (``FREE_FORM_SUFFIX``) and directly under ``model`` (``MODEL_SECTION``)."""
  for key, raw in overrides:
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
      child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(child, ml_collections.ConfigDict):
        _unknown_key(config, key, ".".join(parents[: depth + 1]))
      node = child
    if leaf not in node:
      if parents == [MODEL_SECTION] or (parents and parents[-1].endswith(FREE_FORM_SUFFIX)):
        _set(node, leaf, parse_value(raw, None, key), key, raw)
        continue
      _unknown_key(config, key, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
      if leaf.endswith(FREE_FORM_SUFFIX):
        value = parse_value(raw, dict, key)
        if not isinstance(value, dict):
          raise ConfigError(f"--config.{key}={raw}: expected a dict, e.g. \"{{'width': 8}}\".")
        _set(node, leaf, value, key, raw)
        continue
      raise ConfigError(
        f"--config.{key} is a section, not a value; set one of its keys, e.g. "
        f"--config.{key}.{next(iter(current.keys()), 'KEY')}=VALUE."
      )
    _set(node, leaf, parse_value(raw, _field_type(node, leaf), key), key, raw)


def _set(node: ml_collections.ConfigDict, leaf: str, value, key: str, raw: str) -> None:
  try:
    node[leaf] = value
  except (TypeError, AttributeError, KeyError) as e:
    raise ConfigError(f"--config.{key}={raw}: {e}") from None


def _unknown_key(config: ml_collections.ConfigDict, key: str, missing: str) -> None:
  keys = list(dotted_keys(config))
  raise ConfigError(
    f"Unknown config key {missing!r} in --config.{key}.{did_you_mean(key, keys)}",
    hint="`--dry_run` prints every key of the resolved config",
  )


def config_from_args(spec: str | None, overrides: Sequence[tuple[str, str]]) -> ml_collections.ConfigDict:
  """The resolved config: the file's ``get_config(arg)`` with the overrides applied."""
  if not spec:
    raise ConfigError("--config is required, e.g. --config=configs/demo.py or --config=configs/rsb_a3.py:cutmix.")
  config = load_config(spec)
  apply_overrides(config, overrides)
  return config
