"""PreciseBN: statistics equal the average of per-batch statistics computed in numpy (per BN group too), the batches
go through the run's mixing method, the flag off changes nothing, and a demo run with it trains end to end."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mixjax import precise_bn, train, train_step
from mixjax.models import layers, registry
from mixjax.models.backbone import ImageClassifier
from mixjax.recipes import cells
from mixjax.sharding import make_mesh
from tests.helpers import checkpoint_steps, demo_config, load_state

EPS = 1e-5
PROBE = "precise_bn_probe"


class _Probe(ImageClassifier):
  """pixels -> BN -> ReLU -> BN -> mean pool -> Linear: each BN's batch statistics are a few lines of numpy."""

  def __init__(self, *, num_classes, rngs, dtype=jnp.float32, bn_group_size=None):
    self.name, self.dtype = PROBE, dtype
    self.mix_stages, self.stage_names = (0,), ("stage0",)
    self.bn1 = layers.batch_norm(3, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.bn2 = layers.batch_norm(3, dtype=dtype, rngs=rngs, group_size=bn_group_size)
    self.head = layers.ClassifierHead(
      3, num_classes, kernel_init=nnx.initializers.normal(0.01), bias_init=nnx.initializers.zeros_init(), rngs=rngs
    )

  def forward_features(self, x, train, rngs, taps):
    h = jax.nn.relu(self.bn1(taps.mix(0, x), use_running_average=not train))
    h = self.bn2(h, use_running_average=not train)
    taps.record("stage0", h)
    return self.head.pool(h)


@pytest.fixture
def probe_model(monkeypatch):
  """The probe registered for this test only (other tests list every registered model)."""
  monkeypatch.setitem(registry._MODELS, PROBE, lambda **kw: _Probe(**kw))
  monkeypatch.setitem(registry._FAMILIES, PROBE, "cnn")


def _numpy_statistics(images, group):
  """Per-batch (bn1 mean, bn1 var, bn2 mean, bn2 var) of the probe at initialisation (scale 1, bias 0), each the
  mean over the batch's groups of ``group`` samples."""
  x = (images.astype(np.float64) - 127.5) / 127.5
  x = x.reshape((-1, group) + x.shape[1:])
  m1, v1 = x.mean(axis=(1, 2, 3), keepdims=True), x.var(axis=(1, 2, 3), keepdims=True)
  h = np.maximum((x - m1) / np.sqrt(v1 + EPS), 0.0)
  m2, v2 = h.mean(axis=(1, 2, 3)), h.var(axis=(1, 2, 3))
  return [s.reshape(s.shape[0], -1).mean(0) for s in (m1, v1, m2, v2)]


def _setup(method, *, group, num_batches=3, batch=16, alpha=None):
  config = demo_config(method)
  if alpha is not None:
    config.mixing.alpha = alpha
  config.model = ml_collections.ConfigDict({"name": PROBE, "bn_group_size": group})
  config.batch_size = batch
  config.precise_bn_samples = num_batches * batch
  mesh = make_mesh()
  fns = train_step.build_step_functions(config, mesh=mesh, num_classes=10, steps_per_epoch=10)
  rng = np.random.default_rng(0)
  # Batches of different brightness and contrast, so per-batch statistics differ from the pooled ones.
  host = []
  for i in range(num_batches):
    pixels = rng.normal(127.5 + 30 * i, 20 + 15 * i, size=(batch, 8, 8, 3)).clip(0, 255).astype(np.uint8)
    host.append({"image": pixels, "label": rng.integers(0, 10, batch).astype(np.int32)})
  runner = precise_bn.PreciseBN(config, ctx=fns.ctx, mesh=mesh, steps_per_epoch=10, batches=lambda epoch: iter(host))
  state = fns.init_state()
  # Stale running statistics: PreciseBN replaces them, nothing of them may remain.
  state = state.replace(batch_stats=jax.tree.map(lambda s: s + 3.0, state.batch_stats))
  return runner, state, host


@pytest.mark.parametrize("group", [None, 4])
def test_statistics_are_the_average_of_per_batch_statistics(probe_model, group):
  runner, state, host = _setup("vanilla", group=group)
  assert runner.num_batches == 3
  new = runner(state, epoch=1)
  per_batch = [_numpy_statistics(b["image"], group or len(b["image"])) for b in host]
  expected = [np.mean([s[k] for s in per_batch], axis=0) for k in range(4)]
  got = [new.batch_stats[bn][stat] for bn in ("bn1", "bn2") for stat in ("mean", "var")]
  for g, e in zip(got, expected):
    np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=2e-5)
  # Not the statistics of the three batches pooled: the average of per-batch variances is smaller.
  pooled = np.concatenate([b["image"] for b in host]).astype(np.float64) / 127.5
  assert float(np.asarray(new.batch_stats["bn1"]["var"]).max()) < 0.9 * float(pooled.var(axis=(0, 1, 2)).min())
  # Only the statistics change.
  jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
  assert int(new.step) == int(state.step)


def test_batches_go_through_the_mixing_method(probe_model):
  """Mixup with one λ per device shard keeps each shard's mean and shrinks its variance: the statistics are those
  of the mixed batches, as the reference's ``model(**data)`` (the classifier's forward_train) computes them."""
  runner, state, host = _setup("mixup", group=None, alpha=4.0)  # λ near 0.5: the variance roughly halves
  new = runner(state, epoch=1)
  clean = [np.mean(k, axis=0) for k in zip(*[_numpy_statistics(b["image"], len(b["image"])) for b in host])]
  np.testing.assert_allclose(np.asarray(new.batch_stats["bn1"]["mean"]), clean[0], rtol=1e-5, atol=2e-5)
  assert np.all(np.asarray(new.batch_stats["bn1"]["var"]) < 0.8 * clean[1])
  # The same epoch gives the same draws (a resumed run re-estimates identically); another epoch other draws.
  again = runner(state, epoch=1)
  jax.tree.map(np.testing.assert_array_equal, again.batch_stats, new.batch_stats)
  other = runner(state, epoch=2)
  assert not np.array_equal(np.asarray(other.batch_stats["bn1"]["var"]), np.asarray(new.batch_stats["bn1"]["var"]))


def test_batch_count_and_data_seed():
  assert precise_bn.num_batches(8192, 1024, 1251) == 8  # MogaNet-T: 8192 samples, batch 1024
  assert precise_bn.num_batches(8192, 1024, 5) == 5  # at most one epoch
  assert precise_bn.num_batches(100, 128, 11) == 1  # at least one batch
  seeds = {precise_bn.data_seed(0, e) for e in range(1, 50)} | {precise_bn.data_seed(1, 1)}
  assert len(seeds) == 50 and all(0 <= s < 2**31 for s in seeds)
  assert precise_bn.data_seed(0, 3) == precise_bn.data_seed(0, 3)


def test_moganet_cells_set_precise_bn_and_others_do_not():
  deit = cells.load_recipe("deit")
  assert deit.get_config("mixup,model=moganet_tiny").precise_bn_samples == 8192
  assert deit.get_config("deit,model=moganet_tiny").precise_bn_samples == 8192
  assert deit.get_config("mixup,model=deit_small").precise_bn_samples == 0
  assert cells.load_recipe("pytorch_style").get_config("mixup").precise_bn_samples == 0


def _plain(tree):
  """A state tree with string keys and numpy leaves (as a checkpoint reads back)."""
  if isinstance(tree, dict):
    return {str(k): _plain(v) for k, v in tree.items()}
  return np.asarray(tree)


def test_demo_run_with_precise_bn_trains_and_leaves_training_unchanged(tmp_path, monkeypatch):
  """The demo (width-8 ResNet-18, 11 steps an epoch) for 13 steps with and without PreciseBN on 512 samples:
  PreciseBN runs at the end of epoch 1, the statistics saved and evaluated there are its estimate, and the
  parameters two steps later equal the run's without it bit for bit (its batches come from their own
  iterator and random stream; training never reads them)."""
  calls = []
  original = precise_bn.PreciseBN.__call__

  def recording(self, state, epoch):
    new = original(self, state, epoch)
    calls.append((epoch, int(jax.device_get(state.step)), _plain(jax.device_get(new.batch_stats))))
    return new

  monkeypatch.setattr(precise_bn.PreciseBN, "__call__", recording)
  runs = {}
  for samples in (0, 512):
    config = demo_config("mixup")
    config.epochs, config.max_steps, config.log_every_steps = 2, 13, 5
    config.precise_bn_samples = samples
    workdir = str(tmp_path / f"precise{samples}")
    results = train.train_and_evaluate(config, workdir)
    assert results["status"] == "completed" and [h["step"] for h in results["history"]] == [11, 13]
    assert checkpoint_steps(workdir) == [11, 13]
    runs[samples] = {step: load_state(workdir, step) for step in (11, 13)}
    if samples == 0:
      assert calls == []  # the flag off: no PreciseBN pass at all
  assert [(epoch, step) for epoch, step, _ in calls] == [(1, 11)]
  off, on = runs[0], runs[512]
  jax.tree.map(np.testing.assert_array_equal, on[13]["params"], off[13]["params"])
  jax.tree.map(np.testing.assert_array_equal, on[11]["batch_stats"], calls[0][2])
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), on[11]["batch_stats"], off[11]["batch_stats"])
  assert all(jax.tree.leaves(changed))
