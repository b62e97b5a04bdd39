"""MogaNet-Tiny (Li et al., 2024, "MogaNet: Multi-order Gated Aggregation Network", ICLR).

Architecture (official MogaNet / reference ``moganet.py``): a stem of two 3x3/2 convs (BN, GELU between),
then stages with dims (32, 64, 128, 256), depths (3, 3, 12, 2) and FFN ratios (8, 8, 4, 4); stages 2-4
start with a 3x3/2 conv + BN. Each block is

* spatial aggregation: BN -> 1x1 proj -> feature decomposition (x + s * (x - GAP(x)), SiLU) -> SiLU(gate) *
  SiLU(multi-order depthwise value: 5x5 d1 on all channels, then 5x5 d2 / 7x7 d3 on channel splits
  1:3:4, 1x1 mix) -> 1x1 proj, plus the block-internal shortcut; layer scale 1e-5, drop path, residual;
* channel aggregation FFN: BN -> 1x1 expand -> 3x3 depthwise -> GELU -> channel decomposition
  (x + s * (x - GELU(1x1 to one channel))) -> 1x1 reduce; layer scale 1e-5, drop path, residual.

Each stage ends with a LayerNorm (eps 1e-6); head: global average pool -> Linear. ``bn_group_size``: training BN
statistics per group of that many samples (the reference's per-GPU BN; ``layers.BatchNorm``), None for the whole
batch.

Initialisation (the reference's model-level init runs for MogaNet-T, spec sec. 4): Linear trunc-normal(0.02),
convs Kaiming-normal fan_out (the official code also divides fan_out by the group count for depthwise
convs; we do not), zero biases, element/layer scales at their init constants.

Features (H x W input): stage0 = stem (H/4, 32); stage1 (H/4, 32); stage2 (H/8, 64); stage3 (H/16, 128);
stage4 (H/32, 256) (stage outputs after their LayerNorm; sizes round up). ``mix_stage`` 0..4.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax import cpu_backend
from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit, trunc_normal
from mixjax.models.layers import ClassifierHead, batch_norm, conv2d, drop_path, dropout
from mixjax.models.registry import register_model
from mixjax.models.transformer_layers import layer_norm


def _gelu(x):
  return jax.nn.gelu(x, approximate=False)


def _dilated_depthwise(ch, kernel, dilation, *, init, dtype, rngs) -> nnx.Conv:
  pad = (1 + (kernel - 1) * dilation) // 2
  return nnx.Conv(
    ch,
    ch,
    (kernel, kernel),
    padding=((pad, pad), (pad, pad)),
    kernel_dilation=dilation,
    feature_group_count=ch,
    kernel_init=init.conv_kernel(),
    bias_init=nnx.initializers.zeros_init(),
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
    conv_general_dilated=cpu_backend.conv_general_dilated,
  )


class MultiOrderDepthwise(nnx.Module):
  """Multi-order depthwise value branch: one 5x5 over all channels, then 5x5 dilation 2 and 7x7 dilation 3
  on channel splits (1 : 3 : 4), concatenated and mixed by a 1x1 conv."""

  def __init__(self, dim, *, init, dtype, rngs):
    self.c1, self.c2 = int(3 / 8 * dim), int(4 / 8 * dim)
    self.c0 = dim - self.c1 - self.c2
    self.dw0 = _dilated_depthwise(dim, 5, 1, init=init, dtype=dtype, rngs=rngs)
    self.dw1 = _dilated_depthwise(self.c1, 5, 2, init=init, dtype=dtype, rngs=rngs)
    self.dw2 = _dilated_depthwise(self.c2, 7, 3, init=init, dtype=dtype, rngs=rngs)
    self.pw = conv2d(dim, dim, 1, bias=True, init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x0 = self.dw0(x)
    x1 = self.dw1(x0[..., self.c0 : self.c0 + self.c1])
    x2 = self.dw2(x0[..., x0.shape[-1] - self.c2 :])
    return self.pw(jnp.concatenate([x0[..., : self.c0], x1, x2], axis=-1))


class GatedAggregation(nnx.Module):
  def __init__(self, dim, *, init, dtype, rngs):
    self.proj1 = conv2d(dim, dim, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.sigma = nnx.Param(jnp.full((dim,), 1e-5, jnp.float32))
    self.gate = conv2d(dim, dim, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.value = MultiOrderDepthwise(dim, init=init, dtype=dtype, rngs=rngs)
    self.proj2 = conv2d(dim, dim, 1, bias=True, init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    shortcut = x
    x = self.proj1(x)
    x = jax.nn.silu(x + self.sigma[...].astype(x.dtype) * (x - jnp.mean(x, axis=(1, 2), keepdims=True)))
    x = self.proj2(jax.nn.silu(self.gate(x)) * jax.nn.silu(self.value(x)))
    return x + shortcut


class ChannelAggregationFFN(nnx.Module):
  def __init__(self, dim, hidden, drop_rate, *, init, dtype, rngs):
    self.fc1 = conv2d(dim, hidden, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.dwconv = conv2d(hidden, hidden, 3, groups=hidden, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.decompose = conv2d(hidden, 1, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.sigma = nnx.Param(jnp.full((hidden,), 1e-5, jnp.float32))
    self.fc2 = conv2d(hidden, dim, 1, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.drop_rate = drop_rate

  def __call__(self, x, train, rngs):
    x = dropout(_gelu(self.dwconv(self.fc1(x))), self.drop_rate, train, rngs)
    x = x + self.sigma[...].astype(x.dtype) * (x - _gelu(self.decompose(x)))
    return dropout(self.fc2(x), self.drop_rate, train, rngs)


class MogaBlock(nnx.Module):
  def __init__(self, dim, ffn_ratio, drop_path_rate, drop_rate, *, init, dtype, rngs, bn_group_size=None):
    self.norm1 = batch_norm(dim, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.attn = GatedAggregation(dim, init=init, dtype=dtype, rngs=rngs)
    self.norm2 = batch_norm(dim, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.mlp = ChannelAggregationFFN(dim, dim * ffn_ratio, drop_rate, init=init, dtype=dtype, rngs=rngs)
    self.layer_scale1 = nnx.Param(jnp.full((dim,), 1e-5, jnp.float32))
    self.layer_scale2 = nnx.Param(jnp.full((dim,), 1e-5, jnp.float32))
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train, rngs):
    ura = not train
    y = self.layer_scale1[...].astype(x.dtype) * self.attn(self.norm1(x, use_running_average=ura))
    x = x + drop_path(y, self.drop_path_rate, train, rngs)
    y = self.layer_scale2[...].astype(x.dtype) * self.mlp(self.norm2(x, use_running_average=ura), train, rngs)
    return x + drop_path(y, self.drop_path_rate, train, rngs)


class ConvEmbed(nnx.Module):
  """3x3/2 conv (bias) + BN: the stage-2..4 downsampling; the stem stacks two, with GELU in between."""

  def __init__(self, in_ch, out_ch, *, init, dtype, rngs, bn_group_size=None):
    self.conv = conv2d(in_ch, out_ch, 3, 2, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_ch, dtype=dtype, rngs=rngs, group_size=bn_group_size)

  def __call__(self, x, train):
    return self.bn(self.conv(x), use_running_average=not train)


class MogaNet(ImageClassifier):
  def __init__(
    self,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "moganet",
    dims=(32, 64, 128, 256),
    depths=(3, 3, 12, 2),
    ffn_ratios=(8, 8, 4, 4),
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    init: str = "kaiming",
    bn_group_size: int | None = None,
  ):
    scheme = ConvNetInit(init)
    kw = dict(init=scheme, dtype=dtype, rngs=rngs, bn_group_size=bn_group_size)
    self.name, self.dtype, self.dims = name, dtype, tuple(dims)
    self.mix_stages = (0, 1, 2, 3, 4)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.num_features = dims[-1]
    self.stem = nnx.List([ConvEmbed(3, dims[0] // 2, **kw), ConvEmbed(dims[0] // 2, dims[0], **kw)])
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    embeds, stages, norms, k = [], [], [], 0
    for i, (dim, depth) in enumerate(zip(dims, depths)):
      if i > 0:
        embeds.append(ConvEmbed(dims[i - 1], dim, **kw))
      stages.append(nnx.List([MogaBlock(dim, ffn_ratios[i], rates[k + j], drop_rate, **kw) for j in range(depth)]))
      norms.append(layer_norm(dim, dtype=dtype, rngs=rngs))
      k += depth
    self.embeds, self.stages, self.norms = nnx.List(embeds), nnx.List(stages), nnx.List(norms)
    self.head = ClassifierHead(
      dims[-1], num_classes, kernel_init=trunc_normal(0.02), bias_init=nnx.initializers.zeros_init(), rngs=rngs
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    h, w = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    shapes = {"stage0": (h, w, self.dims[0]), "stage1": (h, w, self.dims[0])}
    for i in range(1, len(self.dims)):
      h, w = math.ceil(h / 2), math.ceil(w / 2)
      shapes[f"stage{i + 1}"] = (h, w, self.dims[i])
    return shapes

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = self.stem[1](_gelu(self.stem[0](taps.mix(0, x), train)), train)
    taps.record("stage0", h)
    for i, stage in enumerate(self.stages):
      if i > 0:
        h = self.embeds[i - 1](h, train)
      for blk in stage:
        h = blk(h, train, rngs)
      h = taps.mix(i + 1, self.norms[i](h))
      taps.record(f"stage{i + 1}", h)
    return self.head.pool(h)


@register_model("moganet_tiny")
def moganet_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> MogaNet:
  """MogaNet-T: dims (32, 64, 128, 256), depths (3, 3, 12, 2), FFN ratios (8, 8, 4, 4)."""
  return MogaNet(num_classes=num_classes, rngs=rngs, dtype=dtype, name="moganet_tiny", **kwargs)
