"""Orbax checkpointing behind a small facade.

A checkpoint is one step directory ``<workdir>/checkpoints/<step>/`` holding two items: ``state`` (the train
state pytree, restored straight into its sharded layout from an abstract target) and ``meta`` (JSON: epoch,
eval history, the resolved config). Saves are asynchronous; Orbax writes into a temporary directory and renames
it when complete, so a process killed mid-save leaves the previous checkpoint intact and the partial one is
ignored (and cleaned up at the next start).
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from etils import epath


class CheckpointNotFoundError(FileNotFoundError):
  pass


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

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an asynchronous save (the device→host copy happens before this returns)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict]:
    """Restores ``step`` (latest if None) into the shardings given by ``abstract_state``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointNotFoundError(f"No checkpoint found in {self.directory}.")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a multi-host preemption notice reached this step (needs jax.distributed)."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    self._manager.close()


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
      "or a run directory that contains checkpoints/.")
