"""Safety of a run directory: one run at a time (a lock), and no silent change of what a run trains.

**Lock.** ``<workdir>/.lock`` is held with ``flock`` by the running job (process 0 of a multi-host run) and
records host, pid, start time and a heartbeat. A second run on the same directory refuses in one line. The
kernel releases a ``flock`` when its process dies, so a lock left by a dead process on this host is taken over
(with a warning). A lock written on another host (shared file systems often ignore ``flock``) counts as alive
while its heartbeat is younger than :data:`STALE_AFTER_S`; a restarted job on a new node takes it over after.

**Fingerprint.** On resume the config saved with the checkpoint is compared with the new one. Keys that change
the training trajectory (everything except :data:`HARMLESS_KEYS`) must match, else :class:`ConfigChangedError`
lists the differences and the two ways out; harmless differences are logged and allowed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Any, Mapping

from absl import logging

from mixjax import paths
from mixjax.errors import UserError

STALE_AFTER_S = 600.0
LOCK_NAME = ".lock"

# Settings that do not change the sequence of parameters a run goes through: logging, evaluation and checkpoint
# cadence, where the data lives, how fast it is read, early stopping for smoke runs.
HARMLESS_KEYS = (
  "log_every_steps",
  "eval_every_epochs",
  "checkpoint_every_epochs",
  "checkpoint_every_steps",
  "keep_checkpoints",
  "log_mixed_samples",
  "prefetch_to_device",
  "max_steps",
  "eval_batch_size",
  "data.data_dir",
  "data.folder_root",
  "data.prefetch",
  "data.num_parallel_calls",
  "data.autotune",
  "data.cache",
  "data.skip_corrupt",
  "data.pp_eval",
  "data.eval_split",
  "recipe.report_metric",
)


class WorkdirLockedError(UserError):
  """Another live run holds the run directory."""


class ConfigChangedError(UserError):
  """The resumed run's config differs in settings that change what is trained."""


def _now() -> str:
  return time.strftime("%Y-%m-%d %H:%M:%S")


class WorkdirLock:
  """``with WorkdirLock(workdir):`` — held for the whole run; see the module docstring."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.enabled = enabled and not paths.is_remote(workdir)
    self._fd: int | None = None
    self._record: dict[str, Any] = {}

  def __enter__(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _read(fd)
      os.close(fd)
      raise WorkdirLockedError(
        f"{os.path.dirname(self.path)} is in use by another run ({_describe(holder)}).",
        hint="wait for it to end or stop it, or give this run another --workdir",
      ) from None
    previous = _read(fd)
    if previous:
      age = time.time() - float(previous.get("heartbeat", 0))
      if previous.get("host") != socket.gethostname() and age < STALE_AFTER_S:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise WorkdirLockedError(
          f"{os.path.dirname(self.path)} is in use by a run on another host ({_describe(previous)}, last "
          f"heartbeat {age:.0f} s ago).",
          hint=f"if that run is dead, wait {STALE_AFTER_S - age:.0f} s or delete {self.path}",
        )
      logging.warning("Took over the lock of a run that is no longer alive (%s).", _describe(previous))
    self._fd = fd
    self._record = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now()}
    self.heartbeat()
    return self

  def heartbeat(self) -> None:
    """Refreshes the lock's heartbeat (the loop calls it when it logs)."""
    if self._fd is None:
      return
    self._record["heartbeat"] = time.time()
    data = json.dumps(self._record).encode()
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, data, 0)

  def __exit__(self, *exc) -> None:
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except OSError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None


def _read(fd: int) -> dict:
  try:
    raw = os.pread(fd, 4096, 0)
    return json.loads(raw) if raw.strip() else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: Mapping[str, Any]) -> str:
  if not holder:
    return "holder unknown"
  return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _harmless(key: str) -> bool:
  return any(key == h or key.startswith(h + ".") for h in HARMLESS_KEYS)


def _methods(config: Mapping[str, Any]) -> set[str]:
  method = (config.get("mixing") or {}).get("method")
  return {method} if isinstance(method, str) else set(method or ())


def _used_mixing_args(config: Mapping[str, Any], methods: set[str]) -> Mapping[str, Any]:
  """The config with ``mixing.args`` cut to ``methods`` (other methods' defaults may change between versions)."""
  mixing = config.get("mixing")
  if not isinstance(mixing, Mapping) or not isinstance(mixing.get("args"), Mapping):
    return config
  args = {k: v for k, v in mixing["args"].items() if k in methods}
  return {**config, "mixing": {**mixing, "args": args}}


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
  """(trajectory-changing differences, harmless differences), each as ``key: old -> new``.

  Only the hyper-parameters of the methods either config uses are compared.
  """
  methods = _methods(saved) | _methods(new)
  old_flat = _flatten(_used_mixing_args(saved, methods))
  new_flat = _flatten(_used_mixing_args(new, methods))
  changing, harmless = [], []
  for key in sorted(set(old_flat) | set(new_flat)):
    old, value = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
    if old == value:
      continue
    line = f"{key}: {old!r} -> {value!r}"
    (harmless if _harmless(key) else changing).append(line)
  return changing, harmless


def check_resume_config(
  saved: Mapping[str, Any] | None, new: Mapping[str, Any], *, where: str, accept_change: bool
) -> None:
  """Refuses a resume whose config changes the trajectory (unless ``accept_change``); logs harmless changes."""
  if not saved:
    return
  changing, harmless = config_differences(saved, new)
  if harmless:
    logging.info("Config changes since the checkpoint (allowed): %s", "; ".join(harmless))
  if not changing:
    return
  if accept_change:
    logging.warning("Resuming with a changed config (--accept_config_change): %s", "; ".join(changing))
    return
  raise ConfigChangedError(
    f"The config differs from the one {where} was trained with: {'; '.join(changing)}.",
    hint="use a new --workdir for a new run, or pass --accept_config_change to resume with the change",
  )
