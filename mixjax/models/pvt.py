"""PVT-Tiny (Wang et al., 2021, "Pyramid Vision Transformer", v1).

Architecture (official PVT v1 / reference ``pvt.py``): four stages, each a strided patch-embedding conv
(4x4/4, then 2x2/2) + LayerNorm, a learned position embedding, and pre-norm transformer blocks whose
attention shrinks keys/values by a spatial-reduction conv (ratio R, R x R stride R, + LayerNorm) before
attending. Tiny: dims (64, 128, 320, 512), depths (2, 2, 2, 2), heads (1, 2, 5, 8), MLP ratios (8, 8, 4, 4),
SR ratios (8, 4, 2, 1), qkv bias, LayerNorm eps 1e-6. A class token joins the last stage; the head reads
it after the final LayerNorm.

Variable resolution: stage position embeddings (stored for 224 px) are resized bilinearly to the actual
grid, as in the official code.

Initialisation (the reference's model-level init runs for PVT-T, spec sec. 4): Linear, position embeddings and
class token trunc-normal(0.02), zero biases, LayerNorm 1/0; convs PyTorch default.

Features (H x W input): stage0 = stage-1 patch embedding (+ position) (H/4, 64); stage1 (H/4, 64);
stage2 (H/8, 128); stage3 (H/16, 320); stage4 (H/32, 512) (patch tokens, class token dropped).
``return_attention=True`` adds ``attention`` [B, 8, (H/32)*(W/32)]: the class token's attention in the last
block. ``mix_stage`` 0..3 (stage 4 carries the class token).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit, trunc_normal
from mixjax.models.layers import ClassifierHead, conv2d, drop_path
from mixjax.models.registry import register_model
from mixjax.models.transformer_layers import Mlp, attend, layer_norm, linear


class SpatialReductionAttention(nnx.Module):
  def __init__(self, dim, num_heads, sr_ratio, *, dtype, rngs):
    self.num_heads, self.sr_ratio = num_heads, sr_ratio
    self.scale = (dim // num_heads) ** -0.5
    self.q = linear(dim, dim, dtype=dtype, rngs=rngs)
    self.kv = linear(dim, 2 * dim, dtype=dtype, rngs=rngs)
    self.proj = linear(dim, dim, dtype=dtype, rngs=rngs)
    if sr_ratio > 1:
      self.sr = conv2d(
        dim, dim, sr_ratio, sr_ratio, padding=0, bias=True, init=ConvNetInit("torch_default"), dtype=dtype, rngs=rngs
      )
      self.sr_norm = layer_norm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, x, grid: tuple[int, int]):
    """x [B, N, C] (N = gh*gw, or 1 + gh*gw with a class token when sr_ratio == 1)."""
    b, n, c = x.shape
    d = c // self.num_heads
    q = self.q(x).reshape(b, n, self.num_heads, d).transpose(0, 2, 1, 3)
    kv_in = x
    if self.sr_ratio > 1:
      kv_in = self.sr(x.reshape(b, grid[0], grid[1], c))
      kv_in = self.sr_norm(kv_in.reshape(b, -1, c))
    kv = self.kv(kv_in).reshape(b, -1, 2, self.num_heads, d).transpose(2, 0, 3, 1, 4)
    out, weights = attend(q, kv[0], kv[1], self.scale)
    return self.proj(out), weights


class PVTBlock(nnx.Module):
  def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, drop_path_rate, *, dtype, rngs):
    self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, dim * mlp_ratio, dtype=dtype, rngs=rngs)
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, grid, train, rngs):
    y, weights = self.attn(self.norm1(x), grid)
    x = x + drop_path(y, self.drop_path_rate, train, rngs)
    return x + drop_path(self.mlp(self.norm2(x), train, rngs), self.drop_path_rate, train, rngs), weights


class PyramidVisionTransformer(ImageClassifier):
  supports_attention = True

  def __init__(
    self,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "pvt",
    dims=(64, 128, 320, 512),
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 5, 8),
    mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1),
    img_size: int = 224,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
  ):
    if sr_ratios[-1] != 1:
      raise ValueError("the last PVT stage must use sr_ratio 1 (it carries the class token)")
    self.name, self.dtype, self.dims = name, dtype, tuple(dims)
    self.mix_stages = (0, 1, 2, 3)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.num_features = dims[-1]
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    embeds, norms, pos, stages, k, in_ch = [], [], [], [], 0, 3
    self.patch_sizes, self.base_grids = [], []
    self.attention_stride = 4 * 2 ** (len(dims) - 1)  # the last stage's grid, where the class token attends
    grid = img_size
    for i, (dim, depth) in enumerate(zip(dims, depths)):
      p = 4 if i == 0 else 2
      grid //= p
      self.patch_sizes.append(p)
      self.base_grids.append(grid)
      embeds.append(
        conv2d(in_ch, dim, p, p, padding=0, bias=True, init=ConvNetInit("torch_default"), dtype=dtype, rngs=rngs)
      )
      norms.append(layer_norm(dim, dtype=dtype, rngs=rngs))
      extra = 1 if i == len(dims) - 1 else 0
      pos.append(nnx.Param(trunc_normal(0.02)(rngs.params(), (1, grid * grid + extra, dim), jnp.float32)))
      stages.append(
        nnx.List(
          [
            PVTBlock(dim, num_heads[i], mlp_ratios[i], sr_ratios[i], rates[k + j], dtype=dtype, rngs=rngs)
            for j in range(depth)
          ]
        )
      )
      k, in_ch = k + depth, dim
    self.patch_embeds, self.embed_norms = nnx.List(embeds), nnx.List(norms)
    self.pos_embeds, self.stages = nnx.List(pos), nnx.List(stages)
    self.cls_token = nnx.Param(trunc_normal(0.02)(rngs.params(), (1, 1, dims[-1]), jnp.float32))
    self.norm = layer_norm(dims[-1], dtype=dtype, rngs=rngs)
    self.head = ClassifierHead(
      dims[-1],
      num_classes,
      kernel_init=trunc_normal(0.02),
      bias_init=nnx.initializers.zeros_init(),
      drop_rate=drop_rate,
      rngs=rngs,
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    h, w, shapes = height, width, {}
    for i, (p, dim) in enumerate(zip(self.patch_sizes, self.dims)):
      h, w = h // p, w // p
      if i == 0:
        shapes["stage0"] = (h, w, dim)
      shapes[f"stage{i + 1}"] = (h, w, dim)
    return shapes

  def _pos(self, i: int, gh: int, gw: int, with_cls: bool):
    pos = self.pos_embeds[i][...]
    g = self.base_grids[i]
    if (gh, gw) == (g, g):
      return pos
    grid_part = pos[:, 1:] if with_cls else pos
    grid_part = jax.image.resize(grid_part.reshape(1, g, g, -1), (1, gh, gw, pos.shape[-1]), method="bilinear")
    grid_part = grid_part.reshape(1, gh * gw, -1)
    return jnp.concatenate([pos[:, :1], grid_part], axis=1) if with_cls else grid_part

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = taps.mix(0, x)
    last = len(self.stages) - 1
    weights = None
    for i, stage in enumerate(self.stages):
      h = self.patch_embeds[i](h)
      b, gh, gw, c = h.shape
      tokens = self.embed_norms[i](h.reshape(b, gh * gw, c))
      if i == last:
        cls = jnp.broadcast_to(self.cls_token[...].astype(tokens.dtype), (b, 1, c))
        tokens = jnp.concatenate([cls, tokens], axis=1)
      tokens = tokens + self._pos(i, gh, gw, i == last).astype(tokens.dtype)
      if i == 0:
        taps.record("stage0", tokens.reshape(b, gh, gw, c))
      for blk in stage:
        tokens, weights = blk(tokens, (gh, gw), train, rngs)
      if i == last:
        taps.record(f"stage{i + 1}", tokens[:, 1:].reshape(b, gh, gw, c))
      else:
        h = taps.mix(i + 1, tokens.reshape(b, gh, gw, c))
        taps.record(f"stage{i + 1}", h)
    if taps.want_attention:
      taps.record("attention", weights[:, :, 0, 1:])
    return self.norm(tokens)[:, 0].astype(jnp.float32)


@register_model("pvt_tiny", family="transformer")
def pvt_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> PyramidVisionTransformer:
  """PVT-T (v1): dims (64, 128, 320, 512), depths (2, 2, 2, 2), SR ratios (8, 4, 2, 1)."""
  return PyramidVisionTransformer(num_classes=num_classes, rngs=rngs, dtype=dtype, name="pvt_tiny", **kwargs)
