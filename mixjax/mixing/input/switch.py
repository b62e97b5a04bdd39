"""The RSB / DeiT recipe: Mixup or CutMix, switched per batch (timm style)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mixjax.mixing.input.cutmix import cutmix
from mixjax.mixing.input.mixup import mixup
from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.input.vanilla import vanilla


@register_method(
  "mixup_cutmix_switch",
  uses_alpha=False,
  paper="Touvron et al. Training data-efficient image transformers & "
  "distillation through attention (DeiT). ICML 2021; Wightman, Touvron, "
  "Jégou. ResNet strikes back. 2021 (timm Mixup)",
)
def mixup_cutmix_switch(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float = 1.0,
  lam=None,
  mixup_alpha: float = 0.8,
  cutmix_alpha: float = 1.0,
  switch_prob: float = 0.5,
  mix_prob: float = 1.0,
) -> MixResult:
  """timm's batch-mode Mixup/CutMix switch.

  With probability ``mix_prob`` the batch is mixed at all; then CutMix (its
  own ``cutmix_alpha``) with probability ``switch_prob``, else Mixup
  (``mixup_alpha``). The global ``alpha`` is unused. Defaults are the DeiT
  recipe (0.8 / 1.0 / 0.5); RSB uses ``mixup_alpha=0.1`` (spec 3.2).

  Label smoothing happens before mixing, in the input labels, which is the
  same as timm's (smoothing is affine). CutMix λ is corrected to the clipped
  area (timm's ``correct_lam``, on in DeiT).

  Deviation from timm: timm pairs sample i with sample B−1−i (a batch flip);
  here the partner is a random permutation of the local batch, as in every
  OpenMixup method (spec 1.3). Both are uniform pairings over the batch
  order, which the input pipeline already shuffles.

  ``lam`` overrides the Beta draw of whichever branch runs.
  """
  del alpha
  k_apply, k_switch, k_mix = jax.random.split(rng, 3)
  do_mix = jax.random.uniform(k_apply) < mix_prob
  do_cutmix = jax.random.uniform(k_switch) < switch_prob
  branch = jnp.where(do_mix, jnp.where(do_cutmix, 2, 1), 0)
  branches = [
    functools.partial(vanilla, alpha=1.0, lam=lam),
    functools.partial(mixup, alpha=mixup_alpha, lam=lam),
    functools.partial(cutmix, alpha=cutmix_alpha, lam=lam),
  ]
  return jax.lax.switch(branch, branches, k_mix, images, labels)
