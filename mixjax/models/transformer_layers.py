"""Transformer building blocks shared by DeiT, PVT and Swin: truncated-normal Linear, LayerNorm, MLP and
multi-head self-attention that can hand back its attention weights.

Initialisation follows timm/mmcls: Linear weights trunc-normal(std 0.02), biases 0, LayerNorm 1/0.
Attention logits and softmax are computed in float32 even for bf16 compute, for numerical safety.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.initializers import trunc_normal
from mixjax.models.layers import dropout


def linear(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=bias, kernel_init=trunc_normal(0.02),
                      bias_init=nnx.initializers.zeros_init(), dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def layer_norm(num_features: int, *, dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.LayerNorm:
    return nnx.LayerNorm(num_features, epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Mlp(nnx.Module):
    """Linear -> GELU (exact erf form, as PyTorch) -> dropout -> Linear -> dropout."""

    def __init__(self, dim: int, hidden: int, *, drop_rate: float = 0.0, dtype, rngs: nnx.Rngs):
        self.fc1 = linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = linear(hidden, dim, dtype=dtype, rngs=rngs)
        self.drop_rate = drop_rate

    def __call__(self, x, train: bool, rngs):
        x = dropout(jax.nn.gelu(self.fc1(x), approximate=False), self.drop_rate, train, rngs)
        return dropout(self.fc2(x), self.drop_rate, train, rngs)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, bias: jax.Array | None = None,
           mask: jax.Array | None = None):
    """Scaled dot-product attention on [B, heads, N, d] tensors; returns (out [B, N, heads*d], weights f32).

    ``bias`` ([heads, N, M] or broadcastable) is added to the logits; ``mask`` entries are additive too.
    """
    logits = jnp.einsum("bhnd,bhmd->bhnm", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits + mask
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhnm,bhmd->bhnd", weights.astype(v.dtype), v)
    b, h, n, d = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, n, h * d), weights


class SelfAttention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.proj = linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        """x [B, N, C] -> (out [B, N, C], attention weights float32 [B, heads, N, N])."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).transpose(2, 0, 3, 1, 4)
        out, weights = attend(qkv[0], qkv[1], qkv[2], self.scale)
        return self.proj(out), weights
