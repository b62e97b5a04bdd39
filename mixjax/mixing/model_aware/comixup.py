"""Co-Mixup (Kim, Choo, Jeong, Song, "Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity",
ICLR 2021), entirely inside the jitted train step, with the authors' ImageNet settings (github.com/snu-mllab/
Co-Mixup, ``comix-imagenet/``: ``main_fast_ddp.py``, ``lib/utils.py``, ``configs/comix/configs_fast_phase*.yml``).

1. Saliency (``main_fast_ddp.py``): the input gradient of the clean batch's loss, ``sqrt(mean_c grad²)``. With
   ``clean_lam > 0`` (ImageNet: 1) the authors run that clean pass with the model in **train** mode and keep its
   loss: the step's loss is ``CE(mixed) + clean_lam·CE(clean)`` (one forward of each; the BN running statistics
   are updated by both passes, in that order). With ``clean_lam = 0`` the clean pass runs in eval mode and is not
   trained on (``mixjax.mixing.ops.gradient_saliency.input_saliency``).
2. Per device, the batch is cut into groups of ``m_part`` consecutive samples (16); groups never cross devices.
   Each group of m inputs gives m outputs, every output a ``m_block_num``² grid of blocks, each block one input or
   a 50/50 blend of two (``mixjax.mixing.ops.comixup_solver``: block saliency normalised per input, a
   Dirichlet prior, the label smoothness β, the thresholded supermodular diversity term γ with compatibility
   A = (1−ω)I + ω·A_dist, A_dist the L1 distance between the inputs' most salient 8×8-pooled locations).
3. Output j = Σ_i mask_ji ⊙ x_i (nearest-upsampled block masks; no transport — the authors' Co-Mixup has none).
4. Labels: the soft target of output j is Σ_i w_ji·y_i with w_ji the share of output j's pixels that input i
   fills (a blended block counts half for each), exactly as the authors' ``mix_input``. ``MixResult`` holds a
   pair of labels, so it is written exactly as: ``labels_a`` = the label of the dominant input (largest w),
   ``lam`` = its weight, ``labels_b`` = the other inputs' labels weighted by their w and renormalised to sum 1
   (``labels_a`` again where the output is one input). ``MixResult.targets`` = Σ_i w_ji·y_i.

The defaults of ``CoMixup.Params`` are the authors' ImageNet values (source in each comment). Deviations:

* the α of the mixing config (the benchmark's 2, the authors' ``TRAIN.alpha``) is not read by default: the
  authors' ImageNet ``get_onehot_matrix`` (lib/utils.py) draws the prior from Dirichlet(1, …, 1) and never uses
  ``TRAIN.alpha``; ``prior_alpha='alpha'`` gives the CIFAR code's Dirichlet(α) (match.py).
* each output's labelling is solved exactly (DP over grid rows, on device) instead of by pyGCO's α-β swap on the
  CPU; the rest of the iterative modular approximation is the authors' (``comixup_solver`` docstring has the
  measured objective gap).
* a group whose inputs all peak in the same 8×8 cell has A_dist = 0; the authors divide 0 by 0 (NaN costs),
  A = (1−ω)I here.
* the train-accuracy metric (``top1``) is computed on the clean pass's logits when ``clean_lam > 0`` (a
  Co-Mixup output is not one input's sample, so its own label is not its target).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.model_aware.puzzlemix import pool
from mixjax.mixing.ops import comixup_solver
from mixjax.mixing.ops.gradient_saliency import input_saliency


def compatibility(saliency: jax.Array, omega: float, dist_pool: int) -> jax.Array:
  """A = (1−ω)I + ω·A_dist [m, m] of one group (``main_fast_ddp.py``/``mixup_match``): A_dist the L1 distance
  between the argmax cells of the saliency average-pooled by ``dist_pool`` px, scaled to sum to m."""
  m, h, w = saliency.shape
  hp, wp = (h // dist_pool) * dist_pool, (w // dist_pool) * dist_pool
  pooled = pool(saliency[:, :hp, :wp], dist_pool, dist_pool)
  row, col = jnp.divmod(jnp.argmax(pooled.reshape(m, -1), axis=1), pooled.shape[2])
  dist = (jnp.abs(row[:, None] - row[None]) + jnp.abs(col[:, None] - col[None])).astype(jnp.float32)
  total = jnp.sum(dist)
  dist = jnp.where(total > 0, dist / jnp.where(total > 0, total, 1.0) * m, 0.0)
  return (1.0 - omega) * jnp.eye(m, dtype=jnp.float32) + omega * dist


def group_unary(key: jax.Array, saliency: jax.Array, *, grid: int, eta: float, prior_alpha: float) -> jax.Array:
  """−(block saliency normalised per input) − η/K·log π, π ~ Dirichlet(prior_alpha), [m, g, g]."""
  m, h, w = saliency.shape
  blocks = pool(saliency.astype(jnp.float32), h // grid, w // grid)
  total = jnp.sum(blocks, axis=(1, 2), keepdims=True)
  norm = blocks / jnp.maximum(total, 1e-30)
  prior = jax.random.dirichlet(key, jnp.full((m,), prior_alpha, jnp.float32))
  return -norm - eta / grid**2 * jnp.log(prior + 1e-8)[:, None, None]


def mix_blocks(images: jax.Array, masks: jax.Array) -> jax.Array:
  """Output j = Σ_i masks[j, :, :, i] ⊙ images[i] with g×g block masks [m_out, g, g, m_in]; float32, cast back."""
  m, h, w, c = images.shape
  g = masks.shape[1]
  blocks = images.astype(jnp.float32).reshape(m, g, h // g, g, w // g, c)
  out = jnp.einsum("jrci,iracbh->jracbh", masks, blocks, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(masks.shape[0], h, w, c).astype(images.dtype)


def pass_arguments(hp: CoMixup.Params) -> dict:
  """The hyper-parameters of the authors' iterated passes, as ``comixup_solver.solve`` (and the benchmark's
  transcription of their solver) take them."""
  return dict(
    beta=hp.m_beta,
    gamma=hp.m_gamma,
    thres=hp.m_thres,
    thres_type=hp.m_thres_type,
    niter=hp.m_niter,
    set_resolve=hp.set_resolve,
    pair_labels=hp.pair_labels,
  )


def comix_group(key, images, saliency, *, hp: CoMixup.Params, alpha: float):
  """One group: (mixed images [m, H, W, C], weights [m_out, m_in] = each input's share of each output)."""
  m = images.shape[0]
  grid = hp.m_block_num
  k_prior, k_init = jax.random.split(key)
  unary = group_unary(k_prior, saliency, grid=grid, eta=hp.m_eta, prior_alpha=prior_concentration(hp, alpha))
  compat = compatibility(saliency, hp.m_omega, hp.dist_pool)
  init = jax.random.randint(k_init, (m, grid, grid), 0, m)
  first, second = comixup_solver.solve(
    init,
    unary,
    compat,
    **pass_arguments(hp),
    solver=hp.solver,
    sweeps=hp.solver_sweeps,
  )
  masks = comixup_solver.block_masks(first, second, m)
  return mix_blocks(images, masks), jnp.mean(masks, axis=(1, 2))


def exact_labels(weights: jax.Array, labels: jax.Array):
  """(labels_a, labels_b, lam) with lam·labels_a + (1−lam)·labels_b = weights @ labels: the dominant input's
  label and weight, and the rest renormalised. weights [n, m_in], labels [m_in, K]."""
  targets = jnp.matmul(weights, labels, precision=jax.lax.Precision.HIGHEST)  # exact, also where f32 dots use TF32
  dominant = jnp.argmax(weights, axis=1)
  lam = jnp.max(weights, axis=1)
  labels_a = labels[dominant]
  rest = 1.0 - lam
  some = rest > 1e-6
  labels_b = jnp.maximum(targets - lam[:, None] * labels_a, 0.0) / jnp.where(some, rest, 1.0)[:, None]
  labels_b = jnp.where(some[:, None], labels_b, labels_a)
  return labels_a, labels_b, lam


def prior_concentration(hp: CoMixup.Params, alpha: float) -> float:
  """The Dirichlet concentration of the prior: ``prior_alpha``, or the mixing α where it is 'alpha'."""
  return float(alpha) if hp.prior_alpha == "alpha" else hp.prior_alpha


def comix_local(rng, images, saliency, labels, *, hp: CoMixup.Params, alpha: float):
  """One device's Co-Mixup: (mixed images, labels_a, labels_b, lam), groups of ``m_part`` consecutive rows."""
  b = images.shape[0]
  m = hp.m_part
  if b % m:
    raise ValueError(
      f"comixup mixes groups of m_part={m} samples within each device, but a device holds {b} samples; set "
      f"mixing.args.comixup.m_part to a divisor of {b} (e.g. {math.gcd(b, m)}) or make the per-device batch a "
      f"multiple of {m} (config.batch_size = {m} × devices × k)"
    )
  groups = b // m
  keys = jax.random.split(rng, groups)
  shape = lambda x: x.reshape(groups, m, *x.shape[1:])
  mixed, weights = jax.vmap(lambda k, x, s: comix_group(k, x, s, hp=hp, alpha=alpha))(
    keys, shape(images), shape(saliency)
  )
  labels_a, labels_b, lam = jax.vmap(exact_labels)(weights, shape(labels).astype(jnp.float32))
  flat = lambda x: x.reshape(b, *x.shape[2:])
  return flat(mixed), flat(labels_a).astype(labels.dtype), flat(labels_b).astype(labels.dtype), flat(lam)


class CoMixup(ModelAwareMethod):
  name = "comixup"
  paper = "Kim, Choo, Jeong, Song. Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity. ICLR 2021"

  # The authors' ImageNet settings (github.com/snu-mllab/Co-Mixup, comix-imagenet/).
  @dataclasses.dataclass(frozen=True)
  class Params:
    m_part: int = 16  # group size: lib/utils.py mixup_match (m_part = 16), main_fast_ddp.py (part=16)
    m_block_num: int = 4  # label grid side: configs/comix/configs_fast_phase{1,2,3}.yml TRAIN.block_num
    m_beta: float = 0.32  # label smoothness β: configs_fast_phase*.yml TRAIN.m_beta
    m_gamma: float = 1.0  # supermodular diversity γ: lib/utils.py mixup_match (m_gamma = 1)
    m_eta: float = 0.05  # prior weight η: lib/utils.py mixup_match (m_eta = 0.05)
    m_omega: float = 0.001  # compatibility ω: configs_fast_phase*.yml TRAIN.lam_dist
    m_thres: float = 0.83  # diversity threshold τ: configs_fast_phase*.yml TRAIN.thres
    m_thres_type: Literal["hard", "soft"] = "hard"  # lib/utils.py mixup_match (m_thres_type = 'hard')
    m_niter: int = 3  # outer passes: lib/utils.py mixup_match (m_niter = 3)
    set_resolve: bool = True  # separate coinciding outputs: configs_fast_phase*.yml TRAIN.set_resolve
    clean_lam: float = 1.0  # clean-loss weight (train-mode saliency pass): configs_fast_phase*.yml TRAIN.clean_lam
    # Dirichlet concentration: lib/utils.py get_onehot_matrix (ones); 'alpha': the config's α (the CIFAR code).
    prior_alpha: float | Literal["alpha"] = 1.0
    dist_pool: int = 8  # A_dist pooling (px): main_fast_ddp.py F.avg_pool2d(unary, kernel_size=8)
    pair_labels: bool = True  # 50/50 blended blocks from the second pass on: lib/utils.py graphcut_wrapper
    # Per-output labelling: exact DP on device ('chain': approximate, for large grids); comixup_solver.SOLVERS.
    solver: Literal["row_dp", "chain"] = "row_dp"
    solver_sweeps: int = 4  # sweeps of solver='chain'

  @staticmethod
  def _check(hp: Params, height: int, width: int) -> None:
    """Raises ValueError naming the fix for hyper-parameters the method cannot run with."""
    m, g = hp.m_part, hp.m_block_num
    if m < 2:
      raise ValueError(f"comixup m_part must be >= 2 (inputs mixed jointly per group), got {m}")
    if g < 1 or height % g or width % g:
      raise ValueError(
        f"comixup m_block_num={g} must be >= 1 and divide the image sides {height}x{width}; "
        "pick a divisor of the resolution (the authors use 4)"
      )
    for key in ("m_beta", "m_gamma", "m_eta", "m_thres", "clean_lam"):
      if not getattr(hp, key) >= 0:
        raise ValueError(f"comixup {key} must be >= 0, got {getattr(hp, key)}")
    if not 0 <= hp.m_omega <= 1:
      raise ValueError(f"comixup m_omega must be in [0, 1] (A = (1−ω)I + ω·A_dist), got {hp.m_omega}")
    if hp.m_niter < 1:
      raise ValueError(f"comixup m_niter must be >= 1, got {hp.m_niter}")
    if hp.prior_alpha != "alpha" and not hp.prior_alpha > 0:
      raise ValueError(f"comixup prior_alpha must be > 0 or 'alpha' (use the mixing α), got {hp.prior_alpha!r}")
    if not 1 <= hp.dist_pool <= min(height, width):
      raise ValueError(f"comixup dist_pool must be in [1, {min(height, width)}] px, got {hp.dist_pool}")
    if hp.solver_sweeps < 1:
      raise ValueError(f"comixup solver_sweeps must be >= 1, got {hp.solver_sweeps}")
    states = comixup_solver.row_states(m, g, hp.pair_labels)
    if hp.solver == "row_dp" and states > comixup_solver.MAX_ROW_STATES:
      raise ValueError(
        f"comixup solver='row_dp' keeps {states} states per grid row (labels^m_block_num, at most "
        f"{comixup_solver.MAX_ROW_STATES}); use solver='chain', a smaller m_block_num or a smaller m_part"
      )

  def mix(self, mesh, rng, images, saliency, labels, *, alpha, hp: Params) -> MixResult:
    """Co-Mixup of a (sharded) batch given its saliency [B, H, W]; groups stay within each device."""
    self._check(hp, images.shape[1], images.shape[2])

    def local(r, x, s, y):
      return comix_local(r, x, s, y, hp=hp, alpha=alpha)

    mixed, labels_a, labels_b, lam = per_device.on_shards(mesh, local, rng, images, saliency, labels)
    return MixResult(images=mixed, labels_a=labels_a, labels_b=labels_b, lam=lam)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del aux, dropout_rng  # drawn from rng
    k_mix, k_clean, k_drop = jax.random.split(rng, 3)
    clean_lam = hp.clean_lam
    metrics = {}
    if clean_lam > 0:
      # The authors' clean pass (train mode): its input gradient is the saliency, its loss is trained on.
      def clean(x):
        logits, stats = ctx.model_fn(params, batch_stats, x.astype(ctx.compute_dtype), train=True, rng=k_clean)
        ones = jnp.ones((labels.shape[0],), jnp.float32)
        target = MixResult(images=x, labels_a=labels, labels_b=labels, lam=ones)
        return ctx.classification_loss(logits, target), (logits, stats)

      (clean_loss, (clean_logits, stats)), grad = jax.value_and_grad(clean, has_aux=True)(jax.lax.stop_gradient(images))
      grad = jax.lax.stop_gradient(grad.astype(jnp.float32))
      saliency = jnp.sqrt(jnp.mean(grad**2, axis=-1))
      metrics["clean_loss"] = jax.lax.stop_gradient(clean_loss)
    else:
      saliency = input_saliency(ctx, params, batch_stats, images, labels)
      stats, clean_loss, clean_logits = batch_stats, 0.0, None
    mix = self.mix(ctx.mesh, k_mix, images, saliency, labels, alpha=alpha, hp=hp)
    logits, new_stats = ctx.model_fn(params, stats, mix.images.astype(ctx.compute_dtype), train=True, rng=k_drop)
    loss = ctx.classification_loss(logits, mix) + clean_lam * clean_loss
    metrics["lam"] = jnp.mean(mix.lam)
    return loss, (logits if clean_logits is None else clean_logits, new_stats, metrics)


register_model_aware(CoMixup())
