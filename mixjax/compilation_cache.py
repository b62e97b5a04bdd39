"""The persistent XLA compilation cache, on by default for the commands.

A ResNet-50 train step takes minutes to compile on a CPU host and tens of seconds on an accelerator; with the
cache a resumed or repeated run of the same cell loads the compiled program instead. Location:
``--compilation_cache_dir`` (default ``$JAX_COMPILATION_CACHE_DIR``, else ``~/.cache/mixjax/jax_cache``);
``--compilation_cache_dir=`` (empty) turns it off.
"""

from __future__ import annotations

import os

from absl import flags, logging

_DEFAULT = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join("~", ".cache", "mixjax", "jax_cache")
_CACHE_DIR = flags.DEFINE_string(
  "compilation_cache_dir", _DEFAULT, "Persistent compilation cache (a local directory or gs://…); empty turns it off."
)


_active: str | None = None


def active_directory() -> str | None:
  """The directory :func:`enable` turned on in this process (None when off or not enabled)."""
  return _active


def enable(directory: str | None = None) -> str | None:
  """Points jax at the cache directory (``directory`` or the flag); returns it, or None when off."""
  import jax
  from mixjax import paths

  global _active
  directory = _CACHE_DIR.value if directory is None else directory
  if not directory:
    _active = None
    return None
  directory = paths.absolute(directory)
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every program that took a noticeable time to compile (the default of 1 s skips little).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("Compilation cache: %s", directory)
  _active = directory
  return directory
