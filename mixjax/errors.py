"""The one kind of error a user can cause, and how it is told.

Everything a user can get wrong — a config key, value, range or config-string argument, a path, a dataset, a
method, a model, a checkpoint, a locked or mismatched run directory — raises a subclass of :class:`UserError`.
The commands (``mixjax.main``, ``mixjax.evaluate``) print such an error as one line, plus one ``hint:`` line
when there is a fix to suggest, and exit with status 2; anything else is a bug and keeps its traceback.

This module imports nothing heavy: the commands check configs with it before jax or TensorFlow load.
"""

from __future__ import annotations

import difflib
from typing import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
  """Something the user can fix. ``hint`` (optional) says how, in one line."""

  def __init__(self, message: str, hint: str | None = None):
    super().__init__(message)
    self.hint = hint

  def __str__(self) -> str:
    message = super().__str__()
    return f"{message} ({self.hint})" if self.hint and self.hint not in message else message

  @property
  def message(self) -> str:
    return super().__str__()


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
  """' Did you mean "x"?' for the closest candidate, or '' when nothing is close."""
  close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
  return f' Did you mean "{close[0]}"?' if close else ""


def format_user_error(error: UserError) -> str:
  """The text a command prints: ``error: <message>`` and, where there is one, ``hint: <fix>``."""
  message = " ".join(error.message.split())  # one line, whatever the message's layout
  lines = [f"error: {message}"]
  if error.hint:
    lines.append(f"hint: {' '.join(error.hint.split())}")
  return "\n".join(lines)
