"""PreciseBN: BatchNorm running statistics re-estimated on training data after every epoch, before evaluation.

During training the running statistics are an exponential average over batches computed with weights that kept
changing, so they lag the final weights; PreciseBN recomputes them with the weights fixed, as the plain average
of per-batch statistics over a fixed number of training samples (Wu & Johnson, 2021, "Rethinking 'Batch' in
BatchNorm", §3; the reference's hook is adapted from pycls). The reference runs it for MogaNet (spec §3.3, §5:
``PreciseBNHook(num_samples=8192)`` after every epoch); ``config.precise_bn_samples`` > 0 turns it on here.

What the reference does (OpenMixup ``core/hooks/precise_bn_hook.py``, ``update_bn_stats``), and what we do:

* ``num_samples // global batch`` batches of the train loader (at most one epoch's worth). Here at least one
  batch: with fewer samples than a batch the reference runs none and leaves all-zero statistics.
* Each batch goes through the model in training mode exactly as a training step would, with every BN layer's
  momentum set to 1 (PyTorch's convention: keep the last batch's statistics only), and no parameter update. The
  reference calls ``model(**data)``, which in training mode is the classifier's ``forward_train``: the batch is
  mixed by the run's mixing method and drop path is active. Here the run's mixing method computes its loss on
  the batch (its ``StepMethod.loss``, one mode drawn per batch for a multi-mode plan) with a copy of the model
  whose BN momentum is 0 (flax's convention for the same thing), and the statistics it returns are kept.
* The running mean and variance become the average of the per-batch means and variances (``Σ stats / n``).
  With ``model.bn_group_size`` a batch's statistics are the mean over its groups; the reference averages its
  per-GPU averages across GPUs (``scaled_all_reduce``), the same quantity. The variance is the biased one, as
  everywhere in mixjax (PyTorch's running variance is unbiased: a factor n/(n-1) with n ≥ 256·7·7 values per
  channel in MogaNet-T at 224 px, less than 1e-4 apart).

The batches come from their own train-split iterator, seeded by (run seed, epoch): the training stream, and
therefore a resumed run's data order, is untouched, and a resumed run re-estimates with the same batches. The
reference re-reads the start of the epoch just trained (the sampler keeps its epoch) with fresh augmentations.
The statistics are summed on device by one jitted function per batch; the host only feeds the batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from mixjax import data, losses, mixing, train_state
from mixjax.models.functional import ModelFn
from mixjax.sharding import batch_sharded, prefetch_to_device, replicated
from mixjax.train_step import normalize_images

# Mixed into every seed of the PreciseBN batches and random draws: a stream of its own, apart from training's.
_STREAM = 0x5052_4543


def num_batches(num_samples: int, global_batch_size: int, steps_per_epoch: int) -> int:
  """Batches per re-estimation: ``num_samples // global_batch_size``, at most one epoch, at least one."""
  return max(1, min(int(num_samples) // int(global_batch_size), int(steps_per_epoch)))


def data_seed(seed: int, epoch: int) -> int:
  """Seed of the train-split iterator whose batches re-estimate the statistics after ``epoch`` (31 bits)."""
  return int(np.random.SeedSequence([int(seed) % 2**64, int(epoch), _STREAM]).generate_state(1)[0] >> 1)


def momentum_free_model_fn(config, num_classes: int) -> ModelFn:
  """The configured model's apply function with every BatchNorm's momentum 0: the statistics a training-mode
  forward returns are that batch's own (flax's running update is momentum·old + (1 − momentum)·batch)."""
  abstract = nnx.eval_shape(lambda: train_state.build_model(config, num_classes, nnx.Rngs(config.seed)))
  for _, module in nnx.iter_modules(abstract):
    if isinstance(module, nnx.BatchNorm):
      module.momentum = 0.0
  graphdef, _, _, _ = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
  return ModelFn(graphdef)


def make_statistics_step(config, *, ctx: mixing.StepContext, plan: mixing.MixPlan, mesh) -> Callable:
  """``step(state, totals, batch, index, weight) -> totals + weight · (the batch's BN statistics)``, jitted.

  ``index`` (an int32 scalar) numbers the batch among all PreciseBN batches of the run and seeds its mixing and
  drop-path draws; ``totals`` (a tree like ``state.batch_stats``) is donated.
  """
  stats_ctx = dataclasses.replace(ctx, model_fn=momentum_free_model_fn(config, ctx.num_classes))
  plan_branches, plan_probs = mixing.step_branches(plan)
  probs = None if plan_probs is None else jnp.asarray(plan_probs, jnp.float32)
  smoothing = config.loss.get("label_smoothing", 0.0)

  def statistics_of(branch):
    def run(params, batch_stats, aux, images, labels, mix_rng, drop_rng):
      _, (_, stats, _) = branch.step.loss(
        stats_ctx,
        mix_rng,
        params,
        batch_stats,
        aux,
        images,
        labels,
        alpha=branch.alpha,
        hp=branch.hp,
        dropout_rng=drop_rng,
      )
      return stats

    return run

  branches = [statistics_of(b) for b in plan_branches]

  def step(state, totals, batch, index, weight):
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), _STREAM), index)
    mix_rng, drop_rng = jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)
    images = normalize_images(batch["image"], config.data)
    labels = losses.one_hot_smoothed(batch["label"], ctx.num_classes, smoothing)
    args = (state.params, state.batch_stats, state.aux, images, labels, mix_rng, drop_rng)
    if len(branches) == 1:
      stats = branches[0](*args)
    else:
      which = jax.random.choice(jax.random.fold_in(mix_rng, 7), len(branches), p=probs)
      stats = jax.lax.switch(which, branches, *args)
    return jax.tree.map(lambda t, s: t + weight * s.astype(t.dtype), totals, stats)

  return jax.jit(
    step,
    in_shardings=(replicated(mesh), replicated(mesh), batch_sharded(mesh), replicated(mesh), replicated(mesh)),
    out_shardings=replicated(mesh),
    donate_argnums=(1,),
  )


class PreciseBN:
  """Re-estimates a run's BatchNorm statistics: ``precise(state, epoch) -> state`` with new ``batch_stats``.

  ``batches(epoch)`` gives the host batches to use (default: the first :func:`num_batches` batches of a
  train-split iterator seeded by :func:`data_seed`); tests pass their own.
  """

  def __init__(
    self,
    config,
    *,
    ctx: mixing.StepContext,
    mesh,
    steps_per_epoch: int,
    batches: Callable[[int], object] | None = None,
  ):
    self.config, self.mesh = config, mesh
    self.num_samples = int(config.precise_bn_samples)
    self.num_batches = num_batches(self.num_samples, config.batch_size, steps_per_epoch)
    self.step = make_statistics_step(config, ctx=ctx, plan=mixing.resolve_mixing_config(config.mixing), mesh=mesh)
    self._batches = batches or self._train_batches

  def _train_batches(self, epoch: int):
    config = self.config
    stream = data.make_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=data_seed(config.seed, epoch)
    )
    return itertools.islice(stream, self.num_batches)

  def __call__(self, state, epoch: int):
    t0 = time.time()
    totals = jax.tree.map(jnp.zeros_like, state.batch_stats)
    weight = jnp.asarray(1.0 / self.num_batches, jnp.float32)
    count = 0
    for batch in prefetch_to_device(self._batches(epoch), self.mesh, size=self.config.get("prefetch_to_device", 2)):
      index = jnp.asarray(epoch * self.num_batches + count, jnp.int32)
      totals = self.step(state, totals, batch, index, weight)
      count += 1
    if count != self.num_batches:
      raise RuntimeError(f"PreciseBN expected {self.num_batches} batches, got {count}")
    jax.block_until_ready(totals)
    logging.info(
      "PreciseBN after epoch %d: BN statistics re-estimated on %d batches of %d (%.1fs).",
      epoch,
      count,
      self.config.batch_size,
      time.time() - t0,
    )
    return state.replace(batch_stats=totals)
