"""The model zoo: backbones + classifier heads found by name.

>>> model = build_model("resnet18", num_classes=10, rngs=nnx.Rngs(0), stem="cifar", width=16)
>>> logits = model(images, train=True, rngs=nnx.Rngs(dropout=1))

See ``mixjax.models.backbone`` for the call convention (stage features, stage mixing, attention maps).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from flax import nnx

# Importing the backbone modules registers their models.
from mixjax.models import convnext  # noqa: F401
from mixjax.models import mobile_convnets  # noqa: F401
from mixjax.models import moganet  # noqa: F401
from mixjax.models import pvt  # noqa: F401
from mixjax.models import resnet  # noqa: F401
from mixjax.models import swin_transformer  # noqa: F401
from mixjax.models import vision_transformer  # noqa: F401
from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.registry import UnknownModelError, get_model_builder, list_models, model_family, register_model
from mixjax.models.torch_import import load_torch_state_dict

__all__ = [
  "build_model",
  "list_models",
  "model_family",
  "register_model",
  "UnknownModelError",
  "ImageClassifier",
  "FeatureTaps",
  "count_params",
  "load_torch_state_dict",
]


def build_model(name: str, *, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> nnx.Module:
  """Construct the registered model ``name`` (params float32, compute in ``dtype``).

  ``kwargs`` are model specific (e.g. ResNet: ``stem``, ``width``, ``drop_path_rate``,
  ``zero_init_residual``, ``init``). Unknown names raise ``UnknownModelError`` listing the valid ones.
  ``mix_head=True`` (any model) adds a second classifier head for mixed samples (``ImageClassifier.add_mix_head``).
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  mix_head = kwargs.pop("mix_head", False)
  builder = get_model_builder(name)
  try:
    model = builder(num_classes=num_classes, rngs=rngs, dtype=dtype, **kwargs)
  except TypeError as e:
    unexpected = [k for k in kwargs if f"argument '{k}'" in str(e)]
    if not unexpected:
      raise
    raise UnknownModelError(
      f"{name} takes no argument {unexpected[0]!r} (config.model.{unexpected[0]}).",
      hint=f"check the spelling against the keyword arguments of {name}'s class in mixjax/models/",
    ) from None
  if mix_head:
    model.add_mix_head(rngs)
  return model


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (``nnx.Param``; BatchNorm running stats excluded, as in timm/torchvision).

  Works on abstract models from ``nnx.eval_shape`` too, so large nets can be counted without allocating.
  """
  return int(sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))))
