"""SaliencyMix: a CutMix box centred on the partner's most salient point."""
from __future__ import annotations

import jax

from mixjax.mixing import boxes
from mixjax.mixing.cutmix import paste_box
from mixjax.mixing.registry import register_method
from mixjax.mixing.result import MixResult
from mixjax.mixing.saliency import salient_peak
from mixjax.mixing.sampling import lam_or_draw, random_permutation


@register_method("saliencymix", paper="Uddin, Monira, Shin, Chung, Bae. "
                 "SaliencyMix: A Saliency Guided Data Augmentation Strategy "
                 "for Better Regularization. ICLR 2021")
def saliencymix(rng: jax.Array, images: jax.Array, labels: jax.Array, *,
                alpha: float, lam=None) -> MixResult:
  """SaliencyMix as OpenMixup runs it (spec 2.7).

  λ ~ Beta(α, α) gives CutMix's box size. The saliency map is computed for
  ONE image, the partner of sample 0 (``x[π[0]]``); the box is centred at its
  maximum, clipped, and used for every pair in the batch. λ is recomputed
  from the clipped area.

  Substitution: saliency is spectral residual (Hou & Zhang 2007) computed on
  device with ``jnp.fft`` (``mixjax.mixing.saliency``), not OpenCV's
  fine-grained static saliency on the host; the peak can land elsewhere for
  the same image. ``lam`` overrides the Beta draw.
  """
  k_lam, k_perm = jax.random.split(rng)
  height, width = images.shape[1:3]
  lam = lam_or_draw(k_lam, alpha, lam)
  perm = random_permutation(k_perm, images.shape[0])
  cy, cx = salient_peak(images[perm[0]])
  cut_h, cut_w = boxes.cut_size_for_lam(lam, height, width)
  box = boxes.box_around(cy, cx, cut_h, cut_w, height, width)
  return paste_box(images, labels, perm, box)
