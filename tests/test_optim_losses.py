"""Optimizers, schedules, weight-decay masks and losses against hand-written references of their semantics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixjax import losses, optim
from mixjax.config_args import ConfigArgError, parse_arg


def _cfg(**kw):
  c = optim.default_optimizer_config()
  c.update(kw)
  return c


def _params():
  rng = np.random.default_rng(0)
  return {
    "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
    "bn": {"scale": jnp.ones((4,)), "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
    "pos_embed": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
  }


def _grads(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 3.0, jnp.float32), _params())


def test_weight_decay_mask_excludes_1d_and_regex():
  mask = optim.weight_decay_mask(_params(), _cfg(wd_exclude_1d=True, wd_exclude=("pos_embed",)))
  assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}, "pos_embed": False}
  mask = optim.weight_decay_mask(_params(), _cfg(wd_exclude_1d=False, wd_exclude=()))
  assert all(jax.tree.leaves(mask))


def _numpy_lamb(params, grads_seq, lr, wd, mask, b1=0.9, b2=0.999, eps=1e-6):
  """timm LAMB with always_adapt=False: trust ratio only where weight decay applies."""
  p = jax.tree.map(np.asarray, params)
  flat_p, tree = jax.tree.flatten(p)
  flat_mask = jax.tree.leaves(mask)
  m = [np.zeros_like(x) for x in flat_p]
  v = [np.zeros_like(x) for x in flat_p]
  for t, grads in enumerate(grads_seq, start=1):
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
    norm = math.sqrt(sum(float((x**2).sum()) for x in g))
    g = [x / max(1.0, norm / 1.0) for x in g]
    for i in range(len(flat_p)):
      m[i] = b1 * m[i] + (1 - b1) * g[i]
      v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
      u = (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
      if flat_mask[i]:
        u = u + wd * flat_p[i]
        wn, un = np.linalg.norm(flat_p[i]), np.linalg.norm(u)
        u = u * (wn / un if wn > 0 and un > 0 else 1.0)
      flat_p[i] = flat_p[i] - lr * u
  return jax.tree.unflatten(tree, flat_p)


def test_lamb_matches_timm_semantics_trust_ratio_only_on_decayed():
  cfg = _cfg(name="lamb", eps=1e-6, weight_decay=0.02, wd_exclude_1d=True)
  params = _params()
  tx = optim.make_optimizer(cfg, params, lambda step: 0.01)
  state = tx.init(params)
  p = params
  grads_seq = [_grads(1), _grads(2), _grads(3)]
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  expected = _numpy_lamb(params, grads_seq, 0.01, 0.02, optim.weight_decay_mask(params, cfg))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), p, expected)
  # The plain optax.lamb (trust ratio everywhere) differs on the excluded 1-D parameters.
  plain = optax.lamb(0.01, eps=1e-6, weight_decay=0.02, mask=optim.weight_decay_mask(params, cfg))
  ps, pst = params, plain.init(params)
  for g in grads_seq:
    u, pst = plain.update(optax.clip_by_global_norm(1.0).update(g, None)[0], pst, ps)
    ps = optax.apply_updates(ps, u)
  assert not np.allclose(ps["bn"]["bias"], expected["bn"]["bias"], rtol=1e-4)


def test_sgd_is_pytorch_style_decay_then_nesterov_momentum():
  cfg = _cfg(name="sgd", momentum=0.9, nesterov=True, weight_decay=1e-2, wd_exclude_1d=False)
  params = _params()
  tx = optim.make_optimizer(cfg, params, lambda step: 0.1)
  state = tx.init(params)
  p, buf = params, None
  ref = jax.tree.map(np.asarray, params)
  for seed in (1, 2):
    g = _grads(seed)
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
    d = jax.tree.map(lambda gg, w: np.asarray(gg) + 1e-2 * w, g, ref)
    buf = d if buf is None else jax.tree.map(lambda b, dd: 0.9 * b + dd, buf, d)
    step = jax.tree.map(lambda dd, b: dd + 0.9 * b, d, buf)
    ref = jax.tree.map(lambda w, s: w - 0.1 * s, ref, step)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p, ref)


def test_schedule_warmup_cosine_and_batch_scaling():
  cfg = _cfg(
    lr=0.1, base_batch_size=256, min_lr=1e-3, warmup_epochs=2, warmup_start_ratio=1e-2, schedule_by_epoch=False
  )
  sched = optim.make_lr_schedule(cfg, global_batch_size=512, steps_per_epoch=10, total_epochs=10)
  peak = 0.2  # 0.1 · 512/256
  cos = lambda t: 1e-3 + (peak - 1e-3) * 0.5 * (1 + math.cos(math.pi * t / 100))
  assert float(sched(0)) == pytest.approx(cos(0) * 1e-2, rel=1e-5)
  assert float(sched(10)) == pytest.approx(cos(10) * (1 - 0.5 * (1 - 1e-2)), rel=1e-5)
  assert float(sched(20)) == pytest.approx(cos(20), rel=1e-5)
  assert float(sched(100)) == pytest.approx(1e-3, rel=1e-4)
  by_epoch = optim.make_lr_schedule(
    _cfg(lr=0.1, base_batch_size=None, schedule_by_epoch=True), global_batch_size=64, steps_per_epoch=10, total_epochs=4
  )
  assert float(by_epoch(10)) == float(by_epoch(19)) != float(by_epoch(20))
  assert float(by_epoch(0)) == pytest.approx(0.1)


def test_unknown_optimizer_lists_valid():
  with pytest.raises(ValueError, match="sgd, adamw, lamb"):
    optim.make_optimizer(_cfg(name="adam9"), _params(), lambda s: 0.1)


def test_soft_ce_and_bce_reductions():
  logits = jnp.asarray([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
  targets = jnp.asarray([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
  logp = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(losses.soft_cross_entropy(logits, targets), -(targets * logp).sum(-1), rtol=1e-6)
  sig = jax.nn.sigmoid(logits)
  naive = -(targets * jnp.log(sig) + (1 - targets) * jnp.log(1 - sig))
  np.testing.assert_allclose(losses.binary_cross_entropy(logits, targets), naive.sum(-1), rtol=1e-5)
  np.testing.assert_allclose(
    losses.binary_cross_entropy(logits, targets, reduction="mean_classes"), naive.mean(-1), rtol=1e-5
  )
  # Stable for huge logits where the naive formula gives inf.
  assert np.isfinite(losses.binary_cross_entropy(jnp.asarray([[1e4, -1e4]]), jnp.asarray([[0.0, 1.0]]))).all()


def test_label_smoothing_and_topk():
  t = losses.one_hot_smoothed(jnp.asarray([2, 0]), 4, 0.1)
  np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(t[0], [0.025, 0.025, 0.925, 0.025], rtol=1e-6)
  logits = jnp.asarray([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.9]])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.asarray([2, 0]), 1), [0, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.asarray([2, 0]), 2), [1, 1])


def test_config_arg_grammar():
  allowed = dict(method="vanilla", model="resnet50", epochs=100)
  assert parse_arg("samix,model=resnet18,epochs=300", allowed=allowed) == dict(
    method="samix", model="resnet18", epochs=300
  )
  assert parse_arg(None, allowed=allowed) == allowed
  with pytest.raises(ConfigArgError, match="Valid keys: epochs, method, model"):
    parse_arg("cutmix,depth=3", allowed=allowed)


def test_lam_batch_mean_reproduces_the_reference_collapse_of_per_sample_lambda():
  """OpenMixup's non-multi-label heads compute mean(λ)·L_a + (1 − mean(λ))·L_b (spec §1.2); the flag gives exactly
  that, and without it each sample is weighted by its own λ."""
  import ml_collections

  from mixjax import train_step
  from mixjax.mixing import MixResult

  logits = jax.random.normal(jax.random.key(0), (4, 5))
  labels_a = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 5)
  labels_b = jax.nn.one_hot(jnp.array([4, 0, 1, 2]), 5)
  lam = jnp.array([0.9, 0.1, 0.5, 0.3])
  mix = MixResult(images=jnp.zeros((4, 1, 1, 3)), labels_a=labels_a, labels_b=labels_b, lam=lam)
  ce_a = losses.soft_cross_entropy(logits, labels_a)
  ce_b = losses.soft_cross_entropy(logits, labels_b)
  for batch_mean, expected in (
    (False, jnp.mean(lam * ce_a + (1 - lam) * ce_b)),
    (True, jnp.mean(lam) * jnp.mean(ce_a) + (1 - jnp.mean(lam)) * jnp.mean(ce_b)),
  ):
    config = ml_collections.ConfigDict(dict(loss=dict(name="soft_ce", lam_batch_mean=batch_mean)))
    got = train_step.make_classification_loss(config)(logits, mix)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)
  assert abs(float(jnp.mean(lam * ce_a + (1 - lam) * ce_b)) - float(expected)) > 1e-3  # the two differ here
