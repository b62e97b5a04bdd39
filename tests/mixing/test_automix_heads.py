"""AutoMix/SAMix with the reference's two heads: the mixed CE trains ``head_mix``, the clean CE the deployed head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from mixjax.config_args import ConfigError
from mixjax.mixing.core.result import MixResult
from mixjax.sharding import host_batch_to_global, make_mesh
from mixjax.train_state import make_init_fn
from mixjax.train_step import build_step_functions
from tests.helpers import demo_config
from tests.mixing.test_automix import BATCH, CLASSES, SIZE, _ctx


def _state_and_batch(name, *, separate_heads, mix_head):
  method = mixing.get_method(name).fn
  hp = method.hyper_parameters(lam_margin=0.0, separate_heads=separate_heads)
  config, ctx, tx = _ctx(name, mix_head=mix_head)
  init = make_init_fn(config, CLASSES, tx, init_aux=lambda r, p, s: method.init_aux(ctx, r, p, s, hp))
  state = jax.jit(init)()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, CLASSES, BATCH)), CLASSES)
  return method, hp, ctx, state, images, labels


def _grads(method, hp, ctx, state, images, labels):
  def loss(params):
    return method.loss(ctx, jax.random.key(3), params, state.batch_stats, state.aux, images, labels, alpha=2.0, hp=hp)[
      0
    ]

  return jax.jit(jax.grad(loss))(state.params)


def _clean_head_grad(ctx, state, images, labels, weight):
  """Gradient of ``weight`` × the clean CE alone (ResNet-18 has no dropout: the rng does not matter)."""
  clean = MixResult(images=images, labels_a=labels, labels_b=labels, lam=jnp.ones(images.shape[0], jnp.float32))

  def loss(params):
    logits, _ = ctx.model_fn(params, state.batch_stats, images, train=True, rng=jax.random.key(0))
    return weight * ctx.classification_loss(logits, clean)

  return jax.jit(jax.grad(loss))(state.params)["head"]


@pytest.mark.parametrize("name", ["automix", "samix"])
def test_mixed_loss_reaches_only_the_mix_head(name):
  method, hp, ctx, state, images, labels = _state_and_batch(name, separate_heads=True, mix_head=True)
  assert "head_mix" in state.params
  grads = _grads(method, hp, ctx, state, images, labels)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["head_mix"])) > 1e-4
  # The deployed head gets the clean CE's gradient and nothing of the mixed CE.
  want = _clean_head_grad(ctx, state, images, labels, hp.clean_loss_weight)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), grads["head"], want)


def test_one_head_mixes_both_losses_into_it():
  """The contrast: with one head (the papers' description) the deployed head also gets the mixed CE."""
  method, hp, ctx, state, images, labels = _state_and_batch("automix", separate_heads=False, mix_head=False)
  assert "head_mix" not in state.params
  grads = _grads(method, hp, ctx, state, images, labels)["head"]
  clean = _clean_head_grad(ctx, state, images, labels, hp.clean_loss_weight)
  gap = max(float(jnp.max(jnp.abs(g - w))) for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(clean)))
  assert gap > 1e-4


def test_separate_heads_without_a_mix_head_names_the_fix():
  with pytest.raises(ConfigError, match="config.model.mix_head=True"):
    _state_and_batch("automix", separate_heads=True, mix_head=False)


def _predicting(head_params, cls):
  """Head parameters whose logits are 10 for class ``cls`` and 0 elsewhere, whatever the features."""
  return jax.tree.map(
    lambda x: jnp.zeros_like(x).at[cls].set(10.0) if x.shape == (CLASSES,) else jnp.zeros_like(x), head_params
  )


def test_the_mix_head_eval_step_evaluates_head_mix():
  """A model with two heads gets a second eval step, reading ``head_mix`` (the deployed head stays ``head``)."""
  config = demo_config("automix,epochs=1")
  config.model.mix_head = True
  config.mixing.args.automix.separate_heads = True
  mesh = make_mesh()
  fns = build_step_functions(config, mesh=mesh, num_classes=CLASSES, steps_per_epoch=10)
  state = fns.init_state()
  params = {
    **state.params,
    "head": _predicting(state.params["head"], 2),
    "head_mix": _predicting(state.params["head_mix"], 7),
  }
  labels = np.arange(16, dtype=np.int32) % CLASSES
  batch = host_batch_to_global(
    {"image": np.zeros((16, 32, 32, 3), np.uint8), "label": labels, "mask": np.ones(16, np.float32)}, mesh
  )
  assert float(fns.eval_step(params, state.batch_stats, batch)["correct1"]) == np.sum(labels == 2)
  assert float(fns.eval_step_mix_head(params, state.batch_stats, batch)["correct1"]) == np.sum(labels == 7)
  config = demo_config("automix,epochs=1")
  assert build_step_functions(config, mesh=mesh, num_classes=CLASSES, steps_per_epoch=10).eval_step_mix_head is None
