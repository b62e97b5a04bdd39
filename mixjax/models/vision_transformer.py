"""DeiT-Tiny/Small (Touvron et al., 2021): the ViT of Dosovitskiy et al. (2021) trained data-efficiently.

Architecture (timm ``VisionTransformer`` / mmcls ``deit-*`` arch): 16x16 patch-embedding conv, class
token, learnable absolute position embedding, 12 pre-norm blocks (LayerNorm eps 1e-6, qkv bias, MLP ratio
4, GELU), final LayerNorm, Linear head on the class token.

Variable resolution: the position embedding is stored for a 14x14 grid (224 px) and resized bicubically
to the actual grid (``jax.image.resize``; Keys a=-0.5 cubic rather than PyTorch's a=-0.75, a small
numerical difference for non-224 inputs only).

Initialisation (``init=``): default ``"trunc_normal"`` (timm): Linear trunc-normal(0.02), cls token and
position embedding trunc-normal(0.02), patch-embedding conv PyTorch default U(+-1/sqrt(fan_in)).
``"torch_default"`` reproduces the reference's DeiT-S mixup configs, which never run their initialiser
(spec sec. 4): cls token / position embedding zeros, every Linear (head included) at PyTorch defaults.

Features: ``stage0`` is the patch embedding (+ position) and ``stage1..4`` the outputs of blocks 3, 6, 9, 12
(before the final norm), each as the patch-token grid [B, H/16, W/16, D] without the class token.
``return_attention=True`` adds ``attention``: the last block's class-token attention over the patches, float32
[B, heads, (H/16)*(W/16)] (TransMix, TokenMix). Hidden-feature mixing is offered only at stage 0 (the input):
the reference has no ManifoldMix for ViTs.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.backbone import FeatureTaps, ImageClassifier
from mixjax.models.initializers import ConvNetInit
from mixjax.models.layers import ClassifierHead, conv2d, drop_path, dropout
from mixjax.models.registry import register_model
from mixjax.models.transformer_layers import Mlp, SelfAttention, check_init, layer_norm, token_param_init


class Block(nnx.Module):
  def __init__(self, dim, num_heads, mlp_ratio, drop_path_rate, drop_rate, *, init, dtype, rngs):
    self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(dim, num_heads, init=init, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_rate=drop_rate, init=init, dtype=dtype, rngs=rngs)
    self.drop_path_rate = drop_path_rate

  def __call__(self, x, train, rngs):
    y, weights = self.attn(self.norm1(x))
    x = x + drop_path(y, self.drop_path_rate, train, rngs)
    x = x + drop_path(self.mlp(self.norm2(x), train, rngs), self.drop_path_rate, train, rngs)
    return x, weights


class VisionTransformer(ImageClassifier):
  supports_attention = True

  def __init__(
    self,
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    name: str = "vit",
    patch_size: int = 16,
    img_size: int = 224,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    init: str = "trunc_normal",
  ):
    check_init(init)
    if depth % 4:
      raise ValueError(f"depth must be a multiple of 4 (four feature stages), got {depth}")
    self.name, self.dtype = name, dtype
    self.patch_size, self.base_grid = patch_size, img_size // patch_size
    self.attention_stride = patch_size
    self.mix_stages = (0,)
    self.stage_names = tuple(f"stage{i}" for i in range(5))
    self.num_features = embed_dim
    self.patch_embed = conv2d(
      3,
      embed_dim,
      patch_size,
      patch_size,
      padding=0,
      bias=True,
      init=ConvNetInit("torch_default"),
      dtype=dtype,
      rngs=rngs,
    )
    self.cls_token = nnx.Param(token_param_init(init)(rngs.params(), (1, 1, embed_dim), jnp.float32))
    self.pos_embed = nnx.Param(
      token_param_init(init)(rngs.params(), (1, 1 + self.base_grid**2, embed_dim), jnp.float32)
    )
    self.drop_rate = drop_rate
    rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    self.blocks = nnx.List(
      [Block(embed_dim, num_heads, mlp_ratio, r, drop_rate, init=init, dtype=dtype, rngs=rngs) for r in rates]
    )
    self.norm = layer_norm(embed_dim, dtype=dtype, rngs=rngs)
    head_init = ConvNetInit(init)
    self.head = ClassifierHead(
      embed_dim, num_classes, kernel_init=head_init.head_kernel(), bias_init=head_init.head_bias(embed_dim), rngs=rngs
    )

  def feature_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    gh, gw = height // self.patch_size, width // self.patch_size
    return {name: (gh, gw, self.num_features) for name in self.stage_names}

  def position_embedding(self, gh: int, gw: int) -> jax.Array:
    """[1, 1 + gh*gw, D]: the stored embedding, patch part bicubically resized to a gh x gw grid."""
    pos = self.pos_embed[...]
    if (gh, gw) == (self.base_grid, self.base_grid):
      return pos
    grid = pos[:, 1:].reshape(1, self.base_grid, self.base_grid, -1)
    grid = jax.image.resize(grid, (1, gh, gw, grid.shape[-1]), method="bicubic")
    return jnp.concatenate([pos[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

  def forward_features(self, x, train, rngs, taps: FeatureTaps):
    x = taps.mix(0, x)
    h = self.patch_embed(x)
    b, gh, gw, d = h.shape
    tokens = h.reshape(b, gh * gw, d)
    cls = jnp.broadcast_to(self.cls_token[...].astype(tokens.dtype), (b, 1, d))
    tokens = jnp.concatenate([cls, tokens], axis=1) + self.position_embedding(gh, gw).astype(tokens.dtype)
    tokens = dropout(tokens, self.drop_rate, train, rngs)
    taps.record("stage0", tokens[:, 1:].reshape(b, gh, gw, d))
    per_stage = len(self.blocks) // 4
    weights = None
    for i, blk in enumerate(self.blocks):
      tokens, weights = blk(tokens, train, rngs)
      if (i + 1) % per_stage == 0:
        taps.record(f"stage{(i + 1) // per_stage}", tokens[:, 1:].reshape(b, gh, gw, d))
    if taps.want_attention:
      taps.record("attention", weights[:, :, 0, 1:])
    return self.norm(tokens)[:, 0].astype(jnp.float32)


def _register(name, **arch):
  @register_model(name, family="transformer")
  def build(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32, **kwargs) -> VisionTransformer:
    return VisionTransformer(num_classes=num_classes, rngs=rngs, dtype=dtype, name=name, **{**arch, **kwargs})

  build.__name__ = name
  build.__doc__ = f"{name}: ViT {arch}, patch 16. See VisionTransformer."
  return build


deit_tiny = _register("deit_tiny", embed_dim=192, depth=12, num_heads=3)
deit_small = _register("deit_small", embed_dim=384, depth=12, num_heads=6)
