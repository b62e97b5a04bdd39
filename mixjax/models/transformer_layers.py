"""Transformer building blocks shared by DeiT, PVT and Swin: truncated-normal Linear, LayerNorm, MLP and
multi-head self-attention that can hand back its attention weights.

Initialisation (``init=``): ``"trunc_normal"`` follows timm/mmcls (Linear weights trunc-normal(std 0.02),
biases 0); ``"torch_default"`` is PyTorch's Linear default (weights and biases U(+-1/sqrt(fan_in))), which is
what the reference's DeiT-S / Swin-T mixup configs actually train from (spec sec. 4). LayerNorm is 1/0.
Attention logits and softmax are computed in float32 even for bf16 compute, for numerical safety.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.initializers import torch_default_kernel, trunc_normal, uniform_bias
from mixjax.models.layers import dropout


TRANSFORMER_INITS = ("trunc_normal", "torch_default")


def check_init(init: str) -> str:
  if init not in TRANSFORMER_INITS:
    raise ValueError(f"unknown init scheme {init!r}; choose one of {TRANSFORMER_INITS}")
  return init


def linear(
  in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, bias: bool = True, init: str = "trunc_normal"
) -> nnx.Linear:
  if check_init(init) == "trunc_normal":
    kernel_init, bias_init = trunc_normal(0.02), nnx.initializers.zeros_init()
  else:
    kernel_init, bias_init = torch_default_kernel(), uniform_bias(in_features)
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=bias,
    kernel_init=kernel_init,
    bias_init=bias_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def token_param_init(init: str) -> nnx.Initializer:
  """Class tokens, position embeddings, relative-position tables: trunc-normal(0.02), or the zeros they are
  constructed with in the reference when its initialiser never runs (``"torch_default"``)."""
  return trunc_normal(0.02) if check_init(init) == "trunc_normal" else nnx.initializers.zeros_init()


def layer_norm(num_features: int, *, dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.LayerNorm:
  return nnx.LayerNorm(num_features, epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Mlp(nnx.Module):
  """Linear -> GELU (exact erf form, as PyTorch) -> dropout -> Linear -> dropout."""

  def __init__(
    self, dim: int, hidden: int, *, drop_rate: float = 0.0, init: str = "trunc_normal", dtype, rngs: nnx.Rngs
  ):
    self.fc1 = linear(dim, hidden, init=init, dtype=dtype, rngs=rngs)
    self.fc2 = linear(hidden, dim, init=init, dtype=dtype, rngs=rngs)
    self.drop_rate = drop_rate

  def __call__(self, x, train: bool, rngs):
    x = dropout(jax.nn.gelu(self.fc1(x), approximate=False), self.drop_rate, train, rngs)
    return dropout(self.fc2(x), self.drop_rate, train, rngs)


def attend(
  q: jax.Array, k: jax.Array, v: jax.Array, scale: float, bias: jax.Array | None = None, mask: jax.Array | None = None
):
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

  def __init__(
    self, dim: int, num_heads: int, *, qkv_bias: bool = True, init: str = "trunc_normal", dtype, rngs: nnx.Rngs
  ):
    if dim % num_heads:
      raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.qkv = linear(dim, 3 * dim, bias=qkv_bias, init=init, dtype=dtype, rngs=rngs)
    self.proj = linear(dim, dim, init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    """x [B, N, C] -> (out [B, N, C], attention weights float32 [B, heads, N, N])."""
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).transpose(2, 0, 3, 1, 4)
    out, weights = attend(qkv[0], qkv[1], qkv[2], self.scale)
    return self.proj(out), weights
