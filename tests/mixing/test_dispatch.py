"""mix_batch: per-device pairing under shard_map, and multi-mode switching.

Pairing is per device by design (OpenMixup's ``dist_mode=False``): each
device permutes its own shard with the λ/box/mode drawn from the shared rng.
So the 4-device result must equal mixing each shard on its own with the same
rng, and every partner must come from the same shard.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mixjax import mixing
from tests.mixing.conftest import constant_batch


def _config(method, alpha=1.0, prob=None):
  cfg = mixing.default_mixing_config()
  cfg.method, cfg.alpha, cfg.prob = method, alpha, prob
  return cfg


@pytest.mark.parametrize("name", mixing.list_methods("input"))
def test_pairing_stays_within_each_device_shard(name, four_device_mesh):
  mesh = four_device_mesh
  cfg = _config(name)
  images, labels = constant_batch(batch=8)
  sharding = NamedSharding(mesh, P("data"))
  images_s, labels_s = jax.device_put((images, labels), sharding)
  global_mix = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y, mesh=mesh))
  shard_mix = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y))
  for seed in (0, 1):
    key = jax.random.key(seed)
    out = global_mix(key, images_s, labels_s)
    assert out.images.sharding.spec[0] == "data"
    partner = np.argmax(np.asarray(out.labels_b), axis=1)
    np.testing.assert_array_equal(partner // 2, np.arange(8) // 2)
    for shard in range(4):  # same rng, one shard alone → same result
      rows = slice(2 * shard, 2 * shard + 2)
      alone = shard_mix(key, images[rows], labels[rows])
      for got, want in zip(out, alone):
        np.testing.assert_array_equal(np.asarray(got)[rows], want)


def test_partner_comes_from_the_whole_batch_without_mesh():
  cfg = _config("mixup")
  images, labels = constant_batch(batch=8)
  fn = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y))
  partners = [np.argmax(np.asarray(fn(jax.random.key(s), images, labels).labels_b), axis=1) for s in range(4)]
  crosses = np.concatenate([p // 2 != np.arange(8) // 2 for p in partners])
  assert crosses.any()


def test_multi_mode_switches_without_recompiling():
  cfg = _config(["vanilla", "mixup", "cutmix"], alpha=[1.0, 1.0, 1.0], prob=[0.2, 0.4, 0.4])
  images, labels = constant_batch(batch=8)
  fn = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y))
  kinds = set()
  for seed in range(16):
    out = fn(jax.random.key(seed), images, labels)
    np.testing.assert_allclose(np.asarray(out.targets).sum(1), 1, atol=1e-6)
    if np.all(np.asarray(out.lam) == 1) and np.array_equal(out.images, images):
      kinds.add("vanilla")
    else:
      values = np.unique(np.asarray(out.images)[..., 0])
      # cutmix pastes whole pixels (values stay integers), mixup blends.
      kinds.add("cutmix" if np.allclose(values, np.round(values)) else "mixup")
  assert kinds == {"vanilla", "mixup", "cutmix"}
  assert fn._cache_size() == 1


def test_mode_probabilities_are_respected():
  cfg = _config(["mixup", "vanilla"], alpha=[1.0, 1.0], prob=[0.0, 1.0])
  images, labels = constant_batch(batch=8)
  fn = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y))
  for seed in range(6):
    out = fn(jax.random.key(seed), images, labels)
    np.testing.assert_array_equal(out.images, images)


def test_batch_must_divide_over_devices(four_device_mesh):
  cfg = _config("mixup")
  images, labels = constant_batch(batch=6)
  with pytest.raises(ValueError, match="not divisible"):
    mixing.mix_batch(cfg, jax.random.key(0), images, labels, mesh=four_device_mesh)
