"""Pictures of the methods whose regions a network decides from the image: the saliency-driven PuzzleMix, Co-Mixup
and Saliency Grafting (input-gradient saliency), and SuperMix (masks optimised through a teacher). See
``pictures.py`` for the builder protocol.

The visualiser has no trained network: every picture here uses ``stand_ins.small_cnn``, a small randomly
initialised ResNet, so the mechanics (block masks, transport, groups, grafts, smooth masks, label weights) are
the methods' own, while *where* the regions land says nothing about a trained model.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.model_aware import supermix
from mixjax.visualize import stand_ins
from mixjax.visualize.pictures import register_picture

SALIENCY_NOTE = "saliency of an untrained small ResNet"


@register_picture("puzzlemix", note=SALIENCY_NOTE)
def puzzlemix(step, images, labels, *, alpha, hp):
  """PuzzleMix's mix with the small ResNet's input-gradient saliency (the photos are ImageNet-normalised)."""

  def mix(rng, x, saliency, y):
    return step.mix(None, rng, x, saliency, y, alpha=alpha, hp=hp, mean=IMAGENET_MEAN, std=IMAGENET_STD)

  return stand_ins.saliency_picture_fn(mix, images, labels)


@register_picture("comixup", note=SALIENCY_NOTE + "; the photos form one group")
def comixup(step, images, labels, *, alpha, hp):
  """All photos as one group (``m_part`` = their number when it does not divide it), saliency of the small ResNet
  in eval mode."""
  n = images.shape[0]
  if n % hp.m_part:
    hp = dataclasses.replace(hp, m_part=n)

  def mix(rng, x, saliency, y):
    return step.mix(None, rng, x, saliency, y, alpha=alpha, hp=hp)

  return stand_ins.saliency_picture_fn(mix, images, labels)


@register_picture("grafting", note=SALIENCY_NOTE)
def grafting(step, images, labels, *, alpha, hp):
  """Saliency Grafting with the small ResNet's input-gradient saliency."""

  def mix(rng, x, saliency, y):
    return step.mix(None, rng, x, saliency, y, alpha=alpha, hp=hp)

  return stand_ins.saliency_picture_fn(mix, images, labels)


@register_picture(
  "supermix", note="masks optimised through an untrained small ResNet teacher, asked for the photos' own labels"
)
def supermix_picture(step, images, labels, *, alpha, hp):
  """The small ResNet as the teacher. A random network predicts much the same class for every photo, which would
  make every mix an immediate "success"; the picture asks it for the photos' own labels instead, so the masks
  are really optimised (their placement means nothing)."""
  del step  # the per-device kernel is run directly, with the stand-in teacher instead of a checkpoint's
  supermix.check_hyper_parameters(hp)
  supermix.check_shapes(hp, images.shape[1], images.shape[2], images.shape[0])
  fn, t_params, t_stats = stand_ins.small_cnn(labels.shape[-1])

  @jax.jit
  def draw(rng, x, y, p, s):
    def apply(z):
      return fn(p, s, z, train=False)[0].astype(jnp.float32)

    out = supermix.supermix_local(rng, x, y, jnp.argmax(y, axis=-1), apply, alpha=alpha, hp=hp)
    return MixResult(images=out.images, labels_a=y, labels_b=out.labels_b, lam=out.lam)

  # Compiled with XLA's backend optimisation on whatever the process sets: ``python -m mixjax.visualize``
  # turns it off to compile its small programs fast, which makes this one's max_iter teacher passes ~30x
  # slower on CPU (45 s instead of 1.3 s per draw on 96 px photos, measured).
  compiled = draw.lower(jax.random.key(0), images, labels, t_params, t_stats).compile(
    compiler_options={"xla_backend_optimization_level": 3}
  )
  return lambda rng: compiled(rng, images, labels, t_params, t_stats)
