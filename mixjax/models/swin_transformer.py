"""Swin-Tiny (Liu et al., 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows").

Architecture (mmcls ``SwinTransformer``, arch tiny, as used by the reference): 4x4/4 patch embedding conv +
LayerNorm; stages of depths (2, 2, 6, 2), heads (3, 6, 12, 24), width 96 doubling per stage; 7x7 window
attention with a learned relative-position bias, every second block shifted by 3 (cyclic roll + mask);
MLP ratio 4, GELU; **each stage except the last ends with patch merging** (2x2 neighbourhood concat ->
LayerNorm -> Linear 4C -> 2C without bias); final LayerNorm, global average pool, Linear head.

Variable resolution: maps that are not a multiple of the window are zero-padded (mmcls); when a map is no
larger than the window, the window shrinks to the map and shifting is disabled (original Swin behaviour),
using the matching centre of the relative-position table.

Initialisation (``init=``): default ``"trunc_normal"`` (timm/mmcls): Linear and relative-position tables
trunc-normal(0.02), zero biases, patch conv PyTorch default. ``"torch_default"`` reproduces the reference's
Swin-T mixup config, which never triggers its initialiser (spec sec. 4): relative-position tables zeros,
every Linear (head included) at PyTorch defaults.

Features follow mmcls's stage outputs, i.e. *after* patch merging (H x W input):
stage0 = patch embedding (H/4, 96); stage1 (H/8, 192); stage2 (H/16, 384); stage3 (H/32, 768);
stage4 (H/32, 768) (before the final norm). Sizes round up (odd maps are padded before merging).
``mix_stage`` 0..4 acts on these outputs.

``return_attention=True`` adds ``attention`` [B, heads, (H/32)*(W/32)], float32: the attention the globally
pooled token pays each last-stage token in the last block. Swin has no class token; its head reads the mean
of the tokens, and the pooled output of an attention layer is ``mean_q Σ_k A[q, k]·v_k``, so token k's weight in
it is the mean over queries of the attention it receives (over its window's queries; padding excluded). At
224 px the last stage is one 7x7 window, so this is the mean of the full 49x49 attention's rows. This is
mixjax's stand-in for the class-token attention TransMix/TokenMix read from a ViT (docs/deviations.md).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit
from mixjax.models.layers import ClassifierHead, conv2d, drop_path
from mixjax.models.registry import register_model
from mixjax.models.transformer_layers import Mlp, attend, check_init, layer_norm, linear, token_param_init


def relative_position_index(window: int, table_window: int) -> np.ndarray:
  """[window^2, window^2] indices into a (2*table_window-1)^2 bias table (centred for smaller windows)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
  return rel[0] * (2 * table_window - 1) + rel[1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """Additive mask [num_windows, window^2, window^2]: -100 between tokens that came from different
  regions of the rolled map (so attention never crosses the wrap-around seam)."""
  regions = np.zeros((height, width), np.int32)
  label = 0
  for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
    for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
      regions[hs, ws] = label
      label += 1
  win = regions.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
  win = win.reshape(-1, window * window)
  return np.where(win[:, :, None] != win[:, None, :], -100.0, 0.0).astype(np.float32)


class WindowAttention(nnx.Module):
  def __init__(self, dim, num_heads, window, *, init="trunc_normal", dtype, rngs):
    self.num_heads, self.window = num_heads, window
    self.scale = (dim // num_heads) ** -0.5
    self.qkv = linear(dim, 3 * dim, init=init, dtype=dtype, rngs=rngs)
    self.proj = linear(dim, dim, init=init, dtype=dtype, rngs=rngs)
    self.relative_position_bias_table = nnx.Param(
      token_param_init(init)(rngs.params(), ((2 * window - 1) ** 2, num_heads), jnp.float32)
    )

  def __call__(self, x, window: int, shift: int, valid: np.ndarray | None = None):
    """x [B, Hp, Wp, C] (padded to multiples of ``window``) -> same shape.

    With ``valid`` (bool [Hp, Wp], the unpadded positions) it returns ``(out, received)`` instead:
    ``received`` [B, heads, Hp, Wp] float32 is the attention each token receives, summed over the valid
    queries of its window."""
    b, hp, wp, c = x.shape
    if shift:
      x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
    nh, nw, n = hp // window, wp // window, window * window
    tokens = x.reshape(b, nh, window, nw, window, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, n, c)
    qkv = self.qkv(tokens).reshape(-1, n, 3, self.num_heads, c // self.num_heads).transpose(2, 0, 3, 1, 4)
    index = relative_position_index(window, self.window)
    bias = self.relative_position_bias_table[...][index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)
    mask = None
    if shift:
      mask = jnp.asarray(shifted_window_mask(hp, wp, window, shift))  # [nW, n, n]
      mask = jnp.tile(mask, (b, 1, 1))[:, None]
    out, weights = attend(qkv[0], qkv[1], qkv[2], self.scale, bias=bias[None], mask=mask)
    out = self.proj(out).reshape(b, nh, nw, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, hp, wp, c)
    if shift:
      out = jnp.roll(out, (shift, shift), axis=(1, 2))
    if valid is None:
      return out
    queries = np.roll(valid, (-shift, -shift), axis=(0, 1)) if shift else valid
    queries = queries.reshape(nh, window, nw, window).transpose(0, 2, 1, 3).reshape(nh * nw, n)
    heads = self.num_heads
    received = jnp.einsum("bwhqk,wq->bhwk", weights.reshape(b, nh * nw, heads, n, n), queries.astype(np.float32))
    received = received.reshape(b, heads, nh, nw, window, window).transpose(0, 1, 2, 4, 3, 5).reshape(b, heads, hp, wp)
    if shift:
      received = jnp.roll(received, (shift, shift), axis=(2, 3))
    return out, received


class SwinBlock(nnx.Module):
  def __init__(self, dim, num_heads, window, shifted, drop_path_rate, *, init, dtype, rngs):
    self.norm1 = layer_norm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.attn = WindowAttention(dim, num_heads, window, init=init, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, 4 * dim, init=init, dtype=dtype, rngs=rngs)
    self.window, self.shifted, self.drop_path_rate = window, shifted, drop_path_rate

  def __call__(self, x, train, rngs, want_attention: bool = False):
    """x [B, H, W, C] -> same; with ``want_attention`` also the pooled token's attention [B, heads, H*W]
    (module docstring)."""
    b, h, w, c = x.shape
    window, shift = self.window, (self.window // 2 if self.shifted else 0)
    if min(h, w) <= window:
      window, shift = min(h, w), 0
    y = self.norm1(x)
    ph, pw = (-h) % window, (-w) % window
    if ph or pw:
      y = jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0)))
    attention = None
    if want_attention:
      valid = np.zeros((h + ph, w + pw), bool)
      valid[:h, :w] = True
      y, received = self.attn(y, window, shift, valid)
      attention = received[:, :, :h, :w].reshape(b, -1, h * w) / (h * w)
    else:
      y = self.attn(y, window, shift)
    y = y[:, :h, :w]
    x = x + drop_path(y, self.drop_path_rate, train, rngs)
    x = x + drop_path(self.mlp(self.norm2(x), train, rngs), self.drop_path_rate, train, rngs)
    return (x, attention) if want_attention else x


class PatchMerging(nnx.Module):
  """2x2 space-to-depth (odd maps zero-padded) -> LayerNorm(4C) -> Linear(4C -> 2C, no bias)."""

  def __init__(self, dim, *, init, dtype, rngs):
    self.norm = layer_norm(4 * dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.reduction = linear(4 * dim, 2 * dim, bias=False, init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    return self.reduction(self.norm(x))


class SwinTransformer(ImageClassifier):
  supports_attention = True

  def __init__(
    self,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "swin",
    embed_dim: int = 96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window: int = 7,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    init: str = "trunc_normal",
  ):
    check_init(init)
    self.name, self.dtype = name, dtype
    self.mix_stages = (0, 1, 2, 3, 4)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.embed_dim, self.num_stages = embed_dim, len(depths)
    self.attention_stride = 4 * 2 ** (len(depths) - 1)
    self.patch_embed = conv2d(
      3, embed_dim, 4, 4, padding=0, bias=True, init=ConvNetInit("torch_default"), dtype=dtype, rngs=rngs
    )
    self.patch_norm = layer_norm(embed_dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    stages, merges, k = [], [], 0
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
      dim = embed_dim * 2**i
      stages.append(
        nnx.List(
          [
            SwinBlock(dim, heads, window, j % 2 == 1, rates[k + j], init=init, dtype=dtype, rngs=rngs)
            for j in range(depth)
          ]
        )
      )
      if i < len(depths) - 1:
        merges.append(PatchMerging(dim, init=init, dtype=dtype, rngs=rngs))
      k += depth
    self.stages, self.merges = nnx.List(stages), nnx.List(merges)
    self.num_features = embed_dim * 2 ** (len(depths) - 1)
    self.norm = layer_norm(self.num_features, epsilon=1e-5, dtype=dtype, rngs=rngs)
    head_init = ConvNetInit(init)
    self.head = ClassifierHead(
      self.num_features,
      num_classes,
      kernel_init=head_init.head_kernel(),
      bias_init=head_init.head_bias(self.num_features),
      drop_rate=drop_rate,
      rngs=rngs,
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    h, w = height // 4, width // 4
    shapes = {"stage0": (h, w, self.embed_dim)}
    for i in range(self.num_stages):
      if i < self.num_stages - 1:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
      shapes[f"stage{i + 1}"] = (h, w, self.embed_dim * 2 ** min(i + 1, self.num_stages - 1))
    return shapes

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    h = self.patch_norm(self.patch_embed(taps.mix(0, x)))
    taps.record("stage0", h)
    last = len(self.stages) - 1
    for i, stage in enumerate(self.stages):
      for j, blk in enumerate(stage):
        if taps.want_attention and i == last and j == len(stage) - 1:
          h, attention = blk(h, train, rngs, want_attention=True)
          taps.record("attention", attention)
        else:
          h = blk(h, train, rngs)
      if i < len(self.merges):
        h = self.merges[i](h)
      h = taps.mix(i + 1, h)
      taps.record(f"stage{i + 1}", h)
    return jnp.mean(self.norm(h).astype(jnp.float32), axis=(1, 2))


@register_model("swin_tiny", family="transformer")
def swin_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> SwinTransformer:
  """Swin-T: embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7."""
  return SwinTransformer(num_classes=num_classes, rngs=rngs, dtype=dtype, name="swin_tiny", **kwargs)
