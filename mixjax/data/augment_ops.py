"""Training augmentations as pp ops: RandAugment, random erasing, colour jitter.

These are the strong augmentations of the RSB (Wightman, Touvron and Jégou
2021, "ResNet strikes back") and DeiT (Touvron et al. 2021) recipes. They
follow timm's definitions (which use PIL) so OpenMixup's numbers can be
reproduced, but run as tf ops inside tf.data on one uint8 [h, w, 3] image:

* `randaugment` / `randaugment_timm`: RandAugment (Cubuk, Zoph, Shlens and
  Le 2020) with timm's `rand-m{M}-mstd{S}-inc1` semantics.
* `random_erasing`: Random Erasing (Zhong et al. 2020) with timm's modes.
* `color_jitter`: torchvision's ColorJitter.

Like every random op of `pp_ops`, each takes its randomness from the
per-example seed under "_seed", so outputs are pure functions of the seed.
The pixel functions below (`invert`, `rotate`, ...) are public so tests and
other ops can check them one by one.
"""

import math
import re
from typing import Callable, Sequence

import tensorflow as tf

from mixjax.data.pp_ops import _decoded, _take_seed
from mixjax.data.pp_registry import register
from mixjax.config_args import ConfigError
from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD

# timm's img_mean hparam: the ImageNet mean in RGB, round(255 * (0.485, 0.456, 0.406)).
IMAGENET_FILL_RGB = (124, 116, 104)
IMAGENET_MEAN_RGB, IMAGENET_STD_RGB = IMAGENET_MEAN, IMAGENET_STD
_LEVEL_DENOM = 10.0  # timm's magnitude scale: M in [0, 10] maps linearly onto each range.
_INTERPOLATIONS = ("bilinear", "nearest")


# ------------------------------------------------------------------ helpers ---


def _uint8_image(example: dict, op_name: str) -> tf.Tensor:
  image = _decoded(example, op_name)
  if image.dtype != tf.uint8:
    raise ConfigError(
      f"pp op {op_name!r} expects a uint8 image, got {image.dtype.name}; "
      f"put it before any op that changes the pixel type."
    )
  return image


def _to_uint8(pixels: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def _like(out: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
  """Keeps the input's static shape, which tf.switch_case may lose."""
  out.set_shape(image.shape)
  return out


def _triple(name: str, value) -> tuple[float, float, float]:
  if isinstance(value, (int, float)):
    value = (value,) * 3
  if not (isinstance(value, Sequence) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
    raise ConfigError(f"{name} must be a number or an (R, G, B) triple, got {value!r}.")
  return tuple(float(v) for v in value)


def _check_fill(fill) -> tuple[float, float, float]:
  fill = _triple("fill", fill)
  if not all(0 <= v <= 255 for v in fill):
    raise ConfigError(f"fill must be an (R, G, B) colour in 0..255, got {fill!r}.")
  return fill


def _grey(image: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> L conversion (ITU-R 601-2 luma, fixed point), int32 [h, w]."""
  rgb = tf.cast(image, tf.int32)
  luma = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
  return tf.bitwise.right_shift(luma, 16)


# ------------------------------------------------------ pixel value ops ---
# All take and return uint8 [h, w, 3] and reproduce the PIL functions timm
# calls (ImageOps / ImageEnhance), including their integer rounding.


def invert(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.invert: 255 - x."""
  return 255 - image


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
  """ImageOps.posterize: keeps the `bits` (0..8) most significant bits."""
  bits = tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  mask = tf.cast(256 - tf.bitwise.left_shift(1, 8 - bits), tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
  """ImageOps.solarize: inverts pixels >= threshold (256 leaves the image alone)."""
  pixels = tf.cast(image, tf.int32)
  inverted = tf.cast(pixels >= tf.cast(threshold, tf.int32), tf.int32)
  return tf.cast(pixels + inverted * (255 - 2 * pixels), tf.uint8)  # x or 255 - x, without a select


def solarize_add(image: tf.Tensor, addition, threshold=128) -> tf.Tensor:
  """timm's solarize_add: adds `addition` to pixels below `threshold`, capped at 255."""
  pixels = tf.cast(image, tf.int32)
  added = tf.minimum(pixels + tf.cast(addition, tf.int32), 255)
  below = tf.cast(pixels < threshold, tf.int32)
  return tf.cast(pixels + below * (added - pixels), tf.uint8)


def _apply_luts(image: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
  """Maps each channel c of a uint8 image through lut[c] (int32 [3, 256])."""
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, 3]))  # [3, n]
  out = tf.gather(tf.cast(lut, tf.uint8), channels, batch_dims=1)
  return _like(tf.reshape(tf.transpose(out), tf.shape(image)), image)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.autocontrast (cutoff 0): stretches each channel's [min, max] to [0, 255].

  The per-channel LUT is computed in float64 with PIL's formula (scale =
  255 / (hi - lo), offset = -lo * scale, truncation), so it matches PIL's
  bit for bit.
  """
  lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)[:, None]
  hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)[:, None]
  levels = tf.range(256, dtype=tf.float64)[None]
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  stretched = tf.clip_by_value(tf.floor(levels * scale - lo * scale), 0.0, 255.0)
  lut = tf.cast(tf.where(hi > lo, stretched, levels), tf.int32)
  return _apply_luts(image, lut)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.equalize, per channel.

  PIL's LUT: step = (count of all pixels but the highest occupied bin) // 255;
  lut[i] = (step // 2 + #pixels below i) // step, identity when step is 0.
  """
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, 3]))  # [3, n]
  hist = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)  # [3, 256]
  last_bin = 255 - tf.argmax(tf.cast(hist[:, ::-1] > 0, tf.int32), axis=1, output_type=tf.int32)
  last_count = tf.gather(hist, last_bin, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last_count) // 255  # [3]
  below = tf.cumsum(hist, axis=1, exclusive=True)
  lut = (step[:, None] // 2 + below) // tf.maximum(step[:, None], 1)
  lut = tf.where(step[:, None] > 0, tf.minimum(lut, 255), tf.range(256)[None])
  return _apply_luts(image, lut)


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """PIL Image.blend as ImageEnhance uses it: d + f * (x - d), clipped, truncated.

  factor 1 returns the image exactly, 0 the degenerate image. ``degenerate`` is an image or anything that
  broadcasts to one (a grey [h, w, 1] plane, a scalar level).
  """
  d = tf.cast(degenerate, tf.float32)
  out = d + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - d)
  return tf.cast(tf.floor(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def adjust_color(image: tf.Tensor, factor) -> tf.Tensor:
  """ImageEnhance.Color (saturation): blend with the grey image."""
  grey = tf.cast(tf.repeat(_grey(image)[..., None], 3, axis=-1), tf.uint8)
  return blend(grey, image, factor)


def adjust_contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """ImageEnhance.Contrast: blend with the mean grey level, int(mean + 0.5)."""
  mean = tf.floor(tf.reduce_mean(tf.cast(_grey(image), tf.float64)) + 0.5)
  return blend(mean, image, factor)  # a scalar, broadcast


def adjust_brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """ImageEnhance.Brightness: blend with black, i.e. scale by factor."""
  return blend(tf.zeros([], tf.float32), image, factor)


def adjust_sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """ImageEnhance.Sharpness: blend with PIL's SMOOTH filter ([1 1 1; 1 5 1; 1 1 1] / 13).

  Like PIL's 3x3 filter, the smoothed image keeps the original border pixels.
  """
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  pixels = tf.cast(image, tf.float32)
  smooth = tf.nn.depthwise_conv2d(pixels[None], kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.floor(tf.clip_by_value(smooth, 0.0, 255.0) + 0.5)
  inner = tf.pad(tf.ones_like(smooth[..., :1]), [[1, 1], [1, 1], [0, 0]])  # 1 inside, 0 on the border
  degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]) * inner + pixels * (1.0 - inner)
  return blend(degenerate, image, factor)


# --------------------------------------------------------- geometric ops ---


def affine(image: tf.Tensor, coeffs, fill=IMAGENET_FILL_RGB, interpolation: str = "bilinear") -> tf.Tensor:
  """PIL's Image.transform(AFFINE, (a, b, c, d, e, f), fillcolor=fill).

  Output pixel (x, y) samples the input at (a x + b y + c, d x + e y + f) in
  PIL's continuous coordinates (pixel centres at +0.5), converted here to
  the integer-centre convention of tf's ImageProjectiveTransformV3. As in
  PIL, a sample point inside the image interpolates with edge clamping, one
  outside takes the `fill` colour, and the result is truncated to uint8.
  """
  a, b, c, d, e, f = (tf.cast(v, tf.float64) for v in coeffs)
  shape = tf.shape(image)
  # Which output pixels sample inside the image, decided in float64 on PIL's
  # coordinates so that boundary cases (a sample exactly on the edge) agree.
  h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  y = tf.range(h)[:, None] + 0.5
  x = tf.range(w)[None, :] + 0.5
  src_x = a * x + b * y + c
  src_y = d * x + e * y + f
  inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
  transform = tf.cast(tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0]), tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
    images=tf.cast(image, tf.float32)[None],
    transforms=transform[None],
    output_shape=shape[:2],
    fill_value=0.0,
    interpolation=interpolation.upper(),
    fill_mode="NEAREST",
  )[0]
  out = tf.where(inside[..., None], tf.floor(out), tf.constant(fill, tf.float32))
  return _like(tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8), image)


def rotate(image: tf.Tensor, degrees, fill=IMAGENET_FILL_RGB, interpolation: str = "bilinear") -> tf.Tensor:
  """PIL's Image.rotate: counter-clockwise by `degrees` about the image centre."""
  angle = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
  # PIL rounds the matrix to 15 decimals, which makes multiples of 90 exact.
  cos = tf.round(tf.cos(angle) * 1e15) / 1e15
  sin = tf.round(tf.sin(angle) * 1e15) / 1e15
  shape = tf.cast(tf.shape(image), tf.float64)
  cx, cy = shape[1] / 2.0, shape[0] / 2.0
  coeffs = (cos, sin, cx - cx * cos - cy * sin, -sin, cos, cy + cx * sin - cy * cos)
  return affine(image, coeffs, fill, interpolation)


def shear_x(image, factor, fill=IMAGENET_FILL_RGB, interpolation="bilinear"):
  """timm shear_x: samples (x + factor * y, y)."""
  return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), fill, interpolation)


def shear_y(image, factor, fill=IMAGENET_FILL_RGB, interpolation="bilinear"):
  """timm shear_y: samples (x, factor * x + y)."""
  return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), fill, interpolation)


def translate_x_rel(image, pct, fill=IMAGENET_FILL_RGB, interpolation="bilinear"):
  """timm translate_x_rel: samples (x + pct * width, y), i.e. content moves left for pct > 0."""
  pixels = tf.cast(pct, tf.float64) * tf.cast(tf.shape(image)[1], tf.float64)
  return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill, interpolation)


def translate_y_rel(image, pct, fill=IMAGENET_FILL_RGB, interpolation="bilinear"):
  """timm translate_y_rel: samples (x, y + pct * height)."""
  pixels = tf.cast(pct, tf.float64) * tf.cast(tf.shape(image)[0], tf.float64)
  return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill, interpolation)


# ------------------------------------------------------------ RandAugment ---
# Each entry maps (image, level, sign, fill, interpolation) -> image, where
# level = magnitude / 10 in [0, 1] (float64) and sign is +-1 for signed ops.
# The level -> argument maps are timm's (auto_augment.py, LEVEL_TO_ARG).


def _trunc(x):
  return tf.cast(tf.floor(x), tf.int32)  # int() of a non-negative float.


def _enhance_increasing(level, sign):
  return tf.maximum(1.0 + sign * level * 0.9, 0.1)  # 1 = identity, range [0.1, 1.9].


def _enhance(level, _):
  return level * 1.8 + 0.1  # Original (non-increasing) range [0.1, 1.9].


RAND_AUGMENT_OPS: dict[str, Callable] = {
  "AutoContrast": lambda im, lv, sg, fl, ip: auto_contrast(im),
  "Equalize": lambda im, lv, sg, fl, ip: equalize(im),
  "Invert": lambda im, lv, sg, fl, ip: invert(im),
  "Rotate": lambda im, lv, sg, fl, ip: rotate(im, sg * lv * 30.0, fl, ip),
  "Posterize": lambda im, lv, sg, fl, ip: posterize(im, _trunc(lv * 4)),
  "PosterizeIncreasing": lambda im, lv, sg, fl, ip: posterize(im, 4 - _trunc(lv * 4)),
  "Solarize": lambda im, lv, sg, fl, ip: solarize(im, _trunc(lv * 256)),
  "SolarizeIncreasing": lambda im, lv, sg, fl, ip: solarize(im, 256 - _trunc(lv * 256)),
  "SolarizeAdd": lambda im, lv, sg, fl, ip: solarize_add(im, _trunc(lv * 110)),
  "Color": lambda im, lv, sg, fl, ip: adjust_color(im, _enhance(lv, sg)),
  "ColorIncreasing": lambda im, lv, sg, fl, ip: adjust_color(im, _enhance_increasing(lv, sg)),
  "Contrast": lambda im, lv, sg, fl, ip: adjust_contrast(im, _enhance(lv, sg)),
  "ContrastIncreasing": lambda im, lv, sg, fl, ip: adjust_contrast(im, _enhance_increasing(lv, sg)),
  "Brightness": lambda im, lv, sg, fl, ip: adjust_brightness(im, _enhance(lv, sg)),
  "BrightnessIncreasing": lambda im, lv, sg, fl, ip: adjust_brightness(im, _enhance_increasing(lv, sg)),
  "Sharpness": lambda im, lv, sg, fl, ip: adjust_sharpness(im, _enhance(lv, sg)),
  "SharpnessIncreasing": lambda im, lv, sg, fl, ip: adjust_sharpness(im, _enhance_increasing(lv, sg)),
  "ShearX": lambda im, lv, sg, fl, ip: shear_x(im, sg * lv * 0.3, fl, ip),
  "ShearY": lambda im, lv, sg, fl, ip: shear_y(im, sg * lv * 0.3, fl, ip),
  "TranslateXRel": lambda im, lv, sg, fl, ip: translate_x_rel(im, sg * lv * 0.45, fl, ip),
  "TranslateYRel": lambda im, lv, sg, fl, ip: translate_y_rel(im, sg * lv * 0.45, fl, ip),
}

# timm's _RAND_INCREASING_TRANSFORMS (`inc1`): every op gets stronger with M.
INCREASING_OP_SET = (
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "PosterizeIncreasing",
  "SolarizeIncreasing",
  "SolarizeAdd",
  "ColorIncreasing",
  "ContrastIncreasing",
  "BrightnessIncreasing",
  "SharpnessIncreasing",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
)
# timm's _RAND_TRANSFORMS (default, `inc0`).
ORIGINAL_OP_SET = (
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "Posterize",
  "Solarize",
  "SolarizeAdd",
  "Color",
  "Contrast",
  "Brightness",
  "Sharpness",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
)


def _check_op_names(ops) -> tuple[str, ...]:
  if isinstance(ops, str):
    ops = (ops,)
  ops = tuple(ops)
  unknown = [name for name in ops if name not in RAND_AUGMENT_OPS]
  if not ops or unknown:
    raise ConfigError(f"Unknown RandAugment op(s) {unknown or ops!r}; valid: {sorted(RAND_AUGMENT_OPS)}.")
  return ops


def _sample_magnitude(seed, magnitude: float, magnitude_std: float, magnitude_max: float):
  """timm AugmentOp: N(M, std) (uniform [0, M] for std=inf), clipped to [0, max]."""
  if math.isinf(magnitude_std):
    m = tf.random.stateless_uniform([], seed, 0.0, magnitude)
  elif magnitude_std > 0:
    m = magnitude + magnitude_std * tf.random.stateless_normal([], seed)
  else:
    m = tf.constant(magnitude, tf.float32)
  return tf.clip_by_value(m, 0.0, magnitude_max)


def rand_augment_image(
  image: tf.Tensor,
  seed: tf.Tensor,
  *,
  num_ops: int,
  magnitude: float,
  magnitude_std: float,
  prob: float,
  ops: Sequence[str],
  fill,
  magnitude_max: float = _LEVEL_DENOM,
  interpolation: str = "bilinear",
) -> tf.Tensor:
  """RandAugment on one uint8 image (timm's RandAugment + AugmentOp).

  `num_ops` layers; each draws an op uniformly from `ops` (with replacement),
  fires with probability `prob`, draws its own magnitude and, for signed
  ops, a sign with probability 1/2 each. One `tf.switch_case` per layer
  (the last branch is the identity) runs only the chosen op.
  """
  fns = [RAND_AUGMENT_OPS[name] for name in ops]
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=num_ops)):
    s_fire, s_op, s_mag, s_sign = tf.unstack(tf.random.experimental.stateless_split(layer_seed, num=4))
    fires = tf.random.stateless_uniform([], s_fire) < prob
    choice = tf.random.stateless_uniform([], s_op, 0, len(fns), dtype=tf.int32)
    level = tf.cast(_sample_magnitude(s_mag, magnitude, magnitude_std, magnitude_max), tf.float64) / _LEVEL_DENOM
    sign = tf.where(tf.random.stateless_uniform([], s_sign) < 0.5, tf.constant(-1.0, tf.float64), 1.0)
    current = image
    branches = [(lambda fn=fn: _like(fn(current, level, sign, fill, interpolation), current)) for fn in fns] + [
      lambda: current
    ]
    image = _like(tf.switch_case(tf.where(fires, choice, len(fns)), branches), current)
  return image


@register("randaugment")
def randaugment(
  num_ops=2,
  magnitude=9,
  magnitude_std=0.5,
  increasing=True,
  prob=0.5,
  fill=IMAGENET_FILL_RGB,
  magnitude_max=_LEVEL_DENOM,
  ops=None,
  interpolation="bilinear",
):
  """RandAugment with timm's semantics; the defaults are `rand-m9-mstd0.5-inc1` (DeiT).

  `increasing=True` selects timm's increasing op set (`inc1`), False its
  original set; `ops` replaces the set by a list of names from
  RAND_AUGMENT_OPS. Magnitudes are on timm's 0..10 scale. `fill` colours the
  pixels uncovered by Rotate/Shear/Translate: timm uses the ImageNet mean in
  RGB, (124, 116, 104); OpenMixup's mmcls-port pipelines pad with
  (104, 116, 124). timm picks bilinear or bicubic resampling (bicubic in the
  DeiT/RSB transforms); tf's projective transform offers bilinear and nearest.
  """
  if not isinstance(num_ops, int) or num_ops < 0:
    raise ConfigError(f"num_ops must be an int >= 0, got {num_ops!r}.")
  if not 0 <= magnitude_max or not 0 <= magnitude:
    raise ConfigError(
      f"magnitude ({magnitude!r}) and magnitude_max ({magnitude_max!r}) must be >= 0 (timm's scale is 0..10)."
    )
  if not magnitude_std >= 0:
    raise ConfigError(f"magnitude_std must be >= 0 (or inf for uniform), got {magnitude_std!r}.")
  if not 0 <= prob <= 1:
    raise ConfigError(f"prob must be in [0, 1], got {prob!r}.")
  if interpolation not in _INTERPOLATIONS:
    raise ConfigError(f"interpolation must be one of {list(_INTERPOLATIONS)}, got {interpolation!r}.")
  fill = _check_fill(fill)
  ops = _check_op_names(ops if ops is not None else (INCREASING_OP_SET if increasing else ORIGINAL_OP_SET))
  settings = dict(
    num_ops=num_ops,
    magnitude=float(magnitude),
    magnitude_std=float(magnitude_std),
    prob=float(prob),
    ops=ops,
    fill=fill,
    magnitude_max=float(magnitude_max),
    interpolation=interpolation,
  )

  def op(example):
    image = _uint8_image(example, "randaugment")
    if num_ops == 0:
      return example
    example, seed = _take_seed(example, "randaugment")
    return {**example, "image": rand_augment_image(image, seed, **settings)}

  return op


_TIMM_KEYS = ("m", "n", "mstd", "mmax", "inc")


def parse_timm_rand_augment(config: str) -> dict:
  """`rand-m9-n2-mstd0.5-mmax10-inc1` -> randaugment() keyword arguments.

  Keys as in timm's rand_augment_transform; defaults M=10, n=2, std 0,
  original op set. mstd > 100 means a uniform magnitude in [0, M], as in
  timm. (timm reads any `inc` value as true; here `inc0` means the original
  set.) The choice-weight key `w` is not supported.
  """
  parts = config.split("-") if isinstance(config, str) else []
  if not parts or parts[0] != "rand":
    raise ConfigError(f"RandAugment config must look like 'rand-m9-mstd0.5-inc1', got {config!r}.")
  kwargs = dict(magnitude=10, num_ops=2, magnitude_std=0.0, increasing=False)
  for part in parts[1:]:
    match = re.fullmatch(r"([a-z]+)(\d.*)", part)
    if not match or match.group(1) not in _TIMM_KEYS:
      raise ConfigError(
        f"Unknown section {part!r} in RandAugment config {config!r}; "
        f"valid keys: {list(_TIMM_KEYS)} followed by a number."
      )
    key, value = match.groups()
    try:
      number = float(value)
    except ValueError:
      raise ConfigError(f"Section {part!r} of RandAugment config {config!r} needs a number after {key!r}.") from None
    if key == "m":
      kwargs["magnitude"] = number
    elif key == "n":
      kwargs["num_ops"] = int(number)
    elif key == "mstd":
      kwargs["magnitude_std"] = math.inf if number > 100 else number
    elif key == "mmax":
      kwargs["magnitude_max"] = number
    else:
      kwargs["increasing"] = bool(number)
  return kwargs


@register("randaugment_timm")
def randaugment_timm(config="rand-m9-mstd0.5-inc1", **kwargs):
  """RandAugment from a timm config string, e.g. `randaugment_timm('rand-m7-mstd0.5-inc1')`.

  Other randaugment() arguments (fill, prob, interpolation) pass through.
  """
  return randaugment(**{**parse_timm_rand_augment(config), **kwargs})


# --------------------------------------------------------- random erasing ---

_ERASE_MODES = ("const", "rand", "pixel")


def _pair(name, value, positive=True):
  if not (isinstance(value, Sequence) and len(value) == 2):
    raise ConfigError(f"{name} must be a (low, high) pair, got {value!r}.")
  lo, hi = (float(v) for v in value)
  if not (0 < lo if positive else 0 <= lo) or lo > hi:
    raise ConfigError(f"{name} must be (low, high) with {'0 <' if positive else '0 <='} low <= high, got {value!r}.")
  return lo, hi


def erase_boxes(shape_hw, seed, *, count: int, area, aspect, attempts: int = 10):
  """timm RandomErasing's box: int32 [top, left, height, width] and whether one fitted.

  Up to `attempts` tries: target area uniform in `area` x h x w / count,
  aspect log-uniform in `aspect`, sides rounded; the first try strictly
  smaller than the image wins, its corner uniform over the valid positions.
  If none fits, fitted is False and the box is empty (all zeros). The tries
  are drawn vectorised.
  """
  h = tf.cast(shape_hw[0], tf.float32)
  w = tf.cast(shape_hw[1], tf.float32)
  s_area, s_aspect, s_top, s_left = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  target = tf.random.stateless_uniform([attempts], s_area, area[0], area[1]) * h * w
  target = target / tf.cast(count, tf.float32)
  ratio = tf.exp(tf.random.stateless_uniform([attempts], s_aspect, math.log(aspect[0]), math.log(aspect[1])))
  eh = tf.round(tf.sqrt(target * ratio))
  ew = tf.round(tf.sqrt(target / ratio))
  fits = (eh < h) & (ew < w)
  top = tf.floor(tf.random.stateless_uniform([attempts], s_top) * (h - eh + 1))
  left = tf.floor(tf.random.stateless_uniform([attempts], s_left) * (w - ew + 1))
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  box = tf.cast(tf.stack([top[first], left[first], eh[first], ew[first]]), tf.int32)
  fitted = tf.reduce_any(fits)
  return tf.where(fitted, box, tf.zeros_like(box)), fitted


@register("random_erasing")
def random_erasing(
  prob=0.25, mode="pixel", area=(0.02, 1 / 3), aspect=(0.3, 3.3), count=1, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB
):
  """Random Erasing (Zhong et al. 2020) with timm's RandomErasing semantics.

  With probability `prob`, erases `count` boxes (an int, or (min, max) drawn
  uniformly per image, each box then gets 1/count of the area budget).
  timm erases the *normalised* tensor; this op runs on uint8 before
  normalisation, so its fills are expressed in pixels with the dataset
  `mean`/`std` (0-255 units, RGB):
  * 'pixel': per-pixel noise mean + std * N(0, 1) (timm's N(0, 1) after normalising);
  * 'rand': one such colour per box;
  * 'const': the mean colour (timm's zeros after normalising).
  Noise is rounded and clipped into 0..255, which timm's float tensors are not.
  """
  if not 0 <= prob <= 1:
    raise ConfigError(f"prob must be in [0, 1], got {prob!r}.")
  if mode not in _ERASE_MODES:
    raise ConfigError(f"Unknown random_erasing mode {mode!r}; valid: {list(_ERASE_MODES)}.")
  area = _pair("area", area)
  if area[1] > 1:
    raise ConfigError(f"area is a fraction of the image, (low, high) <= 1, got {area!r}.")
  aspect = _pair("aspect", aspect)
  min_count, max_count = (count, count) if isinstance(count, int) else count
  if not (isinstance(min_count, int) and isinstance(max_count, int) and 1 <= min_count <= max_count):
    raise ConfigError(f"count must be an int >= 1 or a (min, max) pair of ints, got {count!r}.")
  mean, std = _triple("mean", mean), _triple("std", std)

  def op(example):
    image = _uint8_image(example, "random_erasing")
    example, seed = _take_seed(example, "random_erasing")
    s_fire, s_count, s_boxes = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    fires = tf.random.stateless_uniform([], s_fire) < prob
    n = tf.random.stateless_uniform([], s_count, min_count, max_count + 1, dtype=tf.int32)
    shape = tf.shape(image)
    out = image
    for k, box_seed in enumerate(tf.unstack(tf.random.experimental.stateless_split(s_boxes, max_count))):
      s_box, s_noise = tf.unstack(tf.random.experimental.stateless_split(box_seed, 2))

      def erase(current, s_box=s_box, s_noise=s_noise):
        top, left, height, width = tf.unstack(erase_boxes(shape, s_box, count=n, area=area, aspect=aspect)[0])
        # Noise only for the box (a sixth of the image on average), padded to the image.
        noise_shape = {"const": [1, 1, 3], "rand": [1, 1, 3], "pixel": tf.stack([height, width, 3])}[mode]
        noise = tf.random.stateless_normal(noise_shape, s_noise) * float(mode != "const")
        colour = _to_uint8(tf.constant(mean) + tf.constant(std) * noise)
        colour = tf.broadcast_to(colour, tf.stack([height, width, 3]))
        padding = [[top, shape[0] - top - height], [left, shape[1] - left - width], [0, 0]]
        inside = tf.pad(tf.ones_like(colour, tf.bool), padding)
        return _like(tf.where(inside, tf.pad(colour, padding), current), current)

      out = tf.cond(fires & (k < n), lambda out=out, erase=erase: erase(out), lambda out=out: out)
    return {**example, "image": _like(out, image)}

  return op


# ----------------------------------------------------------- colour jitter ---


def _jitter_range(name, value, centre, bound=None):
  """torchvision's ColorJitter._check_input: v means [max(0, c - v), c + v]; None if a no-op."""
  if isinstance(value, (int, float)):
    if value < 0:
      raise ConfigError(f"color_jitter {name} must be >= 0, got {value!r}.")
    lo, hi = centre - value, centre + value
    lo = max(0.0, lo) if centre else lo
  elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
    lo, hi = value
  else:
    raise ConfigError(f"color_jitter {name} must be a number or a (low, high) pair, got {value!r}.")
  if lo > hi or (centre and lo < 0) or (bound is not None and not -bound <= lo <= hi <= bound):
    limits = f"[-{bound}, {bound}]" if bound is not None else "[0, inf)"
    raise ConfigError(f"color_jitter {name} range must be ordered and lie in {limits}, got {value!r}.")
  return None if lo == hi == centre else (float(lo), float(hi))


@register("color_jitter")
def color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, random_order=True):
  """torchvision ColorJitter: random brightness, contrast, saturation and hue.

  Factors are uniform in [max(0, 1 - v), 1 + v] (hue shift in [-hue, hue]
  turns, hue <= 0.5); a range (low, high) is also accepted. A zero setting
  disables that adjustment. torchvision applies the enabled ones in random
  order (random_order=True) via the PIL ImageEnhance functions used above;
  hue uses tf.image.adjust_hue (HSV in float) rather than PIL's uint8 HSV.
  """
  ranges = {
    "brightness": _jitter_range("brightness", brightness, 1.0),
    "contrast": _jitter_range("contrast", contrast, 1.0),
    "saturation": _jitter_range("saturation", saturation, 1.0),
    "hue": _jitter_range("hue", hue, 0.0, bound=0.5),
  }
  adjust = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_color,
    "hue": lambda im, delta: _to_uint8(tf.image.adjust_hue(tf.cast(im, tf.float32) / 255.0, delta) * 255.0),
  }
  enabled = [name for name, r in ranges.items() if r is not None]

  def op(example):
    image = _uint8_image(example, "color_jitter")
    if not enabled:
      return example
    example, seed = _take_seed(example, "color_jitter")
    s_factors, s_order = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    factors = tf.unstack(tf.random.stateless_uniform([len(enabled)], s_factors))
    factors = [ranges[name][0] + u * (ranges[name][1] - ranges[name][0]) for name, u in zip(enabled, factors)]
    if random_order:
      order = tf.argsort(tf.random.stateless_uniform([len(enabled)], s_order))
    else:
      order = tf.range(len(enabled))
    for position in range(len(enabled)):
      current = image
      branches = [(lambda fn=adjust[name], f=f: _like(fn(current, f), current)) for name, f in zip(enabled, factors)]
      image = _like(tf.switch_case(order[position], branches), current)
    return {**example, "image": image}

  return op
