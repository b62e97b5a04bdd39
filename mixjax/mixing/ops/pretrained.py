"""A frozen, pretrained network a mixing method uses beside the classifier: where its weights come from.

AttentiveMix+ (its attention extractor) and SuperMix (its teacher) both run a pretrained classifier that is
never trained. The user names its weights with one hyper-parameter, ``<role>_checkpoint``:

* a run directory / Orbax checkpoint of ours: the architecture comes from that run's config and the weights
  (EMA params when the run kept them) are read through ``StepContext.checkpoints`` as host arrays;
* a PyTorch ``state_dict`` (``.pth``/``.pt`` via torch, or ``.npz`` of the same keys) in the torchvision ResNet
  layout, imported with ``mixjax.models.load_torch_state_dict``. The architecture (block type, blocks per
  stage, groups: ResNet-18/34/50/101, ResNeXt-101 32x4d) and the size of its head are read off the
  checkpoint, so ``<role>='auto'`` takes e.g. torchvision's weights as they are; an explicit ``<role>`` that
  disagrees with the checkpoint is refused naming both, instead of failing later with a shape mismatch.

``<role>_kwargs`` are the model's keyword arguments and ``<role>_num_classes`` its head size where nothing
else says it. Without a checkpoint a method refuses to build (one line naming the key to set, a
``ConfigError``) unless ``allow_random_<role>=True``: random weights, for tests and speed benchmarks only.

``PretrainedNet`` holds a method's names (method, role, the model ``'auto'`` means without a checkpoint) and
does everything else; the loaded weights go into the method's ``TrainState.aux`` (``init_aux``), so they are
checkpointed with the run and restored on resume.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixjax import models
from mixjax.config_args import ConfigError
from mixjax.errors import UserError
from mixjax.models.functional import ModelFn

AUTO = "auto"

# (block type, blocks per stage, groups) of the torchvision ResNet layouts → our model names.
TORCH_RESNETS = {
  ("basic", (2, 2, 2, 2), 1): "resnet18",
  ("basic", (3, 4, 6, 3), 1): "resnet34",
  ("bottleneck", (3, 4, 6, 3), 1): "resnet50",
  ("bottleneck", (3, 4, 23, 3), 1): "resnet101",
  ("bottleneck", (3, 4, 23, 3), 32): "resnext101_32x4d",
}
LAYER_KEY = re.compile(r"(?:^|\.)layer([1-4])\.(\d+)\.(conv[123])\.weight$")


class PretrainedCheckpointMissingError(ConfigError):
  """A method needs pretrained weights and none were configured (the message names the key to set)."""


class PretrainedCheckpointNotFoundError(UserError, FileNotFoundError):
  """The configured pretrained checkpoint path does not exist."""


def infer_torch_resnet(shapes: Mapping[str, tuple], role: str = "network") -> tuple[str, int]:
  """(model name, head classes) of a torchvision-layout ResNet/ResNeXt state_dict, given its key → shape map
  (keys may carry a prefix such as ``module.`` or ``backbone.``); ``role`` names it in the errors."""
  blocks: dict[int, set] = {}
  bottleneck, groups = False, 1
  for key, shape in shapes.items():
    m = LAYER_KEY.search(key)
    if not m:
      continue
    stage, index, conv = int(m.group(1)), int(m.group(2)), m.group(3)
    blocks.setdefault(stage, set()).add(index)
    if conv == "conv3":
      bottleneck = True
    if conv == "conv2" and stage == 1 and index == 0 and len(shape) == 4:
      # torch conv weight (out, in / groups, k, k); conv2 of a block maps its width to itself.
      groups = max(1, int(shape[0]) // max(1, int(shape[1])))
  if sorted(blocks) != [1, 2, 3, 4]:
    raise ValueError(f"the {role} state_dict is not a torchvision-layout ResNet (no layer1..layer4 convs)")
  depths = tuple(len(blocks[i]) for i in (1, 2, 3, 4))
  key = ("bottleneck" if bottleneck else "basic", depths, groups if bottleneck else 1)
  if key not in TORCH_RESNETS:
    raise ValueError(
      f"the {role} state_dict is a {key[0]} ResNet with blocks {depths} and groups {key[2]}, "
      f"which is none of {sorted(set(TORCH_RESNETS.values()))}"
    )
  heads = [shape for k, shape in shapes.items() if k.endswith("fc.weight") and len(shape) == 2]
  return TORCH_RESNETS[key], (int(heads[0][0]) if heads else -1)


@functools.lru_cache(maxsize=4)
def torch_shapes(path: str) -> dict:
  """key → shape of the state_dict at ``path`` (read once per path)."""
  return {k: tuple(np.shape(v)) for k, v in read_torch_state_dict(path).items()}


def read_torch_state_dict(path: str) -> dict:
  """The state_dict at ``path``: ``.npz`` with numpy, ``.pth``/``.pt`` with torch (imported only then)."""
  if path.endswith(".npz"):
    return dict(np.load(path))
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f"loading {path} needs torch; or save the state_dict as .npz "
      "(numpy.savez(path, **{k: v.numpy() for k, v in sd.items()}))"
    ) from e
  state_dict = torch.load(path, map_location="cpu")
  return state_dict.get("state_dict", state_dict)


def is_torch_file(path: str) -> bool:
  return path.endswith((".pth", ".pt", ".npz"))


@dataclasses.dataclass(frozen=True)
class PretrainedNet:
  """A method's frozen pretrained network, configured by the hyper-parameters ``<role>``,
  ``<role>_kwargs``, ``<role>_num_classes``, ``<role>_checkpoint`` and ``allow_random_<role>``.

  Attributes:
    method: the method's registry name (errors name ``config.mixing.args.<method>.<key>``).
    role: what the network is to the method, e.g. ``'extractor'`` or ``'teacher'`` (the keys' prefix).
    default_random: the model ``<role>='auto'`` means when there is no checkpoint to read it from.
    example: the example checkpoint the missing-checkpoint message suggests.
  """

  method: str
  role: str
  default_random: str
  example: str

  @property
  def checkpoint_key(self) -> str:
    return f"{self.role}_checkpoint"

  @property
  def allow_random_key(self) -> str:
    return f"allow_random_{self.role}"

  def defaults(self) -> dict:
    """The hyper-parameters this network adds to a method's ``Params`` (head size: ImageNet's 1000); the
    method's ``Params`` declares them as fields (typed: str, dict, int, str, bool), read here by name."""
    return {
      self.role: AUTO,
      f"{self.role}_kwargs": {},
      f"{self.role}_num_classes": 1000,
      self.checkpoint_key: "",
      self.allow_random_key: False,
    }

  def _path(self, hp) -> str:
    return str(getattr(hp, self.checkpoint_key) or "")

  def spec(self, hp, checkpoints=None) -> tuple[str, dict, int]:
    """(model name, kwargs, num_classes): from the run's config for an Orbax checkpoint, from the
    state_dict's own shapes for a torch checkpoint (checked against an explicit ``<role>``)."""
    role = self.role
    path = self._path(hp)
    name = str(getattr(hp, role) or AUTO)
    kwargs = dict(getattr(hp, f"{role}_kwargs") or {})
    if path and not is_torch_file(path):
      config = self.run_config(path, checkpoints)
      model = dict(config["model"])
      return model.pop("name"), model, int(config["data"]["num_classes"])
    if path and any(LAYER_KEY.search(k) for k in torch_shapes(path)):
      found, classes = infer_torch_resnet(torch_shapes(path), role)
      if name not in (AUTO, found):
        raise ValueError(
          f"{self.method} {role}={name!r} but {self.checkpoint_key} {path} holds a {found} "
          f"(torchvision layout); set {role}={found!r} or {role}='auto'"
        )
      return found, kwargs, classes if classes > 0 else getattr(hp, f"{role}_num_classes")
    # No checkpoint (random weights), or a partial state_dict without residual stages: the named model.
    return (self.default_random if name == AUTO else name), kwargs, getattr(hp, f"{role}_num_classes")

  def run_config(self, path: str, checkpoints) -> dict:
    if checkpoints is None:
      raise ValueError(
        f"{self.method} {self.checkpoint_key} {path} is a run checkpoint of ours; reading it needs "
        "StepContext.checkpoints (the train step sets it)"
      )
    return checkpoints.run_config(path)

  def build(self, hp, rngs=None, checkpoints=None, dtype=jnp.float32):
    """The network (abstract, ``nnx.eval_shape``, when ``rngs`` is None); computes in ``dtype``."""
    name, kwargs, num_classes = self.spec(hp, checkpoints)
    if rngs is None:
      return nnx.eval_shape(
        lambda: models.build_model(name, num_classes=num_classes, rngs=nnx.Rngs(0), dtype=dtype, **kwargs)
      )
    return models.build_model(name, num_classes=num_classes, rngs=rngs, dtype=dtype, **kwargs)

  def model_fn(self, hp, checkpoints=None, dtype=jnp.float32) -> ModelFn:
    """The network's pure apply function (its weights come from ``load_weights``, kept in ``aux``)."""
    graphdef, _, _ = nnx.split(self.build(hp, checkpoints=checkpoints, dtype=dtype), nnx.Param, nnx.BatchStat)
    return ModelFn(graphdef)

  def check_configured(self, hp) -> None:
    """Raises one line naming the key to set when no checkpoint is configured (and random weights are not
    allowed), or the configured path does not exist."""
    method, role = self.method, self.role
    if not getattr(hp, self.checkpoint_key) and not getattr(hp, self.allow_random_key):
      raise PretrainedCheckpointMissingError(
        f"{method} needs a pretrained {role}: set config.mixing.args.{method}.{self.checkpoint_key} to a "
        "run directory / Orbax checkpoint of ours or a PyTorch state_dict (.pth/.pt/.npz, torchvision ResNet "
        f"layout; {self.example}). For tests or speed benchmarks only, "
        f"{self.allow_random_key}=True uses random weights (meaningless for accuracy)."
      )
    path = self._path(hp)
    if path and not os.path.exists(path):
      raise PretrainedCheckpointNotFoundError(f"{method} {self.checkpoint_key} {path} does not exist")

  def load_weights(self, hp, seed: int = 0, checkpoints=None):
    """(params, batch_stats) as numpy/jax arrays (random only when allowed).

    A run checkpoint of ours is read through ``checkpoints`` (``StepContext.checkpoints``): params (EMA params
    when the run kept them) and BN statistics as host arrays, so this also works while ``init_aux`` is traced.
    """
    self.check_configured(hp)
    path = self._path(hp)
    if not path:
      model = self.build(hp, nnx.Rngs(seed))
    elif is_torch_file(path):
      state_dict = read_torch_state_dict(path)
      model = self.build(hp, nnx.Rngs(seed))
      models.load_torch_state_dict(model, state_dict, strict=False)
    else:
      self.run_config(path, checkpoints)  # the same error without a reader
      return checkpoints.weights(path)
    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
