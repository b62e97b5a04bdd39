"""What the commands share: ``--config`` parsing before absl, and one way to report a user's mistake.

``python -m mixjax.main`` and ``python -m mixjax.evaluate`` take ``--config=FILE[:ARG]`` and
``--config.key=value`` (see :mod:`mixjax.config_loading`); those are taken out of the command line before absl
parses the other flags, so the config is loaded with mixjax's own errors. Any :class:`~mixjax.errors.UserError`
ends the command with one ``error:`` line (and a ``hint:`` line when there is a fix) on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags

from mixjax import cpu_backend
from mixjax.config_args import ConfigError
from mixjax.config_loading import split_config_args
from mixjax.errors import EXIT_USER_ERROR, UserError, format_user_error


class ConfigArgs:
  """The ``--config`` spec and overrides of this command line (filled by :func:`parse_flags`)."""

  spec: str | None = None
  overrides: list[tuple[str, str]] = []


def report(error: UserError) -> int:
  print(format_user_error(error), file=sys.stderr, flush=True)
  return EXIT_USER_ERROR


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with ``--config…`` handled first and every parsing mistake as one line + exit 2."""
  try:
    rest, ConfigArgs.spec, ConfigArgs.overrides = split_config_args(argv)
  except ConfigError as e:
    sys.exit(report(e))
  try:
    return flags.FLAGS(rest)
  except flags.Error as e:
    sys.exit(report(UserError(str(e), hint=f"python -m {_program()} --helpfull lists every flag")))


def _program() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else "mixjax.main"


def run(main: Callable[[], int]) -> None:
  """``app.run`` with mixjax's flag parsing; a :class:`UserError` from ``main`` exits 2 with one line."""

  def wrapped(argv):
    if len(argv) > 1:
      sys.exit(report(UserError(f"Unexpected arguments {argv[1:]}: every option is a --flag.")))
    try:
      return main()
    except UserError as e:
      code = report(e)
      if getattr(e, "hard_exit", False):
        # The library left threads blocked on a save that can never complete (Orbax's signalling threads
        # after a failed directory creation); everything of the run is written, so leave without joining them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
      return code

  cpu_backend.configure_xla_flags()  # CPU-only XLA settings; must precede jax's backend start
  app.run(lambda argv: sys.exit(wrapped(argv)), flags_parser=parse_flags)
