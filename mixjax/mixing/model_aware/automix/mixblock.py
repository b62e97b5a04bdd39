"""The MixBlock: a small attention network that turns a pair of feature maps and λ into a pixel mask.

AutoMix (Liu, Li, Wu, Liu, Chen, Wu, Li. "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers",
ECCV 2022) and SAMix (Li, Liu, Wang, Wu, Liu, Li. "Boosting Discriminative Visual Representation Learning with
Scenario-Agnostic Mixup", arXiv 2111.15454) share the shape of the generator and differ in four switches
(``MixBlockDesign``), spec sections 2.14-2.15:

* λ embedding: AutoMix appends a constant λ channel to X_a and 1−λ to X_b ("concat"); SAMix scales
  X_a·(1+λ), X_b·(2−λ) ("mul", a parameter-free residual encoding), optionally with λ first re-mapped by the
  reference's cubic ``rescale_lam_mult`` (``lam_mul_k`` ≥ 0: λ' = (4/3·λ³ − 2λ² + k'λ)/(k' − 2/3), k' = k + 1;
  −1 = off); "none" encodes no λ at all (the reference's Tiny-ImageNet AutoMix configs, ``lam_concat=False``).
* query/key: AutoMix applies one shared 1×1 conv to X_a (query) and X_b (key) ("shared"); SAMix applies two
  1×1 convs to the channel-concatenated pair ("pair_concat").
* value: a 1×1 conv to one channel ("linear") or SAMix's ConvNeck: 1×1 conv to C/2, BatchNorm (batch statistics
  of the call), ELU, 1×1 conv to one channel, dropout on that channel ("conv_neck").
* upsampling of the mask logits to the image: nearest (AutoMix) or bilinear (SAMix), then a sigmoid.

Mask logit of position i: Σ_j softmax_j(q_i·k_j/√d) v_j, an attention read-out of the partner's value map.
The output is the **weight of the partner image** x[π] (OpenMixup's convention for this block); callers blend
``(1−m)·x + m·x[π]``.

The parameters are a plain dict (like the classifier's), so they live in ``TrainState.aux``, get their own
Optax optimizer and are checkpointed by Orbax without Flax in between. The ConvNeck's BatchNorm always uses the
statistics of the current call: the MixBlock only ever runs in training mode (as in the reference, where both
calls per iteration are in train mode), so running averages would never be read and are not kept.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Literal

import jax
import jax.numpy as jnp

# The four switches' choices, as types (the methods' hyper-parameters use them) and as tuples.
LamEmbedding = Literal["concat", "mul", "none"]
QkInput = Literal["shared", "pair_concat"]
ValueNet = Literal["linear", "conv_neck"]
Upsampling = Literal["nearest", "bilinear"]
LAM_EMBEDDINGS = typing.get_args(LamEmbedding)
QK_INPUTS = typing.get_args(QkInput)
VALUE_NETS = typing.get_args(ValueNet)
UPSAMPLINGS = typing.get_args(Upsampling)
INIT_STD = 0.01  # every conv ~ N(0, 0.01²), biases 0 (reference init_weights(init_linear='normal'))
BN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class MixBlockDesign:
  lam_embedding: LamEmbedding = "concat"
  qk_input: QkInput = "shared"
  value_net: ValueNet = "linear"
  upsample: Upsampling = "nearest"
  value_dropout: float = 0.0
  lam_mul_k: float = -1.0  # "mul" only: k of the reference's cubic λ re-mapping (< 0: off)

  def __post_init__(self):
    for field, valid in (
      ("lam_embedding", LAM_EMBEDDINGS),
      ("qk_input", QK_INPUTS),
      ("value_net", VALUE_NETS),
      ("upsample", UPSAMPLINGS),
    ):
      if getattr(self, field) not in valid:
        raise ValueError(f"MixBlock {field}={getattr(self, field)!r} is not valid; use one of {valid}")
    if not 0.0 <= self.value_dropout < 1.0:
      raise ValueError(f"MixBlock value_dropout must be in [0, 1), got {self.value_dropout}")
    if self.lam_mul_k >= 0 and self.lam_embedding != "mul":
      raise ValueError(
        f"MixBlock lam_mul_k={self.lam_mul_k} re-maps λ for lam_embedding='mul' only, not {self.lam_embedding!r}"
      )


def rescale_lam_mul(lam: jax.Array, k: float) -> jax.Array:
  """The reference's ``rescale_lam_mult``: λ' = (4/3·λ³ − 2λ² + (k+1)·λ)/(k + 1/3); λ' (0) = 0, λ' (1) = 1."""
  kp = float(k) + 1.0
  return (4.0 / 3.0 * lam**3 - 2.0 * lam**2 + kp * lam) / (kp - 2.0 / 3.0)


def _dense(rng, fan_in: int, fan_out: int, bias: bool = True) -> dict:
  p = {"kernel": INIT_STD * jax.random.normal(rng, (fan_in, fan_out), jnp.float32)}
  if bias:
    p["bias"] = jnp.zeros((fan_out,), jnp.float32)
  return p


def _apply_dense(p: dict, x: jax.Array) -> jax.Array:
  y = jnp.einsum("...c,cd->...d", x, p["kernel"])
  return y + p["bias"] if "bias" in p else y


def init_mixblock(rng: jax.Array, channels: int, design: MixBlockDesign) -> dict:
  """Parameters for feature maps with ``channels`` channels."""
  if channels < 2:
    raise ValueError(f"MixBlock needs feature maps with >= 2 channels, got {channels}")
  k_q, k_k, k_v1, k_v2 = jax.random.split(rng, 4)
  c_in = channels + 1 if design.lam_embedding == "concat" else channels
  d = channels // 2
  if design.qk_input == "shared":
    qk = {"qk": _dense(k_q, c_in, d)}
  else:
    qk = {"query": _dense(k_q, 2 * c_in, d), "key": _dense(k_k, 2 * c_in, d)}
  if design.value_net == "linear":
    value = {"conv": _dense(k_v1, c_in, 1)}
  else:
    value = {
      "conv1": _dense(k_v1, c_in, d, bias=False),
      "bn": {"scale": jnp.ones((d,), jnp.float32), "bias": jnp.zeros((d,), jnp.float32)},
      "conv2": _dense(k_v2, d, 1, bias=False),
    }
  return {**qk, "value": value}


def _value_map(p: dict, x_b: jax.Array, design: MixBlockDesign, rng: jax.Array | None) -> jax.Array:
  """[B, h, w, C'] → [B, h, w] value of each partner position."""
  if design.value_net == "linear":
    return _apply_dense(p["conv"], x_b)[..., 0]
  h = _apply_dense(p["conv1"], x_b)
  mean = jnp.mean(h, axis=(0, 1, 2))
  var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2))
  h = (h - mean) * jax.lax.rsqrt(var + BN_EPS) * p["bn"]["scale"] + p["bn"]["bias"]
  v = _apply_dense(p["conv2"], jax.nn.elu(h))[..., 0]
  if design.value_dropout > 0 and rng is not None:
    keep = jax.random.bernoulli(rng, 1.0 - design.value_dropout, v.shape)
    v = jnp.where(keep, v / (1.0 - design.value_dropout), 0.0)
  return v


def mask_logits(
  params: dict,
  feats_a: jax.Array,
  feats_b: jax.Array,
  lam: jax.Array,
  design: MixBlockDesign,
  *,
  rng: jax.Array | None = None,
) -> jax.Array:
  """Low-resolution mask logits [B, h, w] for the pairs (feats_a[i], feats_b[i]) mixed at ratio ``lam``.

  ``feats_*`` are NHWC feature maps (any float dtype; the block computes in float32, the affinity softmax
  included, as the reference does). ``rng`` drives the ConvNeck's dropout (None: no dropout).
  """
  x_a = feats_a.astype(jnp.float32)
  x_b = feats_b.astype(jnp.float32)
  lam = jnp.asarray(lam, jnp.float32)
  if design.lam_embedding == "concat":
    x_a = jnp.concatenate([x_a, jnp.broadcast_to(lam, x_a.shape[:-1] + (1,))], axis=-1)
    x_b = jnp.concatenate([x_b, jnp.broadcast_to(1.0 - lam, x_b.shape[:-1] + (1,))], axis=-1)
  elif design.lam_embedding == "mul":
    lam_r = rescale_lam_mul(lam, design.lam_mul_k) if design.lam_mul_k >= 0 else lam
    x_a = x_a * (1.0 + lam_r)
    x_b = x_b * (2.0 - lam_r)
  if design.qk_input == "shared":
    q = _apply_dense(params["qk"], x_a)
    k = _apply_dense(params["qk"], x_b)
  else:
    pair = jnp.concatenate([x_a, x_b], axis=-1)
    q = _apply_dense(params["query"], pair)
    k = _apply_dense(params["key"], pair)
  batch, h, w, d = q.shape
  q = q.reshape(batch, h * w, d)
  k = k.reshape(batch, h * w, d)
  affinity = jax.nn.softmax(jnp.einsum("bid,bjd->bij", q, k) / math.sqrt(d), axis=-1)
  v = _value_map(params["value"], x_b, design, rng).reshape(batch, h * w)
  return jnp.einsum("bij,bj->bi", affinity, v).reshape(batch, h, w)


def upsample_to_mask(logits: jax.Array, size: tuple[int, int], design: MixBlockDesign) -> jax.Array:
  """[B, h, w] logits → [B, H, W] partner weight in (0, 1): upsample (nearest or bilinear), then sigmoid."""
  batch, h, w = logits.shape
  height, width = size
  if design.upsample == "nearest":
    if height % h or width % w:
      raise ValueError(f"nearest upsampling needs the image {size} to be a multiple of the feature map {(h, w)}")
    up = jnp.repeat(jnp.repeat(logits, height // h, axis=1), width // w, axis=2)
  else:
    # Half-pixel centres, no antialiasing on upsampling: PyTorch's interpolate(bilinear, align_corners=False).
    up = jax.image.resize(logits, (batch, height, width), method="bilinear")
  return jax.nn.sigmoid(up)
