"""SaliencyMix's saliency maps against OpenCV-contrib's, on scikit-image photographs.

OpenCV (``opencv-contrib-python-headless``, the ``test`` extra) is only the yardstick here; mixjax never calls it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data

from mixjax.mixing.ops import saliency as S

cv2 = pytest.importorskip("cv2", reason="opencv-contrib-python-headless (the test extra) is not installed")
if not hasattr(cv2, "saliency"):
  pytest.skip("this cv2 has no saliency module (needs opencv-contrib, not plain opencv)", allow_module_level=True)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZES = (224, 32)  # the benchmark's resolution and the demo's
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _photo(name, size):
  image = getattr(data, name)()
  if image.ndim == 2:
    image = np.stack([image] * 3, -1)
  return cv2.resize(np.ascontiguousarray(image[..., :3]), (size, size), interpolation=cv2.INTER_AREA)


def _cv2_peak(saliency_map):
  """The reference's peak: argmax of the map quantised to uint8 (first pixel on ties)."""
  return np.unravel_index(np.argmax((saliency_map * 255).astype(np.uint8)), saliency_map.shape)


_fine_u8 = jax.jit(lambda x: S.fine_grained_saliency(x, input_kind="uint8", channel_order="rgb"))
_fine_float = jax.jit(lambda x: S.fine_grained_saliency(x, input_kind="float_bytes", channel_order="bgr"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PHOTOS)
def test_fine_grained_saliency_equals_opencv_on_8_bit_photos(name, size):
  image = _photo(name, size)
  _, expected = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  ours = np.asarray(_fine_u8(jnp.asarray(image)))
  assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] >= 0.99
  assert np.mean(np.abs(ours - expected) < 0.5 / 255) >= 0.999  # equal up to the odd pixel
  peak = np.array(S.saliency_argmax(jnp.asarray(ours)))
  assert np.abs(peak - np.array(_cv2_peak(expected))).max() <= 2


def _normalised(image):
  return ((image / 255.0 - MEAN) / STD).astype(np.float32)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PHOTOS)
def test_reference_saliency_reproduces_opencv_on_the_normalised_float_tensor(name, size):
  """The reference hands OpenCV the normalised float32 RGB tensor; OpenCV reads the float grey image's bytes."""
  image = _normalised(_photo(name, size))
  grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  ours_grey = np.asarray(jax.jit(lambda x: S._grey(x, "float_bytes", "bgr"))(jnp.asarray(image)))
  if not np.array_equal(grey.view(np.uint32), ours_grey.view(np.uint32)):
    pytest.skip(
      "this OpenCV build rounds its float grey conversion differently (no FMA kernel); the map is "
      "made of those float bits, so it can only be compared on a build that rounds like the emulation"
    )
  _, expected = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(image)
  ours = np.asarray(_fine_float(jnp.asarray(image)))
  assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] >= 0.99
  peak = np.array(S.saliency_argmax(jnp.asarray(ours)))
  assert np.abs(peak - np.array(_cv2_peak(expected))).max() <= 2
  # and it is not a saliency of the photo: it has nothing to do with the 8-bit image's map
  _, proper = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(_photo(name, size))
  assert abs(np.corrcoef(ours.ravel(), proper.ravel())[0, 1]) < 0.3


def test_reference_peaks_sit_on_the_first_rows():
  """The byte-level map peaks near the top of the image: what the reference's boxes are centred on."""
  rng = np.random.default_rng(0)
  peak = jax.jit(lambda x: S.salient_peak(x, "reference"))
  rows = []
  for name in PHOTOS:
    photo = getattr(data, name)()[..., :3]
    for _ in range(6):
      h, w = photo.shape[:2]
      side = int(rng.integers(min(h, w) // 2, min(h, w)))
      top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
      crop = cv2.resize(np.ascontiguousarray(photo[top : top + side, left : left + side]), (224, 224))
      rows.append(int(peak(jnp.asarray(_normalised(crop)))[0]))
  assert np.median(rows) < 40


NATURAL = ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "hubble_deep_field")


@pytest.mark.parametrize("name", NATURAL)
def test_spectral_residual_matches_opencv_at_224(name):
  image = _photo(name, 224)
  _, expected = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(
    cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  )
  for periodic, min_corr in ((True, 0.9), (False, 0.98)):
    ours = S.spectral_residual_saliency(jnp.asarray(image), periodic=periodic)
    ours = np.asarray(jax.image.resize(ours, (224, 224), "linear", antialias=False))
    assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] >= min_corr, periodic
    distance = np.abs(
      np.array(np.unravel_index(np.argmax(ours), ours.shape))
      - np.array(np.unravel_index(np.argmax(expected), expected.shape))
    ).max()
    assert distance * S.WORKING_SIZE / 224 <= 2, periodic  # within 2 working (64 px) cells


@pytest.mark.parametrize("name", PHOTOS)
def test_spectral_residual_without_the_border_fix_is_opencv_at_the_demo_size(name):
  image = _photo(name, 32)
  _, expected = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(
    cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  )
  ours = S.spectral_residual_saliency(jnp.asarray(image), periodic=False)
  ours = np.asarray(jax.image.resize(ours, (32, 32), "linear", antialias=False))
  assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] >= 0.98
  assert np.unravel_index(np.argmax(ours), ours.shape) == np.unravel_index(np.argmax(expected), expected.shape)
