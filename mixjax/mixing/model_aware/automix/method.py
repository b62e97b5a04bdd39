"""AutoMix and SAMix: a learned mask generator trained through a momentum encoder, inside one jitted step.

Papers: AutoMix — Liu et al., ECCV 2022 (arXiv 2103.13027); SAMix — Li et al., arXiv 2111.15454.
Spec: sections 2.14-2.15 and checklist item 5 of ``openmixup_spec.md``.

Networks in one train step:

* the classifier ("q", ``state.params``), trained by the step's optimizer;
* the momentum encoder ("k", ``aux["encoder"]``): a copy of the classifier moved by EMA only (parameters only;
  its BatchNorm statistics come from its own train-mode forwards);
* the MixBlock (``aux["mixblock"]``, see ``mixblock.py``), trained with its own optimizer and lr schedule
  (``aux["mixblock_opt"]``).

Order inside the step (the plug-in protocol's ``loss`` then the classifier update then ``update_aux``):

1. ``loss`` (differentiated w.r.t. q): the k encoder (pre-update, no stochastic depth) computes the clean
   features F; the MixBlock (pre-update) makes the detached mask M_bb for (λ_bb, π_bb); with λ_bb within
   ``lam_margin`` of 0 or 1 the mask is the constant 1−λ_bb (plain mixup). The classifier's loss is
   ``L(q(x_bb), (y, y[π_bb], λ_bb)) + clean_loss_weight · L(q(x), y)`` — BN statistics threaded clean → mixed.
2. the step applies the classifier's optimizer update.
3. ``update_aux``: the same k encoder (still pre-EMA) recomputes F (identical to step 1: same weights, same
   input, no randomness; XLA merges the two passes) and updates its BN statistics; the MixBlock (pre-update)
   makes M_mb for (λ_mb, π_mb); the MixBlock loss ``L(k(x_mb), (y, y[π_mb], λ_mb)) + w(t) · mask_loss`` is
   differentiated w.r.t. the MixBlock only — the gradient flows through k's activations into the mask, k's
   weights are constants — and the MixBlock optimizer steps. Finally k ← m(t)·k + (1−m(t))·q_new.

This is the reference's simultaneous bi-level step: there one backward of L_mix_q + L_one_q + L_mix_k + mask
loss updates q and the MixBlock from the same pre-update weights, and the EMA follows the optimizer step.
Gradients cannot cross: F and M_bb are ``stop_gradient``-ed in 1, q does not appear in 3.

Memory: the three network passes with a backward (q clean, q mixed, k mixed) run one after the other, so the
step holds one pass's activations at a time: q's clean gradient is taken inside its forward
(``value_with_early_grad``), q's mixed input and k's mixed pass are ``sequenced`` after the previous pass's
results (data dependencies; XLA:CPU drops ``optimization_barrier`` before scheduling). Left to itself XLA
overlapped them: 2.38× a plain step's peak memory on ResNet-50/224/b32, against 1.34× ordered. Same values
and gradients (``tests/mixing/test_automix.py`` compares with the plain composition).

Differences from the reference, on purpose:

* one classification head for the clean and the mixed loss (the reference has head_one and head_mix). Both
  encoders are evaluated: q (``state.params``) and, through ``eval_variants``, the momentum encoder k with its
  own BN statistics (the reference validates one_q, mix_q, one_k, mix_k and its summary tool reports the better
  encoder; its deployable model is k).
* the mask loss mean is taken per device shard (the reference's per-GPU batch), as OpenMixup's DDP does.
* lam_margin: the fallback mask is the constant partner weight 1−λ_bb, so the label weight λ_bb is exact.
* gradient clipping of the MixBlock (``mixblock_grad_clip``) is applied to its own gradient, not jointly with
  the classifier's.

Hyper-parameters (``config.mixing.args.automix`` / ``.samix``), AutoMix / SAMix defaults:

* ``feature``: which model feature feeds the MixBlock ("stage3", the stride-16 stage of a ResNet);
* ``lam_embedding`` concat/mul (or "none": the reference's Tiny-ImageNet AutoMix), ``lam_mul_k`` −1 (off),
  ``qk_input`` shared/pair_concat, ``value_net`` linear/conv_neck, ``value_dropout`` 0/0.1, ``upsample``
  nearest/bilinear: the MixBlock design (``mixblock.py``);
* ``lam_margin`` 0.08; ``label_weight`` "lambda" (label weight λ, the mask area only regularised towards it, as
  in both papers) or "mask_mean" (label weight = 1 − the sample's mask mean);
* ``clean_loss_weight`` 1: weight of the classifier's clean one-hot loss;
* ``mask_loss_weight`` 0.1, ``mask_loss_margin`` 0.1, ``mask_variance_weight`` 0 / 2 (SAMix's "L1+Variance":
  the loss subtracts 2·variance of the mask around the shard mean, rewarding near-binary masks);
* ``mask_loss_schedule`` "cosine" (intended plain cosine to 0), "compounding" (the reference's actual
  behaviour, ≈ 0 after a few epochs; see ``schedules.mask_loss_weight``) or "constant" (configs without the
  annealing hook: the reference's Tiny-ImageNet ones);
* ``mixblock_loss_eta``: SAMix's η-balanced generation loss, realised as the decoupled mixup loss (the paper's
  local-smoothness term; later published as DecoupleMix) added with weight η to the Mixer's mixup CE. AutoMix 0;
  SAMix 0.1 (paper); the reference configs have it off (η = 0, ``neg_weight=1``, "try neg (eta in SAMix)"
  commented out);
* ``momentum_base`` 0.999, ``momentum_end`` 0.99999, ``momentum_scope_start`` 0.1: the encoder's EMA schedule;
* ``mixblock_lr`` (None: classifier's peak lr), ``mixblock_min_lr`` 1e-3, ``mixblock_momentum`` (None:
  classifier's), ``mixblock_warmup_epochs`` 0, ``mixblock_lr_by_epoch`` (None: classifier's),
  ``mixblock_grad_clip`` (None: classifier's), ``mixblock_update_prob`` 1 (the ViT configs' switch_off 0.8:
  with probability 1−p an iteration leaves the MixBlock and its optimizer statistics untouched; its lr
  schedule still advances with the iteration, as the reference's per-iteration lr hook does).

Zero-initialised residual BN: the reference's ``AutoMixup`` always runs ``init_weights`` (mmcv, with
``zero_init_residual=True``), so the recipes' AutoMix/SAMix rows build ResNets with ``zero_init_residual=True``;
the method itself does not change the model.

SAMix "paper" vs "reference configs": the registered ``samix`` defaults follow the paper (η-balanced Mixer loss
η = 0.1, plain cosine mask-loss weight); the OpenMixup ImageNet configs are reached with
``mixblock_loss_eta=0`` and ``mask_loss_schedule="compounding"`` (everything else is shared).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from mixjax.config_args import ConfigError
from mixjax.constants import DATA_AXIS
from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, StepContext
from mixjax.mixing.core.result import MixResult, blend
from mixjax.mixing.model_aware.automix import mixblock as mb
from mixjax.mixing.model_aware.automix import schedules
from mixjax.mixing.ops.decouple import decoupled_mixup_loss

LabelWeight = Literal["lambda", "mask_mean"]
LABEL_WEIGHTS = typing.get_args(LabelWeight)


def design_of(hp: LearnedMaskMixup.Params) -> mb.MixBlockDesign:
  return mb.MixBlockDesign(
    lam_embedding=hp.lam_embedding,
    qk_input=hp.qk_input,
    value_net=hp.value_net,
    upsample=hp.upsample,
    value_dropout=hp.value_dropout,
    lam_mul_k=hp.lam_mul_k,
  )


def num_shards(ctx: StepContext) -> int:
  """Devices the batch is split over: pairing and the mask-loss mean stay within each (per-GPU in OpenMixup)."""
  return 1 if ctx.mesh is None else int(ctx.mesh.shape[DATA_AXIS])


def partner_rows(mesh, perm: jax.Array, *arrays: jax.Array):
  """``x[π]`` of each array on each device's rows (π a permutation of the local batch, the same on every device),
  through ``per_device.on_shards``: the pairs stay on their device, no cross-device traffic. One array in, one
  out; several in, a tuple out."""
  # π rides in ``on_shards``' replicated first argument (where kernels get their key).
  out = per_device.on_shards(mesh, lambda p, *rows: tuple(jnp.take(x, p, axis=0) for x in rows), perm, *arrays)
  return out[0] if len(arrays) == 1 else out


def draw_pairing(rng: jax.Array, alpha: float, batch: int, shards: int) -> tuple[jax.Array, jax.Array]:
  """λ ~ Beta(α, α) and a local permutation, both shared by all devices (spec section 0)."""
  if batch % shards:
    raise ValueError(f"batch {batch} is not divisible by the {shards} devices")
  k_lam, k_perm = jax.random.split(rng)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  return lam, per_device.local_permutation(k_perm, batch // shards)


def feature_map(ctx: StepContext, enc_params, enc_stats, images: jax.Array, feature: str, rng: jax.Array):
  """The encoder's train-mode forward on clean images: (stage features, new BN statistics).

  Train mode as the reference's momentum encoder runs (spec 2.14: batch statistics), so a backbone with drop
  path drops paths here too and needs a key (RSB-A2's ResNet-50 and the DeiT-recipe transformers do; without it
  their AutoMix/SAMix cells stopped at the first step). ``rng`` is the caller's step key: the encoder draws from
  ``fold_in(rng, 1)``, so the caller's own splits of ``rng`` (and earlier runs' draws) are unchanged.
  """
  (_, feats), new_stats = ctx.model_fn(
    enc_params,
    enc_stats,
    images.astype(ctx.compute_dtype),
    train=True,
    rng=jax.random.fold_in(rng, 1),
    return_features=True,
  )
  if feature not in feats:
    raise ValueError(
      f"MixBlock feature {feature!r} is not produced by model {ctx.model['name']!r}; "
      f"valid: {sorted(k for k in feats if k != 'pre_logits')}"
    )
  return feats[feature], new_stats


def partner_mask(
  mixblock_params,
  feats: jax.Array,
  lam: jax.Array,
  perm: jax.Array,
  mesh,
  image_hw: tuple[int, int],
  design: mb.MixBlockDesign,
  rng: jax.Array | None,
) -> jax.Array:
  """[B, H, W] weight of the partner image for pairs (i, π(i)) at ratio λ (π on each device of ``mesh``)."""
  logits = mb.mask_logits(mixblock_params, feats, partner_rows(mesh, perm, feats), lam, design, rng=rng)
  return mb.upsample_to_mask(logits, image_hw, design)


def mixed_result(images, labels, mask, lam, perm, mesh, label_weight: LabelWeight) -> MixResult:
  if label_weight not in LABEL_WEIGHTS:
    raise ValueError(f"label_weight={label_weight!r} is not valid; use one of {LABEL_WEIGHTS}")
  batch = images.shape[0]
  if label_weight == "lambda":
    weight_a = jnp.broadcast_to(lam, (batch,))
  else:
    weight_a = 1.0 - jnp.mean(mask, axis=(1, 2))
  partner_images, partner_labels = partner_rows(mesh, perm, images, labels)
  # ``mask`` is the partner's weight: m·x[π] + (1 − m)·x.
  mixed = blend(partner_images, images, mask[..., None])
  return MixResult(images=mixed, labels_a=labels, labels_b=partner_labels, lam=weight_a.astype(jnp.float32))


def mask_regulariser(
  mask: jax.Array, lam: jax.Array, shards: int, *, margin: float, variance_weight: float
) -> jax.Array:
  """max(|1 − m̄ − λ| − margin, 0) − variance_weight·mean((m − m̄)²), m̄ the mean over the whole shard (all
  samples and pixels, review note 2), averaged over shards."""
  batch = mask.shape[0]
  per_shard = mask.reshape(shards, batch // shards, -1)
  mean = jnp.mean(per_shard, axis=(1, 2))
  loss = jnp.maximum(jnp.abs(1.0 - mean - lam) - margin, 0.0)
  if variance_weight:
    var = jnp.mean(jnp.square(per_shard - mean[:, None, None]), axis=(1, 2))
    loss = loss - variance_weight * var
  return jnp.mean(loss)


def mixed_head(hp) -> dict:
  """The model-call argument that sends mixed samples through the mixup head (``separate_heads``)."""
  return {"head": "mix"} if hp.separate_heads else {}


def sequenced(x, after):
  """``x`` exactly, as a value computed from every array in ``after``: what consumes the result cannot be
  scheduled before ``after`` exists (so the buffers ``after``'s computation frees are free by then).

  A data dependency, ``x + 0·s`` with ``s`` the sum of ``after`` (replaced by 0 if not finite, so the result is
  exactly ``x``): XLA's CPU compiler removes ``jax.lax.optimization_barrier`` before it schedules, so a barrier
  orders nothing there (measured: AutoMix's peak stayed at 2.37× vanilla with barriers, 1.34× with this). XLA
  does not fold a floating-point ``0·s``. Costs one read of ``after``.
  """
  total = sum(jnp.sum(leaf, dtype=jnp.float32) for leaf in jax.tree.leaves(after))
  zero = jnp.where(jnp.isfinite(total), total, 0.0) * 0.0
  return jax.tree.map(lambda a: a + zero.astype(a.dtype), x)


def value_with_early_grad(fn, params, *args):
  """``fn(params, *args) -> (scalar, aux)`` whose gradient w.r.t. ``params`` is taken during the forward.

  Differentiating ``value`` by ``params`` later gives ``ct · ∇fn`` from the stored gradient (a custom VJP), so the
  pass's activations die as soon as its own backward has run, instead of living until the caller's backward.
  ``value`` is ``sequenced`` after the gradient: whatever consumes it (e.g. the next pass's input) is scheduled
  after this pass's backward. ``args`` get no gradient. Same values and gradient as differentiating
  ``fn`` in place (the cotangent multiplies the finished gradient; with a cotangent of 1, bit for bit).
  """

  @jax.custom_vjp
  def run(p, *a):
    return fn(p, *a)

  def fwd(p, *a):
    (value, aux), grads = jax.value_and_grad(fn, has_aux=True)(p, *a)
    return (sequenced(value, after=grads), aux), grads

  def bwd(grads, cotangents):
    ct_value, _ = cotangents  # aux carries no gradient
    return (jax.tree.map(lambda g: (ct_value * g).astype(g.dtype), grads),) + (None,) * len(args)

  run.defvjp(fwd, bwd)
  return run(params, *args)


class LearnedMaskMixup(ModelAwareMethod):
  """AutoMix's training scheme; SAMix is the same scheme with other defaults (see module docstring)."""

  name = "automix"
  paper = "Liu et al., AutoMix: Unveiling the Power of Mixup for Stronger Classifiers, ECCV 2022"
  stateful = True  # MixBlock, its optimizer state, momentum encoder and mask-loss weight in TrainState.aux

  @dataclasses.dataclass(frozen=True)
  class Params:
    """AutoMix's settings (the module docstring says what each does); SAMix's ``Params`` changes seven defaults."""

    feature: str = "stage3"  # the model feature (``return_features`` key) the MixBlock reads
    # The MixBlock design (``mixblock.MixBlockDesign``).
    lam_embedding: mb.LamEmbedding = "concat"
    lam_mul_k: float = -1.0  # k of the cubic λ re-mapping for lam_embedding='mul' (< 0: off)
    qk_input: mb.QkInput = "shared"
    value_net: mb.ValueNet = "linear"
    value_dropout: float = 0.0
    upsample: mb.Upsampling = "nearest"
    lam_margin: float = 0.08  # λ within this of 0 or 1: plain mixup (the constant mask 1 − λ)
    label_weight: LabelWeight = "lambda"
    clean_loss_weight: float = 1.0  # weight of the classifier's clean one-hot loss
    mask_loss_weight: float = 0.1
    mask_loss_margin: float = 0.1
    mask_variance_weight: float = 0.0  # SAMix's "L1+Variance": minus this × the mask's variance
    mask_loss_schedule: schedules.MaskLossSchedule = "cosine"
    mixblock_loss_eta: float = 0.0  # SAMix's η-balanced Mixer loss (0: off)
    # The momentum encoder's EMA schedule (``schedules.encoder_momentum``).
    momentum_base: float = 0.999
    momentum_end: float = 0.99999
    momentum_scope_start: float = 0.1
    # The MixBlock's optimizer (``schedules.mixblock_optimizer``); None: the classifier's value.
    mixblock_lr: float | None = None
    mixblock_min_lr: float = 1e-3
    mixblock_momentum: float | None = None
    mixblock_warmup_epochs: float = 0.0
    mixblock_lr_by_epoch: bool | None = None
    mixblock_grad_clip: float | None = None
    mixblock_update_prob: float = 1.0  # the ViT configs' switch_off: P(the MixBlock is updated this step)
    # The reference's two heads: the mixed CE (and k's MixBlock loss) through ``head_mix``, the clean CE through
    # the model's own head (``head_one``, evaluated and deployed). Needs the model built with a second head
    # (``config.model.mix_head=True``); False: one head for both losses (the papers' description).
    separate_heads: bool = False

  # ------------------------------------------------------------------------------------------ state
  def init_aux(self, ctx, rng, params, batch_stats, hp: Params):
    if hp.separate_heads and not ctx.model.get("mix_head"):
      raise ConfigError(
        f"{self.name} separate_heads=True trains the mixed loss through a second head: set "
        "config.model.mix_head=True (or separate_heads=False for one head)"
      )
    design = design_of(hp)
    channels = self._feature_channels(ctx, params, batch_stats, hp.feature)
    mixblock = mb.init_mixblock(rng, channels, design)
    tx, _ = schedules.mixblock_optimizer(ctx, hp, mixblock)
    # The encoder starts as an exact copy of the classifier (fresh buffers: the state is donated leaf by leaf).
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731
    return {
      "encoder": {"params": copy(params), "batch_stats": copy(batch_stats)},
      "mixblock": mixblock,
      "mixblock_opt": tx.init(mixblock),
      "mask_loss_weight": jnp.asarray(hp.mask_loss_weight, jnp.float32),
    }

  @staticmethod
  def _feature_channels(ctx, params, batch_stats, feature: str) -> int:
    size = int(ctx.model.get("img_size", 224) or 224)
    probe = jax.ShapeDtypeStruct((2, size, size, 3), ctx.compute_dtype)
    shape = jax.eval_shape(lambda x: feature_map(ctx, params, batch_stats, x, feature, jax.random.key(0))[0], probe)
    return int(shape.shape[-1])

  # ------------------------------------------------------------------------------------------ classifier
  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    k_pair, k_drop_mb, k_one, k_mix = jax.random.split(rng, 4)
    lam, perm = draw_pairing(k_pair, alpha, images.shape[0], num_shards(ctx))
    enc = jax.lax.stop_gradient(aux["encoder"])
    feats, _ = feature_map(ctx, enc["params"], enc["batch_stats"], images, hp.feature, rng)
    mask = partner_mask(
      jax.lax.stop_gradient(aux["mixblock"]),
      jax.lax.stop_gradient(feats),
      lam,
      perm,
      ctx.mesh,
      images.shape[1:3],
      design_of(hp),
      k_drop_mb,
    )
    plain = jnp.logical_or(lam <= hp.lam_margin, lam >= 1.0 - hp.lam_margin)
    mask = jax.lax.stop_gradient(jnp.where(plain, 1.0 - lam, mask))
    mix = mixed_result(images, labels, mask, lam, perm, ctx.mesh, hp.label_weight)

    dtype = ctx.compute_dtype
    clean = MixResult(images=images, labels_a=labels, labels_b=labels, lam=jnp.ones(images.shape[0], jnp.float32))

    def clean_loss(p, stats, clean, rng):
      logits_one, stats = ctx.model_fn(p, stats, clean.images.astype(dtype), train=True, rng=rng)
      return ctx.classification_loss(logits_one.astype(jnp.float32), clean), stats

    # The clean and the mixed pass in sequence, not overlapped (peak memory, README "Compiled cost"): the
    # clean pass's gradient is taken in its forward and the mixed pass's input is sequenced after it, so one
    # pass's activations are alive at a time. Same losses and gradients as one backward of both.
    loss_one, stats = value_with_early_grad(clean_loss, params, batch_stats, clean, k_one)
    mixed_images = sequenced(mix.images, after=jax.lax.stop_gradient(loss_one))
    logits_mix, stats = ctx.model_fn(params, stats, mixed_images.astype(dtype), train=True, rng=k_mix, **mixed_head(hp))
    loss_mix = ctx.classification_loss(logits_mix.astype(jnp.float32), mix)
    loss = loss_mix + hp.clean_loss_weight * loss_one
    metrics = {
      "loss_mix": loss_mix,
      "loss_one": loss_one,
      "lam": lam,
      "mask_mean": jnp.mean(mask),
      "plain_mixup": plain.astype(jnp.float32),
    }
    return loss, (logits_mix, stats, metrics)

  # ------------------------------------------------------------------------------------------ MixBlock + EMA
  def mixblock_loss(self, ctx, rng, mixblock_params, encoder, feats, images, labels, lam, perm, weight, *, hp: Params):
    """MixBlock objective through the (constant) encoder: (loss, (new encoder BN stats, mask, metrics))."""
    k_drop_mb, k_enc = jax.random.split(rng)
    mask = partner_mask(mixblock_params, feats, lam, perm, ctx.mesh, images.shape[1:3], design_of(hp), k_drop_mb)
    mix = mixed_result(images, labels, mask, lam, perm, ctx.mesh, hp.label_weight)
    logits, stats = ctx.model_fn(
      encoder["params"],
      encoder["batch_stats"],
      mix.images.astype(ctx.compute_dtype),
      train=True,
      rng=k_enc,
      **mixed_head(hp),
    )
    logits = logits.astype(jnp.float32)
    cls = ctx.classification_loss(logits, mix)
    eta = hp.mixblock_loss_eta
    if eta:
      cls = cls + (decoupled_mixup_loss(logits, mix, eta=eta) - decoupled_mixup_loss(logits, mix, eta=0.0))
    reg = mask_regulariser(
      mask, lam, num_shards(ctx), margin=hp.mask_loss_margin, variance_weight=hp.mask_variance_weight
    )
    return cls + weight * reg, (stats, mask, {"mixblock_loss": cls, "mask_loss": reg})

  def update_aux(self, ctx, rng, aux, params, batch_stats, images, labels, step, *, alpha, hp: Params):
    del batch_stats
    k_pair, k_loss, k_switch = jax.random.split(rng, 3)
    lam, perm = draw_pairing(k_pair, alpha, images.shape[0], num_shards(ctx))
    encoder = jax.lax.stop_gradient(aux["encoder"])
    feats, clean_stats = feature_map(ctx, encoder["params"], encoder["batch_stats"], images, hp.feature, rng)
    # k's mixed pass (forward + backward to the MixBlock) runs after the classifier's update: its inputs wait
    # for q's new parameters, so its activations are never alive together with q's (peak memory).
    feats = sequenced(jax.lax.stop_gradient(feats), after=params)
    weight = schedules.mask_loss_weight(
      step,
      aux["mask_loss_weight"],
      ctx.total_steps,
      base=hp.mask_loss_weight,
      schedule=hp.mask_loss_schedule,
    )
    enc_after_clean = {"params": encoder["params"], "batch_stats": clean_stats}
    grad_fn = jax.value_and_grad(
      lambda p: self.mixblock_loss(ctx, k_loss, p, enc_after_clean, feats, images, labels, lam, perm, weight, hp=hp),
      has_aux=True,
    )
    (total, (mix_stats, _, metrics)), grads = grad_fn(aux["mixblock"])
    tx, lr_schedule = schedules.mixblock_optimizer(ctx, hp, aux["mixblock"])
    updates, new_opt = tx.update(grads, aux["mixblock_opt"], aux["mixblock"])
    # The lr is a function of the iteration, not of the MixBlock optimizer's own (possibly frozen) count.
    lr = jnp.asarray(lr_schedule(step), jnp.float32)
    updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
    new_mixblock = optax.apply_updates(aux["mixblock"], updates)
    enc_stats = mix_stats
    prob = hp.mixblock_update_prob
    if prob < 1.0:  # the ViT configs' switch_off: skipped iterations leave the MixBlock side untouched
      active = jax.random.bernoulli(k_switch, prob)
      pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)  # noqa: E731
      new_mixblock, new_opt = pick(new_mixblock, aux["mixblock"]), pick(new_opt, aux["mixblock_opt"])
      enc_stats = pick(mix_stats, clean_stats)
    m = schedules.encoder_momentum(
      step,
      ctx.total_steps,
      base=hp.momentum_base,
      end=hp.momentum_end,
      scope_start=hp.momentum_scope_start,
    )
    enc_params = jax.tree.map(lambda k, q: m * k + (1.0 - m) * q, encoder["params"], params)
    new_aux = {
      "encoder": {"params": enc_params, "batch_stats": enc_stats},
      "mixblock": new_mixblock,
      "mixblock_opt": new_opt,
      "mask_loss_weight": weight,
    }
    return new_aux, {
      **metrics,
      "mixblock_total": total,
      "mask_loss_weight": weight,
      "encoder_momentum": m,
      "mixblock_lr": lr,
    }

  # ------------------------------------------------------------------------------------------ evaluation
  def eval_variants(self, aux) -> dict:
    """Extra weights to evaluate beside the classifier q: the momentum encoder k (its params and its own BN
    statistics). The reference validates k's heads as well and its summary reports the better encoder."""
    return {"momentum": (aux["encoder"]["params"], aux["encoder"]["batch_stats"])}


class SAMixMethod(LearnedMaskMixup):
  """SAMix: AutoMix's scheme with the SAMix MixBlock, L1+variance mask loss and the η-balanced Mixer loss."""

  name = "samix"
  paper = (
    "Li et al., Boosting Discriminative Visual Representation Learning with Scenario-Agnostic Mixup, arXiv 2111.15454"
  )

  @dataclasses.dataclass(frozen=True)
  class Params(LearnedMaskMixup.Params):
    """AutoMix's settings with SAMix's MixBlock (spec 2.15), mask loss and the paper's η."""

    lam_embedding: mb.LamEmbedding = "mul"
    qk_input: mb.QkInput = "pair_concat"
    value_net: mb.ValueNet = "conv_neck"
    value_dropout: float = 0.1
    upsample: mb.Upsampling = "bilinear"
    mask_variance_weight: float = 2.0
    mixblock_loss_eta: float = 0.1
