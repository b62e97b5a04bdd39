"""Keeps the console readable: library INFO chatter (Orbax logs every save step by step) is dropped, while
warnings and errors from everywhere, and all of mixjax's own messages, still show."""
from __future__ import annotations

import logging as std_logging

_CHATTY = ("/orbax/", "/etils/", "/tensorflow_datasets/", "/jax/_src/")


class _LibraryInfoFilter(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(p in record.pathname for p in _CHATTY)


def quiet_library_logs() -> None:
  """Installs the filter on the absl handler (call after absl has parsed flags)."""
  from absl import logging as absl_logging
  absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())
