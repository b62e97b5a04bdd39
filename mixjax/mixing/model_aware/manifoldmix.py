"""ManifoldMix (Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden States",
ICML 2019), as OpenMixup runs it (spec 2.3).

λ ~ Beta(α, α) and a local permutation π; a layer ℓ is drawn uniformly from ``range(*layer)`` (default (0, 3):
the input, or the output of stage 1 or 2) and the model runs with ``mix_stage=ℓ``, replacing that stage's output
h by ``λ·h + (1−λ)·h[π]`` before the next stage. Targets ``λ·y + (1−λ)·y[π]``.

One program and ONE model call: the model runs with every candidate stage as ``mix_stage`` (a tuple) and
blends at each of them with ``λ_ℓ = λ`` at the drawn stage and ``λ_ℓ = 1`` elsewhere. ``1·h + 0·h[π]`` is ``h``
exactly (and so is its gradient), so the result is the one-stage mix, and no stage recompiles. (The earlier
``lax.switch`` over one model call per stage kept the activations of all three branches in the compiled
program: 1.21× a plain step's peak memory on ResNet-50/224/b32, 1.00× now.) Pairing stays on each device
(the hidden features are sharded over the batch like the images, and are mixed under ``shard_map``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, StepContext
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.ops.model_info import model_info, models_where
from mixjax.mixing.core.result import MixResult, blend
from mixjax.mixing.ops.sampling import sample_beta_lam


def manifold_layers(model_cfg, layer: Sequence[int], method: str = "manifoldmix") -> tuple[int, ...]:
  """The admissible stages ``range(*layer)``, checked against the model's ``mix_stages``."""
  layer = tuple(int(v) for v in layer)
  if len(layer) != 2 or layer[0] >= layer[1] or layer[0] < 0:
    raise ValueError(f"{method} 'layer' must be a (low, high) range with 0 <= low < high, got {layer}")
  stages = tuple(range(*layer))
  info = model_info(model_cfg)
  bad = [s for s in stages if s not in info.mix_stages]
  if bad:
    raise ValueError(
      f"{method}: model {info.name!r} cannot mix hidden features at stage(s) {bad} (its mix_stages are "
      f"{info.mix_stages}). Use a model with stage mixing, one of: {', '.join(models_where('stage_mixing'))}; "
      f"or narrow config.mixing.args.{method}.layer"
    )
  return stages


def feature_mix_fn(mesh, rng: jax.Array, lam: jax.Array):
  """``h → λ·h + (1−λ)·h[π]`` on each device's rows (π from ``rng``)."""

  def local(r, lam_, h):
    return blend(h, per_device.permute_rows(h, per_device.local_permutation(r, h.shape[0])), lam_)

  return lambda h: per_device.on_shards(mesh, local, rng, h, replicated=(lam,))


def staged_feature_mix_fn(mesh, rng: jax.Array, lam: jax.Array, chosen: jax.Array):
  """``(h, stage) → λ_s·h + (1−λ_s)·h[π]``, ``λ_s = λ`` if ``stage == chosen`` (a traced stage number) else 1:
  the hook of a model called with a tuple ``mix_stage``. The same π at every stage; only the chosen one mixes
  (none if ``chosen`` is not among them)."""

  def mix(h, stage):
    # λ_s = 1 leaves h bit-exact (1·h + 0·h[π] in float32, cast back) and passes its gradient through unchanged.
    lam_here = jnp.where(chosen == stage, lam, jnp.ones_like(lam))
    return feature_mix_fn(mesh, rng, lam_here)(h)

  return mix


def manifold_forward(ctx: StepContext, params, batch_stats, images, stages, mix_fn, drop_rng):
  """The model with hidden mixing at the drawn one of ``stages``, in one model call over all of them.

  ``mix_fn(h, stage)`` is called at every stage of ``stages`` and must leave ``h`` unchanged except at the drawn
  stage (``staged_feature_mix_fn`` with the drawn stage as ``chosen``).
  """
  return ctx.model_fn(
    params,
    batch_stats,
    images.astype(ctx.compute_dtype),
    train=True,
    rng=drop_rng,
    mix_stage=tuple(stages),
    mix_fn=mix_fn,
  )


class ManifoldMix(ModelAwareMethod):
  name = "manifoldmix"
  paper = (
    "Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio. Manifold Mixup: Better "
    "Representations by Interpolating Hidden States. ICML 2019"
  )

  @dataclasses.dataclass(frozen=True)
  class Params:
    layer: tuple[int, int] = (0, 3)  # stages range(*layer): 0 = the input, s = the output of stage s

  def check_model(self, model_cfg, hp: Params) -> None:
    manifold_layers(model_cfg, hp.layer)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    stages = manifold_layers(ctx.model, hp.layer)
    k_lam, k_perm, k_layer, k_drop = jax.random.split(rng, 4)
    lam = sample_beta_lam(k_lam, alpha)
    index = jax.random.randint(k_layer, (), 0, len(stages))
    mix_fn = staged_feature_mix_fn(ctx.mesh, k_perm, lam, jnp.asarray(stages, jnp.int32)[index])
    logits, new_stats = manifold_forward(ctx, params, batch_stats, images, stages, mix_fn, k_drop)
    mix = MixResult(
      images=images,
      labels_a=labels,
      labels_b=per_device.partner_labels(ctx.mesh, k_perm, labels),
      lam=jnp.broadcast_to(lam, (labels.shape[0],)),
    )
    stage = jnp.asarray(stages, jnp.float32)[index]
    return ctx.classification_loss(logits, mix), (logits, new_stats, {"lam": lam, "layer": stage})


register_model_aware(ManifoldMix())
