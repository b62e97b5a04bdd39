"""AutoMix / SAMix: gradient paths, momentum encoder, mask validity, schedules, exact resume."""

import dataclasses
import functools
import math
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mixjax import losses, mixing, optim
from mixjax.visualize import automix as automix_picture
from mixjax.mixing.model_aware.automix import method as am
from mixjax.mixing.model_aware.automix import schedules
from mixjax.train_state import make_init_fn, model_fn_and_shapes
from tests.helpers import demo_config

BATCH, SIZE, CLASSES = 8, 32, 10


def _ctx(name, mix_head=False, **model_kwargs):
  c = ml_collections.ConfigDict()
  c.seed, c.batch_size, c.epochs, c.compute_dtype = 0, BATCH, 1, "float32"
  c.model = ml_collections.ConfigDict(dict(name="resnet18", width=8, stem="cifar", mix_head=mix_head, **model_kwargs))
  c.optimizer = optim.default_optimizer_config()
  c.ema = ml_collections.ConfigDict(dict(decay=0.0))
  model_fn, abstract, _ = model_fn_and_shapes(c, CLASSES)
  ctx = mixing.StepContext(
    mesh=None,
    model_fn=model_fn,
    model=c.model,
    num_classes=CLASSES,
    compute_dtype=jnp.float32,
    classification_loss=lambda lg, mix: jnp.mean(losses.soft_cross_entropy(lg, mix.targets)),
    steps_per_epoch=100,
    total_steps=100,
    seed=c.seed,
    make_optimizer=functools.partial(
      optim.derived_optimizer, c.optimizer, c.batch_size, steps_per_epoch=100, total_steps=100
    ),
  )
  tx = optim.make_optimizer(c.optimizer, abstract, lambda s: 0.1)
  return c, ctx, tx


@pytest.fixture(scope="module", params=["automix", "samix"])
def setup(request):
  name = request.param
  method = mixing.get_method(name).fn
  hp = method.hyper_parameters(lam_margin=0.0)  # never fall back to plain mixup: the mask path must be live
  config, ctx, tx = _ctx(name)
  init = make_init_fn(config, CLASSES, tx, init_aux=lambda r, p, s: method.init_aux(ctx, r, p, s, hp))
  state = jax.jit(init)()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, CLASSES, BATCH)), CLASSES)
  return name, method, hp, ctx, state, images, labels


def _max_abs(tree):
  return max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(tree))


def test_gradient_probe_paths_are_separate(setup):
  """Classifier loss → q only (MixBlock and encoder get exactly 0); MixBlock loss → MixBlock only."""
  _, method, hp, ctx, state, images, labels = setup
  key = jax.random.key(3)

  def with_aux(mixblock, encoder_params):
    return {**state.aux, "mixblock": mixblock, "encoder": {**state.aux["encoder"], "params": encoder_params}}

  def cls_loss(params, mixblock, encoder_params):
    return method.loss(
      ctx, key, params, state.batch_stats, with_aux(mixblock, encoder_params), images, labels, alpha=2.0, hp=hp
    )[0]

  args = (state.params, state.aux["mixblock"], state.aux["encoder"]["params"])
  g_q, g_mb, g_k = jax.jit(jax.grad(cls_loss, argnums=(0, 1, 2)))(*args)
  assert _max_abs(g_q) > 1e-4
  assert _max_abs(g_mb) == 0.0 and _max_abs(g_k) == 0.0

  def mb_total(params, mixblock, encoder_params):
    _, metrics = method.update_aux(
      ctx,
      key,
      with_aux(mixblock, encoder_params),
      params,
      state.batch_stats,
      images,
      labels,
      jnp.int32(5),
      alpha=2.0,
      hp=hp,
    )
    return metrics["mixblock_total"]

  g_q, g_mb, g_k = jax.jit(jax.grad(mb_total, argnums=(0, 1, 2)))(*args)
  assert _max_abs(g_q) == 0.0 and _max_abs(g_k) == 0.0
  # Every MixBlock parameter tensor is reached by the MixBlock loss.
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_mb))


def test_ordered_step_equals_the_plain_composition(setup):
  """Classifier loss, its gradient, the BN statistics, the SGD update and ``update_aux`` (MixBlock step, EMA,
  encoder statistics) of the memory-ordered step equal those of the plain composition, to float rounding."""
  _, method, hp, ctx, state, images, labels = setup
  tx = optax.sgd(0.1, momentum=0.9)

  def make_step():  # a fresh function per program: jax caches traces per function object
    def step(params, batch_stats, aux):
      def loss(p):
        return method.loss(ctx, jax.random.key(5), p, batch_stats, aux, images, labels, alpha=2.0, hp=hp)

      (value, (_, stats, metrics)), grads = jax.value_and_grad(loss, has_aux=True)(params)
      updates, _ = tx.update(grads, tx.init(params), params)
      new_params = optax.apply_updates(params, updates)
      new_aux, aux_metrics = method.update_aux(
        ctx, jax.random.key(6), aux, new_params, stats, images, labels, jnp.int32(5), alpha=2.0, hp=hp
      )
      return value, grads, new_params, stats, new_aux, {**metrics, **aux_metrics}

    return step

  args = (state.params, state.batch_stats, state.aux)
  got = jax.jit(make_step())(*args)
  ordered = str(jax.make_jaxpr(make_step())(*args))
  # The plain composition: both classifier passes differentiated in one backward (no gradient taken early),
  # no ordering dependencies (``sequenced`` returns its input exactly).
  with (
    mock.patch.object(am, "value_with_early_grad", lambda fn, params, *a: fn(params, *a)),
    mock.patch.object(am, "sequenced", lambda x, after: x),
  ):
    want = jax.jit(make_step())(*args)
    plain = str(jax.make_jaxpr(make_step())(*args))
  assert ordered.count("is_finite") > plain.count("is_finite")  # the two really are different programs
  assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-6)
  assert _max_abs(got[1]) > 1e-4
  for name, a, b in zip(("grads", "params", "stats", "aux", "metrics"), got[1:], want[1:]):
    jax.tree.map(
      lambda x, y, name=name: np.testing.assert_allclose(
        np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6, err_msg=name
      ),
      a,
      b,
    )


def test_update_aux_moves_mixblock_and_ema_is_exact(setup):
  _, method, hp, ctx, state, images, labels = setup
  step = jnp.int32(60)  # past the constant scope (0.1·T): cosine part of the momentum schedule
  new_params = jax.tree.map(lambda p: p + 0.01, state.params)
  aux, metrics = jax.jit(
    lambda a, p: method.update_aux(
      ctx, jax.random.key(1), a, p, state.batch_stats, images, labels, step, alpha=2.0, hp=hp
    )
  )(state.aux, new_params)
  m = 0.99999 - (0.99999 - 0.999) * 0.5 * (1 + math.cos(math.pi * 0.6))
  np.testing.assert_allclose(float(metrics["encoder_momentum"]), m, rtol=1e-6)
  m = np.float32(metrics["encoder_momentum"])
  jax.tree.map(
    lambda k, k0, q: np.testing.assert_allclose(
      np.asarray(k), m * np.asarray(k0) + (1 - m) * np.asarray(q), rtol=1e-6, atol=1e-7
    ),
    aux["encoder"]["params"],
    state.aux["encoder"]["params"],
    new_params,
  )
  # The encoder moved towards q, the MixBlock took an optimizer step, encoder BN statistics were updated.
  assert _max_abs(jax.tree.map(jnp.subtract, aux["encoder"]["params"], state.aux["encoder"]["params"])) > 0
  assert _max_abs(jax.tree.map(jnp.subtract, aux["mixblock"], state.aux["mixblock"])) > 0
  assert _max_abs(jax.tree.map(jnp.subtract, aux["encoder"]["batch_stats"], state.aux["encoder"]["batch_stats"])) > 0


@pytest.mark.parametrize("name", ["automix", "samix"])
def test_a_backbone_with_drop_path_trains_and_the_encoder_drops_paths(name):
  """RSB-A2's ResNet-50 (drop path 0.05) and the DeiT recipe's transformers (0.1/0.2): the momentum encoder's
  train-mode feature pass must get a key (its cells stopped at the first step: "drop_path ... needs rngs"), and,
  as the reference's encoder in train mode, drop paths: two keys give two feature maps."""
  method = mixing.get_method(name).fn
  hp = method.hyper_parameters(lam_margin=0.0)
  config, ctx, tx = _ctx(name, drop_path_rate=0.5)
  init = make_init_fn(config, CLASSES, tx, init_aux=lambda r, p, s: method.init_aux(ctx, r, p, s, hp))
  state = jax.jit(init)()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, CLASSES, BATCH)), CLASSES)
  loss, _ = jax.jit(
    lambda k: method.loss(ctx, k, state.params, state.batch_stats, state.aux, images, labels, alpha=2.0, hp=hp)
  )(jax.random.key(0))
  aux, _ = jax.jit(
    lambda k: method.update_aux(
      ctx, k, state.aux, state.params, state.batch_stats, images, labels, jnp.int32(1), alpha=2.0, hp=hp
    )
  )(jax.random.key(1))
  assert np.isfinite(float(loss)) and _max_abs(jax.tree.map(jnp.subtract, aux["mixblock"], state.aux["mixblock"])) > 0
  features = jax.jit(lambda k: am.feature_map(ctx, state.params, state.batch_stats, images, "stage3", k)[0])
  assert _max_abs(features(jax.random.key(2)) - features(jax.random.key(3))) > 1e-3


def test_masks_are_valid_and_label_weights_match(setup):
  name, method, hp, ctx, state, images, labels = setup
  shards = 2
  if jax.device_count() < shards:
    pytest.skip("needs 2 (fake) devices; run through tests/conftest.py")
  mesh = jax.make_mesh((shards,), ("data",), devices=jax.devices()[:shards])
  lam, perm = am.draw_pairing(jax.random.key(7), 2.0, BATCH, shards)
  feats, _ = am.feature_map(ctx, state.params, state.batch_stats, images, "stage3", jax.random.key(9))
  mask = jax.jit(
    lambda f: am.partner_mask(
      state.aux["mixblock"], f, lam, perm, mesh, (SIZE, SIZE), am.design_of(hp), jax.random.key(8)
    )
  )(feats)
  assert mask.shape == (BATCH, SIZE, SIZE)
  assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0 and float(mask.std()) > 0
  partner = np.asarray(jax.jit(lambda x: am.partner_rows(mesh, perm, x))(images))
  # Pairing stays inside each device's half of the batch: row d·b + i pairs with row d·b + π(i).
  local = np.asarray(perm)
  rows = (np.arange(BATCH) // (BATCH // shards)) * (BATCH // shards) + local[np.arange(BATCH) % (BATCH // shards)]
  np.testing.assert_array_equal(partner, np.asarray(images)[rows])
  for label_weight in ("lambda", "mask_mean"):
    mix = jax.jit(lambda x, y, m, lw=label_weight: am.mixed_result(x, y, m, lam, perm, mesh, lw))(images, labels, mask)
    np.testing.assert_array_equal(np.asarray(mix.labels_b), np.asarray(labels)[rows])
    # per-pixel source weights (1 − m, m) sum to one: the mixed pixel is exactly that convex combination
    w = np.asarray(mask)[..., None]
    np.testing.assert_allclose(
      np.asarray(mix.images), (1 - w) * np.asarray(images) + w * np.asarray(partner), rtol=1e-5, atol=1e-6
    )
    expected = np.full(BATCH, float(lam)) if label_weight == "lambda" else 1.0 - np.asarray(mask).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(mix.lam), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mix.targets.sum(-1)), 1.0, rtol=1e-6)
  # lam_margin fallback: a constant mask whose mean is exactly 1 − λ, so the label weight λ equals the area.
  hp_margin = dataclasses.replace(hp, lam_margin=0.5)
  _, (_, _, metrics) = method.loss(
    ctx, jax.random.key(9), state.params, state.batch_stats, state.aux, images, labels, alpha=2.0, hp=hp_margin
  )
  assert float(metrics["plain_mixup"]) == 1.0
  np.testing.assert_allclose(float(metrics["mask_mean"]), 1.0 - float(metrics["lam"]), rtol=1e-6)


def test_mask_regulariser_uses_shard_wide_mean():
  rng = np.random.default_rng(1)
  mask = rng.uniform(size=(8, 4, 4)).astype(np.float32)
  mask[:4] *= 0.2  # shard 0 mostly sample a, shard 1 uniform
  lam = 0.3
  want = []
  for shard in (mask[:4], mask[4:]):
    mean = shard.mean()  # one scalar over all samples and pixels of the shard (not per sample)
    want.append(max(abs(1 - mean - lam) - 0.1, 0) - 2.0 * np.mean((shard - mean) ** 2))
  got = am.mask_regulariser(jnp.asarray(mask), jnp.float32(lam), 2, margin=0.1, variance_weight=2.0)
  np.testing.assert_allclose(float(got), np.mean(want), rtol=1e-5)


def test_schedules():
  total = 1000
  # Encoder momentum: constant base in the first 10 %, then the cosine measured from t = 0.
  m = lambda t: float(
    schedules.encoder_momentum(
      jnp.int32(t),
      total,
      base=0.999,
      end=0.99999,  # noqa: E731
      scope_start=0.1,
    )
  )
  assert m(0) == pytest.approx(0.999) and m(99) == pytest.approx(0.999)
  assert m(100) == pytest.approx(0.99999 - (0.99999 - 0.999) * 0.5 * (1 + math.cos(math.pi * 0.1)), rel=1e-7)
  assert m(total) == pytest.approx(0.99999)
  # Mask-loss weight: plain cosine vs the reference's compounding product.
  prev = jnp.float32(0.1)
  for t in range(301):
    prev = schedules.mask_loss_weight(jnp.int32(t), prev, total, base=0.1, schedule="compounding")
  product = 0.1 * np.prod([(1 + math.cos(math.pi * s / total)) / 2 for s in range(301)])
  np.testing.assert_allclose(float(prev), product, rtol=1e-4)
  cos = float(schedules.mask_loss_weight(jnp.int32(300), prev, total, base=0.1, schedule="cosine"))
  np.testing.assert_allclose(cos, 0.1 * (1 + math.cos(math.pi * 0.3)) / 2, rtol=1e-6)
  assert float(prev) < 0.1 * cos  # compounding is far below the intended cosine
  with pytest.raises(ValueError, match="compounding"):
    schedules.mask_loss_weight(jnp.int32(0), prev, total, base=0.1, schedule="linear")


def test_picture_shows_valid_learned_masks():
  method = mixing.get_method("samix").fn
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.normal(size=(4, 64, 64, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  mix = automix_picture.mixes_fn(method, images, labels, alpha=2.0, hp=method.hyper_parameters(), steps=2)(
    jax.random.key(0)
  )
  assert mix.images.shape == images.shape and np.all(np.isfinite(np.asarray(mix.images)))
  np.testing.assert_allclose(np.asarray(mix.targets.sum(-1)), 1.0, rtol=1e-6)


def _demo_config(max_steps):
  config = demo_config("automix,epochs=1")
  config.max_steps = max_steps
  config.checkpoint_every_steps = 2
  config.data.num_shards = 2
  return config


def test_resume_continues_exactly(tmp_path):
  """Run B stops after 2 steps and resumes to 4: params, optimizer state and aux equal run A's bitwise."""
  from mixjax import train
  from tests.helpers import load_state

  a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
  train.train_and_evaluate(_demo_config(4), a_dir)
  train.train_and_evaluate(_demo_config(2), b_dir)
  assert int(load_state(b_dir)["step"]) == 2
  train.train_and_evaluate(_demo_config(4), b_dir)
  a, b = load_state(a_dir), load_state(b_dir)
  assert int(a["step"]) == int(b["step"]) == 4
  for key in ("params", "opt_state", "aux", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, a[key], b[key])
  # aux really holds a trained MixBlock and a moved encoder (the comparison is not vacuous)
  assert set(a["aux"]) == {"encoder", "mixblock", "mixblock_opt", "mask_loss_weight"}
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(a["aux"]["mixblock_opt"])) > 0


# ------------------------------------------------------------------ reference details (issue 11)


def _mixblock_step(method, ctx, state, images, labels, hp, step):
  return jax.jit(
    lambda a: method.update_aux(
      ctx, jax.random.key(11), a, state.params, state.batch_stats, images, labels, jnp.int32(step), alpha=2.0, hp=hp
    )
  )(state.aux)


def test_mixblock_lr_follows_the_iteration_even_when_updates_are_skipped(setup):
  """The reference's lr hook sets the MixBlock lr every iteration; skipped updates must not freeze it."""
  _, method, hp, ctx, state, images, labels = setup
  hp = dataclasses.replace(
    hp, mixblock_lr=0.1, mixblock_min_lr=1e-3, mixblock_lr_by_epoch=False, mask_loss_schedule="constant"
  )  # same gradient at every step: only the lr differs
  lr = lambda t: 1e-3 + (0.1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * t / ctx.total_steps))  # noqa: E731
  deltas = {}
  for step in (0, 50):
    aux, metrics = _mixblock_step(method, ctx, state, images, labels, hp, step)
    np.testing.assert_allclose(float(metrics["mixblock_lr"]), lr(step), rtol=1e-5)
    deltas[step] = jax.tree.map(
      lambda new, old: np.asarray(new) - np.asarray(old), aux["mixblock"], state.aux["mixblock"]
    )
  # From the same (fresh) optimizer state, the step-50 update is the step-0 update scaled by lr(50)/lr(0):
  # the lr is read at the iteration, not at the MixBlock optimizer's own update count (which is 0 both times).
  # (Least-squares ratio over all parameters: a single coordinate's difference new − old is float32-rounded.)
  for d50, d0 in zip(jax.tree.leaves(deltas[50]), jax.tree.leaves(deltas[0])):
    assert np.abs(d0).max() > 0
    ratio = float(np.sum(d50 * d0, dtype=np.float64) / np.sum(d0 * d0, dtype=np.float64))
    np.testing.assert_allclose(ratio, lr(50) / lr(0), rtol=0.02)

  # A skipped iteration (update probability 0) leaves the MixBlock and its optimizer statistics as they were,
  # yet logs the lr of that iteration.
  skip = dataclasses.replace(hp, mixblock_update_prob=0.0)
  aux, metrics = _mixblock_step(method, ctx, state, images, labels, skip, 70)
  jax.tree.map(np.testing.assert_array_equal, aux["mixblock"], state.aux["mixblock"])
  jax.tree.map(np.testing.assert_array_equal, aux["mixblock_opt"], state.aux["mixblock_opt"])
  np.testing.assert_allclose(float(metrics["mixblock_lr"]), lr(70), rtol=1e-5)


def test_eval_variants_name_the_momentum_encoder(setup):
  from mixjax import train_step

  _, method, hp, ctx, state, images, labels = setup
  new_params = jax.tree.map(lambda p: p + 0.01, state.params)
  aux, _ = jax.jit(
    lambda a: method.update_aux(
      ctx, jax.random.key(1), a, new_params, state.batch_stats, images, labels, jnp.int32(3), alpha=2.0, hp=hp
    )
  )(state.aux)
  moved = state.replace(params=new_params, aux=aux)
  plan = mixing.resolve_mixing_config(demo_config("automix,epochs=1").mixing)
  variants = train_step.make_eval_variants_fn(plan)(moved)
  assert set(variants) == {"momentum"}
  k_params, k_stats = variants["momentum"]
  jax.tree.map(np.testing.assert_array_equal, k_params, aux["encoder"]["params"])
  jax.tree.map(np.testing.assert_array_equal, k_stats, aux["encoder"]["batch_stats"])
  assert _max_abs(jax.tree.map(jnp.subtract, k_params, new_params)) > 1e-3  # k, not q
  plan = mixing.resolve_mixing_config(demo_config("mixup,epochs=1").mixing)
  assert train_step.make_eval_variants_fn(plan)(moved) == {}


def test_lambda_embedding_none_and_lam_mul_k():
  from mixjax.mixing.model_aware.automix import mixblock as mb

  rng = np.random.default_rng(3)
  fa = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
  fb = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
  none = mb.MixBlockDesign(lam_embedding="none")
  params = mb.init_mixblock(jax.random.key(0), 8, none)
  assert params["qk"]["kernel"].shape == (8, 4)  # no λ channel
  a = mb.mask_logits(params, fa, fb, 0.2, none)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(mb.mask_logits(params, fa, fb, 0.7, none)))
  concat = mb.MixBlockDesign()
  pc = mb.init_mixblock(jax.random.key(0), 8, concat)
  assert float(jnp.max(jnp.abs(mb.mask_logits(pc, fa, fb, 0.2, concat) - mb.mask_logits(pc, fa, fb, 0.7, concat)))) > 0
  # The reference's cubic λ re-mapping: fixed ends, and the block sees λ' exactly.
  k = 0.25
  lam = jnp.float32(0.3)
  want = (4 / 3 * 0.3**3 - 2 * 0.3**2 + 1.25 * 0.3) / (1.25 - 2 / 3)
  np.testing.assert_allclose(float(mb.rescale_lam_mul(lam, k)), want, rtol=1e-6)
  np.testing.assert_allclose([float(mb.rescale_lam_mul(jnp.float32(x), k)) for x in (0.0, 1.0)], [0.0, 1.0], atol=1e-6)
  mul = mb.MixBlockDesign(lam_embedding="mul", qk_input="pair_concat", value_net="conv_neck")
  mul_k = mb.MixBlockDesign(lam_embedding="mul", qk_input="pair_concat", value_net="conv_neck", lam_mul_k=k)
  pm = mb.init_mixblock(jax.random.key(1), 8, mul)
  np.testing.assert_allclose(
    np.asarray(mb.mask_logits(pm, fa, fb, lam, mul_k)),
    np.asarray(mb.mask_logits(pm, fa, fb, jnp.float32(want), mul)),
    rtol=1e-5,
    atol=1e-7,
  )
  with pytest.raises(ValueError, match="lam_mul_k"):
    mb.MixBlockDesign(lam_embedding="concat", lam_mul_k=0.25)


def test_constant_mask_loss_schedule():
  for t in (0, 500, 999):
    w = schedules.mask_loss_weight(jnp.int32(t), jnp.float32(0.0), 1000, base=0.1, schedule="constant")
    assert float(w) == pytest.approx(0.1)
