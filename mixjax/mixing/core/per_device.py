"""Running per-device (per-shard) work of the model-aware methods inside the train step.

OpenMixup pairs samples within each GPU's batch (spec section 0, ``dist_mode=False``). The model-aware methods
get global arrays sharded over the mesh's ``data`` axis, both for input images and for hidden features inside a
model forward; ``on_shards`` runs a function on each device's rows with ``jax.shard_map``, with a replicated key,
so every device draws the same λ / permutation pattern and applies it to its own samples (as ``dispatch.py``
does for the input-level methods). Without a mesh the whole batch is one shard.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def on_shards(mesh, fn: Callable, rng: jax.Array, *batch_arrays, replicated: tuple = ()):
  """``fn(rng, *replicated, *local_batch_arrays)`` on each device's rows; outputs sharded like the batch.

  ``replicated`` are extra arguments every device sees whole (scalars such as λ). Every output of ``fn`` must
  have the local batch as its leading axis.
  """
  if mesh is None:
    return fn(rng, *replicated, *batch_arrays)
  if DATA_AXIS not in mesh.axis_names:
    raise ValueError(f"mesh has axes {mesh.axis_names}, no {DATA_AXIS!r}")
  shards = mesh.shape[DATA_AXIS]
  for a in batch_arrays:
    if a.shape[0] % shards:
      raise ValueError(f"batch {a.shape[0]} is not divisible by the {shards} devices of the mesh")
  if mesh.axis_types[mesh.axis_names.index(DATA_AXIS)] == AxisType.Explicit:
    batch_arrays = jax.sharding.reshard(batch_arrays, NamedSharding(mesh, P(DATA_AXIS)))
  n_rep = len(replicated)

  def local(rng, *args):
    return fn(rng, *args[:n_rep], *args[n_rep:])

  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(),) + (P(),) * n_rep + (P(DATA_AXIS),) * len(batch_arrays),
                          out_specs=P(DATA_AXIS))
  return sharded(rng, *replicated, *batch_arrays)


def local_permutation(rng: jax.Array, local_batch: int) -> jax.Array:
  """The pairing of one device's rows: a uniform permutation, fixed points allowed (spec 1.3)."""
  return jax.random.permutation(rng, local_batch)


def partner_labels(mesh, perm_rng: jax.Array, labels: jax.Array) -> jax.Array:
  """``labels[π]`` per device, with π = ``local_permutation(perm_rng, local batch)``."""
  return on_shards(mesh, lambda r, y: y[local_permutation(r, y.shape[0])], perm_rng, labels)


def blend(a: jax.Array, b: jax.Array, weight_a) -> jax.Array:
  """``w·a + (1−w)·b`` in float32, cast back to ``a``'s dtype (bf16 features keep an exact λ)."""
  w = jnp.asarray(weight_a, jnp.float32)
  return (w * a.astype(jnp.float32) + (1 - w) * b.astype(jnp.float32)).astype(a.dtype)
