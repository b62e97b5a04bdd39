"""The console filter: a damaged checkpoint's leftover read failures are dropped, everything else still shows."""

import logging
import sys
import types

from mixjax import log_filter


def _record(name, error):
  try:
    raise error
  except type(error):
    exc_info = sys.exc_info()
  return logging.LogRecord(
    name, logging.ERROR, "/x/asyncio/base_events.py", 1, "Future exception was never retrieved", None, exc_info
  )


def test_leftover_tensorstore_read_failures_are_dropped_and_other_errors_kept():
  keep = log_filter._LibraryInfoFilter().filter
  spec = "NOT_FOUND: Metadata at \"step/.zarray\" does not exist [tensorstore_spec='{}']"
  assert not keep(_record("asyncio", ValueError(spec)))
  assert keep(_record("asyncio", ValueError("something else went wrong")))  # not a checkpoint read: shown
  assert keep(_record("mixjax", ValueError(spec)))  # mixjax's own messages always show


def test_late_callbacks_on_a_closed_loop_are_not_printed():
  saved, seen = sys.unraisablehook, []
  try:
    sys.unraisablehook = seen.append  # stands for Python's default printer
    log_filter.quiet_library_logs()
    for message in ("Event loop is closed", "a real problem"):
      error = RuntimeError(message)
      sys.unraisablehook(
        types.SimpleNamespace(exc_type=RuntimeError, exc_value=error, exc_traceback=None, err_msg=None, object=None)
      )
    assert [str(u.exc_value) for u in seen] == ["a real problem"]
  finally:
    sys.unraisablehook = saved
