"""ConvNeXt-Tiny (Liu et al., 2022, "A ConvNet for the 2020s").

Architecture (timm / mmcls): 4x4/4 patchify stem + LayerNorm; stages of depths (3, 3, 9, 3) and widths
(96, 192, 384, 768); stages 2-4 start with LayerNorm + 2x2/2 conv downsampling; each block is
7x7 depthwise conv -> LayerNorm -> Linear(4x) -> GELU -> Linear -> layer scale (init 1e-6) -> drop path +
residual. All LayerNorms eps 1e-6. Head: global average pool -> LayerNorm -> Linear (mmcls
``gap_before_final_norm``). Drop path increases linearly over blocks.

Initialisation: trunc-normal(0.02) conv and Linear weights, zero biases (timm/mmcls). The reference's
ConvNeXt-T mixup config never triggers it (spec sec. 4) and trains from PyTorch defaults; pass
``init="torch_default"`` to reproduce that.

Features (H x W input): stage0 = stem (H/4, 96); stage1 H/4 96; stage2 H/8 192; stage3 H/16 384;
stage4 H/32 768 (each stage output, after its blocks). ``mix_stage`` 0..4.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit
from mixjax.models.layers import ClassifierHead, conv2d, drop_path
from mixjax.models.registry import register_model
from mixjax.models.transformer_layers import layer_norm


class ConvNeXtBlock(nnx.Module):
  def __init__(self, dim, drop_path_rate, layer_scale_init, *, init, dtype, rngs):
    self.dwconv = conv2d(dim, dim, 7, groups=dim, bias=True, init=init, dtype=dtype, rngs=rngs)
    self.norm = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.pwconv1 = nnx.Linear(
      dim,
      4 * dim,
      kernel_init=init.conv_kernel(),
      bias_init=init.conv_bias(dim),
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
    )
    self.pwconv2 = nnx.Linear(
      4 * dim,
      dim,
      kernel_init=init.conv_kernel(),
      bias_init=init.conv_bias(4 * dim),
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
    )
    self.gamma = nnx.Param(jnp.full((dim,), layer_scale_init, jnp.float32))
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train, rngs):
    y = self.pwconv2(jax.nn.gelu(self.pwconv1(self.norm(self.dwconv(x))), approximate=False))
    y = y * self.gamma[...].astype(y.dtype)
    return x + drop_path(y, self.drop_path_rate, train, rngs)


class ConvNeXt(ImageClassifier):
  def __init__(
    self,
    *,
    depths=(3, 3, 9, 3),
    dims=(96, 192, 384, 768),
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "convnext",
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    layer_scale_init: float = 1e-6,
    init: str = "trunc_normal",
  ):
    scheme = ConvNetInit(init)
    self.name, self.dtype = name, dtype
    self.mix_stages = (0, 1, 2, 3, 4)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.dims = tuple(dims)
    self.num_features = dims[-1]
    self.stem_conv = conv2d(3, dims[0], 4, 4, padding=0, bias=True, init=scheme, dtype=dtype, rngs=rngs)
    self.stem_norm = layer_norm(dims[0], dtype=dtype, rngs=rngs)
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    downsamples, stages, k = [], [], 0
    for i, (depth, dim) in enumerate(zip(depths, dims)):
      if i > 0:
        downsamples.append(
          nnx.List(
            [
              layer_norm(dims[i - 1], dtype=dtype, rngs=rngs),
              conv2d(dims[i - 1], dim, 2, 2, padding=0, bias=True, init=scheme, dtype=dtype, rngs=rngs),
            ]
          )
        )
      stages.append(
        nnx.List(
          [
            ConvNeXtBlock(dim, rates[k + j], layer_scale_init, init=scheme, dtype=dtype, rngs=rngs)
            for j in range(depth)
          ]
        )
      )
      k += depth
    self.downsamples, self.stages = nnx.List(downsamples), nnx.List(stages)
    self.norm = layer_norm(dims[-1], dtype=jnp.float32, rngs=rngs)
    self.head = ClassifierHead(
      dims[-1],
      num_classes,
      kernel_init=scheme.head_kernel(),
      bias_init=scheme.head_bias(dims[-1]),
      drop_rate=drop_rate,
      rngs=rngs,
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    h, w = height // 4, width // 4
    shapes = {"stage0": (h, w, self.dims[0]), "stage1": (h, w, self.dims[0])}
    for i in range(1, 4):
      h, w = h // 2, w // 2
      shapes[f"stage{i + 1}"] = (h, w, self.dims[i])
    return shapes

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = self.stem_norm(self.stem_conv(taps.mix(0, x)))
    taps.record("stage0", h)
    for i, stage in enumerate(self.stages):
      if i > 0:
        norm, conv = self.downsamples[i - 1]
        h = conv(norm(h))
      for blk in stage:
        h = blk(h, train, rngs)
      h = taps.mix(i + 1, h)
      taps.record(f"stage{i + 1}", h)
    return self.norm(jnp.mean(h.astype(jnp.float32), axis=(1, 2)))


@register_model("convnext_tiny")
def convnext_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> ConvNeXt:
  """ConvNeXt-T: depths (3, 3, 9, 3), dims (96, 192, 384, 768)."""
  return ConvNeXt(num_classes=num_classes, rngs=rngs, dtype=dtype, name="convnext_tiny", **kwargs)
