"""Static saliency maps on device, for SaliencyMix (spec 2.7).

* ``fine_grained_saliency``: the fine-grained static saliency of Montabone & Soto ("Human detection using a
  mobile platform and novel features derived from a visual saliency mechanism", Image and Vision Computing 2010)
  as OpenCV-contrib implements it (``cv2.saliency.StaticSaliencyFineGrained``), which OpenMixup's and the
  SaliencyMix authors' code call: grey image, smoothed twice by a 3×3 Gaussian; at six scales n ∈ {12, 24, 48,
  28, 56, 112} the centre-surround differences "on" = max(0, centre − surround mean) and "off" = max(0,
  surround mean − centre), the surround mean taken over the window [y−n+1, y+n] × [x−n+1, x+n] (clipped to the
  image) from an integral image, without the centre pixel; each of on/off summed over the scales and scaled to
  0..255; the map = (on + off) scaled to 0..255. Every 8-bit rounding, truncation and wrap of OpenCV's code is
  reproduced, so for an 8-bit image the map equals OpenCV's exactly (``tests/mixing/test_saliency.py``).
  ``input_kind='float_bytes'`` reproduces what OpenCV does with a float32 image, which is what the reference
  feeds it (the normalised tensor): the grey image, blur and integral image are float, but the centre value is
  read with ``at<uchar>``, i.e. byte x of row y of the float grey image — raw float bits — so the map is
  effectively noise concentrated on the image's first rows. All shapes are static; there is no host call.
* ``spectral_residual_saliency``: Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007,
  at 64×64 like OpenCV's ``StaticSaliencySpectralResidual``, but with the image mirror-padded before the DFT so
  the DFT's periodic wrap-around does not make the image border salient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD

WORKING_SIZE = 64  # Hou & Zhang's (and OpenCV's) spectral-residual resolution
FINE_GRAINED_SCALES = (12, 24, 48, 28, 56, 112)  # 3·4·{1,2,4} and 7·4·{1,2,4}
INPUT_KINDS = ("uint8", "float_bytes")


# ----------------------------------------------------------------------------------------------------------------
# exact float32 helpers (no fused multiply-add primitive in jax.lax)


def _two_sum(a, b):
  """s + e = a + b exactly (Knuth's TwoSum)."""
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


def _split_12_bits(a):
  """a = hi + lo with hi holding the top 12 significant bits (by masking), so 12×12-bit products are exact."""
  hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000), jnp.float32)
  return hi, a - hi


def fma_f32(a, b, c):
  """round(a·b + c) in float32, a fused multiply-add emulated with error-free transformations.

  Dekker's exact product (ph + pl = a·b) then TwoSum with c; the two low parts are added before the last rounding,
  so the result is the correctly rounded one except in rare double-rounding ties.
  """
  a, b, c = (jnp.asarray(v, jnp.float32) for v in (a, b, c))
  ph = a * b
  ah, al = _split_12_bits(a)
  bh, bl = _split_12_bits(b)
  pl = ((ah * bh - ph) + ah * bl + al * bh) + al * bl
  s, e = _two_sum(ph, c)
  return s + (e + pl)


def _scale_to_255(total):
  """C's ``(uchar)(255. * (float)(total / (float)max))`` per pixel, in integers (0 where the max is 0).

  floor(255·fl32(s/m)) = floor(255·s/m): when 255·s/m is an integer k, fl32(s/m) = fl32(k/255) is never rounded
  down (k/255 is the byte k repeated in binary, so the bits cut off start with k's leading one), and otherwise
  255·s/m is at least 1/m away from an integer. Integers also keep XLA's rewrite of a division by a scalar
  (x·(1/m)) from changing the rounding.
  """
  peak = jnp.max(total)
  return jnp.where(peak > 0, (255 * total) // jnp.maximum(peak, 1), 0)


# ----------------------------------------------------------------------------------------------------------------
# fine-grained saliency


def _reflect101_pad(x, axis):
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  return jnp.pad(x, pad, mode="reflect")  # numpy 'reflect' = OpenCV BORDER_REFLECT_101


def _neighbours(x, axis):
  p = _reflect101_pad(x, axis)
  n = x.shape[axis]
  take = lambda start: jax.lax.slice_in_dim(p, start, start + n, axis=axis)
  return take(0), take(1), take(2)


def _gaussian3_uint8(grey):
  """OpenCV's bit-exact 8-bit 3×3 Gaussian (σ from the size): floor((Σ [1,2,1]⊗[1,2,1]·p + 8) / 16)."""
  a, b, c = _neighbours(grey, 1)
  rows = a + 2 * b + c
  a, b, c = _neighbours(rows, 0)
  return (a + 2 * b + c + 8) >> 4


def _gaussian3_float(grey):
  """OpenCV's float 3×3 Gaussian: the row pass then the column pass, each b/2 + (a + c)/4."""
  for axis in (1, 0):
    a, b, c = _neighbours(grey, axis)
    grey = b * 0.5 + (a + c) * 0.25
  return grey


def _grey(image, input_kind, channel_order):
  """OpenCV's ``cvtColor(…, COLOR_BGR2GRAY)`` of a [H, W, 3] image, channels in ``channel_order``."""
  if image.shape[-1] == 1:
    return image[..., 0]
  if channel_order == "rgb":
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
  else:
    blue, green, red = image[..., 0], image[..., 1], image[..., 2]
  if input_kind == "uint8":
    # fixed point with 15 fractional bits: B·3735 + G·19235 + R·9798, rounded (bit-checked)
    return (blue * 3735 + green * 19235 + red * 9798 + (1 << 14)) >> 15
  # float: fma(R, 0.299, fma(B, 0.114, G·0.587)), the SIMD order OpenCV's AVX2 kernel uses (bit-checked)
  return fma_f32(red, 0.299, fma_f32(blue, 0.114, green * jnp.float32(0.587)))


def _centre_bytes(grey_f32):
  """OpenCV's ``gray.at<uchar>(y, x)`` on a float32 matrix: byte x of row y's memory (little-endian floats)."""
  h, w = grey_f32.shape
  raw = jax.lax.bitcast_convert_type(grey_f32, jnp.uint8).reshape(h, 4 * w)
  return raw[:, :w].astype(jnp.float32)


def _box_corners(size, n):
  """Integral-image indices of OpenCV's window [p−n+1, p+n] clipped to the image, per coordinate."""
  p = np.arange(size)
  return np.clip(p - n + 1, 0, size), np.clip(p + n + 1, 0, size)


def fine_grained_saliency(
  image: jax.Array,
  *,
  input_kind: str = "uint8",
  channel_order: str = "rgb",
  scales: tuple[int, ...] = FINE_GRAINED_SCALES,
) -> jax.Array:
  """[H, W] float32 fine-grained saliency in [0, 1] (multiples of 1/255) of one [H, W, C] image (C = 1 or 3).

  ``input_kind='uint8'``: ``image`` holds 0..255 values (rounded and clipped to 8 bits), and the map equals
  OpenCV's ``StaticSaliencyFineGrained`` on that 8-bit image. ``input_kind='float_bytes'``: ``image`` is taken
  as float32 and the map equals OpenCV's on that float32 image (what the reference does to the normalised
  tensor; see the module docstring). ``channel_order`` names the image's channels; OpenCV assumes 'bgr' (the
  reference hands it RGB tensors, i.e. 'bgr' of an RGB image swaps the red and blue weights).
  """
  if input_kind not in INPUT_KINDS:
    raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
  if channel_order not in ("rgb", "bgr"):
    raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
  h, w = image.shape[:2]
  if input_kind == "uint8":
    pixels = jnp.clip(jnp.round(image.astype(jnp.float32)), 0, 255).astype(jnp.int32)
    grey = _gaussian3_uint8(_gaussian3_uint8(_grey(pixels, input_kind, channel_order)))
    centre = grey.astype(jnp.float32)
    grey = centre
  else:
    grey = _gaussian3_float(_gaussian3_float(_grey(image.astype(jnp.float32), input_kind, channel_order)))
    centre = _centre_bytes(grey)
  integral = jnp.pad(jnp.cumsum(jnp.cumsum(grey, axis=0), axis=1), ((1, 0), (1, 0)))

  on_sum = jnp.zeros((h, w), jnp.int32)
  off_sum = jnp.zeros((h, w), jnp.int32)
  for n in scales:
    y1, y2 = _box_corners(h, n)
    x1, x2 = _box_corners(w, n)
    rows2, rows1 = integral[y2], integral[y1]
    box = ((rows2[:, x2] + rows1[:, x1]) - rows2[:, x1]) - rows1[:, x2]
    area = ((y2 - y1)[:, None] * (x2 - x1)[None, :] - 1).astype(np.float32)
    # the barrier keeps XLA from turning the division by a constant into a product with its reciprocal,
    # which rounds differently (e.g. 6/3 → 1.9999999) and changes the truncations below
    surround = (box - centre) / jax.lax.optimization_barrier(jnp.asarray(area))
    diff_on = centre - surround
    # C's (uchar) of a positive float: truncation, wrapped to 8 bits past 255
    on_sum += jnp.where(diff_on > 0, jnp.trunc(diff_on).astype(jnp.int32) & 255, 0)
    diff_off = surround - centre
    off_sum += jnp.where(diff_off > 0, jnp.trunc(diff_off).astype(jnp.int32) & 255, 0)

  on, off = _scale_to_255(on_sum), _scale_to_255(off_sum)
  top = jnp.maximum(jnp.max(on), jnp.max(off))
  mixed = jnp.where(top > 0, (255 * (on + off)) // jnp.maximum(top, 1), 0) & 255
  return mixed.astype(jnp.float32) * jnp.float32(1.0 / 255.0)


def saliency_argmax(saliency: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(row, col) of the reference's peak: ``argmax((map·255).astype(uint8))``, first in row-major order on ties."""
  quantised = jnp.floor(saliency.astype(jnp.float32) * jnp.float32(255.0))
  flat = jnp.argmax(quantised.reshape(-1))
  width = saliency.shape[1]
  return (flat // width).astype(jnp.int32), (flat % width).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------------------------
# spectral residual


def _box_blur_3x3_reflect(values: jax.Array) -> jax.Array:
  a, b, c = _neighbours(values, 0)
  a, b, c = _neighbours(a + b + c, 1)
  return (a + b + c) / 9


def _gaussian_5x5_reflect(values: jax.Array, sigma: float) -> jax.Array:
  x = np.arange(5) - 2
  kernel = np.exp(-(x**2) / (2 * sigma**2))
  kernel = jnp.asarray(kernel / kernel.sum(), jnp.float32)
  for axis in (0, 1):
    pad = [(0, 0), (0, 0)]
    pad[axis] = (2, 2)
    padded = jnp.pad(values, pad, mode="reflect")
    n = values.shape[axis]
    values = sum(kernel[i] * jax.lax.slice_in_dim(padded, i, i + n, axis=axis) for i in range(5))
  return values


def _smooth_component_spectrum(grey: jax.Array) -> jax.Array:
  """DFT of the smooth component of Moisan's periodic + smooth decomposition ("Periodic plus smooth image
  decomposition", J. Math. Imaging Vis. 2011): the part of the image that carries the jump between opposite
  borders, which the DFT's periodic extension otherwise turns into salient edges along the border."""
  h, w = grey.shape
  boundary = jnp.zeros_like(grey)
  boundary = boundary.at[0, :].add(grey[-1, :] - grey[0, :]).at[-1, :].add(grey[0, :] - grey[-1, :])
  boundary = boundary.at[:, 0].add(grey[:, -1] - grey[:, 0]).at[:, -1].add(grey[:, 0] - grey[:, -1])
  cos_y = np.cos(2 * np.pi * np.arange(h) / h)[:, None]
  cos_x = np.cos(2 * np.pi * np.arange(w) / w)[None, :]
  denominator = 2 * cos_y + 2 * cos_x - 4
  denominator[0, 0] = 1.0
  smooth = jnp.fft.fft2(boundary) / jnp.asarray(denominator, jnp.float32)
  return smooth.at[0, 0].set(0)


def spectral_residual_saliency(image: jax.Array, size: int = WORKING_SIZE, *, periodic: bool = True) -> jax.Array:
  """[size, size] float32 spectral-residual saliency in [0, 1] of one [H, W, C] image (any value range).

  OpenCV's steps (grey → bilinear resize to size×size → DFT → log(|F| + 1) minus its 3×3 box mean (reflected
  border) → back with the original phase → |·| → 5×5 Gaussian σ 8 → squared → divided by its maximum), with one
  change when ``mirror_pad``: the DFT runs on the image mirrored into a 2size×2size tile and the top-left
  size×size of the result is kept, so the periodic extension the DFT assumes has no jump at the border (which
  otherwise lights up the border and corners). The grey level is scaled to 0..255 from the image's range so the
  ``+ 1`` inside the log weighs as it does on an 8-bit image.
  """
  image = image.astype(jnp.float32)
  if image.shape[-1] == 3:  # OpenCV's grey weights (RGB order)
    grey = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
  else:
    grey = jnp.mean(image, axis=-1)
  grey = jax.image.resize(grey, (size, size), method="linear", antialias=False)
  low, high = jnp.min(grey), jnp.max(grey)
  grey = (grey - low) * (255.0 / jnp.maximum(high - low, 1e-6))
  spectrum = jnp.fft.fft2(grey)
  if periodic:
    spectrum = spectrum - _smooth_component_spectrum(grey)
  log_amplitude = jnp.log(jnp.abs(spectrum) + 1.0)
  residual = log_amplitude - _box_blur_3x3_reflect(log_amplitude)
  magnitude = jnp.abs(jnp.fft.ifft2(jnp.exp(residual) * jnp.exp(1j * jnp.angle(spectrum))))
  saliency = _gaussian_5x5_reflect(magnitude.astype(jnp.float32), 8.0) ** 2
  return (saliency / jnp.maximum(jnp.max(saliency), 1e-30)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# the SaliencyMix peak

SALIENCY_KINDS = ("fine_grained", "reference", "spectral_residual")


def salient_peak(
  image: jax.Array, saliency: str = "fine_grained", *, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> tuple[jax.Array, jax.Array]:
  """(row, col) in image pixels of the saliency peak of one normalised [H, W, C] image.

  * 'fine_grained': OpenCV's fine-grained saliency of the 8-bit RGB image the normalised one came from
    (``x·std + mean``, rounded) — what SaliencyMix's paper describes.
  * 'reference': what OpenMixup's and the SaliencyMix authors' code compute: OpenCV's fine-grained saliency
    handed the normalised float32 RGB tensor (read as BGR), whose float bytes act as pixels (module docstring);
    the peak lands on the first rows (median row ≈ 9 of 224) at a pseudo-random column.
  * 'spectral_residual': mirror-padded spectral residual at 64×64, the cell centre mapped back to the image.

  Both fine-grained kinds run at the image's own resolution and pick the peak as the reference does
  (``saliency_argmax``).
  """
  if saliency not in SALIENCY_KINDS:
    raise ValueError(f"saliencymix saliency must be one of {SALIENCY_KINDS}, got {saliency!r}")
  height, width = image.shape[:2]
  if saliency == "spectral_residual":
    size = WORKING_SIZE
    flat = jnp.argmax(spectral_residual_saliency(image))
    row, col = flat // size, flat % size
    return (((2 * row + 1) * height) // (2 * size)).astype(jnp.int32), (((2 * col + 1) * width) // (2 * size)).astype(
      jnp.int32
    )
  if saliency == "reference":
    return saliency_argmax(
      fine_grained_saliency(image.astype(jnp.float32), input_kind="float_bytes", channel_order="bgr")
    )
  channels = image.shape[-1]
  mean = jnp.broadcast_to(jnp.asarray(mean, jnp.float32), (channels,))
  std = jnp.broadcast_to(jnp.asarray(std, jnp.float32), (channels,))
  pixels = image.astype(jnp.float32) * std + mean
  return saliency_argmax(fine_grained_saliency(pixels, input_kind="uint8", channel_order="rgb"))
