"""Saliency Grafting (Park, Yang, Shin, Hwang, Yang, "Saliency Grafting: Innocuous Attribution-Guided Mixup with
Calibrated Label Mixing", AAAI 2022, arXiv:2112.08796), entirely inside the jitted train step.

The paper's argument: random cut-and-paste (CutMix) often pastes background under the partner's label, while
"maximum saliency" methods (PuzzleMix, SaliencyMix) always take the same top region and lose diversity. Saliency
Grafting samples the partner's patches *stochastically*, guided by its saliency through a temperature, and then
mixes the labels by the saliency each image keeps in the result instead of by area, so an unlucky draw (a
background patch) costs the partner's label nothing and is harmless ("innocuous").

Per step (every device mixes only its own rows; ``on_shards`` + ``local_permutation``):

1. Saliency: gradient of the configured loss on the clean batch w.r.t. the input, model in eval mode, under
   ``stop_gradient`` (``ops/gradient_saliency.input_saliency``: root mean square over channels), average-pooled
   onto a ``grid × grid`` patch grid: s [B, g, g].
2. Sampling distribution over the N = g² patches of the partner x[π]: its patch saliency divided by its maximum
   (s̄ ∈ [0, 1], so the temperature does not depend on the loss scale), then a softmax with temperature T:
   q = softmax(s̄ / T). T → 0 puts all mass on the most salient patch ("maximum saliency"), T → ∞ makes q
   uniform (CutMix-like random patches).
3. Grafted share p ~ Beta(α, α) per sample; each patch k of the partner is grafted (Bernoulli) with probability
   ρ_k = min(1, N·p·q_k), and never where s̄_k < ``threshold``. E[grafted share] = p when no ρ_k saturates and
   nothing is thresholded, less otherwise (the label weight below accounts for whatever was drawn).
4. Image: ``blend(x, x[π], M)`` with M = 1 − (grafted patches, nearest-upsampled): the pixel weight of the
   ORIGINAL image (OpenMixup's convention, ``core/result.py``); patches keep their position.
5. Calibrated label mixing, per sample: with each image's patch saliency normalised to unit mass
   (ŝ = s / Σ s), kept = Σ ŝ_own·(1 − G) and grafted = Σ ŝ_partner·G (G the grafted patches),
   **λ = kept / (kept + grafted)** is the weight of the original label (``MixResult.lam``), 1 − λ the partner's;
   targets ``λ·y + (1 − λ)·y[π]``. Where both masses are 0 (an all-zero saliency) λ falls back to the area
   weight mean(M).
6. With probability 1 − ``prob`` a step does not mix (λ = 1, images unchanged).

Provenance: the authors' code is not published (paperswithcode lists none; no repository
found by name or by code search), and the paper's method section could not be retrieved here (only its
introduction and abstract). Steps 1-6 follow the paper's description — gradient saliency of the current model,
temperature-scaled stochastic (Bernoulli) selection of salient patches with a threshold, grafting onto the
other image, labels mixed by saliency rather than area — but the exact normalisations, the way p enters the
Bernoulli probabilities and every default value below are this implementation's choices, not verified against
the authors'.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, forward_loss
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.core.result import MixResult, blend
from mixjax.mixing.ops.gradient_saliency import input_saliency

# Floor of the normalising divisions: far below any non-zero saliency mass, so it only guards 0 / 0.
_TINY = 1e-30


def patch_saliency(saliency: jax.Array, grid: int) -> jax.Array:
  """[B, H, W] → [B, g, g] mean saliency of each patch (float32)."""
  b, h, w = saliency.shape
  return saliency.astype(jnp.float32).reshape(b, grid, h // grid, grid, w // grid).mean(axis=(2, 4))


def graft_probabilities(patch_sal: jax.Array, share: jax.Array, *, temperature, threshold) -> jax.Array:
  """Bernoulli probability that each patch of the (partner) image is grafted, [B, g, g].

  ``patch_sal`` [B, g, g] ≥ 0; ``share`` [B] the drawn grafted share p. ρ_k = min(1, N·p·softmax(s̄/T)_k) with
  s̄ = s / max s, zero where s̄_k < threshold.
  """
  b = patch_sal.shape[0]
  flat = patch_sal.reshape(b, -1)
  n = flat.shape[1]
  rel = flat / jnp.maximum(jnp.max(flat, axis=1, keepdims=True), _TINY)
  q = jax.nn.softmax(rel / temperature, axis=1)
  rho = jnp.clip(n * share[:, None] * q, 0.0, 1.0)
  rho = jnp.where(rel >= threshold, rho, 0.0)
  return rho.reshape(patch_sal.shape)


def calibrated_lam(sal_own: jax.Array, sal_partner: jax.Array, grafted: jax.Array) -> jax.Array:
  """The weight of the original label, [B]: kept / (kept + grafted) saliency mass, each image's mass normalised
  to 1 (area weight where both are 0). ``sal_*`` [B, g, g] patch saliency, ``grafted`` [B, g, g] in {0, 1}."""

  def unit_mass(s):
    return s / jnp.maximum(jnp.sum(s, axis=(1, 2), keepdims=True), _TINY)

  g = grafted.astype(jnp.float32)
  kept = jnp.sum(unit_mass(sal_own) * (1.0 - g), axis=(1, 2))
  taken = jnp.sum(unit_mass(sal_partner) * g, axis=(1, 2))
  total = kept + taken
  area = 1.0 - jnp.mean(g, axis=(1, 2))
  return jnp.where(total > 0, kept / jnp.maximum(total, _TINY), area)


def upsample_patches(patches: jax.Array, height: int, width: int) -> jax.Array:
  """Nearest upsampling of [B, g, g] to [B, H, W, 1]."""
  g = patches.shape[1]
  return jnp.repeat(jnp.repeat(patches, height // g, axis=1), width // g, axis=2)[..., None]


def graft_local(rng, alpha, mixing, share, images, saliency, labels, *, hp: Grafting.Params):
  """One device's Saliency Grafting: (mixed images, λ [b], partner labels).

  ``mixing`` a replicated bool (this step mixes); ``share`` a replicated override of the grafted share p (a
  scalar), or None to draw p ~ Beta(α, α) per sample.
  """
  b, h, w, _ = images.shape
  grid = hp.grid
  k_perm, k_share, k_graft = jax.random.split(rng, 3)
  perm = per_device.local_permutation(k_perm, b)
  if share is None:
    p = jax.random.beta(k_share, alpha, alpha, (b,)).astype(jnp.float32)
  else:
    p = jnp.broadcast_to(jnp.asarray(share, jnp.float32), (b,))
  sal = patch_saliency(jax.lax.stop_gradient(saliency), grid)
  # hp values stay as given (Python numbers in a run; tests may pass traced arrays to sweep them in one program).
  rho = graft_probabilities(sal[perm], p, temperature=hp.temperature, threshold=hp.threshold)
  grafted = jax.random.bernoulli(k_graft, rho) & mixing
  lam = calibrated_lam(sal, sal[perm], grafted)
  weight_own = upsample_patches(1.0 - grafted.astype(jnp.float32), h, w)
  mixed = blend(images, images[perm], weight_own)
  return mixed, lam, labels[perm]


class Grafting(ModelAwareMethod):
  name = "grafting"
  paper = (
    "Park, Yang, Shin, Hwang, Yang. Saliency Grafting: Innocuous Attribution-Guided Mixup with Calibrated "
    "Label Mixing. AAAI 2022"
  )

  # None of these values could be checked against the authors (code unpublished, method section not retrievable
  # here; see the module docstring). α = 1 (the Beta prior of the grafted share) is OpenMixup's README row.
  @dataclasses.dataclass(frozen=True)
  class Params:
    # Patches per side: 28-px patches at 224 px (4 px at 32, 8 px at 64). Our choice; must divide the image side.
    grid: int = 8
    # Softmax temperature on the max-normalised saliency: the top patch is e^5 ≈ 150× as likely as a zero-saliency
    # one, so grafts favour the salient region but still vary from draw to draw. Our choice.
    temperature: float = 0.2
    # Patches whose saliency is below this fraction of the partner's maximum are never grafted; 0 leaves the
    # temperature alone to keep background grafts rare (the calibrated labels make them harmless). Our choice.
    threshold: float = 0.0
    # Probability that a step mixes at all: every step, as OpenMixup's ImageNet rows mix every step.
    prob: float = 1.0

  @staticmethod
  def _check(hp: Params, height: int, width: int) -> None:
    grid = hp.grid
    if grid < 1:
      raise ValueError(f"grafting grid must be a positive integer (patches per side), got {grid!r}")
    if height % grid or width % grid:
      common = [d for d in range(2, min(height, width) + 1) if height % d == 0 and width % d == 0 and d <= 32]
      raise ValueError(
        f"grafting grid={grid} must divide the image sides {height}x{width}; set "
        f"config.mixing.args.grafting.grid to a common divisor such as {common or [1]}"
      )
    if not hp.temperature > 0:
      raise ValueError(
        f"grafting temperature must be > 0, got {hp.temperature}; lower values concentrate the grafts on the "
        "most salient patches, higher ones spread them uniformly (e.g. 0.2)"
      )
    if not 0.0 <= hp.threshold <= 1.0:
      raise ValueError(
        f"grafting threshold is a fraction of the partner's peak patch saliency and must be in [0, 1], got "
        f"{hp.threshold}; use 0 to graft from any patch"
      )
    if not 0.0 <= hp.prob <= 1.0:
      raise ValueError(f"grafting prob is the probability of mixing a step and must be in [0, 1], got {hp.prob}")

  def mix(self, mesh, rng, images, saliency, labels, *, alpha, hp: Params, share=None) -> MixResult:
    """Saliency Grafting of a (sharded) batch given its saliency [B, H, W] (≥ 0).

    ``share`` (tests, pictures) fixes the grafted share p instead of drawing it from Beta(α, α): a scalar.
    """
    per_device.check_batch(images, labels)
    self._check(hp, images.shape[1], images.shape[2])
    if saliency.shape != images.shape[:3]:
      raise ValueError(f"grafting saliency must be [B, H, W] = {images.shape[:3]}, got {saliency.shape}")
    k_mix, k_local = jax.random.split(rng)
    prob = hp.prob
    mixing = jnp.asarray(True) if prob >= 1.0 else jax.random.bernoulli(k_mix, prob)
    replicated = (mixing,) if share is None else (mixing, jnp.asarray(share, jnp.float32))

    def local(r, mixing_, *rest):
      share_ = rest[0] if share is not None else None
      x, sal, y = rest[-3:]
      return graft_local(r, alpha, mixing_, share_, x, sal, y, hp=hp)

    mixed, lam, labels_b = per_device.on_shards(mesh, local, k_local, images, saliency, labels, replicated=replicated)
    return MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del aux, dropout_rng  # dropout drawn from rng
    k_mix, k_drop = jax.random.split(rng)
    saliency = input_saliency(ctx, params, batch_stats, images, labels)
    mix = self.mix(ctx.mesh, k_mix, images, saliency, labels, alpha=alpha, hp=hp)
    return forward_loss(ctx, params, batch_stats, mix, k_drop, {"lam": jnp.mean(mix.lam)})


register_model_aware(Grafting())
