"""Inverted-residual (MBConv) networks: MobileNetV2 1.0x (Sandler et al., 2018) and EfficientNet-B0
(Tan & Le, 2019).

Both are stacks of inverted-residual blocks: 1x1 expand -> k x k depthwise (strided) -> [squeeze-excite]
-> 1x1 linear projection, with an identity shortcut when the shape is unchanged.

* MobileNetV2 (torchvision / mmcls): ReLU6, BN eps 1e-5, no SE, final 1x1 conv to 1280 channels.
* EfficientNet-B0 (timm ``efficientnet_b0`` / mmcls port): SiLU (Swish), BN eps 1e-3 (spec sec. 4), SE with
  reduction from the block *input* width x 0.25, final 1x1 conv to 1280 channels.

Head: global average pool -> dropout (``drop_rate``, 0 by default as in the reference's ClsHead) -> Linear.
Drop path (EfficientNet blocks with a shortcut) increases linearly over blocks.

Initialisation (``init=``): default ``"kaiming"`` (Kaiming-normal fan_out convs, head N(0, 0.01)), which
is what torchvision and timm use for these nets.

Stages group blocks by output stride (H x W input, channel counts for MobileNetV2 / EfficientNet-B0):
stage0 = stem (H/2, 32/32); stage1 H/4 (24/24); stage2 H/8 (32/40); stage3 H/16 (96/112); stage4 H/32
(1280/1280, including the final 1x1 conv). ``mix_stage`` 0..4.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit
from mixjax.models.layers import ClassifierHead, batch_norm, conv2d, drop_path
from mixjax.models.registry import register_model

ACTIVATIONS = {"relu6": jax.nn.relu6, "silu": jax.nn.silu}


def make_divisible(channels: float, divisor: int = 8) -> int:
  """Round to the nearest multiple of ``divisor``, never dropping more than 10% (MobileNet rule)."""
  rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * channels else rounded


class ConvBNAct(nnx.Module):
  def __init__(
    self, in_ch, out_ch, kernel, stride=1, *, groups=1, act: str | None, bn_eps, init, dtype, rngs, bn_group_size=None
  ):
    self.conv = conv2d(in_ch, out_ch, kernel, stride, groups=groups, init=init, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_ch, epsilon=bn_eps, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.act = act

  def __call__(self, x, train):
    y = self.bn(self.conv(x), use_running_average=not train)
    return ACTIVATIONS[self.act](y) if self.act else y


class SqueezeExcite(nnx.Module):
  """Channel gate (Hu et al., 2018): GAP -> 1x1 conv (bias) -> SiLU -> 1x1 conv (bias) -> sigmoid."""

  def __init__(self, ch, reduced, *, init, dtype, rngs):
    self.reduce = conv2d(ch, reduced, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.expand = conv2d(reduced, ch, 1, bias=True, init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.expand(jax.nn.silu(self.reduce(s))))


class InvertedResidual(nnx.Module):
  def __init__(
    self,
    in_ch,
    out_ch,
    kernel,
    stride,
    expand_ratio,
    *,
    act,
    se_ratio,
    bn_eps,
    drop_path_rate,
    init,
    dtype,
    rngs,
    bn_group_size=None,
  ):
    mid = in_ch * expand_ratio
    kw = dict(bn_eps=bn_eps, init=init, dtype=dtype, rngs=rngs, bn_group_size=bn_group_size)
    self.expand = ConvBNAct(in_ch, mid, 1, act=act, **kw) if expand_ratio != 1 else None
    self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act, **kw)
    self.se = (
      SqueezeExcite(mid, max(1, int(in_ch * se_ratio)), init=init, dtype=dtype, rngs=rngs) if se_ratio > 0 else None
    )
    self.project = ConvBNAct(mid, out_ch, 1, act=None, **kw)
    self.residual = stride == 1 and in_ch == out_ch
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train, rngs):
    y = self.expand(x, train) if self.expand is not None else x
    y = self.depthwise(y, train)
    if self.se is not None:
      y = self.se(y)
    y = self.project(y, train)
    return x + drop_path(y, self.drop_path_rate, train, rngs) if self.residual else y


class MobileConvNet(ImageClassifier):
  """Stem conv -> inverted-residual stages -> 1x1 conv to ``head_ch`` -> pooled Linear head.

  ``blocks`` rows are (expand_ratio, out_channels, repeats, first_stride, kernel, feature_stage): the last
  field says which of stage1..4 the row belongs to. ``width_mult`` / ``depth_mult`` scale channels (rounded
  to multiples of 8) and repeats (rounded up), as in the MobileNet/EfficientNet scaling rules; the final
  conv width is ``head_ch`` as given. ``bn_group_size``: training BN statistics per group of that many samples
  (the reference's per-GPU BN; ``layers.BatchNorm``), None for the whole batch.
  """

  def __init__(
    self,
    blocks,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str,
    act: str,
    se_ratio: float,
    bn_eps: float,
    stem_ch: int = 32,
    head_ch: int = 1280,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    init: str = "kaiming",
    bn_group_size: int | None = None,
  ):
    scheme = ConvNetInit(init)
    stem_ch = make_divisible(stem_ch * width_mult)
    blocks = [(e, make_divisible(c * width_mult), math.ceil(n * depth_mult), s, k, st) for e, c, n, s, k, st in blocks]
    kw = dict(bn_eps=bn_eps, init=scheme, dtype=dtype, rngs=rngs, bn_group_size=bn_group_size)
    self.name, self.dtype = name, dtype
    self.mix_stages = (0, 1, 2, 3, 4)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.stem = ConvBNAct(3, stem_ch, 3, 2, act=act, **kw)
    total = sum(row[2] for row in blocks)
    rates = [drop_path_rate * i / total for i in range(total)]  # timm: block_idx / num_blocks
    stages, in_ch, k = [[], [], [], []], stem_ch, 0
    self.stage_channels = [0, 0, 0, head_ch]
    for expand, out_ch, repeats, stride, kernel, stage in blocks:
      for j in range(repeats):
        stages[stage - 1].append(
          InvertedResidual(
            in_ch,
            out_ch,
            kernel,
            stride if j == 0 else 1,
            expand,
            act=act,
            se_ratio=se_ratio,
            drop_path_rate=rates[k],
            **kw,
          )
        )
        in_ch, k = out_ch, k + 1
      if stage < 4:
        self.stage_channels[stage - 1] = out_ch
    self.stages = nnx.List([nnx.List(s) for s in stages])
    self.stem_ch = stem_ch
    self.head_conv = ConvBNAct(in_ch, head_ch, 1, act=act, **kw)
    self.num_features = head_ch
    self.head = ClassifierHead(
      head_ch,
      num_classes,
      kernel_init=scheme.head_kernel(),
      bias_init=scheme.head_bias(head_ch),
      drop_rate=drop_rate,
      rngs=rngs,
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    chans = (self.stem_ch, *self.stage_channels)
    return {
      f"stage{i}": (math.ceil(height / 2 ** (i + 1)), math.ceil(width / 2 ** (i + 1)), c) for i, c in enumerate(chans)
    }

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = self.stem(taps.mix(0, x), train)
    taps.record("stage0", h)
    for i, stage in enumerate(self.stages):
      for blk in stage:
        h = blk(h, train, rngs)
      if i == 3:
        h = self.head_conv(h, train)
      h = taps.mix(i + 1, h)
      taps.record(f"stage{i + 1}", h)
    return self.head.pool(h)


# (expand, out_ch, repeats, stride, kernel, feature stage)
MOBILENET_V2_BLOCKS = (
  (1, 16, 1, 1, 3, 1),
  (6, 24, 2, 2, 3, 1),
  (6, 32, 3, 2, 3, 2),
  (6, 64, 4, 2, 3, 3),
  (6, 96, 3, 1, 3, 3),
  (6, 160, 3, 2, 3, 4),
  (6, 320, 1, 1, 3, 4),
)
EFFICIENTNET_B0_BLOCKS = (
  (1, 16, 1, 1, 3, 1),
  (6, 24, 2, 2, 3, 1),
  (6, 40, 2, 2, 5, 2),
  (6, 80, 3, 2, 3, 3),
  (6, 112, 3, 1, 5, 3),
  (6, 192, 4, 2, 5, 4),
  (6, 320, 1, 1, 3, 4),
)


@register_model("mobilenet_v2")
def mobilenet_v2(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> MobileConvNet:
  """MobileNetV2 1.0x: ReLU6, no SE, BN eps 1e-5."""
  return MobileConvNet(
    MOBILENET_V2_BLOCKS,
    num_classes=num_classes,
    rngs=rngs,
    dtype=dtype,
    name="mobilenet_v2",
    act="relu6",
    se_ratio=0.0,
    bn_eps=1e-5,
    **kwargs,
  )


@register_model("efficientnet_b0")
def efficientnet_b0(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> MobileConvNet:
  """EfficientNet-B0: Swish, SE 0.25, BN eps 1e-3, width/depth multiplier 1.0."""
  return MobileConvNet(
    EFFICIENTNET_B0_BLOCKS,
    num_classes=num_classes,
    rngs=rngs,
    dtype=dtype,
    name="efficientnet_b0",
    act="silu",
    se_ratio=0.25,
    bn_eps=1e-3,
    **kwargs,
  )
