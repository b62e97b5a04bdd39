"""CutMix: paste one rectangle of the partner image, label by pasted area."""

from __future__ import annotations

from typing import Literal

import jax

from mixjax.mixing.ops import boxes
from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, build_result, paste_from_partner
from mixjax.mixing.ops.sampling import lam_or_draw, partners


def paste_box(images: jax.Array, labels: jax.Array, perm: jax.Array, box: boxes.Box) -> MixResult:
  """Pastes ``box`` of ``images[perm]`` into every image; λ from the area."""
  height, width = images.shape[1:3]
  region_b = boxes.box_region(box, height, width)
  mixed = paste_from_partner(images, images[perm], region_b)
  return build_result(mixed, labels, perm, boxes.lam_outside_box(box, height, width))


@register_method(
  "cutmix",
  paper="Yun, Han, Oh, Chun, Choe, Yoo. CutMix: "
  "Regularization Strategy to Train Strong Classifiers with "
  "Localizable Features. ICCV 2019",
)
def cutmix(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  lam=None,
  pairing: Literal["permutation", "flip"] = "permutation",
) -> MixResult:
  """CutMix as in OpenMixup (spec 2.2).

  λ ~ Beta(α, α) sets the box sides ``int(H·sqrt(1−λ))``; the centre is
  uniform over pixel positions, the box is clipped at the borders, and one
  box is shared by the whole batch. λ is then recomputed from the real pasted
  area, so labels always agree with pixels. ``lam`` overrides the Beta draw
  (before recomputation).

  ``pairing='permutation'`` (default): the reference's pairing, a permutation
  of the local batch re-drawn up to 10 times (all drawn at once) to avoid
  self-pairs (spec 1.3). ``pairing='flip'``: sample i is paired with sample
  B−1−i of the local batch, as timm's batch-mode CutMix that the DeiT
  (Touvron et al., ICML 2021) and RSB (Wightman et al., 2021) recipes ran;
  the box is still OpenMixup's.
  """
  k_lam, k_perm, k_box = jax.random.split(rng, 3)
  height, width = images.shape[1:3]
  lam = lam_or_draw(k_lam, alpha, lam)
  perm = partners(k_perm, images.shape[0], pairing, method="cutmix", avoid_fixed_points=True)
  cut_h, cut_w = boxes.cut_size_for_lam(lam, height, width)
  cy, cx = boxes.random_center(k_box, height, width)
  box = boxes.box_around(cy, cx, cut_h, cut_w, height, width)
  return paste_box(images, labels, perm, box)
