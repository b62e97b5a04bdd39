"""The device mesh and the host → device path for batches.

One mesh axis, ``data``, spans every device of every process. The train state is replicated; batches are split
along their leading axis. Each process contributes its host-local slice of the global batch through
``jax.make_array_from_process_local_data``, so the same code runs on one CPU, one GPU box or a TPU pod.
"""

from __future__ import annotations

import collections
import itertools
from typing import Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mixjax.config_args import ConfigError
from mixjax.constants import DATA_AXIS  # noqa: F401  (re-exported: sharding.DATA_AXIS)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D data-parallel mesh over ``devices`` (default: all devices of all processes)."""
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Refuses a global batch the mesh cannot split evenly, with the sizes that would work."""
  n = mesh.devices.size
  if global_batch_size % n:
    lower = (global_batch_size // n) * n
    raise ConfigError(
      f"Global batch size {global_batch_size} is not divisible by the {n} devices of the mesh; use a multiple "
      f"of {n} (e.g. --config.batch_size={max(n, lower)} or {lower + n})."
    )
  if global_batch_size % jax.process_count():
    raise ConfigError(f"Global batch size {global_batch_size} is not divisible by the {jax.process_count()} processes.")


def host_batch_to_global(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch → dict of global arrays sharded along ``data`` (asynchronous transfer)."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def global_batch_spec(element_spec: dict, mesh: Mesh) -> dict | None:
  """The global arrays :func:`host_batch_to_global` makes from batches of ``element_spec`` (each process's
  ``tf.TensorSpec``s), as ``jax.ShapeDtypeStruct``s, so a step can be compiled before the first batch exists;
  None when a shape is not static."""
  spec = {}
  for name, s in element_spec.items():
    if not s.shape.is_fully_defined() or not s.shape.rank:
      return None
    local = s.shape.as_list()
    shape = (local[0] * jax.process_count(), *local[1:])
    spec[name] = jax.ShapeDtypeStruct(shape, np.dtype(s.dtype.as_numpy_dtype), sharding=batch_sharded(mesh))
  return spec


def prefetch_to_device(batches: Iterable[dict], mesh: Mesh, size: int = 2) -> Iterator[dict]:
  """Keeps ``size`` batches in flight to the devices so the transfer overlaps the previous step."""
  queue = collections.deque()
  it = iter(batches)
  for batch in itertools.islice(it, size):
    queue.append(host_batch_to_global(batch, mesh))
  while queue:
    yield queue.popleft()
    for batch in itertools.islice(it, 1):
      queue.append(host_batch_to_global(batch, mesh))
