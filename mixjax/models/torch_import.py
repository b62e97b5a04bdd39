"""Import PyTorch checkpoints (torchvision / timm / mmcls layouts) into our models.

``load_torch_state_dict(model, state_dict)`` copies a PyTorch ``state_dict`` (torch tensors or anything
``numpy.asarray`` accepts; torch itself is not imported here) into ``model`` in place, so published
checkpoints can be evaluated or used as frozen feature extractors (e.g. AttentiveMix+), and so each
architecture can be checked for parity against its PyTorch original (``tests/models/test_torch_parity.py``).

Every family is described by one function mapping a path in our parameter tree (e.g.
``('stages', 0, 1, 'bn2', 'mean')``) to the PyTorch *module* name (``'layer1.1.bn2'``); the leaf name and the
array layout are converted the same way for all families:

* conv weights ``[O, I/g, kh, kw]`` -> ``[kh, kw, I/g, O]``; Linear ``[out, in]`` -> ``[in, out]``;
* BatchNorm ``weight/bias/running_mean/running_var`` -> ``scale/bias/mean/var`` (``num_batches_tracked``
  dropped); LayerNorm ``weight/bias`` -> ``scale/bias``;
* bare parameters (``cls_token``, ``pos_embed``, ConvNeXt ``gamma``, Swin ``relative_position_bias_table``)
  keep their name and layout.

Supported layouts (dispatch by model class; the names are those of ``mixjax.models.list_models()``):

==========================  ===========================================================================
ours                        PyTorch source
==========================  ===========================================================================
resnet18/34/50/101,         torchvision ``resnet*`` / timm ``resnet*``, ``resnext101_32x4d``;
resnext101_32x4d            mmcls/OpenMixup ``backbone.`` / ``head.fc.`` prefixes are accepted
mobilenet_v2                timm ``mobilenetv2_100`` (``conv_stem``, ``blocks.r.i``, ``conv_head``) or
                            torchvision ``mobilenet_v2`` (``features.*``, ``classifier.1``)
efficientnet_b0             timm ``efficientnet_b0`` or torchvision ``efficientnet_b0`` (the layouts of the
                            line above); both build BN with eps 1e-5, ours uses 1e-3 like the mmcls port,
                            so logits agree only for a torch model whose BN eps was set to 1e-3
deit_tiny, deit_small       timm ``deit_{tiny,small}_patch16_224`` (``VisionTransformer``); build ours with
                            the checkpoint's ``img_size`` (position-embedding grid)
convnext_tiny               timm ``convnext_tiny``
swin_tiny                   timm >= 0.9 ``swin_tiny_patch4_window7_224`` (patch merging at the start of
                            ``layers.{i+1}``, which is our ``merges[i]``)
==========================  ===========================================================================

PVT and MogaNet have no timm/torchvision counterpart and raise ``NotImplementedError``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixjax.models.convnext import ConvNeXt
from mixjax.models.mobile_convnets import MobileConvNet
from mixjax.models.resnet import ResNet
from mixjax.models.swin_transformer import SwinTransformer
from mixjax.models.vision_transformer import VisionTransformer

# our leaf name -> PyTorch parameter/buffer name (anything else keeps its name)
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# registered model names each family's converter has been checked on (see the parity tests)
TORCH_IMPORTABLE_MODELS = (
  "resnet18",
  "resnet34",
  "resnet50",
  "resnet101",
  "resnext101_32x4d",
  "mobilenet_v2",
  "efficientnet_b0",
  "deit_tiny",
  "deit_small",
  "convnext_tiny",
  "swin_tiny",
)

ModuleNamer = Callable[[tuple], str]  # our module path (without leaf) -> torch module name ('' for the root)


def _join(*parts) -> str:
  return ".".join(str(p) for p in parts if p != "")


# ------------------------------------------------------------------------------------------------ ResNet
def _resnet_namer(model: ResNet, state_dict: Mapping[str, Any]) -> ModuleNamer:
  def name(module: tuple) -> str:
    if module[0] == "head":
      return "fc"
    if module[0] in ("stem_conv", "stem_bn"):
      return "conv1" if module[0] == "stem_conv" else "bn1"
    _, i, j, *rest = module  # ('stages', i, j, 'conv1') / ('stages', i, j, 'downsample', 0)
    return _join(f"layer{i + 1}", j, *rest)

  return name


def _resnet_normalise(key: str) -> str:
  """mmcls / OpenMixup checkpoints prefix the backbone with ``backbone.`` and the head with ``head.fc.``."""
  if key.startswith("backbone."):
    key = key[len("backbone.") :]
  if key.startswith("head.fc."):
    key = "fc." + key[len("head.fc.") :]
  return key


# ------------------------------------------------------------------------------- MobileNetV2 / EfficientNet
def _block_positions(state_dict: Mapping[str, Any], pattern: str) -> list[tuple[int, ...]]:
  """Sorted distinct index tuples captured by ``pattern`` at the start of the keys.

  timm and torchvision group inverted-residual blocks by arch-def row (``blocks.{row}.{i}``,
  ``features.{row + 1}.{i}``) while our stages group them by output stride; both keep execution order, so
  our flat k-th block is the k-th position in sorted order.
  """
  found = {tuple(int(g) for g in m.groups()) for m in (re.match(pattern, k) for k in state_dict) if m}
  return sorted(found)


# our (sub-module, layer) inside a block -> torch name, for blocks without / with the 1x1 expansion
_TIMM_SEPARABLE = {
  ("depthwise", "conv"): "conv_dw",
  ("depthwise", "bn"): "bn1",
  ("project", "conv"): "conv_pw",
  ("project", "bn"): "bn2",
  ("se", "reduce"): "se.conv_reduce",
  ("se", "expand"): "se.conv_expand",
}
_TIMM_INVERTED = {
  ("expand", "conv"): "conv_pw",
  ("expand", "bn"): "bn1",
  ("depthwise", "conv"): "conv_dw",
  ("depthwise", "bn"): "bn2",
  ("project", "conv"): "conv_pwl",
  ("project", "bn"): "bn3",
  ("se", "reduce"): "se.conv_reduce",
  ("se", "expand"): "se.conv_expand",
}
_TV_MOBILENET_SEPARABLE = {
  ("depthwise", "conv"): "conv.0.0",
  ("depthwise", "bn"): "conv.0.1",
  ("project", "conv"): "conv.1",
  ("project", "bn"): "conv.2",
}
_TV_MOBILENET_INVERTED = {
  ("expand", "conv"): "conv.0.0",
  ("expand", "bn"): "conv.0.1",
  ("depthwise", "conv"): "conv.1.0",
  ("depthwise", "bn"): "conv.1.1",
  ("project", "conv"): "conv.2",
  ("project", "bn"): "conv.3",
}
_TV_EFFICIENTNET_SEPARABLE = {
  ("depthwise", "conv"): "block.0.0",
  ("depthwise", "bn"): "block.0.1",
  ("se", "reduce"): "block.1.fc1",
  ("se", "expand"): "block.1.fc2",
  ("project", "conv"): "block.2.0",
  ("project", "bn"): "block.2.1",
}
_TV_EFFICIENTNET_INVERTED = {
  ("expand", "conv"): "block.0.0",
  ("expand", "bn"): "block.0.1",
  ("depthwise", "conv"): "block.1.0",
  ("depthwise", "bn"): "block.1.1",
  ("se", "reduce"): "block.2.fc1",
  ("se", "expand"): "block.2.fc2",
  ("project", "conv"): "block.3.0",
  ("project", "bn"): "block.3.1",
}


def _mobile_namer(model: MobileConvNet, state_dict: Mapping[str, Any]) -> ModuleNamer:
  """timm ``EfficientNet`` layout (``mobilenetv2_100``, ``efficientnet_b0``) or torchvision's
  ``mobilenet_v2`` / ``efficientnet_b0`` (``features.*``), told apart by their keys."""
  if any(k.startswith("features.1.conv.") for k in state_dict):  # torchvision mobilenet_v2
    positions = _block_positions(state_dict, r"features\.(\d+)\.conv\.")
    tables = (_TV_MOBILENET_SEPARABLE, _TV_MOBILENET_INVERTED)
    block_prefix = "features.{0}"
  elif any(k.startswith("features.1.0.block.") for k in state_dict):  # torchvision efficientnet
    positions = _block_positions(state_dict, r"features\.(\d+)\.(\d+)\.block\.")
    tables = (_TV_EFFICIENTNET_SEPARABLE, _TV_EFFICIENTNET_INVERTED)
    block_prefix = "features.{0}.{1}"
  else:  # timm
    positions = _block_positions(state_dict, r"blocks\.(\d+)\.(\d+)\.")
    tables = (_TIMM_SEPARABLE, _TIMM_INVERTED)
    block_prefix = "blocks.{0}.{1}"
  ours = [(i, j) for i, stage in enumerate(model.stages) for j in range(len(stage))]
  if len(positions) != len(ours):
    raise ValueError(
      f"{model.name} has {len(ours)} inverted-residual blocks but the checkpoint has "
      f"{len(positions)}; expected timm 'blocks.<row>.<i>.*' or torchvision 'features.*' "
      f"keys of the matching model"
    )
  flat = {ij: k for k, ij in enumerate(ours)}
  if tables[0] is _TIMM_SEPARABLE:
    fixed = {
      ("stem", "conv"): "conv_stem",
      ("stem", "bn"): "bn1",
      ("head_conv", "conv"): "conv_head",
      ("head_conv", "bn"): "bn2",
      ("head", "fc"): "classifier",
    }
  else:  # stem = features.0, blocks, final 1x1 conv = the last features entry, classifier.0 is dropout
    last = 1 + max(pos[0] for pos in positions)
    fixed = {
      ("stem", "conv"): "features.0.0",
      ("stem", "bn"): "features.0.1",
      ("head_conv", "conv"): f"features.{last}.0",
      ("head_conv", "bn"): f"features.{last}.1",
      ("head", "fc"): "classifier.1",
    }

  def name(module: tuple) -> str:
    if module[0] != "stages":
      return fixed[tuple(module)]
    _, i, j, *rest = module
    table = tables[0] if model.stages[i][j].expand is None else tables[1]
    return _join(block_prefix.format(*positions[flat[(i, j)]]), table[tuple(rest)])

  return name


# -------------------------------------------------------------------------------------------------- DeiT
def _vit_namer(model: VisionTransformer, state_dict: Mapping[str, Any]) -> ModuleNamer:
  def name(module: tuple) -> str:
    if module == ("patch_embed",):
      return "patch_embed.proj"
    if module == ("head", "fc"):
      return "head"
    return _join(*module)  # (), ('blocks', i, 'attn', 'qkv'), ('norm',) ... are named alike

  return name


# ---------------------------------------------------------------------------------------------- ConvNeXt
def _convnext_namer(model: ConvNeXt, state_dict: Mapping[str, Any]) -> ModuleNamer:
  block = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}

  def name(module: tuple) -> str:
    if module[0] in ("stem_conv", "stem_norm"):
      return "stem.0" if module[0] == "stem_conv" else "stem.1"
    if module[0] == "downsamples":  # ours[d] = (norm, conv) in front of stage d + 1
      return _join("stages", module[1] + 1, "downsample", module[2])
    if module[0] == "stages":
      _, i, j, *rest = module
      return _join("stages", i, "blocks", j, *(block[r] for r in rest))
    return {("norm",): "head.norm", ("head", "fc"): "head.fc"}[tuple(module)]

  return name


# -------------------------------------------------------------------------------------------------- Swin
def _swin_namer(model: SwinTransformer, state_dict: Mapping[str, Any]) -> ModuleNamer:
  def name(module: tuple) -> str:
    if module[0] in ("patch_embed", "patch_norm"):
      return "patch_embed.proj" if module[0] == "patch_embed" else "patch_embed.norm"
    if module[0] == "stages":
      _, i, j, *rest = module
      return _join("layers", i, "blocks", j, *rest)
    if module[0] == "merges":  # ours merge after stage i; timm >= 0.9 downsamples at the start of i + 1
      return _join("layers", module[1] + 1, "downsample", *module[2:])
    return _join(*module)  # ('norm',), ('head', 'fc')

  return name


# (model class, family description, module namer, key normaliser); first isinstance match wins
_FAMILIES: tuple[tuple[type, str, Callable, Callable[[str], str]], ...] = (
  (ResNet, "ResNet/ResNeXt (torchvision/timm/mmcls)", _resnet_namer, _resnet_normalise),
  (MobileConvNet, "MobileNetV2/EfficientNet (timm/torchvision)", _mobile_namer, lambda k: k),
  (VisionTransformer, "DeiT (timm VisionTransformer)", _vit_namer, lambda k: k),
  (ConvNeXt, "ConvNeXt (timm)", _convnext_namer, lambda k: k),
  (SwinTransformer, "Swin (timm)", _swin_namer, lambda k: k),
)


def _torch_key(namer: ModuleNamer, path: tuple) -> str:
  *module, leaf = path
  return _join(namer(tuple(module)) if module else "", _LEAF_NAMES.get(leaf, leaf))


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def _to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if leaf == "kernel" and array.ndim == 2:
    return array.T
  return array


def _family_of(model: nnx.Module):
  for cls, description, namer, normalise in _FAMILIES:
    if isinstance(model, cls):
      return description, namer, normalise
  supported = ", ".join(description for _, description, _, _ in _FAMILIES)
  raise NotImplementedError(
    f"no PyTorch import for {getattr(model, 'name', type(model).__name__)} ({type(model).__name__}); "
    f"supported families: {supported}; supported models: {', '.join(TORCH_IMPORTABLE_MODELS)}"
  )


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> None:
  """Copy a PyTorch ``state_dict`` into ``model`` (in place). See the module docstring for the layouts.

  With ``strict`` every model parameter/statistic must be present and every checkpoint entry used
  (``num_batches_tracked`` and non-persistent buffers such as Swin's ``relative_position_index`` are
  ignored); shape mismatches always raise, naming the offending keys. Unsupported architectures raise
  ``NotImplementedError`` listing the supported ones.
  """
  description, make_namer, normalise = _family_of(model)
  theirs = {
    normalise(k): v
    for k, v in state_dict.items()
    if not k.endswith(("num_batches_tracked", "relative_position_index", "attn_mask"))
  }
  namer = make_namer(model, theirs)
  ours = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  updates, missing, mismatched, used = [], [], [], set()
  for path, variable in nnx.to_flat_state(ours):
    key = _torch_key(namer, path)
    if key not in theirs:
      missing.append(key)
      continue
    array = _to_flax_layout(path[-1], _to_numpy(theirs[key]))
    if array.shape != variable.shape:
      mismatched.append(f"{key}: checkpoint {array.shape} vs model {variable.shape}")
      continue
    used.add(key)
    updates.append((path, jnp.asarray(array, variable.dtype)))
  unexpected = sorted(set(theirs) - used - set(missing))
  if mismatched:
    raise ValueError("shape mismatch importing torch weights:\n  " + "\n  ".join(mismatched))
  if strict and (missing or unexpected):
    raise ValueError(
      f"torch state_dict does not match {getattr(model, 'name', 'model')} "
      f"(expected layout: {description}): "
      f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
      f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}"
    )
  for path, value in updates:
    node = model
    for part in path[:-1]:
      node = node[part] if isinstance(part, int) else getattr(node, part)
    getattr(node, path[-1])[...] = value
