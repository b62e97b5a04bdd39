"""How a resolved plan runs in the step: ``step_branches`` (the step plug-ins the train step draws from) and
``mix_batch`` (an input-level plan mixing the sharded global batch on its own).

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
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from mixjax.constants import DATA_AXIS
from mixjax.mixing.core import per_device
from mixjax.mixing.core.plan import MixPlan, resolve_mixing_config
from mixjax.mixing.core.protocol import StepMethod, forward_loss
from mixjax.mixing.core.result import MixResult


def mix_with_plan(plan: MixPlan, rng: jax.Array, images: jax.Array, labels: jax.Array) -> MixResult:
  """Mixes one shard (or the whole batch) according to ``plan``.

  With several modes one is chosen per call with ``jax.lax.switch`` on a
  random index, so all modes are compiled once and switching never
  recompiles.
  """
  if len(plan.modes) == 1:
    return plan.modes[0](rng, images, labels)
  k_choice, k_mix = jax.random.split(rng)
  index = jax.random.choice(k_choice, len(plan.modes), p=jnp.asarray(plan.probs, jnp.float32))
  return jax.lax.switch(index, list(plan.modes), k_mix, images, labels)


def mix_batch(
  cfg, rng: jax.Array, images: jax.Array, labels: jax.Array, *, mesh: Mesh | None = None, axis_name: str = DATA_AXIS
) -> MixResult:
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
  return mix_batch_with_plan(resolve_mixing_config(cfg), rng, images, labels, mesh=mesh, axis_name=axis_name)


def mix_batch_with_plan(
  plan: MixPlan,
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  mesh: Mesh | None = None,
  axis_name: str = DATA_AXIS,
) -> MixResult:
  """``mix_batch`` for an already resolved plan of input-level modes."""
  if any(m.method.model_aware for m in plan.modes):
    raise ValueError(
      f"mixing method {plan.modes[0].method.name!r} needs the model; the train step runs it "
      "through its ModelAwareMethod.loss, not mix_batch"
    )
  per_device.check_batch(images, labels)
  return per_device.on_shards(mesh, functools.partial(mix_with_plan, plan), rng, images, labels, axis_name=axis_name)


class PlanLoss(StepMethod):
  """A plan of input-level modes as one step plug-in: one mixing call that draws the mode itself
  (``mix_with_plan``), then the forward pass."""

  model_aware = False

  def __init__(self, plan: MixPlan):
    self.plan = plan
    self.name = "+".join(m.method.name for m in plan.modes)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp, dropout_rng=None):
    del aux, alpha, hp  # the plan holds each mode's own
    mix = mix_batch_with_plan(self.plan, rng, images, labels, mesh=ctx.mesh)
    return forward_loss(ctx, params, batch_stats, mix, dropout_rng, {})


class Branch(NamedTuple):
  """One way a train step may go: a step plug-in with its α and hyper-parameters."""

  step: StepMethod
  alpha: float
  hp: Mapping[str, Any]


def step_branches(plan: MixPlan) -> tuple[tuple[Branch, ...], tuple[float, ...] | None]:
  """The plan as the train step runs it: its branches, and the probability of each (None: a single branch).

  A plan of input-level modes is one branch (its mixing call chooses the mode); otherwise every mode is a
  branch that computes the whole loss, and the step draws one per step with ``lax.switch``.
  """
  if plan.input_level:
    return (Branch(PlanLoss(plan), 0.0, {}),), None
  return tuple(Branch(m.method.step, m.alpha, m.hyper_parameters) for m in plan.modes), plan.probs
