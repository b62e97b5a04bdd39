"""ResNet-18/34/50/101 (He et al., 2016) and ResNeXt-101 32x4d (Xie et al., 2017).

Architecture follows torchvision / mmcls ``style='pytorch'`` (ResNet v1.5), as in the OpenMixup reference:
stride 2 on the 3x3 conv of the bottleneck, 7x7/2 stem conv + 3x3/2 max-pool, 1x1 strided conv + BN on the
downsampling shortcut, BN momentum 0.1 / eps 1e-5 (PyTorch convention), drop path increasing linearly from 0
to ``drop_path_rate`` over all blocks (mmcls). Parameter counts equal torchvision/timm exactly at 1000 classes.

``stem='cifar'`` swaps the stem for a 3x3/1 conv without max-pool (for 32-64 px images), ``width`` scales
the base channel count (64 for the standard nets; e.g. ``width=16`` for a tiny demo net).

Initialisation (``init=``, see ``mixjax.models.initializers``): default ``"kaiming"`` = mmcv's ResNet init
(Kaiming-normal fan_out convs, BN 1/0, head N(0, 0.01)) which the reference's AutoMix/SAMix runs use;
``"torch_default"`` reproduces the PyTorch layer defaults the reference's hand-crafted mixup baselines really
train with (spec sec. 4). ``zero_init_residual`` zeroes the last BN scale of each block (off by default,
matching what the reference effectively trains with). ``bn_group_size`` computes training BN statistics per
group of that many samples instead of over the whole batch (the reference's per-GPU BN; ``layers.BatchNorm``).

Stage features for an ``H x W`` input (imagenet stem; channels ``c = width``, ``e`` = 1 basic / 4 bottleneck):

=========  ======================  ============
name       spatial                 channels
=========  ======================  ============
stage0     ceil(H/4) x ceil(W/4)   c  (after stem conv + max-pool)
stage1     H/4                     c * e
stage2     H/8                     2c * e
stage3     H/16                    4c * e
stage4     H/32                    8c * e
=========  ======================  ============

With the cifar stem the strides are 1, 1, 2, 4, 8. ``mix_stage`` may be 0 (input) to 4.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit
from mixjax.models.layers import ClassifierHead, batch_norm, conv2d, drop_path, max_pool_3x3_s2
from mixjax.models.registry import register_model

STEMS = ("imagenet", "cifar")


class BasicBlock(nnx.Module):
  """Two 3x3 convs; expansion 1 (ResNet-18/34)."""

  expansion = 1

  def __init__(
    self,
    in_ch: int,
    planes: int,
    stride: int,
    *,
    groups: int,
    width_per_group: int,
    drop_path_rate: float,
    zero_init_residual: bool,
    init: ConvNetInit,
    dtype,
    rngs: nnx.Rngs,
    bn_group_size: int | None = None,
  ):
    if groups != 1 or width_per_group != 64:
      raise ValueError("BasicBlock supports only groups=1, width_per_group=64")
    out_ch = planes
    self.conv1 = conv2d(in_ch, planes, 3, stride, init=init, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.conv2 = conv2d(planes, out_ch, 3, init=init, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(out_ch, dtype=dtype, rngs=rngs, zero_scale=zero_init_residual, group_size=bn_group_size)
    self.downsample = _shortcut(in_ch, out_ch, stride, init=init, dtype=dtype, rngs=rngs, bn_group_size=bn_group_size)
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train: bool, rngs):
    ura = not train
    out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    out = self.bn2(self.conv2(out), use_running_average=ura)
    return jax.nn.relu(_apply_shortcut(self.downsample, x, ura) + drop_path(out, self.drop_path_rate, train, rngs))


class Bottleneck(nnx.Module):
  """1x1 reduce -> 3x3 (strided, grouped for ResNeXt) -> 1x1 expand; expansion 4."""

  expansion = 4

  def __init__(
    self,
    in_ch: int,
    planes: int,
    stride: int,
    *,
    groups: int,
    width_per_group: int,
    drop_path_rate: float,
    zero_init_residual: bool,
    init: ConvNetInit,
    dtype,
    rngs: nnx.Rngs,
    bn_group_size: int | None = None,
  ):
    mid = int(planes * (width_per_group / 64.0)) * groups
    out_ch = planes * self.expansion
    self.conv1 = conv2d(in_ch, mid, 1, init=init, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(mid, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.conv2 = conv2d(mid, mid, 3, stride, groups=groups, init=init, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(mid, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.conv3 = conv2d(mid, out_ch, 1, init=init, dtype=dtype, rngs=rngs)
    self.bn3 = batch_norm(out_ch, dtype=dtype, rngs=rngs, zero_scale=zero_init_residual, group_size=bn_group_size)
    self.downsample = _shortcut(in_ch, out_ch, stride, init=init, dtype=dtype, rngs=rngs, bn_group_size=bn_group_size)
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train: bool, rngs):
    ura = not train
    out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    out = jax.nn.relu(self.bn2(self.conv2(out), use_running_average=ura))
    out = self.bn3(self.conv3(out), use_running_average=ura)
    return jax.nn.relu(_apply_shortcut(self.downsample, x, ura) + drop_path(out, self.drop_path_rate, train, rngs))


def _shortcut(in_ch, out_ch, stride, *, init, dtype, rngs, bn_group_size=None):
  """1x1 strided conv + BN when shape changes (no avg-down), else None (identity)."""
  if stride == 1 and in_ch == out_ch:
    return None
  return nnx.List(
    [
      conv2d(in_ch, out_ch, 1, stride, padding=0, init=init, dtype=dtype, rngs=rngs),
      batch_norm(out_ch, dtype=dtype, rngs=rngs, group_size=bn_group_size),
    ]
  )


def _apply_shortcut(downsample, x, use_running_average: bool):
  if downsample is None:
    return x
  conv, bn = downsample
  return bn(conv(x), use_running_average=use_running_average)


class ResNet(ImageClassifier):
  """ResNet / ResNeXt classifier (backbone + global-average-pool + Linear head). See module docstring."""

  def __init__(
    self,
    block: type,
    depths: tuple[int, ...],
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "resnet",
    stem: str = "imagenet",
    width: int = 64,
    groups: int = 1,
    width_per_group: int = 64,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    zero_init_residual: bool = False,
    init: str = "kaiming",
    bn_group_size: int | None = None,
  ):
    if stem not in STEMS:
      raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
    if not 0.0 <= drop_path_rate < 1.0:
      raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    scheme = ConvNetInit(init)
    self.name = name
    self.dtype = dtype
    self.stem_kind = stem
    self.mix_stages = (0, 1, 2, 3, 4)
    self.stage_names = ("stage0", "stage1", "stage2", "stage3", "stage4")
    if stem == "imagenet":
      self.stem_conv = conv2d(3, width, 7, 2, init=scheme, dtype=dtype, rngs=rngs)
    else:
      self.stem_conv = conv2d(3, width, 3, 1, init=scheme, dtype=dtype, rngs=rngs)
    self.stem_bn = batch_norm(width, dtype=dtype, rngs=rngs, group_size=bn_group_size)

    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    in_ch, k = width, 0
    stages = []
    self.stage_channels = []
    for i, depth in enumerate(depths):
      planes = width * 2**i
      blocks = []
      for j in range(depth):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(
          block(
            in_ch,
            planes,
            stride,
            groups=groups,
            width_per_group=width_per_group,
            drop_path_rate=rates[k],
            zero_init_residual=zero_init_residual,
            init=scheme,
            dtype=dtype,
            rngs=rngs,
            bn_group_size=bn_group_size,
          )
        )
        in_ch = planes * block.expansion
        k += 1
      stages.append(nnx.List(blocks))
      self.stage_channels.append(in_ch)
    self.stages = nnx.List(stages)
    self.num_features = in_ch
    self.head = ClassifierHead(
      in_ch,
      num_classes,
      kernel_init=scheme.head_kernel(),
      bias_init=scheme.head_bias(in_ch),
      drop_rate=drop_rate,
      rngs=rngs,
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of each stage feature for an input of ``height x width`` (documented contract)."""
    strides = (4, 4, 8, 16, 32) if self.stem_kind == "imagenet" else (1, 1, 2, 4, 8)
    chans = (self.stem_bn.num_features, *self.stage_channels)
    return {
      f"stage{i}": (math.ceil(height / s), math.ceil(width / s), c) for i, (s, c) in enumerate(zip(strides, chans))
    }

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = taps.mix(0, x)
    h = jax.nn.relu(self.stem_bn(self.stem_conv(h), use_running_average=not train))
    if self.stem_kind == "imagenet":
      h = max_pool_3x3_s2(h)
    taps.record("stage0", h)
    for i, stage in enumerate(self.stages):
      for blk in stage:
        h = blk(h, train, rngs)
      h = taps.mix(i + 1, h)
      taps.record(f"stage{i + 1}", h)
    return self.head.pool(h)


def _builder(name, block, depths, **fixed):
  @register_model(name)
  def build(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> ResNet:
    return ResNet(block, depths, num_classes=num_classes, rngs=rngs, dtype=dtype, name=name, **{**fixed, **kwargs})

  build.__name__ = name
  build.__doc__ = f"{name}: {block.__name__} x {depths}{', ' + str(fixed) if fixed else ''}. See ResNet."
  return build


resnet18 = _builder("resnet18", BasicBlock, (2, 2, 2, 2))
resnet34 = _builder("resnet34", BasicBlock, (3, 4, 6, 3))
resnet50 = _builder("resnet50", Bottleneck, (3, 4, 6, 3))
resnet101 = _builder("resnet101", Bottleneck, (3, 4, 23, 3))
resnext101_32x4d = _builder("resnext101_32x4d", Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=4)
