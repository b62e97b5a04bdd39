"""Which picture each mixing method draws for ``python -m mixjax.visualize``: a registry beside the methods.

A picture builder is ``build(step, images, labels, *, alpha, hp, **options) -> (rng -> MixResult)``: it gets the
method's step plug-in (``mixing.get_method(name).step``), four normalised photographs with one-hot labels and the
method's typed hyper-parameters, builds whatever network the method needs (a small random stand-in from
``stand_ins``; the visualiser has no run to take one from) and returns one compiled function of the key, so the
renderer can try several keys without compiling again.

Input-level methods need no entry: their picture is their own kernel on the photos (``input_level``). A
model-aware method registers its builder with ``@register_picture(name, note=...)`` in one of this package's
modules; mixing methods know nothing of pictures, so ``mixjax/mixing`` imports nothing from here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from mixjax import mixing
from mixjax.errors import UserError

PictureBuilder = Callable[..., Callable[[jax.Array], mixing.MixResult]]


@dataclasses.dataclass(frozen=True)
class Picture:
  """A method's picture: the builder, the line the row title adds (what the picture shows when it is not a plain
  pixel mix), and whether the method mixes hidden features (the tiles are then a pixel-space stand-in)."""

  build: PictureBuilder
  note: str = ""
  mixes_features: bool = False


_PICTURES: dict[str, Picture] = {}


def register_picture(name: str, *, note: str = "", mixes_features: bool = False):
  """Decorator registering ``build`` as the picture of the mixing method ``name``."""

  def decorate(build: PictureBuilder) -> PictureBuilder:
    if name in _PICTURES:
      raise ValueError(f"picture of {name!r} registered twice")
    _PICTURES[name] = Picture(build=build, note=note, mixes_features=mixes_features)
    return build

  return decorate


def input_level(step, images, labels, *, alpha, hp):
  """An input-level kernel's own mix of the photos, as one shard."""
  draw = jax.jit(lambda rng, x, y: step.mix(None, rng, x, y, alpha=alpha, hp=hp))
  return lambda rng: draw(rng, images, labels)


def picture_for(method: str) -> Picture:
  """The registered picture of ``method`` (input-level methods: ``input_level``)."""
  entry = mixing.get_method(method)  # unknown names raise with the list of valid ones
  if method in _PICTURES:
    return _PICTURES[method]
  if not entry.model_aware:
    return Picture(build=input_level)
  raise UserError(f"mixing method {method!r} has no picture yet; register one in mixjax/visualize/ (pictures.py)")


def registered() -> list[str]:
  """Names of the methods with a registered (model-aware) picture."""
  return sorted(_PICTURES)


# The modules holding the model-aware methods' builders register them on import.
from mixjax.visualize import automix, feature_pictures, saliency_pictures  # noqa: E402,F401
