"""Import PyTorch checkpoints (torchvision / mmcls / OpenMixup layout) into our models.

``load_torch_state_dict(model, state_dict)`` copies a PyTorch ``state_dict`` (torch tensors or anything
``numpy.asarray`` accepts; torch itself is not imported here) into ``model`` in place, so published
checkpoints can be evaluated or used as frozen feature extractors (e.g. AttentiveMix+).

Layout conversion: conv weights [O, I/g, kh, kw] -> [kh, kw, I/g, O]; Linear [out, in] -> [in, out];
BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var (``num_batches_tracked`` dropped).
Key prefixes of mmcls/OpenMixup checkpoints (``backbone.``, ``head.fc.``) are accepted.

Supported families: ResNet / ResNeXt (torchvision names: ``conv1``, ``bn1``, ``layer{1-4}.{j}.conv{k}``,
``...downsample.{0,1}``, ``fc``). Other backbones raise ``NotImplementedError``.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixjax.models.resnet import ResNet

_BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _resnet_torch_key(path: tuple) -> str:
    """Our state path (e.g. ('stages', 0, 1, 'bn2', 'mean')) -> torchvision key ('layer1.1.bn2.running_mean')."""
    *module, leaf = path
    if module[0] == "head":
        return f"fc.{'weight' if leaf == 'kernel' else 'bias'}"
    if module[0] in ("stem_conv", "stem_bn"):
        prefix = "conv1" if module[0] == "stem_conv" else "bn1"
    else:
        _, i, j, *rest = module
        prefix = ".".join([f"layer{i + 1}", str(j), *map(str, rest)])
    return f"{prefix}.{'weight' if leaf == 'kernel' else _BN_NAMES[leaf]}"


def _normalise_key(key: str) -> str:
    if key.startswith("backbone."):
        key = key[len("backbone."):]
    if key.startswith("head.fc."):
        key = "fc." + key[len("head.fc."):]
    return key


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


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> None:
    """Copy a PyTorch ``state_dict`` into ``model`` (in place). See the module docstring for the layout.

    With ``strict`` every model parameter/statistic must be present and every checkpoint entry used;
    shape mismatches always raise, naming the offending keys.
    """
    if not isinstance(model, ResNet):
        raise NotImplementedError(f"torch import supports ResNet/ResNeXt models, not {type(model).__name__}")
    ours = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    theirs = {_normalise_key(k): v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    updates, missing, mismatched, used = [], [], [], set()
    for path, variable in nnx.to_flat_state(ours):
        key = _resnet_torch_key(path)
        if key not in theirs:
            missing.append(key)
            continue
        array = _to_flax_layout(path[-1], _to_numpy(theirs[key]))
        if array.shape != variable.shape:
            mismatched.append(f"{key}: checkpoint {array.shape} vs model {variable.shape}")
            continue
        used.add(key)
        updates.append((path, jnp.asarray(array, variable.dtype)))
    unexpected = sorted(set(theirs) - used - set(k for k in missing))
    if mismatched:
        raise ValueError("shape mismatch importing torch weights:\n  " + "\n  ".join(mismatched))
    if strict and (missing or unexpected):
        raise ValueError(f"torch state_dict does not match {getattr(model, 'name', 'model')}: "
                         f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                         f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}")
    for path, value in updates:
        node = model
        for part in path[:-1]:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        getattr(node, path[-1])[...] = value
