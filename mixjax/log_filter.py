"""Keeps the console readable: library INFO chatter (Orbax logs every save step by step) is dropped, while
warnings and errors from everywhere, and all of mixjax's own messages, still show."""

from __future__ import annotations

import logging as std_logging
import sys

_CHATTY = ("/orbax/", "/etils/", "/tensorflow_datasets/", "/jax/_src/")


def _orbax_read_failure(exc_info) -> bool:
  """An exception raised in Orbax, or a tensorstore read's (those carry their ``tensorstore_spec``)."""
  _, error, traceback = exc_info
  if "tensorstore_spec" in str(error):
    return True
  while traceback is not None:
    if "/orbax/" in traceback.tb_frame.f_code.co_filename:
      return True
    traceback = traceback.tb_next
  return False


class _LibraryInfoFilter(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    # "Task/Future exception was never retrieved" for Orbax's other reads of a damaged checkpoint: once one array
    # fails, the restore gives up on the rest, whose failures asyncio then logs with their tracebacks. mixjax's
    # checkpoint fallback reports the damaged checkpoint in one line (a bug elsewhere still reaches its handling).
    if record.name == "asyncio" and record.exc_info and _orbax_read_failure(record.exc_info):
      return False
    if not any(p in record.pathname for p in _CHATTY):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    # A library's own error report stays, as one line: mixjax says what failed and what to do, without the
    # library's traceback (the same error reaches mixjax's handling, which has the full chain if it is a bug).
    if record.exc_info or record.exc_text:
      error = record.exc_info[1] if record.exc_info else None
      record.msg = f"{record.getMessage().splitlines()[0]}" + (f" ({type(error).__name__}: {error})" if error else "")
      record.args, record.exc_info, record.exc_text = None, None, None
    return True


def _is_late_callback_on_closed_loop(unraisable) -> bool:
  """A tensorstore read finishing after Orbax's restore gave up: when one array of a damaged checkpoint fails,
  Orbax's event loop closes while the other reads are still running, and each of their completion callbacks then
  raises "Event loop is closed" from tensorstore's thread. Harmless (the restore has already failed and mixjax
  says so, then tries the previous checkpoint), but Python prints each as a traceback."""
  error = unraisable.exc_value
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def quiet_library_logs() -> None:
  """Installs the filter on the absl handler (call after absl has parsed flags), and drops the tracebacks of
  late callbacks on a closed event loop (``_is_late_callback_on_closed_loop``); other unraisable errors show."""
  from absl import logging as absl_logging

  absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  default_hook = sys.unraisablehook

  def hook(unraisable):
    if not _is_late_callback_on_closed_loop(unraisable):
      default_hook(unraisable)

  sys.unraisablehook = hook
