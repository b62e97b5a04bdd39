"""SuperMix on device: the masks (range, partition of unity, smoothness), the authors' Newton iteration lowering
their objective, labels equal to the mask proportions, per-device pairing, determinism, bf16, and the teacher
(a missing checkpoint is one line; one of our runs' checkpoints works)."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import checkpoint, mixing, train
from mixjax.errors import UserError, format_user_error
from mixjax.mixing.model_aware import supermix
from mixjax.visualize import pictures, stand_ins
from tests.helpers import demo_config
from tests.mixing.conftest import constant_batch, recover_pixel_weight

SMALL_TEACHER = dict(
  allow_random_teacher=True, teacher="resnet18", teacher_kwargs={"stem": "cifar", "width": 8}, teacher_num_classes=10
)


def _hp(**overrides):
  return supermix.SuperMix().hyper_parameters(SMALL_TEACHER, **overrides)


@pytest.fixture(scope="module")
def teacher():
  params, stats = supermix.TEACHER.load_weights(_hp())
  return {"params": params, "batch_stats": stats}


def _small_cnn_apply(num_classes=10):
  """A random small ResNet (one block per stage, width 8) as the teacher."""
  fn, params, stats = stand_ins.small_cnn(num_classes)
  return lambda z: fn(params, stats, z, train=False)[0].astype(jnp.float32)


def _problem(batch=8, size=32, k=2, seed=0):
  """Random images, k distinct sources per sample and Dirichlet-weighted targets over random classes."""
  images = jax.random.normal(jax.random.key(seed), (batch, size, size, 3))
  index = supermix.source_indices(jax.random.key(seed + 1), batch, k)
  keys = jax.random.split(jax.random.key(seed + 2), batch)
  classes = jax.vmap(lambda r: jax.random.choice(r, 10, (k,), replace=False))(keys)
  lam = jax.random.dirichlet(jax.random.key(seed + 3), jnp.full((k,), 2.0), (batch,))
  targets = jnp.sum(lam[..., None] * jax.nn.one_hot(classes, 10), axis=1)
  return images[index.T], targets


# ---------------------------------------------------------------- the pieces against their definitions


def test_upsampling_is_torch_bilinear_and_smoothing_is_the_authors_padded_gaussian():
  grid = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
  ours = supermix.upsample_matrix(20, 5) @ grid @ supermix.upsample_matrix(28, 7).T
  # jax's bilinear upsampling is half-pixel, edge-clamped: torch's align_corners=False.
  np.testing.assert_allclose(ours, np.asarray(jax.image.resize(grid, (20, 28), "bilinear")), atol=1e-5)
  for sigma in (1.0, 2.0):
    kernel = supermix.gaussian_kernel(sigma)
    taps = int(5 * sigma)
    assert len(kernel) == taps and np.isclose(kernel.sum(), 1.0) and np.allclose(kernel, kernel[::-1])
    signal = np.random.default_rng(1).normal(size=16)
    left = taps // 2 - (1 - taps % 2)  # F.pad(padd0 − evenorodd, padd0), then conv2d (a correlation)
    padded = np.pad(signal, (left, taps // 2))
    expected = np.correlate(padded, kernel, mode="valid")
    np.testing.assert_allclose(supermix.smoothing_matrix(16, sigma) @ signal, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(supermix.smoothing_matrix(4, 0.0), np.eye(4))


def test_success_means_the_teachers_top_classes_are_the_targets_classes():
  targets = jnp.zeros((3, 8)).at[0, 2].set(0.6).at[0, 5].set(0.4).at[1, 2].set(0.6).at[1, 5].set(0.4).at[2, 3].set(1)
  logits = jnp.zeros((3, 8)).at[0, 5].set(2).at[0, 2].set(1).at[1, 2].set(2).at[1, 7].set(1).at[2, 3].set(1)
  # two classes in the top 2; a wrong second class; two sources of one class (top-1 suffices)
  np.testing.assert_array_equal(np.asarray(supermix.succeeded(logits, targets, 2)), [True, False, True])


def _authors_success_numpy(logits, targets, k):
  """alldbi/SuperMix mix_batch: sorted topk(logits, k) == sorted topk(targets, k), ties to the lowest class."""
  top = lambda v: np.sort(np.argsort(-v, kind="stable")[:k])  # noqa: E731
  return np.array([np.array_equal(top(lg), top(t)) for lg, t in zip(np.asarray(logits), np.asarray(targets))])


def test_authors_success_test_differs_where_two_sources_share_a_class():
  """Two sources of class 3: their targets weigh one class, and the authors' topk(targets, 2) adds the
  lowest-numbered zero-weight class (0), which the teacher must then also rank in its top 2."""
  targets = jnp.zeros((4, 8)).at[0, 3].set(1).at[1, 3].set(1).at[2, 2].set(0.6).at[2, 5].set(0.4)
  targets = targets.at[3, 2].set(0.6).at[3, 5].set(0.4)
  logits = jnp.zeros((4, 8)).at[0, 3].set(2).at[0, 5].set(1).at[1, 0].set(2).at[1, 3].set(1)
  logits = logits.at[2, 5].set(2).at[2, 2].set(1).at[3, 2].set(2).at[3, 7].set(1)
  distinct = np.asarray(supermix.succeeded(logits, targets, 2, "distinct"))
  authors = np.asarray(supermix.succeeded(logits, targets, 2, "authors"))
  np.testing.assert_array_equal(distinct, [True, False, True, False])
  np.testing.assert_array_equal(authors, [False, True, True, False])  # the rules differ on the shared class only
  np.testing.assert_array_equal(authors, _authors_success_numpy(logits, targets, 2))
  # Random problems, a third of them with shared classes: the authors' rule is their topk comparison.
  rng = np.random.default_rng(0)
  classes = rng.integers(0, 6, (60, 3))
  classes[::3, 1] = classes[::3, 0]
  weights = rng.dirichlet(np.ones(3), 60)
  targets = np.zeros((60, 10), np.float32)
  for i in range(60):
    np.add.at(targets[i], classes[i], weights[i])
  logits = rng.normal(size=(60, 10)).astype(np.float32)
  logits[np.arange(60)[:, None], classes] += 3.0  # the sources' classes usually rank first
  got = np.asarray(supermix.succeeded(jnp.asarray(logits), jnp.asarray(targets), 3, "authors"))
  np.testing.assert_array_equal(got, _authors_success_numpy(logits, targets, 3))
  assert got.any() and not got.all()


def test_authors_success_test_keeps_iterating_on_shared_class_mixes():
  """Every sample's sources share class 5 and the teacher ranks 5 first, 7 second: 'distinct' stops after the
  first step with every mix a success, 'authors' (its topk(targets, 2) asks for class 0) runs all max_iter steps
  and counts none."""
  images, labels = constant_batch(8, size=16)
  ranking = jnp.zeros((10,)).at[5].set(2.0).at[7].set(1.0)

  def ranked_teacher(z):  # a function of the input only through a zero multiple, so the Newton steps are defined
    return ranking[None] + 0.0 * jnp.mean(z, axis=(1, 2, 3))[:, None]

  classes = jnp.full((8,), 5)

  @jax.jit
  def run():
    return [
      supermix.supermix_local(
        jax.random.key(0),
        images,
        labels,
        classes,
        ranked_teacher,
        alpha=2.0,
        hp=_hp(w=4, max_iter=3, success_test=rule),
      )
      for rule in ("distinct", "authors")
    ]

  distinct, authors = run()
  assert bool(np.all(distinct.success)) and int(distinct.iterations[0]) == 1
  assert not bool(np.any(authors.success)) and int(authors.iterations[0]) == 3


def test_teacher_fields_are_the_pretrained_nets_hyper_parameters():
  """SuperMix's Params declares exactly the five keys ``ops/pretrained.py`` reads, with its defaults."""
  params = supermix.SuperMix().hyper_parameters()
  for key, value in supermix.TEACHER.defaults().items():
    assert getattr(params, key) == value, key


# ---------------------------------------------------------------- the Newton iteration and the masks


def _linear_teacher(z):
  """A teacher whose logits follow the input: 4×4-pooled pixels times a fixed random matrix (10 classes)."""
  b = z.shape[0]
  weights = jax.random.normal(jax.random.key(9), (8 * 8 * 3, 10)) * 0.5
  return z.reshape(b, 8, 4, 8, 4, 3).mean((2, 4)).reshape(b, -1) @ weights


@pytest.fixture(scope="module")
def solved():
  """(sources, targets, {(σ, λ_s): (grid, success, steps)}) after at most 10 steps against the linear teacher."""
  sources, targets = _problem()
  settings = ((2.0, 25.0), (0.0, 25.0), (2.0, 0.0))

  @jax.jit
  def solve():
    return [
      supermix.newton_solve(_linear_teacher, sources, targets, w=16, sigma=s, lambda_s=ls, max_iter=10, tol=0.0)
      for s, ls in settings
    ]

  return sources, targets, dict(zip(settings, solve()))


def test_newton_iteration_lowers_the_authors_objective(solved):
  sources, targets, runs = solved
  grid, success, steps = runs[(2.0, 25.0)]

  @jax.jit
  def objectives(grid):
    zero = jnp.zeros_like(grid)  # the authors' initialisation: every source weighs 1/k everywhere
    return [supermix.objective(_linear_teacher, g, sources, targets, ls)[0] for g in (zero, grid) for ls in (25.0, 0.0)]

  start, kl_start, end, kl_end = map(np.asarray, objectives(grid))
  print(
    f"\nsupermix objective {start.mean():.3f} -> {end.mean():.3f} (KL {kl_start.mean():.3f} -> {kl_end.mean():.3f})"
  )
  assert np.all(end < start) and end.mean() < 0.5 * start.mean()
  assert kl_end.mean() < 0.5 * kl_start.mean()  # the teacher is led to the targets, not only to sparse masks
  assert np.mean(np.asarray(success)) >= 0.5
  # Without the sparsity term every sample reaches its targets' classes, and the loop stops early once they do.
  _, kl_success, kl_steps = runs[(2.0, 0.0)]
  assert bool(np.all(kl_success)) and 0 < int(kl_steps) < 10


def test_masks_are_a_smooth_partition_of_unity(solved):
  _, _, runs = solved
  grid, rough_grid = runs[(2.0, 25.0)][0], runs[(0.0, 25.0)][0]
  masks = np.asarray(supermix.masks_from_grid(grid, 32, 32), np.float64)
  assert masks.shape == (8, 2, 32, 32) and masks.min() >= 0 and masks.max() <= 1
  np.testing.assert_allclose(masks.sum(1), 1.0, atol=1e-6)
  assert masks.min() < 0.05 and masks.max() > 0.95  # the iteration moved them away from the uniform 1/k

  # Smooth by construction: a bilinear upsampling (factor 32/16) of the w×w variable, then M_0 = s(a)/(s(a)+s(b))
  # whose partial derivatives are at most 1/4 — so no pixel step exceeds (step_a + step_b)/4 of the variable's
  # largest cell step, halved by the upsampling.
  g = np.asarray(grid, np.float64)
  for axis in (1, 2):
    pixel_step = np.abs(np.diff(masks[:, 0], axis=axis)).max(axis=(1, 2))
    cell_step = np.abs(np.diff(g, axis=axis + 1)).max(axis=(2, 3)).sum(1)
    assert np.all(pixel_step <= cell_step / 2 / 4 + 1e-6)

  # …and by the Gaussian-smoothed Newton steps: without the smoothing (σ = 0) the variable is rougher.
  def roughness(v):
    v = np.asarray(v, np.float64)
    return (np.sum(np.diff(v, axis=2) ** 2) + np.sum(np.diff(v, axis=3) ** 2)) / np.sum(v**2)

  assert roughness(grid) < 0.5 * roughness(rough_grid)


# ---------------------------------------------------------------- the mix and its labels


def _local(images, labels, hp, apply, key=0):
  """One shard's SuperMix with ``apply`` as the teacher, asked for its own predictions (as in training)."""
  classes = jnp.argmax(apply(images.astype(jnp.float32)), axis=-1)
  return supermix.supermix_local(jax.random.key(key), images, labels, classes, apply, alpha=2.0, hp=hp)


def test_label_weights_are_the_mask_proportions():
  images, labels = constant_batch(8, size=32)
  apply = _small_cnn_apply()  # built outside the trace: the network is cached
  out = jax.jit(lambda x, y: _local(x, y, _hp(max_iter=4), apply))(images, labels)
  result = mixing.MixResult(out.images, labels, out.labels_b, out.lam)
  targets = np.asarray(result.targets)
  assert np.all(targets >= 0)
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
  weight, self_pair = recover_pixel_weight(result)
  assert not self_pair.any()  # k distinct samples of the device
  np.testing.assert_allclose(weight, np.asarray(out.masks)[:, 0], atol=1e-5)  # the pixels are the mask's
  np.testing.assert_allclose(np.asarray(out.lam), weight.mean(axis=(1, 2)), rtol=1e-5)  # λ its proportion
  assert 0 < np.asarray(out.lam).min() and np.asarray(out.lam).max() < 1


def test_three_sources_give_the_exact_soft_target():
  """k = 3: for constant images of values v, v², v³ per channel, every channel's mean pixel is the target's
  weighted mean of the sources' values — the label weights are the masks' proportions."""
  values = jnp.arange(1.0, 9.0)
  images = jnp.stack([values, values**2 / 8, values**3 / 64], -1)[:, None, None, :] * jnp.ones((8, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(8), 8)
  apply = _small_cnn_apply()  # built outside the trace: the network is cached
  out = jax.jit(lambda x, y: _local(x, y, _hp(k=3, max_iter=4), apply))(images, labels)
  result = mixing.MixResult(out.images, labels, out.labels_b, out.lam)
  targets = np.asarray(result.targets, np.float64)
  assert np.all(targets >= 0) and np.allclose(targets.sum(1), 1.0, rtol=1e-6)
  assert np.all((targets > 0).sum(1) == 3)  # three distinct sources
  channel_values = np.asarray(images[:, 0, 0], np.float64)  # [8, 3]
  np.testing.assert_allclose(np.asarray(out.images).mean(axis=(1, 2)), targets @ channel_values, rtol=1e-4)
  np.testing.assert_allclose(targets[np.arange(8)[:, None], np.asarray(out.sources)], np.asarray(out.weights), 1e-5)


def test_same_key_same_mix_and_another_key_another(teacher):
  images, labels = constant_batch(8, size=32)
  labels = jnp.pad(labels, ((0, 0), (0, 2)))
  hp = _hp(max_iter=2)
  run = jax.jit(lambda r, x, y, t: supermix.SuperMix().mix(None, r, x, y, t, alpha=2.0, hp=hp)[0])
  a, b, c = (run(jax.random.key(s), images, labels, teacher) for s in (3, 3, 4))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert not np.array_equal(np.asarray(a.images), np.asarray(c.images))


def test_pairs_stay_on_their_device_and_bf16_mixes(teacher, four_device_mesh):
  images, labels = constant_batch(16, size=32, dtype=jnp.bfloat16)
  hp = _hp(max_iter=2)
  mix = supermix.SuperMix().mix  # the teacher computes in bf16 too (the run's compute dtype)
  run = jax.jit(lambda r, x, y, t: mix(four_device_mesh, r, x, y, t, alpha=2.0, hp=hp, dtype=jnp.bfloat16))
  result, out = run(jax.random.key(5), images, labels, teacher)
  assert result.images.dtype == jnp.bfloat16 and result.lam.dtype == jnp.float32
  partner = np.argmax(np.asarray(result.labels_b), 1)
  rows = np.arange(16)
  assert np.all(partner // 4 == rows // 4) and np.all(partner != rows)  # on its device, never itself
  np.testing.assert_array_equal(np.asarray(out.sources)[:, 1], partner % 4)  # the local index of the partner
  weight, _ = recover_pixel_weight(result)  # bf16 rounding of values up to 16: a few hundredths
  np.testing.assert_allclose(weight.mean(axis=(1, 2)), np.asarray(result.lam), atol=0.03)
  assert np.all(np.isfinite(np.asarray(result.images, np.float32)))


# ---------------------------------------------------------------- configuration and the teacher


def test_missing_teacher_checkpoint_is_one_line_naming_the_key():
  hp = supermix.SuperMix().hyper_parameters()
  ctx = types.SimpleNamespace(seed=0, checkpoints=None)
  with pytest.raises(UserError) as error:
    supermix.SuperMix().init_aux(ctx, None, None, None, hp)
  text = format_user_error(error.value)
  assert "\n" not in text and "config.mixing.args.supermix.teacher_checkpoint" in text
  assert "allow_random_teacher=True" in text
  with pytest.raises(FileNotFoundError, match="teacher_checkpoint /nonexistent.pth does not exist"):
    supermix.TEACHER.check_configured(dataclasses.replace(hp, teacher_checkpoint="/nonexistent.pth"))


@pytest.mark.parametrize(
  "key,value,fix", [("k", 1, "k must be an integer >= 2"), ("sigma", 0.1, "sigma must be 0"), ("tol", 100, "tol")]
)
def test_bad_hyper_parameters_say_the_fix(key, value, fix):
  with pytest.raises(UserError, match=fix):
    supermix.check_hyper_parameters(_hp(**{key: value}))
  with pytest.raises(UserError, match=r"k <= 4"):
    supermix.check_shapes(_hp(k=5), 32, 32, 4)


def test_a_teacher_from_one_of_our_runs(tmp_path):
  """The teacher comes from an Orbax checkpoint of a (vanilla) demo run; its weights land in aux and drive a mix."""
  pretrain = demo_config("vanilla")
  pretrain.max_steps = 1
  pretrain.batch_size = 32
  train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))
  reader = mixing.CheckpointReader(run_config=checkpoint.read_run_config, weights=checkpoint.read_run_weights)
  hp = supermix.SuperMix().hyper_parameters(teacher_checkpoint=str(tmp_path / "pretrain"), max_iter=2)
  ctx = types.SimpleNamespace(seed=0, checkpoints=reader)
  aux = supermix.SuperMix().init_aux(ctx, None, None, None, hp)
  run_params, _ = checkpoint.read_run_weights(str(tmp_path / "pretrain"))
  kernel = np.asarray(aux["teacher"]["params"]["stem_conv"]["kernel"])
  assert kernel.shape[-1] == 8  # the run's width-8 ResNet-18, from its config
  np.testing.assert_array_equal(kernel, np.asarray(run_params["stem_conv"]["kernel"]))
  images, labels = constant_batch(8, size=32)
  labels = jnp.pad(labels, ((0, 0), (0, 2)))
  result, out = supermix.SuperMix().mix(
    None, jax.random.key(0), images, labels, aux["teacher"], alpha=2.0, hp=hp, checkpoints=reader
  )
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-6)
  assert int(out.iterations[0]) >= 1 and np.all(np.isfinite(np.asarray(result.images)))


def test_picture_mixes_the_photos_with_their_label_weights():
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  step = supermix.SuperMix()
  draw = pictures.picture_for("supermix").build(step, images, labels, alpha=1.0, hp=step.hyper_parameters(max_iter=5))
  result = draw(jax.random.key(1))
  assert result.images.shape == (4, 32, 32, 3) and np.all(np.isfinite(np.asarray(result.images)))
  np.testing.assert_allclose(np.asarray(result.targets).sum(1), 1.0, rtol=1e-5)
  assert np.all(np.argmax(np.asarray(result.labels_b), 1) != np.arange(4))
