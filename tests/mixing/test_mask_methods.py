"""Method-specific checks for FMix, GridMix, ResizeMix and SaliencyMix."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from mixjax.mixing.input import fmix as fmix_module
from mixjax.mixing.input import resizemix as resizemix_module
from mixjax.mixing.ops import saliency as saliency_module
from mixjax.mixing.ops.saliency import salient_peak
from tests.mixing.conftest import constant_batch, recover_pixel_weight


def _cyclic_runs(row):
  """Number of runs of ones in a binary row, treating it as a ring."""
  changes = np.sum(row != np.roll(row, 1))
  return changes // 2 if changes else int(row[0] == 1)


@pytest.mark.parametrize("spectrum", ["paper", "reference"])
def test_fmix_mask_is_binary_with_area_lambda_at_any_size(spectrum):
  images, labels = constant_batch(batch=4, size=32)
  images = images[:, :24, :]  # non-square 24 x 32: mask follows the image
  fn = jax.jit(functools.partial(mixing.get_method("fmix").fn, alpha=1.0, lam=0.3, spectrum=spectrum))
  row_runs = []
  for seed in range(4):
    out = fn(jax.random.key(seed), images, labels)
    weight, self_pair = recover_pixel_weight(out)
    w = weight[~self_pair][0]
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert float(out.lam[0]) in (np.floor(0.3 * 768) / 768, np.ceil(0.3 * 768) / 768)
    row_runs += [_cyclic_runs(r) for r in w]
  if spectrum == "reference":  # the official code's one-cycle-along-W masks
    assert max(row_runs) <= 1
  else:  # isotropic 2-D noise: some rows cross the mask several times
    assert max(row_runs) >= 2


def test_fmix_low_frequency_image_is_normalised_and_smooth():
  image = np.asarray(fmix_module.low_frequency_image(jax.random.key(0), 64, 64, decay_power=3.0))
  assert image.min() == 0.0 and image.max() == pytest.approx(1.0)
  white = np.asarray(fmix_module.low_frequency_image(jax.random.key(0), 64, 64, decay_power=0.0))
  roughness = lambda a: np.abs(np.diff(a, axis=0)).mean()
  assert roughness(image) < 0.25 * roughness(white)  # 1/f^3 is smooth


def _fmix_draws(spectrum, draws, size=32):
  keys = jax.random.split(jax.random.key(0), draws)
  return jax.jit(jax.vmap(lambda k: fmix_module.low_frequency_image(k, size, size, 3.0, spectrum)))(keys)


def test_fmix_paper_spectrum_is_isotropic():
  """Purely vertical modes (ky ≠ 0, kx = 0) carry the same power as purely horizontal ones (ky = 0, kx ≠ 0)."""
  images = _fmix_draws("paper", 6000)
  power = jnp.abs(jnp.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
  for k in (slice(1, 4), slice(29, 32)):  # the lowest positive and negative frequencies
    vertical, horizontal = float(power[:, k, 0].sum()), float(power[:, 0, k].sum())
    assert vertical / horizontal == pytest.approx(1.0, abs=0.05)


def test_fmix_paper_masks_have_as_many_vertical_as_horizontal_edges():
  masks = jax.vmap(lambda im: fmix_module.binarise_top_fraction(im, 512))(_fmix_draws("paper", 2000))
  vertical = np.asarray(jnp.abs(jnp.diff(masks, axis=1)).sum((1, 2)))  # edges between rows
  horizontal = np.asarray(jnp.abs(jnp.diff(masks, axis=2)).sum((1, 2)))
  assert vertical.mean() / horizontal.mean() == pytest.approx(1.0, abs=0.05)
  assert 0.45 <= np.mean(vertical < horizontal) <= 0.55  # an irfft2 half-spectrum gave 0.68


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
  pattern = (10000.0 * jnp.arange(batch)[:, None, None] + size * rows + cols).astype(jnp.float32)
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
      np.testing.assert_allclose(float(out.lam[i]), 1 - pasted.sum() / size**2, atol=1e-6)
      checked += 1
  assert checked


def test_resizemix_scale_stays_in_scope():
  keys = jax.random.split(jax.random.key(0), 256)
  for alpha in (0.2, 1.0):
    tau = jax.vmap(lambda k: resizemix_module.sample_scale(k, alpha, (0.1, 0.8), True))(keys)
    assert float(tau.min()) >= 0.1 and float(tau.max()) <= 0.8
    assert float(tau.std()) > 0.1


@pytest.mark.parametrize("kind", ["fine_grained", "spectral_residual"])
def test_saliency_peak_finds_a_small_bright_spot(kind):
  image = jnp.zeros((96, 96, 3)).at[60:66, 18:24, :].set(4.0)
  image = image + 0.05 * jax.random.normal(jax.random.key(0), image.shape)
  row, col = salient_peak(image, kind)
  assert abs(int(row) - 63) <= 6 and abs(int(col) - 21) <= 6


def test_spectral_residual_border_jump_is_not_salient():
  """A ramp jumps from bright to dark where the DFT wraps around; the periodic decomposition removes that."""
  yy, xx = np.mgrid[0:96, 0:96] / 95.0
  image = (0.6 * yy + 0.4 * xx)[..., None] * np.ones(3)
  image[40:46, 60:66] += 0.05  # a faint square: the only real structure
  peaks = {}
  for periodic in (False, True):
    sal = np.asarray(saliency_module.spectral_residual_saliency(jnp.asarray(image, jnp.float32), periodic=periodic))
    peaks[periodic] = np.unravel_index(np.argmax(sal), sal.shape)
  size = saliency_module.WORKING_SIZE
  assert max(peaks[False]) >= size - 3  # plain DFT: the wrap-around edge wins
  assert abs(peaks[True][0] - 43 * size / 96) <= 3 and abs(peaks[True][1] - 63 * size / 96) <= 3


def test_fine_grained_saliency_is_jittable_and_takes_grey_images():
  image = jnp.zeros((40, 48, 1)).at[10:14, 30:34].set(200.0)
  sal = jax.jit(saliency_module.fine_grained_saliency)(image)
  assert sal.shape == (40, 48) and float(sal.max()) == 1.0
  assert float(jnp.max(sal[10:14, 30:34])) == 1.0  # the square is the strongest "on" response


@pytest.mark.parametrize("kind", ["fine_grained", "spectral_residual"])
def test_saliencymix_box_covers_the_partner_salient_spot(kind):
  images, labels = constant_batch(batch=4, size=64)
  images = images.at[:, 44:48, 8:12, :].add(20.0)  # same spot in every image
  fn = jax.jit(
    functools.partial(
      mixing.get_method("saliencymix").fn, alpha=1.0, lam=0.9, saliency=kind, mean=(0.0,) * 3, std=(8.0,) * 3
    )
  )
  for seed in range(3):
    out = fn(jax.random.key(seed), images, labels)
    partner = np.argmax(np.asarray(out.labels_b), axis=1)
    mixed = np.asarray(out.images)[..., 0]
    i = int(np.argmax(partner != np.arange(4)))
    assert partner[i] != i
    # the spot came from the partner: value partner+1 (+20 on the spot)
    np.testing.assert_allclose(mixed[i, 45, 9], partner[i] + 1 + 20.0)
    assert float(out.lam[i]) < 1


def test_saliencymix_reference_saliency_centres_boxes_on_the_first_rows():
  """'reference' reproduces OpenCV reading the normalised float tensor's bytes: peaks near the top edge."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(4, 64, 64, 3)).astype(np.float32))
  rows = [int(salient_peak(images[i], "reference")[0]) for i in range(4)]
  assert np.median(rows) < 16
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  out = jax.jit(functools.partial(mixing.get_method("saliencymix").fn, alpha=1.0, lam=0.5, saliency="reference"))(
    jax.random.key(0), images, labels
  )
  lam = float(out.lam[0])
  assert 0.5 < lam < 1  # the box (drawn for λ = 0.5) is clipped by the top edge
