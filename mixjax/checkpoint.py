"""Orbax checkpointing behind a small facade.

A checkpoint is one step directory ``<workdir>/checkpoints/<step>/`` holding two items: ``state`` (the train
state pytree, restored straight into its sharded layout from an abstract target) and ``meta`` (JSON: epoch,
eval history, the resolved config). Saves are asynchronous; Orbax writes into a temporary directory and renames
it when complete, so a process killed mid-save leaves the previous checkpoint intact and the partial one is
ignored (and cleaned up at the next start).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mixjax.errors import UserError


class CheckpointNotFoundError(UserError, FileNotFoundError):
  pass


class CheckpointSaveError(UserError):
  """A checkpoint could not be written (disk full, permissions, a vanished directory); the run must stop."""

  hard_exit = True  # Orbax may leave non-daemon threads waiting for the failed save (see mixjax.cli)

  def __init__(self, message: str):
    super().__init__(
      message,
      hint="fix the file system problem, then rerun the same command: it resumes from "
      "the last checkpoint that was written",
    )


class NoIntactCheckpointError(UserError):
  """Every checkpoint of a run directory failed to restore (each one was moved aside, none deleted)."""


def _quiet_abandoned_reads() -> None:
  """After a failed restore, TensorStore reads still in flight finish into a closed event loop and their
  coroutines are collected later; Python would print each as an "Exception ignored" traceback. The failure was
  already reported in one line, so those leftovers are dropped (every other unraisable error still prints)."""
  previous = sys.unraisablehook
  if getattr(previous, "_mixjax_quiet", False):
    return

  def hook(unraisable):
    text = f"{unraisable.exc_value} {unraisable.object!r}"
    if "Event loop is closed" in text or "_read_array_index" in text or "Encountered error while reading array" in text:
      return
    previous(unraisable)

  hook._mixjax_quiet = True
  sys.unraisablehook = hook


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class Checkpointer:
  """Periodic, asynchronous, keep-last-N checkpoints of a run."""

  def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True, read_only: bool = False):
    self.directory = os.fspath(directory)
    options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
    self._pending: int | None = None  # the step of the last save not yet checked for errors

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an asynchronous save (the device→host copy happens before this returns).

    A failure of this save or of the previous (background) one raises :class:`CheckpointSaveError`.
    """
    self.check_for_errors()
    try:
      self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
      )
    except Exception as e:  # anything Orbax/TensorStore/the file system raise
      raise CheckpointSaveError(f"Saving checkpoint step {step} in {self.directory} failed: {_first_line(e)}") from e
    self._pending = step

  def check_for_errors(self) -> None:
    """Raises :class:`CheckpointSaveError` once a background save has failed (cheap; call it every step).

    A save that finished is checked by waiting on it (immediate then), which re-raises its error.
    """
    if self._pending is None or self._manager.is_saving_in_progress():
      return
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise CheckpointSaveError(f"Saving checkpoint step {step} in {self.directory} failed: {_first_line(e)}") from e

  def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict]:
    """Restores ``step`` (latest if None) into the shardings given by ``abstract_state``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointNotFoundError(f"No checkpoint found in {self.directory}.")
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    )
    return restored.state, dict(restored.meta)

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def wait(self) -> None:
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise CheckpointSaveError(f"Saving checkpoint step {step} in {self.directory} failed: {_first_line(e)}") from e

  def restore_newest_intact(
    self,
    abstract_state: Any,
    *,
    check_meta: Callable[[dict, int], None] | None = None,
    warn: Callable[[str], None] = print,
  ) -> tuple[Any, dict, int]:
    """Restores the newest step that restores cleanly; damaged newer steps are moved aside, never deleted.

    ``check_meta(meta, step)`` runs on each step's metadata before its state is read (a config fingerprint
    check raises there, and that error is the user's, not damage). Returns (state, meta, step).
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise CheckpointNotFoundError(f"No checkpoint found in {self.directory}.")
    for step in steps:
      try:
        meta = self.restore_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e, warn)
        continue
      if check_meta is not None:
        check_meta(meta, step)
      try:
        state, meta = self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e, warn)
        continue
      return state, meta, step
    raise NoIntactCheckpointError(
      f"None of the checkpoints in {self.directory} could be restored; they were moved to {self.damaged_directory}.",
      hint="start over with --noauto_resume, or another --workdir",
    )

  @property
  def damaged_directory(self) -> str:
    return os.path.join(os.path.dirname(self.directory.rstrip("/")), "checkpoints_damaged")

  def _set_aside(self, step: int, error: BaseException, warn: Callable[[str], None]) -> None:
    """Moves a step that failed to restore to ``checkpoints_damaged/`` and forgets it."""
    _quiet_abandoned_reads()
    gc.collect()
    source = epath.Path(self.directory) / str(step)
    epath.Path(self.damaged_directory).mkdir(parents=True, exist_ok=True)
    target = epath.Path(self.damaged_directory) / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    source.rename(target)
    self._manager.reload()
    warn(
      f"Checkpoint step {step} cannot be restored ({_first_line(error)}); moved it to {target} and "
      "trying the previous one."
    )

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a multi-host preemption notice reached this step (needs jax.distributed)."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    self._manager.close()

  def abandon(self) -> None:
    """Closes after a failure: waits for what is in flight and swallows its errors (already reported)."""
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      pass


def locate_checkpoint(path: str) -> tuple[str, int]:
  """Resolves a user-given checkpoint path to (checkpoints directory, step).

  Accepts a step directory (``.../checkpoints/1200``), a checkpoints directory (latest step), or a run's workdir
  (its ``checkpoints/`` subdirectory, latest step), so ``--resume_from``/``--load_checkpoint``/``--checkpoint``
  take whatever a user naturally points at.
  """
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointNotFoundError(f"Checkpoint path {path} does not exist.")
  if (p / "state").exists() and p.name.isdigit():
    return os.fspath(p.parent), int(p.name)
  for directory in (p, p / "checkpoints"):
    if directory.exists():
      steps = sorted(int(c.name) for c in directory.iterdir() if c.name.isdigit() and (c / "state").exists())
      if steps:
        return os.fspath(directory), steps[-1]
  raise CheckpointNotFoundError(
    f"No checkpoint found at {path}: expected a step directory (…/checkpoints/<step>), a checkpoints directory "
    "or a run directory that contains checkpoints/."
  )


@functools.lru_cache(maxsize=8)
def read_run_config(path: str) -> dict:
  """The config dict saved with a run's checkpoint (``path``: whatever ``locate_checkpoint`` accepts)."""
  directory, step = locate_checkpoint(path)
  meta = Checkpointer(directory, read_only=True).restore_meta(step)
  config = meta.get("config")
  return json.loads(config) if isinstance(config, str) else config


def read_run_weights(path: str):
  """Params (EMA params when the run kept them) and BN statistics of a run's checkpoint, as numpy arrays.

  Restored as host arrays so this also works while a jitted init is being traced.
  """
  directory, step = locate_checkpoint(path)
  item = os.path.join(directory, str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(item)
  tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  restored = checkpointer.restore(item, restore_args=restore_args)
  params = restored["ema_params"] if restored.get("ema_params") else restored["params"]
  return params, restored.get("batch_stats") or {}
