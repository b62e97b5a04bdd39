"""Method-specific checks for FMix, GridMix, ResizeMix and SaliencyMix."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from mixjax.mixing import fmix as fmix_module
from mixjax.mixing import resizemix as resizemix_module
from mixjax.mixing.saliency import salient_peak
from tests.mixing.conftest import constant_batch, recover_pixel_weight


def _cyclic_runs(row):
  """Number of runs of ones in a binary row, treating it as a ring."""
  changes = np.sum(row != np.roll(row, 1))
  return changes // 2 if changes else int(row[0] == 1)


@pytest.mark.parametrize("spectrum", ["paper", "reference"])
def test_fmix_mask_is_binary_with_area_lambda_at_any_size(spectrum):
  images, labels = constant_batch(batch=4, size=32)
  images = images[:, :24, :]  # non-square 24 x 32: mask follows the image
  fn = jax.jit(functools.partial(mixing.get_method("fmix").fn, alpha=1.0,
                                 lam=0.3, spectrum=spectrum))
  row_runs = []
  for seed in range(4):
    out = fn(jax.random.key(seed), images, labels)
    weight, self_pair = recover_pixel_weight(out)
    w = weight[~self_pair][0]
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert float(out.lam[0]) in (np.floor(0.3 * 768) / 768,
                                 np.ceil(0.3 * 768) / 768)
    row_runs += [_cyclic_runs(r) for r in w]
  if spectrum == "reference":  # the official code's one-cycle-along-W masks
    assert max(row_runs) <= 1
  else:  # isotropic 2-D noise: some rows cross the mask several times
    assert max(row_runs) >= 2


def test_fmix_low_frequency_image_is_normalised_and_smooth():
  image = np.asarray(fmix_module.low_frequency_image(
      jax.random.key(0), 64, 64, decay_power=3.0))
  assert image.min() == 0.0 and image.max() == pytest.approx(1.0)
  white = np.asarray(fmix_module.low_frequency_image(
      jax.random.key(0), 64, 64, decay_power=0.0))
  roughness = lambda a: np.abs(np.diff(a, axis=0)).mean()
  assert roughness(image) < 0.25 * roughness(white)  # 1/f^3 is smooth


def test_binarise_top_fraction_sets_exactly_count_pixels():
  values = jnp.array([[0.1, 0.9, 0.5], [0.5, 0.2, 0.7]])
  mask = fmix_module.binarise_top_fraction(values, 3)
  # top 3 of 0.9, 0.7 and the tied 0.5s: exactly one 0.5 is kept.
  mask = np.asarray(mask)
  assert mask.sum() == 3 and mask[0, 1] == 1 and mask[1, 2] == 1
  assert mask[0, 2] + mask[1, 0] == 1
  assert mask[0, 0] == 0 and mask[1, 1] == 0


def test_gridmix_holes_shrink_with_lambda():
  images, labels = constant_batch(batch=4, size=32)
  fn = jax.jit(mixing.get_method("gridmix").fn, static_argnames=("alpha",))
  partner_share = {}
  for lam in (0.1, 0.75):
    shares = []
    for seed in range(8):
      out = fn(jax.random.key(seed), images, labels, alpha=1.0, lam=lam)
      weight, self_pair = recover_pixel_weight(out)
      assert set(np.unique(weight[~self_pair])) <= {0.0, 1.0}
      shares.append(1 - float(out.lam[0]))
    partner_share[lam] = np.mean(shares)
  # hole side ~ cell·sqrt(1−λ), over a crop of 50–100 % of the image
  assert 0.05 < partner_share[0.75] < 0.3
  assert partner_share[0.1] > 2 * partner_share[0.75]


def test_resizemix_pastes_the_nearest_resized_partner():
  batch, size = 4, 32
  rows = jnp.arange(size)[:, None]
  cols = jnp.arange(size)[None, :]
  pattern = (10000.0 * jnp.arange(batch)[:, None, None]
             + size * rows + cols).astype(jnp.float32)
  images = pattern[..., None]
  labels = jax.nn.one_hot(jnp.arange(batch), batch)
  fn = jax.jit(mixing.get_method("resizemix").fn, static_argnames=("alpha",))
  checked = 0
  for seed in range(6):
    out = fn(jax.random.key(seed), images, labels, alpha=1.0, lam=0.5)
    mixed = np.asarray(out.images)[..., 0]
    partner = np.argmax(np.asarray(out.labels_b), axis=1)
    for i in range(batch):
      if partner[i] == i:
        continue
      pasted = np.abs(mixed[i] // 10000 - partner[i]) < 0.5
      ys, xs = np.where(pasted)
      top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
      assert pasted.sum() == (bottom - top) * (right - left)
      assert bottom - top <= 16 and right - left <= 16
      src_r = (np.arange(top, bottom) - top) * size // (bottom - top)
      src_c = (np.arange(left, right) - left) * size // (right - left)
      want = np.asarray(pattern)[partner[i]][np.ix_(src_r, src_c)]
      np.testing.assert_array_equal(mixed[i, top:bottom, left:right], want)
      np.testing.assert_allclose(float(out.lam[i]),
                                 1 - pasted.sum() / size ** 2, atol=1e-6)
      checked += 1
  assert checked


def test_resizemix_scale_stays_in_scope():
  keys = jax.random.split(jax.random.key(0), 256)
  for alpha in (0.2, 1.0):
    tau = jax.vmap(lambda k: resizemix_module.sample_scale(
        k, alpha, (0.1, 0.8), True))(keys)
    assert float(tau.min()) >= 0.1 and float(tau.max()) <= 0.8
    assert float(tau.std()) > 0.1


def test_saliency_peak_finds_a_small_bright_spot():
  image = jnp.zeros((96, 96, 3)).at[60:66, 18:24, :].set(4.0)
  image = image + 0.05 * jax.random.normal(jax.random.key(0), image.shape)
  row, col = salient_peak(image)
  assert abs(int(row) - 63) <= 6 and abs(int(col) - 21) <= 6


def test_saliencymix_box_covers_the_partner_salient_spot():
  images, labels = constant_batch(batch=4, size=64)
  images = images.at[:, 44:48, 8:12, :].add(20.0)  # same spot in every image
  fn = jax.jit(mixing.get_method("saliencymix").fn, static_argnames=("alpha",))
  for seed in range(3):
    out = fn(jax.random.key(seed), images, labels, alpha=1.0, lam=0.9)
    partner = np.argmax(np.asarray(out.labels_b), axis=1)
    mixed = np.asarray(out.images)[..., 0]
    i = int(np.argmax(partner != np.arange(4)))
    assert partner[i] != i
    # the spot came from the partner: value partner+1 (+20 on the spot)
    np.testing.assert_allclose(mixed[i, 45, 9], partner[i] + 1 + 20.0)
    assert float(out.lam[i]) < 1
