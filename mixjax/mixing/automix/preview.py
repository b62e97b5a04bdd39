"""Pictures of learned masks for ``python -m mixjax.visualize``: a briefly trained MixBlock on the photos.

The visualiser has no training run to take a MixBlock from, so this trains a narrow ResNet-18, its momentum
encoder and the MixBlock for a few dozen steps on the given photographs — the very ``loss``/``update_aux`` code
of the train step, on one device — and then mixes the photos with the trained MixBlock.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixjax import optim
from mixjax.losses import soft_cross_entropy
from mixjax.mixing.model_aware import StepContext
from mixjax.mixing.result import MixResult
from mixjax.train_state import make_init_fn, model_fn_and_shapes


def _preview_config(batch: int, steps: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = batch
  c.epochs = 1
  c.compute_dtype = "float32"
  c.model = ml_collections.ConfigDict(dict(name="resnet18", width=8))
  c.optimizer = optim.default_optimizer_config()
  c.optimizer.lr = 0.05
  c.optimizer.base_batch_size = 0
  c.optimizer.warmup_epochs = 0.0
  c.ema = ml_collections.ConfigDict(dict(decay=0.0))
  return c


def briefly_trained_mixes(method, rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float, hp,
                          steps: int = 30) -> MixResult:
  """Trains for ``steps`` steps on (images, labels), then returns the MixBlock's mixes of the photos."""
  from mixjax.mixing.automix.method import design_of, draw_pairing, mixed_result, partner_mask
  images = jnp.asarray(images, jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  num_classes = labels.shape[-1]
  config = _preview_config(images.shape[0], steps)
  model_fn, abstract_params, _ = model_fn_and_shapes(config, num_classes)
  ctx = StepContext(config=config, mesh=None, model_fn=model_fn, num_classes=num_classes,
                    compute_dtype=jnp.float32,
                    classification_loss=lambda logits, mix: jnp.mean(soft_cross_entropy(logits, mix.targets)),
                    steps_per_epoch=steps, total_steps=steps)
  schedule = optim.make_lr_schedule(config.optimizer, global_batch_size=config.batch_size,
                                    steps_per_epoch=steps, total_epochs=1)
  tx = optim.make_optimizer(config.optimizer, abstract_params, schedule)
  init = make_init_fn(config, num_classes, tx,
                      init_aux=lambda r, p, s: method.init_aux(ctx, r, p, s, hp))
  state = jax.jit(init)()

  @jax.jit
  def train_step(state, step):
    key = jax.random.fold_in(rng, step)
    grad_fn = jax.value_and_grad(
        lambda p: method.loss(ctx, jax.random.fold_in(key, 0), p, state.batch_stats, state.aux, images, labels,
                              alpha=alpha, hp=hp), has_aux=True)
    (_, (_, stats, _)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    aux, _ = method.update_aux(ctx, jax.random.fold_in(key, 2), state.aux, params, stats, images, labels,
                               state.step, alpha=alpha, hp=hp)
    return state.replace(step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state, aux=aux)

  for step in range(steps):
    state = train_step(state, step)

  @jax.jit
  def mix_with_trained(aux):
    from mixjax.mixing.automix.method import feature_map
    k_pair, k_drop = jax.random.split(jax.random.fold_in(rng, steps))
    lam, perm = draw_pairing(k_pair, alpha, images.shape[0], 1)
    feats, _ = feature_map(ctx, aux["encoder"]["params"], aux["encoder"]["batch_stats"], images, hp["feature"])
    mask = partner_mask(aux["mixblock"], feats, lam, perm, 1, images.shape[1:3], design_of(hp), k_drop)
    return mixed_result(images, labels, mask, lam, perm, 1, hp["label_weight"])

  return mix_with_trained(state.aux)
