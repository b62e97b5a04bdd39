"""Preprocessing specs: `op1(args)|op2|op3(k=v)` strings turned into functions.

The spec syntax follows big_vision's `pp` strings (Beyer, Zhai, Kolesnikov et
al.): ops are looked up by name in a registry, arguments are Python literals
(positional and keyword). An op factory returns `fn(example) -> example`,
where `example` is a dict of tensors holding at least "image".
"""

import ast
from typing import Callable
from mixjax.config_args import ConfigError

Example = dict
PPOp = Callable[[Example], Example]

_OPS: dict[str, Callable[..., PPOp]] = {}


def register(name: str):
  """Decorator that makes an op factory available under `name` in specs."""

  def wrap(factory):
    if name in _OPS:
      raise ConfigError(f"pp op {name!r} is registered twice.")
    _OPS[name] = factory
    return factory

  return wrap


def registered_ops() -> list[str]:
  return sorted(_OPS)


def _lookup(name: str, spec: str) -> Callable[..., PPOp]:
  # Importing the op libraries registers the built-in ops.
  from mixjax.data import augment_ops, pp_ops  # noqa: F401  (registers the ops; a cycle forbids a top import)

  if name not in _OPS:
    raise ConfigError(f"Unknown pp op {name!r} in spec {spec!r}. Valid ops: {registered_ops()}.")
  return _OPS[name]


def _flatten_pipe(node: ast.expr) -> list[ast.expr]:
  """`a|b|c` parses as ((a|b)|c); returns [a, b, c] in order."""
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
    return _flatten_pipe(node.left) + _flatten_pipe(node.right)
  return [node]


def parse_spec(spec: str) -> list[tuple[str, tuple, dict]]:
  """Returns [(op_name, args, kwargs), ...] for a spec string."""
  if not isinstance(spec, str) or not spec.strip():
    raise ConfigError(f"Preprocessing spec must be a non-empty string, got {spec!r}.")
  try:
    tree = ast.parse(spec.strip(), mode="eval")
  except SyntaxError as e:
    raise ConfigError(
      f"Malformed preprocessing spec {spec!r}: {e.msg}. Expected 'op1(arg, key=value)|op2|...' with literal arguments."
    ) from None
  calls = []
  for node in _flatten_pipe(tree.body):
    text = ast.unparse(node)
    if isinstance(node, ast.Name):
      calls.append((node.id, (), {}))
      continue
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
      raise ConfigError(
        f"Malformed preprocessing spec {spec!r}: {text!r} is not an op name or an op call like 'resize(224)'."
      )
    try:
      args = tuple(ast.literal_eval(a) for a in node.args)
      kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError:
      raise ConfigError(
        f"Malformed preprocessing spec {spec!r}: arguments of {text!r} "
        f"must be Python literals (numbers, strings, tuples)."
      ) from None
    if None in kwargs:
      raise ConfigError(f"Malformed preprocessing spec {spec!r}: '**' is not allowed in {text!r}.")
    calls.append((node.func.id, args, kwargs))
  return calls


def build(spec: str) -> PPOp:
  """Turns a spec into one function applying its ops left to right.

  All errors (unknown op, bad arguments) surface here, when the pipeline is
  built, not later inside tf.data.
  """
  ops = []
  for name, args, kwargs in parse_spec(spec):
    factory = _lookup(name, spec)
    try:
      ops.append(factory(*args, **kwargs))
    except TypeError as e:
      raise ConfigError(f"Bad arguments for pp op {name!r} in spec {spec!r}: {e}") from None

  def apply(example: Example) -> Example:
    for op in ops:
      example = op(example)
    return example

  return apply
