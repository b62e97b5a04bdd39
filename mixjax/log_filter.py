"""Keeps the console readable: library INFO chatter (Orbax logs every save step by step) is dropped, while
warnings and errors from everywhere, and all of mixjax's own messages, still show."""

from __future__ import annotations

import logging as std_logging

_CHATTY = ("/orbax/", "/etils/", "/tensorflow_datasets/", "/jax/_src/")


class _LibraryInfoFilter(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
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


def quiet_library_logs() -> None:
  """Installs the filter on the absl handler (call after absl has parsed flags)."""
  from absl import logging as absl_logging

  absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())
