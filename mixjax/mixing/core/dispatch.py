"""``mix_batch``: the hook the train step calls, on the sharded global batch.

Pairing stays on each device: the per-shard method runs under
``jax.shard_map`` with the batch split over the mesh's data axis, so the
permutation gathers only local rows and needs no cross-device traffic. The
rng is replicated, so λ, the box and the mode are the same on every device
and each device applies them to its own samples — OpenMixup's semantics
(spec section 0: same seed on every rank, ``dist_mode=False``). Because the
permutation is also drawn from that shared key, every device uses the same
index pattern on its own rows, as OpenMixup's ranks do.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mixjax.mixing.config import MixPlan, resolve_mixing_config
from mixjax.mixing.result import MixResult


def mix_with_plan(plan: MixPlan, rng: jax.Array, images: jax.Array,
                  labels: jax.Array) -> MixResult:
  """Mixes one shard (or the whole batch) according to ``plan``.

  With several modes one is chosen per call with ``jax.lax.switch`` on a
  random index, so all modes are compiled once and switching never
  recompiles.
  """
  if len(plan.modes) == 1:
    return plan.modes[0](rng, images, labels)
  k_choice, k_mix = jax.random.split(rng)
  index = jax.random.choice(k_choice, len(plan.modes),
                            p=jnp.asarray(plan.probs, jnp.float32))
  return jax.lax.switch(index, list(plan.modes), k_mix, images, labels)


def _check_inputs(images: jax.Array, labels: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"mix_batch expects NHWC images, got shape "
                     f"{images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"mix_batch expects float images (normalised), got "
                     f"{images.dtype}; convert before mixing")
  if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
    raise ValueError(
        f"mix_batch expects labels [B, K] soft one-hot with B = "
        f"{images.shape[0]}, got shape {labels.shape}; one-hot encode "
        "integer labels first")


def mix_batch(cfg, rng: jax.Array, images: jax.Array, labels: jax.Array, *,
              mesh: Mesh | None = None, axis_name: str = "data") -> MixResult:
  """Mixes a training batch according to the mixing config ``cfg``.

  Call inside the jitted train step.

  Args:
    cfg: mixing config (see ``default_mixing_config``); read at trace time.
    rng: key shared by all devices (replicated).
    images: [B, H, W, C] float (f32 or bf16) normalised images, sharded
      ``P(axis_name)`` over ``mesh``.
    labels: [B, K] float soft one-hot labels (already label-smoothed).
    mesh: mesh whose ``axis_name`` axis splits the batch; pairing stays
      within each device's shard. ``None`` treats the whole batch as one
      shard (single-device semantics).
    axis_name: the batch axis of ``mesh``.

  Returns:
    ``MixResult`` with the same shapes and dtypes as the inputs, sharded
    like them.
  """
  return mix_batch_with_plan(resolve_mixing_config(cfg), rng, images, labels,
                             mesh=mesh, axis_name=axis_name)


def mix_batch_with_plan(plan: MixPlan, rng: jax.Array, images: jax.Array,
                        labels: jax.Array, *, mesh: Mesh | None = None,
                        axis_name: str = "data") -> MixResult:
  """``mix_batch`` for an already resolved plan of input-level modes."""
  if any(m.method.model_aware for m in plan.modes):
    raise ValueError(f"mixing method {plan.modes[0].method.name!r} needs the model; the train step runs it "
                     "through its ModelAwareMethod.loss, not mix_batch")
  _check_inputs(images, labels)
  local_mix = functools.partial(mix_with_plan, plan)
  if mesh is None:
    return local_mix(rng, images, labels)
  if axis_name not in mesh.axis_names:
    raise ValueError(f"mesh has axes {mesh.axis_names}, no {axis_name!r}; "
                     "pass axis_name= the batch axis")
  shards = mesh.shape[axis_name]
  if images.shape[0] % shards:
    raise ValueError(f"batch {images.shape[0]} is not divisible by the "
                     f"{shards} devices on mesh axis {axis_name!r}")
  if mesh.axis_types[mesh.axis_names.index(axis_name)] == AxisType.Explicit:
    # Under an explicit-sharding mesh the batch's sharding is part of its
    # type and shard_map insists it matches in_specs; a no-op when the
    # caller already sharded the batch P(axis_name).
    batch_sharding = NamedSharding(mesh, P(axis_name))
    images, labels = jax.sharding.reshard((images, labels), batch_sharding)
  sharded = jax.shard_map(
      local_mix, mesh=mesh,
      in_specs=(P(), P(axis_name), P(axis_name)),
      out_specs=P(axis_name))
  return sharded(rng, images, labels)
