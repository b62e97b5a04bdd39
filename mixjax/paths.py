"""User-given paths: relative ones are resolved against the working directory at start.

Orbax and TensorStore need absolute paths, and a run that changes directory later must still find its files,
so every path flag and config path goes through :func:`absolute` once. Cloud paths (``gs://…``) pass through.
"""

from __future__ import annotations

import os


def is_remote(path: str) -> bool:
  return "://" in path


def absolute(path: str | None) -> str | None:
  """``path`` made absolute against the current directory (``~`` expanded); None and ``gs://…`` unchanged."""
  if path is None or path == "" or is_remote(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def resolve_config_paths(config) -> None:
  """Makes ``config.data.data_dir`` and ``config.data.folder_root`` absolute in place (where set)."""
  data = config.get("data")
  if data is None:
    return
  for key in ("data_dir", "folder_root"):
    if data.get(key):
      data[key] = absolute(data[key])
