"""Model-aware methods (issue 6): ManifoldMix, AlignMix, AttentiveMix+, TransMix, TokenMix — properties of
their kernels, and each trains the demo config end to end inside the jitted, sharded step."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from mixjax import checkpoint, losses, mixing, models, train
from mixjax.config_args import ConfigError
from mixjax.mixing.core import per_device
from mixjax.mixing.model_aware import alignmix, attentivemix, manifoldmix, tokenmix, transmix
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.ops.model_info import require_attention
from mixjax.mixing.ops.sampling import sample_beta_lam
from mixjax.mixing.ops.sinkhorn import sinkhorn_plan
from mixjax.sharding import make_mesh
from mixjax.train_state import make_init_fn, model_fn_and_shapes
from mixjax.visualize import pictures
from mixjax.visualize.stand_ins import small_cnn, small_vit
from tests.helpers import demo_config as load_demo_config
from tests.mixing.conftest import constant_batch, recover_pixel_weight


# A tiny DeiT for the ViT-only methods on the 32 px demo (8x8 patch grid of 4 px patches).
TINY_VIT = dict(name="deit_tiny", patch_size=4, img_size=32, depth=4, embed_dim=32, num_heads=2)


def demo_config(method, **args):
  config = load_demo_config(method)
  config.max_steps = 2
  config.batch_size = 32
  config.log_mixed_samples = 0
  for key, value in args.items():
    config.mixing.args[method][key] = value
  return config


E2E = {
  "manifoldmix": {},
  "alignmix": {"max_iter": 5},
  "puzzlemix": {},
  "transmix": {},
  "tokenmix": {},
}


@pytest.mark.parametrize("method", sorted(E2E))
def test_method_trains_demo_end_to_end(method, tmp_path):
  config = demo_config(method, **E2E[method])
  if method in ("transmix", "tokenmix"):
    config.model = TINY_VIT
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["status"] == "completed"
  (entry,) = results["history"]
  assert entry["step"] == 2 and math.isfinite(entry["loss"])


def test_attentivemix_trains_with_an_extractor_from_one_of_our_runs(tmp_path):
  """The extractor comes from an Orbax checkpoint of a (vanilla) demo run; its weights land in state.aux."""
  pretrain = demo_config("vanilla")
  pretrain.max_steps = 1
  train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))
  config = demo_config("attentivemix", extractor_checkpoint=str(tmp_path / "pretrain"), feat_size=32)
  hp = mixing.resolve_mixing_config(config.mixing).modes[0].hyper_parameters
  reader = mixing.CheckpointReader(run_config=checkpoint.read_run_config, weights=checkpoint.read_run_weights)
  params, _ = attentivemix.load_extractor_weights(hp, checkpoints=reader)
  kernel = np.asarray(params["stem_conv"]["kernel"])
  assert kernel.shape[-1] == 8  # the pretrained run's width-8 ResNet-18, from its config
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["status"] == "completed" and math.isfinite(results["history"][-1]["loss"])


# ---------------------------------------------------------------- AlignMix


def test_sinkhorn_plan_has_uniform_marginals():
  rng = np.random.default_rng(0)
  cost = jnp.asarray(rng.random((3, 9, 9)).astype(np.float32))
  plan, iters = jax.jit(lambda c: sinkhorn_plan(c, eps=0.1, max_iter=500, tol=1e-6))(cost)
  plan = np.asarray(plan)
  np.testing.assert_allclose(plan.sum(1), 1 / 9, rtol=1e-4)  # columns (updated last): exact
  np.testing.assert_allclose(plan.sum(2), 1 / 9, rtol=1e-3)  # rows: within the tolerance
  assert 1 < int(iters) < 500
  # a sharper ε concentrates the plan on cheap pairs: transport cost approaches the assignment optimum
  assert np.all(np.sum(plan * np.asarray(cost), axis=(1, 2)) < np.asarray(cost).mean(axis=(1, 2)))


def test_alignment_undoes_a_spatial_shuffle():
  """If F_b is F_a with its positions shuffled, aligning F_b back onto F_a recovers F_a exactly (any λ)."""
  rng = np.random.default_rng(1)
  fa = rng.normal(size=(2, 3, 3, 16)).astype(np.float32)
  shuffle = rng.permutation(9)
  fb = fa.reshape(2, 9, 16)[:, shuffle].reshape(2, 3, 3, 16)
  fn = jax.jit(lambda a, b, flip: alignmix.align_and_mix(a, b, 0.3, flip, eps=0.1, max_iter=100))
  np.testing.assert_allclose(np.asarray(fn(fa, fb, False)), fa, atol=1e-3)  # λ·F_a + (1−λ)·F̃_b = F_a
  np.testing.assert_allclose(np.asarray(fn(fa, fb, True)), fb, atol=1e-3)  # λ·F̃_a + (1−λ)·F_b = F_b


def test_alignmix_refuses_models_without_last_stage_mixing():
  config = demo_config("alignmix")
  config.model = TINY_VIT
  with pytest.raises(ValueError, match="resnet18"):
    alignmix.AlignMix()._last_stage(config.model)


# ---------------------------------------------------------------- ManifoldMix


def test_hidden_feature_mix_pairs_within_each_device(four_device_mesh):
  h = jnp.arange(16, dtype=jnp.float32)[:, None, None, None] * jnp.ones((16, 2, 2, 3))
  rng = jax.random.key(3)
  mixed = jax.jit(lambda x: manifoldmix.feature_mix_fn(four_device_mesh, rng, jnp.float32(0.25))(x))(h)
  partner = jax.jit(lambda y: per_device.partner_labels(four_device_mesh, rng, y))(jnp.arange(16.0)[:, None])
  partner = np.asarray(partner)[:, 0]
  assert np.all(partner // 4 == np.arange(16) // 4)
  np.testing.assert_allclose(np.asarray(mixed)[:, 0, 0, 0], 0.25 * np.arange(16) + 0.75 * partner, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_permute_rows_gradient_is_the_inverse_gather_without_a_scatter(dtype):
  """The partner's cotangent goes back through argsort(π) (the transpose of a permutation), equal to JAX's own
  scatter-add gradient, and the compiled backward holds no scatter (ManifoldMix's bf16 memory, issue 14)."""
  x = jax.random.normal(jax.random.key(0), (8, 3, 3, 4)).astype(dtype)
  g = jax.random.normal(jax.random.key(1), (8, 3, 3, 4)).astype(dtype)
  perm = jax.random.permutation(jax.random.key(2), 8)
  ours = jax.jit(lambda x: jax.vjp(lambda y: per_device.permute_rows(y, perm), x)[1](g)[0])
  plain = jax.jit(lambda x: jax.vjp(lambda y: y[perm], x)[1](g)[0])
  np.testing.assert_array_equal(np.asarray(per_device.permute_rows(x, perm)), np.asarray(x[perm]))
  np.testing.assert_array_equal(np.asarray(ours(x), np.float32), np.asarray(plain(x), np.float32))
  assert np.asarray(ours(x), np.float32)[perm[0]].tolist() == np.asarray(g, np.float32)[0].tolist()
  assert "scatter" in plain.lower(x).as_text() and "scatter" not in ours.lower(x).as_text()


def test_staged_feature_mix_is_exact_identity_away_from_the_chosen_stage(four_device_mesh):
  """The one-forward hook: at the chosen stage it is the per-device mix (value and VJP); elsewhere it returns h
  and passes the cotangent through bit for bit (λ = 1: 1·h + 0·h[π])."""
  rng = jax.random.key(3)
  h = jax.random.normal(jax.random.key(0), (16, 2, 2, 3))
  g = jax.random.normal(jax.random.key(1), (16, 2, 2, 3))
  lam = jnp.float32(0.25)

  def value_and_cotangent(fn):
    out, pull = jax.vjp(fn, h)
    return out, pull(g)[0]

  @functools.partial(jax.jit, static_argnums=0)
  def vjp(stage, chosen):
    fn = manifoldmix.staged_feature_mix_fn(four_device_mesh, rng, lam, chosen)
    return value_and_cotangent(lambda x: fn(x, stage))

  plain_out, plain_ct = jax.jit(lambda: value_and_cotangent(manifoldmix.feature_mix_fn(four_device_mesh, rng, lam)))()
  out, ct = vjp(1, jnp.int32(1))
  np.testing.assert_allclose(np.asarray(out), np.asarray(plain_out), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ct), np.asarray(plain_ct), rtol=1e-6)
  out, ct = vjp(2, jnp.int32(1))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(h))
  np.testing.assert_array_equal(np.asarray(ct), np.asarray(g))


def test_manifoldmix_layer_errors_name_valid_models():
  config = demo_config("manifoldmix")
  assert manifoldmix.manifold_layers(config.model, (0, 3)) == (0, 1, 2)
  config.model = TINY_VIT
  with pytest.raises(ValueError, match="mix_stages.*resnet18"):
    manifoldmix.manifold_layers(config.model, (0, 3))


def _small_ctx(classes=10):
  """A width-8 ResNet-18 on 16 px images, batch 16 over the train step's kind of mesh (4 devices, Auto axes)."""
  if jax.device_count() < 4:
    pytest.skip("needs 4 (fake) devices; run through tests/conftest.py")
  mesh = make_mesh(jax.devices()[:4])

  c = ml_collections.ConfigDict(dict(seed=0, compute_dtype="float32"))
  c.model = ml_collections.ConfigDict(dict(name="resnet18", width=8, stem="cifar"))
  model_fn, _, _ = model_fn_and_shapes(c, classes)
  state = jax.jit(make_init_fn(c, classes, optax.sgd(0.1)))()
  ctx = mixing.StepContext(
    mesh=mesh,
    model_fn=model_fn,
    model=c.model,
    num_classes=classes,
    compute_dtype=jnp.float32,
    classification_loss=lambda lg, mix: jnp.mean(losses.soft_cross_entropy(lg, mix.targets)),
    steps_per_epoch=10,
    total_steps=10,
  )
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(16, 16, 16, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, classes, 16)), classes)
  return ctx, state, images, labels


def _switch_reference(ctx, params, stats, images, labels, k_perm, k_drop, lam, index, branches):
  """The former implementation: ``lax.switch`` over one model call per (stage, mix fn) branch."""
  calls = [
    (lambda s=s, f=f: ctx.model_fn(params, stats, images, train=True, rng=k_drop, mix_stage=s, mix_fn=f))
    for s, f in branches
  ]
  logits, new_stats = jax.lax.switch(index, calls)
  mix = MixResult(
    images=images,
    labels_a=labels,
    labels_b=per_device.partner_labels(ctx.mesh, k_perm, labels),
    lam=jnp.broadcast_to(lam, (labels.shape[0],)),
  )
  return ctx.classification_loss(logits, mix), new_stats


def _assert_same_forward(method, reference, ctx, state, images, labels, keys, hp):
  """Loss and BN statistics of ``method.loss`` equal ``reference``'s for every key (forward only: compiling the
  backward of a three-model switch takes minutes here; the hook's gradient is checked on its own below)."""

  def ours(params, key):
    loss, (_, stats, _) = method.loss(ctx, key, params, state.batch_stats, {}, images, labels, alpha=1.0, hp=hp)
    return loss, stats

  ours = jax.jit(ours)
  ref = jax.jit(lambda p, k: reference(p, state.batch_stats, k))
  for key in keys:
    loss, stats = ours(state.params, key)
    want, want_stats = ref(state.params, key)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(close, stats, want_stats)


def test_manifoldmix_one_forward_equals_the_switch_over_stages():
  """One model call over the candidate stages gives the former per-stage ``lax.switch``'s loss and BN
  statistics, for a key of each stage (same λ, π and stage draw), pairing per device under shard_map."""
  ctx, state, images, labels = _small_ctx()
  method = mixing.get_method("manifoldmix").fn
  hp = method.hyper_parameters()
  stages = manifoldmix.manifold_layers(ctx.model, hp.layer)

  def reference(params, stats, rng):
    k_lam, k_perm, k_layer, k_drop = jax.random.split(rng, 4)
    lam = sample_beta_lam(k_lam, 1.0)
    index = jax.random.randint(k_layer, (), 0, len(stages))
    fn = manifoldmix.feature_mix_fn(ctx.mesh, k_perm, lam)
    return _switch_reference(ctx, params, stats, images, labels, k_perm, k_drop, lam, index, [(s, fn) for s in stages])

  keys, seen = [], set()
  for i in range(50):  # one key per stage
    key = jax.random.key(i)
    stage = stages[int(jax.random.randint(jax.random.split(key, 4)[2], (), 0, len(stages)))]
    if stage not in seen:
      seen.add(stage)
      keys.append(key)
  assert seen == set(stages)
  _assert_same_forward(method, reference, ctx, state, images, labels, keys, hp)


def test_alignmix_with_manifold_draw_equals_the_switch_over_branches():
  """AlignMix with ``manifoldmix_prob``: one model call (plain blends + the aligned mix under ``lax.cond``)
  equals the former switch over (manifold stages..., aligned last stage), for keys drawing each branch."""
  ctx, state, images, labels = _small_ctx()
  method = mixing.get_method("alignmix").fn
  hp = method.hyper_parameters(manifoldmix_prob=0.5, max_iter=5)
  manifold = manifoldmix.manifold_layers(ctx.model, hp.manifoldmix_layer, "alignmix")
  last = method._last_stage(ctx.model)

  def draw(rng):
    k_lam, k_perm, k_flip, k_mode, k_layer, k_drop = jax.random.split(rng, 6)
    index = jnp.where(
      jax.random.uniform(k_mode) < 0.5, jax.random.randint(k_layer, (), 0, len(manifold)), len(manifold)
    )
    return sample_beta_lam(k_lam, 1.0), k_perm, jax.random.bernoulli(k_flip), index, k_drop

  def reference(params, stats, rng):
    lam, k_perm, flip, index, k_drop = draw(rng)
    plain = manifoldmix.feature_mix_fn(ctx.mesh, k_perm, lam)
    align = alignmix.alignmix_fn(ctx.mesh, k_perm, lam, flip, eps=0.1, max_iter=5)
    branches = [(s, plain) for s in manifold] + [(last, align)]
    return _switch_reference(ctx, params, stats, images, labels, k_perm, k_drop, lam, index, branches)

  keys, seen = [], set()
  for i in range(100):
    key = jax.random.key(i)
    index = int(draw(key)[3])
    if index not in seen:
      seen.add(index)
      keys.append(key)
  assert seen == set(range(len(manifold) + 1))
  _assert_same_forward(method, reference, ctx, state, images, labels, keys, hp)


# ---------------------------------------------------------------- AttentiveMix+


def test_attentive_mask_keeps_each_samples_top_cells():
  rng = np.random.default_rng(2)
  grid = jnp.asarray(rng.random((4, 7, 7)).astype(np.float32))
  mask = np.asarray(attentivemix.attentive_mask(grid, 6, 28, 28))
  cells = mask[:, ::4, ::4]
  for n in range(4):
    top = np.argsort(-np.asarray(grid[n]).reshape(-1))[:6]
    expected = np.zeros(49)
    expected[top] = 1
    np.testing.assert_array_equal(cells[n].reshape(-1), expected)
  np.testing.assert_allclose(mask.mean((1, 2)), 6 / 49)


def test_attentivemix_label_weight_equals_kept_area():
  images, labels = constant_batch(8, size=28)
  grid = jax.random.uniform(jax.random.key(0), (8, 7, 7))
  mixed, lam, labels_b = attentivemix.attentive_mix_local(
    jax.random.key(1), jnp.float32(0.4), images, grid, labels, top_k_fixed=0
  )
  weight, self_pair = recover_pixel_weight(MixResult(mixed, labels, labels_b, lam))
  np.testing.assert_allclose(np.asarray(lam), int(49 * 0.4) / 49, rtol=1e-6)
  np.testing.assert_allclose(np.nanmean(weight[~self_pair], axis=(1, 2)), np.asarray(lam)[~self_pair], rtol=1e-6)


def test_attentivemix_without_checkpoint_is_a_clear_error():
  hp = attentivemix.AttentiveMix().hyper_parameters()
  with pytest.raises(ValueError, match="extractor_checkpoint"):
    attentivemix.check_extractor_configured(hp)


def test_attentivemix_loads_a_torch_layout_state_dict(tmp_path):
  """A torchvision-named state_dict (.npz) round-trips into the extractor's params."""
  hp = attentivemix.AttentiveMix.Params(extractor_kwargs={"stem": "cifar", "width": 8}, extractor_num_classes=10)
  src = models.build_model("resnet18", num_classes=10, rngs=nnx.Rngs(5), stem="cifar", width=8)
  params = nnx.to_pure_dict(nnx.state(src, nnx.Param))
  state_dict = {"conv1.weight": np.transpose(np.asarray(params["stem_conv"]["kernel"]), (3, 2, 0, 1))}
  path = tmp_path / "r18.npz"
  np.savez(path, **state_dict)
  got, _ = attentivemix.load_extractor_weights(dataclasses.replace(hp, extractor_checkpoint=str(path)))
  np.testing.assert_array_equal(np.asarray(got["stem_conv"]["kernel"]), np.asarray(params["stem_conv"]["kernel"]))


# ---------------------------------------------------------------- TransMix


def test_transmix_lambda_is_half_area_half_attention_outside_the_box():
  fn, params, stats = small_vit(8, 28)  # patch 2, 14x14 grid
  images = jax.random.normal(jax.random.key(0), (8, 28, 28, 3))
  labels = jax.nn.one_hot(jnp.arange(8), 8)
  method = transmix.TransMix()
  hp = method.hyper_parameters()
  mixed, region_b, lam0, labels_b = method.draw(None, jax.random.key(4), images, labels, alpha=1.0, hp=hp)
  (_, feats), _ = fn(params, stats, mixed, train=False, return_attention=True)
  lam = np.asarray(method.reweight(lam0, region_b, feats["attention"], 0.5, 2))
  attn = np.asarray(feats["attention"]).mean(1).reshape(8, 14, 14)
  box = np.asarray(region_b)[:, ::2, ::2]
  mass_outside = (attn * ~box).sum((1, 2)) / attn.sum((1, 2))
  area = 1 - np.asarray(region_b).mean((1, 2))
  np.testing.assert_allclose(np.asarray(lam0), area, rtol=1e-6)
  np.testing.assert_allclose(lam, 0.5 * area + 0.5 * mass_outside, rtol=1e-5)
  assert 0 < box.mean() < 1


def test_attention_lam_counts_only_patches_outside_the_partner_region():
  attn = jnp.asarray([[[0.1, 0.2, 0.3, 0.4]], [[0.25, 0.25, 0.25, 0.25]]])
  partner = jnp.asarray([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(np.asarray(transmix.attention_lam(attn, partner)), [0.3, 0.75], rtol=1e-6)


def test_vit_methods_refuse_cnns_naming_vits():
  config = demo_config("transmix")
  with pytest.raises(ValueError, match="deit_tiny"):
    require_attention(config.model, "transmix")


# ---------------------------------------------------------------- TokenMix


def test_token_masks_have_the_requested_size():
  keys = jax.random.split(jax.random.key(0), 16)
  rand = np.asarray(jax.vmap(lambda k: tokenmix.random_token_mask(k, 8, 8, 20))(keys))
  np.testing.assert_array_equal(rand.sum((1, 2)), 20)
  block = np.asarray(jax.jit(jax.vmap(lambda k: tokenmix.block_token_mask(k, 14, 14, 60)))(keys))
  counts = block.sum((1, 2))
  assert counts.max() <= 60 and counts.min() >= 40 and np.mean(counts == 60) >= 0.5
  assert int(tokenmix.tokens_to_mix(jnp.float32(0.5), 196, 14)) == 98 + 14


def _paper_lam(w_a, w_b):
  return np.asarray(w_a) / np.asarray(w_a + w_b)


def test_tokenmix_pixels_follow_tokens_and_labels_follow_attention():
  images, labels = constant_batch(8, size=16)
  uniform = jnp.ones((8, 16)) / 16  # 4x4 grid of 4 px patches
  hp = tokenmix.TokenMix.Params(mask_type="random")
  mixed, w_a, w_b, labels_b, tokens = tokenmix.tokenmix_local(
    jax.random.key(2), jnp.float32(0.5), images, uniform, labels, patch=4, hp=hp
  )
  lam = _paper_lam(w_a, w_b)
  tokens = np.asarray(tokens).reshape(8, 4, 4)
  own = np.arange(8) + 1.0
  partner = np.argmax(np.asarray(labels_b), 1) + 1.0
  expected = np.where(np.repeat(np.repeat(tokens, 4, 1), 4, 2) > 0, partner[:, None, None], own[:, None, None])
  np.testing.assert_array_equal(np.asarray(mixed)[..., 0], expected)
  # uniform attention: λ is the share of tokens kept from x
  np.testing.assert_allclose(lam, 1 - tokens.mean((1, 2)), rtol=1e-6)
  peaked = jnp.zeros((8, 16)).at[:, 0].set(1.0)  # all attention on token 0
  _, w_a, w_b, _, tok_p = tokenmix.tokenmix_local(
    jax.random.key(2), jnp.float32(0.5), images, peaked, labels, patch=4, hp=hp
  )
  np.testing.assert_allclose(_paper_lam(w_a, w_b), 1 - np.asarray(tok_p)[:, 0], atol=1e-6)


def _reference_tokenmix_loss(attention, tokens, perm, logits, y_a, y_b, criterion):
  """OpenMixup's TokenMix loss (spec 2.17, its heads' 4-tuple path) in numpy: head-mean class-token attention a,
  w_a = Σ mask·a_x, w_b = Σ (1−mask)·a_π(x) (mask 1 where the partner was pasted, no normalisation), loss
  mean_i(L̄_a·w_a,i + L̄_b·w_b,i) with L̄ the batch-mean criterion against y_a / y_b."""
  a = np.asarray(attention, np.float64).mean(1)
  w_a = (tokens * a).sum(1)
  w_b = ((1 - tokens) * a[perm]).sum(1)
  return np.mean(criterion(logits, y_a).mean() * w_a + criterion(logits, y_b).mean() * w_b), w_a, w_b


def _np_soft_ce(logits, targets):
  z = logits - logits.max(1, keepdims=True)
  return -(targets * (z - np.log(np.exp(z).sum(1, keepdims=True)))).sum(1)


def _np_bce_sum(logits, targets):
  p = 1 / (1 + np.exp(-logits))
  return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(1)


def test_tokenmix_openmixup_label_rule_equals_the_reference_loss():
  """label_rule='openmixup': the scaled loss on the MixResult equals the reference's 4-tuple loss with its
  inverted, unnormalised attention weights (soft CE with label smoothing, and summed BCE), on a small attention
  map whose class-token rows leave mass on the class token (patch attention sums to < 1)."""
  b, heads, classes, grid = 8, 2, 10, 4
  rng = np.random.default_rng(0)
  images, _ = constant_batch(b, size=grid * 4)
  smooth = 0.1
  hard = np.eye(classes, dtype=np.float32)[np.arange(b)]
  labels = jnp.asarray(hard * (1 - smooth) + smooth / classes)
  raw = rng.random((b, heads, grid * grid + 1))
  attention = jnp.asarray((raw / raw.sum(-1, keepdims=True))[..., 1:], jnp.float32)  # cls row without cls→cls
  logits = rng.normal(size=(b, classes)).astype(np.float32)
  method = tokenmix.TokenMix()
  hp = method.hyper_parameters(label_rule="openmixup", mask_type="random")
  draw = jax.jit(
    lambda r, h: method.mix(None, r, images, labels, attention, alpha=1.0, hp=h, patch=4), static_argnums=1
  )
  mix, tokens, scale = draw(jax.random.key(3), hp)
  tokens = np.asarray(tokens)
  perm = np.argmax(np.asarray(mix.labels_b), 1)
  assert 0 < tokens.mean() < 1 and np.any(perm != np.arange(b))
  # pixels: the partner's where its tokens were pasted
  pixels = np.repeat(np.repeat(tokens.reshape(b, grid, grid), 4, 1), 4, 2)
  np.testing.assert_array_equal(
    np.asarray(mix.images)[..., 0], np.where(pixels > 0, perm[:, None, None] + 1.0, np.arange(b)[:, None, None] + 1.0)
  )
  for ours_loss, criterion in ((losses.soft_cross_entropy, _np_soft_ce), (losses.binary_cross_entropy, _np_bce_sum)):
    want, w_a, w_b = _reference_tokenmix_loss(
      attention,
      tokens,
      perm,
      logits.astype(np.float64),
      np.asarray(labels)[np.arange(b)],
      np.asarray(labels)[perm],
      criterion,
    )
    got = float(scale) * float(jnp.mean(ours_loss(jnp.asarray(logits), mix.targets)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(float(scale), w_a.mean() + w_b.mean(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(mix.lam), w_a.mean() / (w_a.mean() + w_b.mean()), rtol=1e-5)
  # the paper's rule on the same draw: kept attention of x vs pasted attention of the partner, normalised, scale 1
  paper, paper_tokens, paper_scale = draw(jax.random.key(3), dataclasses.replace(hp, label_rule="paper"))
  np.testing.assert_array_equal(np.asarray(paper_tokens), tokens)
  a = np.asarray(attention, np.float64).mean(1)
  a = a / a.sum(1, keepdims=True)
  kept, pasted = ((1 - tokens) * a).sum(1), (tokens * a[perm]).sum(1)
  np.testing.assert_allclose(np.asarray(paper.lam), kept / (kept + pasted), rtol=1e-5)
  assert float(paper_scale) == 1.0


# ---------------------------------------------------------------- pictures


@pytest.mark.parametrize("method", ["manifoldmix", "puzzlemix", "attentivemix", "alignmix", "transmix", "tokenmix"])
def test_picture_gives_a_consistent_mix(method):
  """Each method's registered picture (``mixjax.visualize.pictures``) on its typed default hyper-parameters."""
  step = mixing.get_method(method).step
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  overrides = {"feat_size": 32, "extractor_kwargs": {"stem": "cifar", "width": 8}} if method == "attentivemix" else {}
  hp = step.hyper_parameters(overrides)
  result = pictures.picture_for(method).build(step, images, labels, alpha=1.0, hp=hp)(jax.random.key(1))
  assert result.images.shape[0] == 4 and np.all(np.isfinite(np.asarray(result.images)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-5)


def test_attentivemix_extractor_bn_train_uses_the_batch_statistics():
  """'train' (the reference's extractor, the table cells) makes a sample's attention depend on its batch; 'eval'
  (pretrained running statistics) does not."""
  fn, params, stats = small_cnn(10)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  other = images.at[1:].set(jax.random.normal(jax.random.key(1), (3, 32, 32, 3)) * 3 + 2)
  for batch_statistics, changes in ((False, False), (True, True)):
    a = attentivemix.attention_grid(fn, params, stats, images, 32, batch_statistics=batch_statistics)[0]
    b = attentivemix.attention_grid(fn, params, stats, other, 32, batch_statistics=batch_statistics)[0]
    assert (float(jnp.max(jnp.abs(a - b))) > 1e-4) == changes
  with pytest.raises(ConfigError, match="attentivemix.extractor_bn must be 'eval' or 'train'"):
    attentivemix.AttentiveMix().hyper_parameters(extractor_bn="frozen", allow_random_extractor=True)


# ---------------------------------------------------------------- which backbones a method accepts


@pytest.mark.parametrize("name", ["deit_tiny", "deit_small", "pvt_tiny", "swin_tiny"])
def test_attention_maps_tile_the_image_at_the_models_stride(name):
  """TransMix/TokenMix map pixels to attention tokens with ``model_info(...).patch_size``: every transformer
  with an attention map must give one, and the map's grid times it must be the image (224 px: 14×14 for DeiT,
  7×7 for PVT's and Swin's last stage)."""
  info = require_attention(ml_collections.ConfigDict({"name": name}), "transmix")
  forward = lambda x: models.build_model(name, num_classes=3, rngs=nnx.Rngs(0))(x, False, return_attention=True)  # noqa: E731
  _, feats = jax.eval_shape(forward, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert feats["attention"].shape[-1] * info.patch_size**2 == 224 * 224


@pytest.mark.parametrize(
  ("name", "numerics"), [("pvt_tiny", {"drop_path_rate": 0.3}), ("resnet18", {"bn_group_size": 4})]
)
def test_model_facts_ignore_numerics_only_arguments_and_share_one_probe(name, numerics):
  """The probe behind ``model_info`` skips keyword arguments that only set numerics (the cells of a table differ
  in them), so it must be true that they change none of the facts: built with them, the model gives the same."""
  from mixjax.mixing.ops import model_info as info_module

  plain = info_module.model_info(ml_collections.ConfigDict({"name": name}))
  misses = info_module._probe.cache_info().misses
  assert info_module.model_info(ml_collections.ConfigDict({"name": name, **numerics})) == plain
  assert info_module._probe.cache_info().misses == misses  # no second abstract build
  built = nnx.eval_shape(lambda: models.build_model(name, num_classes=2, rngs=nnx.Rngs(0), **numerics))
  assert (tuple(built.mix_stages), len(built.stage_names), built.supports_attention, built.attention_stride) == (
    plain.mix_stages,
    plain.num_stages,
    plain.supports_attention,
    plain.patch_size,
  )


@pytest.mark.parametrize(
  ("method", "model", "accepted"),
  [
    ("manifoldmix", "deit_tiny", False),  # a ViT mixes only its input ("-" in the DeiT table)
    ("manifoldmix", "swin_tiny", True),
    ("transmix", "convnext_tiny", False),
    ("tokenmix", "swin_tiny", True),
    ("alignmix", "deit_small", False),
    ("mixup", "deit_tiny", True),
  ],
)
def test_config_check_refuses_a_backbone_the_method_cannot_use(method, model, accepted):
  """``config_check`` raises, before anything compiles, a ConfigError naming the models that would work; the
  cell list calls the same pairs not applicable."""
  from mixjax import config_check
  from mixjax.recipes import availability

  config = load_demo_config(method)
  config.model = ml_collections.ConfigDict({"name": model})
  conflicts = availability.inapplicable_parts(config)
  assert (not conflicts) == accepted
  if accepted:
    config_check.check_names(config, data_paths=False)
  else:
    with pytest.raises(ConfigError, match="Use .*(resnet18|deit_small)"):  # the models that would work
      config_check.check_names(config, data_paths=False)
