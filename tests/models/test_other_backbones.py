"""Forward behaviour of the non-ResNet backbones, on shrunken configurations (tiny widths/depths, 32-40 px
inputs) so they run eagerly in seconds; full-size shapes and counts are checked abstractly elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax.models import build_model
from mixjax.models.swin_transformer import WindowAttention, shifted_window_mask

TINY_CONFIGS = {
  "deit_tiny": (dict(embed_dim=32, depth=4, num_heads=2), 32),
  "convnext_tiny": (dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), layer_scale_init=1.0), 32),
  "swin_tiny": (dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window=2), 40),
  "pvt_tiny": (dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)), 32),
  "moganet_tiny": (dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), ffn_ratios=(2, 2, 2, 2)), 32),
  # MobileNetV2 shares MobileConvNet with EfficientNet (which adds SE and Swish), so one of the two suffices.
  "efficientnet_b0": (dict(width_mult=0.25, depth_mult=0.34, head_ch=32), 32),
}


def fast_rngs(seed: int) -> nnx.Rngs:
  """RBG keys compile much faster than threefry on CPU; per-shape init compiles dominate these tests."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny(name, **extra):
  kwargs, size = TINY_CONFIGS[name]
  model = build_model(name, num_classes=7, rngs=fast_rngs(0), drop_path_rate=0.3, **kwargs, **extra)
  x = jax.random.normal(jax.random.key(1), (2, size, size + 8, 3), jnp.float32)  # non-square on purpose
  return model, x


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_forward_drop_path_and_stage_mixing(name):
  model, x = tiny(name)
  plain, feats = model(x, False, return_features=True)
  assert plain.shape == (2, 7) and plain.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(plain)))
  for stage, hwc in model.feature_shapes(*x.shape[1:3]).items():
    assert feats[stage].shape == (2, *hwc), stage
  # Mixing with lambda = 1 at every admissible stage (one forward, as ManifoldMix draws its stage) reproduces the
  # plain forward, and every stage hands its input to the mix once, in order; a real mix changes the output.
  seen = []

  def identity_blend(h, stage):
    seen.append(stage)
    return 1.0 * h + 0.0 * h[::-1]

  same = model(x, False, mix_stage=tuple(model.mix_stages), mix_fn=identity_blend)
  np.testing.assert_allclose(np.asarray(same), np.asarray(plain), rtol=1e-5, atol=1e-6)
  assert seen == list(model.mix_stages)
  mixed = model(x, False, mix_stage=model.mix_stages[-1], mix_fn=lambda h: 0.5 * h + 0.5 * h[::-1])
  assert not np.allclose(np.asarray(mixed), np.asarray(plain), rtol=1e-4, atol=0)
  # Eval mode: drop path is the identity (rngs are ignored); train mode: it draws from rngs.
  # (Train mode runs last: it updates BatchNorm running statistics.)
  np.testing.assert_array_equal(np.asarray(model(x, False, nnx.Rngs(dropout=5))), np.asarray(plain))
  t1 = model(x, True, nnx.Rngs(dropout=1))
  t2 = model(x, True, nnx.Rngs(dropout=2))
  assert not np.array_equal(np.asarray(t1), np.asarray(t2))


@pytest.mark.parametrize("name", ["deit_tiny", "pvt_tiny"])
def test_class_token_attention_maps(name):
  model, x = tiny(name)
  _, feats = model(x, False, return_attention=True)
  attn = np.asarray(feats["attention"])
  gh, gw, _ = model.feature_shapes(*x.shape[1:3])["stage4"]
  heads = model.stages[-1][-1].attn.num_heads if name == "pvt_tiny" else model.blocks[-1].attn.num_heads
  assert attn.shape == (2, heads, gh * gw) and attn.dtype == np.float32
  # Softmax row of the class token minus its self-attention: positive, sums to < 1.
  assert np.all(attn > 0) and np.all(attn.sum(-1) < 1) and np.all(attn.sum(-1) > 0.2)
  _, other = model(x[::-1], False, return_attention=True)
  np.testing.assert_allclose(np.asarray(other["attention"]), attn[::-1], rtol=1e-5, atol=1e-6)


def test_deit_position_embedding_resize():
  model, _ = tiny("deit_tiny")
  pos = model.pos_embed[...]
  np.testing.assert_array_equal(np.asarray(model.position_embedding(14, 14)), np.asarray(pos))
  model.pos_embed[...] = jnp.ones_like(pos) * jnp.arange(pos.shape[-1], dtype=jnp.float32)
  resized = np.asarray(model.position_embedding(3, 5))
  assert resized.shape == (1, 1 + 15, pos.shape[-1])
  np.testing.assert_allclose(resized, np.broadcast_to(np.arange(pos.shape[-1]), resized.shape), atol=1e-4)


def test_bf16_transformer_keeps_float32_params_and_logits():
  model, x = tiny("deit_tiny", dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  logits, feats = model(x, False, return_features=True)
  assert logits.dtype == jnp.float32 and feats["stage2"].dtype == jnp.bfloat16


def test_shifted_window_mask_separates_wrapped_regions():
  mask = shifted_window_mask(8, 8, 4, 2)
  assert mask.shape == (4, 16, 16)
  assert np.all(mask[0] == 0), "the top-left window holds a single region"
  assert np.count_nonzero(mask[3] == 0) == 4 * 4 * 4, "bottom-right window: four 2x2 regions"


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_receptive_field(shift):
  """Perturbing the token at (0, 0) may only change outputs that share its (shifted) window region."""
  attn = WindowAttention(4, 1, 4, dtype=jnp.float32, rngs=fast_rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4))
  delta = np.abs(np.asarray(attn(x.at[0, 0, 0].add(3.0), 4, shift) - attn(x, 4, shift)))[0].max(-1)
  changed = delta > 1e-5
  expected = np.zeros((8, 8), bool)
  if shift:
    expected[:2, :2] = True  # after the cyclic roll (0, 0) shares a window region only with these
  else:
    expected[:4, :4] = True
  np.testing.assert_array_equal(changed, expected)


@pytest.mark.parametrize("init", ["trunc_normal", "torch_default"])
def test_transformer_init_schemes(init):
  """timm init: Linear std 0.02 and trunc-normal tokens; the reference's effective init (its initialiser never
  runs for DeiT-S/Swin-T mixup configs): PyTorch-default Linear and zero class/position tokens."""
  model, _ = tiny("deit_tiny", init=init)
  fc1 = np.asarray(model.blocks[0].mlp.fc1.kernel[...])  # 32 -> 128
  bias = np.asarray(model.blocks[0].mlp.fc1.bias[...])
  pos = np.asarray(model.pos_embed[...])
  if init == "trunc_normal":
    assert abs(fc1.std() / 0.02 - 1) < 0.08
    assert np.all(bias == 0) and abs(pos.std() / 0.02 - 1) < 0.08
  else:
    bound = 1 / np.sqrt(32)
    assert np.abs(fc1).max() <= bound and np.abs(fc1).max() > 0.95 * bound
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0
    assert np.all(pos == 0) and np.all(np.asarray(model.cls_token[...]) == 0)
  with pytest.raises(ValueError, match="torch_default"):
    tiny("swin_tiny", init="xavier")


@pytest.mark.parametrize("shift", [0, 1])
def test_swin_received_attention_is_each_tokens_weight_in_the_outputs(shift):
  """With values = one-hot position codes and identity projections, output q of the window attention *is* row q
  of the attention matrix (in the un-rolled frame), so the received attention must equal the sum of the
  outputs over the valid queries: this checks the window partition, the roll and the padding mask together."""
  hp = wp = 4
  dim = hp * wp  # one channel per (padded) position
  attn = WindowAttention(dim, 1, 2, dtype=jnp.float32, rngs=fast_rngs(0))
  kernel = np.asarray(attn.qkv.kernel[...]).copy()
  kernel[:, 2 * dim :] = np.eye(dim)  # v = x
  attn.qkv.kernel[...] = jnp.asarray(kernel * np.r_[np.full(2 * dim, 40.0), np.ones(dim)])  # peaky q·k
  attn.proj.kernel[...] = jnp.eye(dim)
  x = np.eye(dim, dtype=np.float32).reshape(1, hp, wp, dim)
  x[:, 3, :] = 0.0  # a padded row (zero tokens, as SwinBlock pads)
  x[:, :, 3] = 0.0
  valid = np.zeros((hp, wp), bool)
  valid[:3, :3] = True
  out, received = attn(jnp.asarray(x), 2, shift, valid)
  out = np.asarray(out)[0].reshape(hp * wp, dim)  # [query position, value code]
  expected = out[valid.reshape(-1)].sum(0).reshape(hp, wp)
  got = np.asarray(received)[0, 0]
  np.testing.assert_allclose(got[:3, :3], expected[:3, :3], rtol=1e-5, atol=1e-6)
  assert got[valid].sum() <= 9.0 + 1e-4 and got[valid].min() > 0


def test_swin_pooled_token_attention_map():
  model, x = tiny("swin_tiny")
  _, feats = model(x, False, return_attention=True)
  attn = np.asarray(feats["attention"])
  gh, gw, _ = model.feature_shapes(*x.shape[1:3])["stage4"]
  assert attn.shape == (2, model.stages[-1][-1].attn.num_heads, gh * gw) and attn.dtype == np.float32
  # The last map fits one window (no padding): every query's row sums to 1, so their mean does.
  np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
  assert model.attention_stride == 32
  _, other = model(x[::-1], False, return_attention=True)
  np.testing.assert_allclose(np.asarray(other["attention"]), attn[::-1], rtol=1e-5, atol=1e-6)
