"""Joining a multi-process JAX job.

TPU pods, Slurm and Open MPI launches are detected by ``jax.distributed.initialize()`` itself; other clusters
(and the local multi-process tests) pass the coordinator explicitly.
"""

from __future__ import annotations

import os

import jax
from absl import logging

_CLUSTER_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  mode: str = "auto",
) -> None:
  """``mode``: 'auto' (explicit flags, else a detected cluster), 'on' (always call initialize), 'off'."""
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"--multihost must be auto, on or off, not {mode!r}.")
  if mode == "off":
    return
  explicit = coordinator_address is not None
  detected = any(
    int(os.environ.get(k, "1") or 1) > 1 if k.endswith(("NTASKS", "SIZE")) else k in os.environ for k in _CLUSTER_ENV
  )
  if mode == "auto" and not explicit and not detected:
    return
  if explicit:
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  else:
    jax.distributed.initialize()
  logging.info(
    "Joined a %d-process job as process %d (%d local / %d global devices).",
    jax.process_count(),
    jax.process_index(),
    jax.local_device_count(),
    jax.device_count(),
  )
