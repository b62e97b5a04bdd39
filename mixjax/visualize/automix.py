"""Pictures of learned masks for ``python -m mixjax.visualize``: a MixBlock mixing the photos.

The visualiser has no training run to take a MixBlock from. ``mixes_fn`` builds the method's state the way a run
starts it — a small random ResNet (``stand_ins.small_cnn``) as classifier, its copy as momentum encoder, a
freshly initialised MixBlock (``init_aux``) — optionally trains it for ``steps`` steps on the photographs with
the very ``loss``/``update_aux`` code of the train step (on one device), and then mixes the photos exactly as
the classifier's loss does: the encoder's clean features, the MixBlock's mask for (λ, π), the constant mask
1 − λ when λ is within ``lam_margin`` of 0 or 1, label weight λ (or 1 − mask mean, per ``label_weight``).

By default ``steps = 0``: the picture shows the mechanics (a MixBlock mask for each pair and λ) without paying
for the bi-level train step's compile (about half a minute of CPU per method). The mask of an untrained
MixBlock is not the mask a trained one draws, and a few dozen steps on four photographs do not make one either;
pass ``steps`` (``--automix_steps``) to see the mask move towards its λ-regularised area.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixjax import optim
from mixjax.losses import soft_cross_entropy
from mixjax.mixing import MixResult, StepContext
from mixjax.mixing.model_aware.automix.method import (
  LearnedMaskMixup,
  design_of,
  draw_pairing,
  feature_map,
  mixed_result,
  partner_mask,
)
from mixjax.visualize import stand_ins
from mixjax.visualize.pictures import register_picture

DEFAULT_STEPS = 0


def _preview_config(batch: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = batch
  c.epochs = 1
  c.compute_dtype = "float32"
  c.model = ml_collections.ConfigDict(dict(name="picture_resnet", width=8))
  c.optimizer = optim.default_optimizer_config()
  c.optimizer.lr = 0.05
  c.optimizer.base_batch_size = 0
  c.optimizer.warmup_epochs = 0.0
  c.ema = ml_collections.ConfigDict(dict(decay=0.0))
  return c


NOTE = "MixBlock masks on a small ResNet's features; both untrained unless --automix_steps"


@register_picture("automix", note=NOTE)
@register_picture("samix", note=NOTE)
def mixes_fn(
  method: LearnedMaskMixup,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  hp: LearnedMaskMixup.Params,
  steps: int | None = None,
) -> Callable[[jax.Array], MixResult]:
  """``rng → MixResult``: the MixBlock's mixes of (images, labels) after ``steps`` training steps on them
  (``method``: the AutoMix or SAMix step plug-in, ``hp`` its ``Params``)."""
  steps = DEFAULT_STEPS if steps is None else int(steps)
  images = jnp.asarray(images, jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  num_classes = labels.shape[-1]
  config = _preview_config(images.shape[0])
  model_fn, params, batch_stats = stand_ins.small_cnn(num_classes)
  total = max(steps, 1)
  make_optimizer = functools.partial(
    optim.derived_optimizer, config.optimizer, config.batch_size, steps_per_epoch=total, total_steps=total
  )
  ctx = StepContext(
    mesh=None,
    model_fn=model_fn,
    model=config.model,
    num_classes=num_classes,
    compute_dtype=jnp.float32,
    classification_loss=lambda logits, mix: jnp.mean(soft_cross_entropy(logits, mix.targets)),
    steps_per_epoch=total,
    total_steps=total,
    seed=config.seed,
    make_optimizer=make_optimizer,
  )
  aux = method.init_aux(ctx, jax.random.key(config.seed), params, batch_stats, hp)
  if steps:
    aux = _train(method, ctx, config, params, batch_stats, aux, images, labels, alpha=alpha, hp=hp, steps=steps)

  @jax.jit
  def draw(rng, images, labels, aux):
    k_pair, k_drop = jax.random.split(rng)
    lam, perm = draw_pairing(k_pair, alpha, images.shape[0], 1)
    feats, _ = feature_map(ctx, aux["encoder"]["params"], aux["encoder"]["batch_stats"], images, hp.feature, rng)
    mask = partner_mask(aux["mixblock"], feats, lam, perm, None, images.shape[1:3], design_of(hp), k_drop)
    plain = jnp.logical_or(lam <= hp.lam_margin, lam >= 1.0 - hp.lam_margin)  # as the classifier's loss does
    mask = jnp.where(plain, 1.0 - lam, mask)
    return mixed_result(images, labels, mask, lam, perm, None, hp.label_weight)

  return lambda rng: draw(rng, images, labels, aux)


def _train(method, ctx, config, params, batch_stats, aux, images, labels, *, alpha, hp, steps: int):
  """``steps`` train steps (classifier loss, its SGD update, then ``update_aux``) on the photos; the new aux."""
  schedule = optim.make_lr_schedule(
    config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=steps, total_epochs=1
  )
  tx = optim.make_optimizer(config.optimizer, params, schedule)
  rng = jax.random.key(config.seed + 1)

  @jax.jit
  def train_step(state, step, images, labels):
    params, stats, opt_state, aux = state
    key = jax.random.fold_in(rng, step)
    grad_fn = jax.value_and_grad(
      lambda p: method.loss(ctx, jax.random.fold_in(key, 0), p, stats, aux, images, labels, alpha=alpha, hp=hp),
      has_aux=True,
    )
    (_, (_, stats, _)), grads = grad_fn(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    aux, _ = method.update_aux(
      ctx, jax.random.fold_in(key, 2), aux, params, stats, images, labels, step, alpha=alpha, hp=hp
    )
    return params, stats, opt_state, aux

  state = (params, batch_stats, tx.init(params), aux)
  for step in range(steps):
    state = train_step(state, jnp.int32(step), images, labels)
  return state[3]
