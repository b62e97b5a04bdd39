"""Compiled train steps kept on disk and keyed by what the program is made from, so a repeated run skips tracing.

JAX's persistent compilation cache (:mod:`mixjax.compilation_cache`) skips XLA's compile, but it is keyed by the
lowered program, so every run still traces and lowers the step before it can look it up: 1.4-2 s of a ResNet-50
step's 7-10 s cold compile on two CPU cores, 4-20 s of AutoMix's. This cache stores the whole executable
(``jax.experimental.serialize_executable``) under a key computed without tracing, from everything the traced
program is a function of:

- the source of the ``mixjax`` package (every ``.py`` file's bytes) and the versions of the libraries that shape
  the program (jax, jaxlib, flax, optax, numpy, ...);
- the run's config, the dataset facts and the schedule the step functions were built from (``context``);
- the arguments' tree structure, shapes, dtypes and shardings; the devices and the process layout;
- ``XLA_FLAGS``, the ``MIXJAX_*`` switches and jax's own configuration.

A hit costs only XLA's load of the executable. Anything that cannot be serialized (a step with closed-over
arrays or host callbacks), an entry that fails to load, or a change of any key part falls back to tracing and
compiling (through JAX's cache), so the cache can make a start faster but never change what runs. Only a fresh
compile is stored: an executable JAX's cache supplied is not (XLA:CPU re-serializes a loaded executable without
some of its kernels). It lives in ``<compilation cache>/mixjax_steps`` and is off with the compilation cache
(``--compilation_cache_dir=``) or alone with ``MIXJAX_STEP_CACHE=0``; the least recently used entries go when it
holds more than ``MIXJAX_STEP_CACHE_MAX_GB`` (8). Entries are pickles, so the directory must
be as trusted as the code (a private ``~/.cache`` is; a directory others can write to is not).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import os
import pickle
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import jax
from absl import logging
from jax import monitoring

from mixjax import paths

SUBDIR = "mixjax_steps"
_FORMAT = 1  # bump when the entry layout changes
_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections", "einops", "ml_dtypes")
# jax options that only say where caches and dumps go, or how errors are reported: not part of the program.
_JAX_CONFIG_IGNORED = ("cache", "dump", "log", "traceback", "timeout", "profile", "visible_devices")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
  """sha256 of every ``.py`` file of the ``mixjax`` package (relative path and bytes), in path order."""
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  files = []
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
    files += [os.path.join(directory, n) for n in names if n.endswith(".py")]
  for path in sorted(files):
    digest.update(os.path.relpath(path, root).encode() + b"\0")
    with open(path, "rb") as f:
      digest.update(f.read() + b"\0")
  return digest.hexdigest()


def _versions() -> dict:
  out = {}
  for name in _LIBRARIES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def _environment() -> dict:
  env = {
    k: v
    for k, v in os.environ.items()
    # (the cache's own switches are no part of the program)
    if (k == "XLA_FLAGS" or k.startswith("MIXJAX_")) and not k.startswith("MIXJAX_STEP_CACHE")
  }
  config = {
    k: repr(v) for k, v in sorted(jax.config.values.items()) if not any(word in k for word in _JAX_CONFIG_IGNORED)
  }
  devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
  return dict(env=env, jax_config=config, devices=devices, process=(jax.process_index(), jax.process_count()))


def _signature(args: Any) -> dict:
  leaves, treedef = jax.tree_util.tree_flatten_with_path(args)
  return dict(
    tree=str(treedef),
    leaves=[
      (
        jax.tree_util.keystr(path),
        tuple(getattr(x, "shape", ())),
        str(getattr(x, "dtype", type(x).__name__)),
        bool(getattr(x, "weak_type", False)),
        repr(getattr(x, "sharding", None)),
      )
      for path, x in leaves
    ],
  )


def same_signature(a: Any, b: Any) -> bool:
  """Whether argument trees ``a`` and ``b`` (arrays or ``jax.ShapeDtypeStruct``) have equal structure, shapes,
  dtypes, weak types and shardings, i.e. whether a step compiled for one accepts the other."""
  return _signature(a) == _signature(b)


def key_parts(args: Any, context: dict) -> str:
  """What the key is made of, as canonical JSON (kept next to each entry, to tell why a run missed)."""
  parts = dict(
    format=_FORMAT,
    source=source_digest(),
    versions=_versions(),
    environment=_environment(),
    context=context,
    signature=_signature(args),
  )
  return json.dumps(parts, sort_keys=True, indent=0, default=repr)


def _digest(parts: str) -> str:
  return hashlib.sha256(parts.encode()).hexdigest()


def cache_key(args: Any, context: dict) -> str:
  """The entry name of a step taking ``args``, built from ``context`` (JSON-able: config, dataset, schedule)."""
  return _digest(key_parts(args, context))


def _path(directory: str, parts: str):
  from etils import epath

  return epath.Path(directory) / SUBDIR / f"{_digest(parts)}.pkl"


def _load(path) -> Any | None:
  from jax.experimental import serialize_executable

  if not path.exists():
    return None
  try:
    payload, in_tree, out_tree = pickle.loads(path.read_bytes())
    compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    if not paths.is_remote(str(path)):
      os.utime(path)  # last use, for the eviction of the least recently used entries
    return compiled
  except Exception as e:  # a truncated or foreign entry: compile instead, and replace it
    logging.warning("Step cache entry %s could not be loaded (%s: %s); compiling instead.", path, type(e).__name__, e)
    return None


def _store(path, compiled, parts: str) -> None:
  from jax.experimental import serialize_executable

  try:
    entry = pickle.dumps(serialize_executable.serialize(compiled))
  except Exception as e:  # closed-over constants, host callbacks: nothing to keep, the JAX cache still serves
    logging.info("Train step not kept in the step cache (%s: %s).", type(e).__name__, e)
    return
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    path.with_suffix(".json").write_text(parts)
    tmp.write_bytes(entry)
    tmp.replace(path)  # atomic: a concurrent run sees the whole entry or none
  except OSError as e:
    logging.warning("Could not write the step cache entry %s: %s", path, e)
    return
  if not paths.is_remote(str(path)):
    evict(str(path.parent), max_bytes())


def max_bytes() -> int:
  """The cache's size bound: ``MIXJAX_STEP_CACHE_MAX_GB`` (default 8; an AutoMix ResNet-50 step is ~15 MB)."""
  return int(float(os.environ.get("MIXJAX_STEP_CACHE_MAX_GB", "8")) * 1e9)


def evict(directory: str, limit: int) -> list[str]:
  """Deletes the least recently used entries (and their key files) until the directory holds at most ``limit``
  bytes of entries; returns the names deleted. A full sweep of the table's cells would otherwise keep gigabytes."""
  entries = []
  for name in os.listdir(directory):
    if name.endswith(".pkl") and not name.startswith("."):
      st = os.stat(os.path.join(directory, name))
      entries.append((st.st_mtime, st.st_size, name))
  total, deleted = sum(size for _, size, _ in entries), []
  for _, size, name in sorted(entries):
    if total <= limit:
      break
    for victim in (name, name[: -len(".pkl")] + ".json"):
      try:
        os.remove(os.path.join(directory, victim))
      except FileNotFoundError:  # another run evicted it first
        pass
    total -= size
    deleted.append(name)
  return deleted


def enabled() -> bool:
  """False when ``MIXJAX_STEP_CACHE=0`` (JAX's compilation cache alone then serves a repeated run)."""
  return os.environ.get("MIXJAX_STEP_CACHE", "1") != "0"


def compile_step(jitted: Callable, args: tuple, *, directory: str | None, context: dict) -> tuple[Any, dict]:
  """``jitted`` compiled for ``args``: loaded from the step cache under ``directory`` when an entry matches, else
  traced and compiled (and stored). Returns the compiled step and its timing: ``source`` ('step cache' or
  'compiled'), ``trace_s`` (tracing and lowering; 0 on a hit), ``compile_s`` (the whole time)."""
  t0 = time.time()
  path = None
  if directory and enabled():
    parts = key_parts(args, context)
    path = _path(directory, parts)
    compiled = _load(path)
    if compiled is not None:
      return compiled, dict(source="step cache", trace_s=0.0, compile_s=round(time.time() - t0, 2), key=path.stem)
  t1 = time.time()
  lowered = jitted.lower(*args)
  t2 = time.time()
  with _jax_cache_hits() as hits:
    compiled = lowered.compile()
  t3 = time.time()
  if path is not None and not hits:
    _store(path, compiled, parts)
  elif path is not None:
    # XLA:CPU re-serializes an executable it loaded without some of its kernels ("Function ... not found" at the
    # first call of the reloaded copy), so only a fresh compile is kept; JAX's cache serves this program meanwhile.
    logging.info("Train step came from JAX's compilation cache; the step cache keeps only fresh compiles.")
  timing = dict(source="compiled", trace_s=round(t2 - t1, 2), compile_s=round(t3 - t0, 2), jax_cache_hit=bool(hits))
  return compiled, timing


def compile_step_in_background(
  jitted: Callable, args: tuple, *, directory: str | None, context: dict
) -> concurrent.futures.Future:
  """:func:`compile_step` on a daemon thread, so the load or compile overlaps what the caller does meanwhile (the
  input pipeline's first batches). ``args`` may hold ``jax.ShapeDtypeStruct`` leaves with shardings. The future's
  result is ``(compiled, timing)``; an exception in the thread is raised by ``result()``."""
  future: concurrent.futures.Future = concurrent.futures.Future()

  def work():
    try:
      future.set_result(compile_step(jitted, args, directory=directory, context=context))
    except BaseException as e:  # handed to the caller's result()
      future.set_exception(e)

  threading.Thread(target=work, name="mixjax-compile-step", daemon=True).start()
  return future


@contextlib.contextmanager
def _jax_cache_hits():
  """Collects the persistent-cache hits jax reports while the block runs (``jax.monitoring`` events) in this
  thread: another thread's compiles (an eval step, the mixed-sample picture) are not this step's."""
  hits, thread = [], threading.get_ident()

  def listener(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits" and threading.get_ident() == thread:
      hits.append(event)

  monitoring.register_event_listener(listener)
  try:
    yield hits
  finally:
    monitoring.unregister_event_listener(listener)
