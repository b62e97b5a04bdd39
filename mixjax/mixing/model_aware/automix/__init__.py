"""Learned mixing: AutoMix and SAMix (MixBlock, momentum encoder, bi-level update in one jitted step).

Importing this package registers ``automix`` and ``samix`` as model-aware mixing methods.
"""

from mixjax.mixing.model_aware.automix.method import LearnedMaskMixup, SAMixMethod
from mixjax.mixing.model_aware.automix.mixblock import MixBlockDesign, init_mixblock, mask_logits, upsample_to_mask
from mixjax.mixing.core.registry import register_model_aware

AUTOMIX = register_model_aware(LearnedMaskMixup())
SAMIX = register_model_aware(SAMixMethod())

__all__ = [
  "AUTOMIX",
  "SAMIX",
  "LearnedMaskMixup",
  "MixBlockDesign",
  "SAMixMethod",
  "init_mixblock",
  "mask_logits",
  "upsample_to_mask",
]
