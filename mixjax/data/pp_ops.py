"""Image preprocessing ops usable in `pp_train` / `pp_eval` specs.

Every op maps an example dict to an example dict and acts on "image".
Ops that resize return uint8 (rounded and clipped) so a spec always ends in
uint8 pixels; normalisation happens on device.

Randomness is stateless: a random op splits the per-example seed stored
under "_seed" (two int64) into a seed for itself and a new "_seed" for the
ops after it. The pipeline derives "_seed" from (seed, shard, epoch, index),
which makes every augmented pixel a pure function of the config, the seed
and the step.

Resizing uses antialiasing when shrinking, like PIL (which torchvision, and
so OpenMixup, uses for its bicubic/bilinear transforms).
"""

import math
from typing import Sequence

import tensorflow as tf

from mixjax.data.pp_registry import register
from mixjax.config_args import ConfigError

SEED_KEY = "_seed"
_RESIZE_METHODS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
# The methods tf.image.resize(antialias=True) computes with ScaleAndTranslate (float output for any input dtype).
_SCALE_AND_TRANSLATE_METHODS = ("bilinear", "bicubic", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


# ----------------------------------------------------------------- helpers ---


def _hw(size) -> tuple[int, int]:
  """`224` -> (224, 224); `(h, w)` stays."""
  if isinstance(size, int):
    return size, size
  if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
    return int(size[0]), int(size[1])
  raise ConfigError(f"size must be an int or an (height, width) pair of ints, got {size!r}.")


def _check_method(method: str) -> str:
  if method not in _RESIZE_METHODS:
    raise ConfigError(f"Unknown resize method {method!r}; valid: {list(_RESIZE_METHODS)}.")
  return method


def _check_range(name: str, pair) -> tuple[float, float]:
  lo, hi = (float(v) for v in pair)
  if not 0 < lo <= hi:
    raise ConfigError(f"{name} must be (low, high) with 0 < low <= high, got {pair!r}.")
  return lo, hi


def _take_seed(example: dict, op_name: str):
  """Splits example["_seed"]: one half for this op, one for the ops after it."""
  if SEED_KEY not in example:
    raise ConfigError(
      f"pp op {op_name!r} is random and needs a per-example seed under "
      f"{SEED_KEY!r}; use it inside mixjax.data's train/eval pipelines."
    )
  seeds = tf.random.experimental.stateless_split(example[SEED_KEY], num=2)
  return {**example, SEED_KEY: seeds[0]}, seeds[1]


def _encoded(example: dict, op_name: str) -> tf.Tensor:
  image = example["image"]
  if image.dtype != tf.string:
    raise ConfigError(
      f"pp op {op_name!r} expects encoded image bytes but the image is already decoded; use it first in the spec."
    )
  return image


def _decoded(example: dict, op_name: str) -> tf.Tensor:
  image = example["image"]
  if image.dtype == tf.string:
    raise ConfigError(
      f"pp op {op_name!r} needs a decoded image; put 'decode' (or 'decode_jpeg_and_random_resized_crop') before it."
    )
  return image


def _decode_any(data: tf.Tensor) -> tf.Tensor:
  """JPEG/PNG/GIF/BMP bytes -> uint8 [h, w, 3]; grey and RGBA become RGB."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _resize(image: tf.Tensor, hw, method: str) -> tf.Tensor:
  # The antialiased kernels (ScaleAndTranslate) read uint8 directly, to the same values as from a float copy.
  source = image if method in _SCALE_AND_TRANSLATE_METHODS else tf.cast(image, tf.float32)
  return _to_uint8(tf.image.resize(source, hw, method=method, antialias=True))


def _crop(image: tf.Tensor, top, left, height, width) -> tf.Tensor:
  crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([height, width, -1]))
  crop.set_shape([None, None, image.shape[-1]])  # Keep the static channel count.
  return crop


def sample_random_resized_crop(
  shape_hw: tf.Tensor, seed: tf.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10
) -> tf.Tensor:
  """torchvision's RandomResizedCrop box as int32 [top, left, height, width].

  Semantics of `torchvision.transforms.RandomResizedCrop.get_params`
  (Szegedy et al. 2015, "Going deeper with convolutions", Inception crop):
  up to `attempts` tries, each drawing an area fraction uniformly from
  `scale` and an aspect ratio log-uniformly from `ratio`; width and height
  are rounded; the first try that fits inside the image wins and its corner
  is uniform over the valid positions. If none fits, the fallback is the
  largest centred crop whose aspect ratio is clamped into `ratio`.
  The tries are drawn all at once (vectorised) from stateless streams, so
  the distribution matches torchvision while the random numbers do not.
  """
  h = tf.cast(shape_hw[0], tf.float32)
  w = tf.cast(shape_hw[1], tf.float32)
  s_area, s_ratio, s_top, s_left = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
  target_area = h * w * tf.random.stateless_uniform([attempts], s_area, minval=scale[0], maxval=scale[1])
  aspect = tf.exp(
    tf.random.stateless_uniform([attempts], s_ratio, minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  )
  crop_w = tf.round(tf.sqrt(target_area * aspect))
  crop_h = tf.round(tf.sqrt(target_area / aspect))
  fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w) & (crop_h <= h)
  top = tf.floor(tf.random.stateless_uniform([attempts], s_top) * (h - crop_h + 1))
  left = tf.floor(tf.random.stateless_uniform([attempts], s_left) * (w - crop_w + 1))
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  sampled = tf.stack([top[first], left[first], crop_h[first], crop_w[first]])

  # Fallback: centre crop with the aspect ratio clamped into `ratio`.
  in_ratio = w / h
  fb_w = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
  fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
  fallback = tf.stack([tf.floor((h - fb_h) / 2), tf.floor((w - fb_w) / 2), fb_h, fb_w])
  box = tf.where(tf.reduce_any(fits), sampled, fallback)
  return tf.cast(box, tf.int32)


# --------------------------------------------------------------------- ops ---


@register("decode")
def decode():
  """Decodes JPEG/PNG/GIF/BMP bytes to uint8 RGB (grey is expanded to 3 channels)."""

  def op(example):
    return {**example, "image": _decode_any(_encoded(example, "decode"))}

  return op


@register("decode_jpeg_and_random_resized_crop")
def decode_jpeg_and_random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method="bicubic"):
  """RandomResizedCrop on encoded bytes, decoding only the crop for JPEGs.

  For JPEG input the box is sampled from the header's shape
  (`tf.image.extract_jpeg_shape`) and only that window is decoded
  (`tf.image.decode_and_crop_jpeg`), the main CPU saving on ImageNet. Other
  formats (PNG, ...) are decoded fully, then cropped; both paths sample the
  same box for the same seed and image size.
  """
  hw, method = _hw(size), _check_method(method)
  scale, ratio = _check_range("scale", scale), _check_range("ratio", ratio)

  def op(example):
    data = _encoded(example, "decode_jpeg_and_random_resized_crop")
    example, seed = _take_seed(example, "decode_jpeg_and_random_resized_crop")

    def from_jpeg():
      box = sample_random_resized_crop(tf.image.extract_jpeg_shape(data), seed, scale, ratio)
      return tf.image.decode_and_crop_jpeg(data, box, channels=3)

    def from_other():
      image = _decode_any(data)
      box = sample_random_resized_crop(tf.shape(image), seed, scale, ratio)
      return _crop(image, box[0], box[1], box[2], box[3])

    crop = tf.cond(tf.io.is_jpeg(data), from_jpeg, from_other)
    crop.set_shape([None, None, 3])
    return {**example, "image": _resize(crop, hw, method)}

  return op


@register("random_resized_crop")
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method="bicubic"):
  """RandomResizedCrop (torchvision semantics) on an already decoded image."""
  hw, method = _hw(size), _check_method(method)
  scale, ratio = _check_range("scale", scale), _check_range("ratio", ratio)

  def op(example):
    image = _decoded(example, "random_resized_crop")
    example, seed = _take_seed(example, "random_resized_crop")
    box = sample_random_resized_crop(tf.shape(image), seed, scale, ratio)
    crop = _crop(image, box[0], box[1], box[2], box[3])
    return {**example, "image": _resize(crop, hw, method)}

  return op


@register("flip_lr")
def flip_lr():
  """Horizontal flip with probability 1/2."""

  def op(example):
    image = _decoded(example, "flip_lr")
    example, seed = _take_seed(example, "flip_lr")
    return {**example, "image": tf.image.stateless_random_flip_left_right(image, seed)}

  return op


@register("resize")
def resize(size, method="bilinear"):
  """Resizes to exactly `size` (int or (h, w)), ignoring the aspect ratio."""
  hw, method = _hw(size), _check_method(method)

  def op(example):
    return {**example, "image": _resize(_decoded(example, "resize"), hw, method)}

  return op


def _resize_short_side(image: tf.Tensor, short: int, method: str) -> tf.Tensor:
  """torchvision Resize(int): short side -> `short`, long side truncated."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  short_now = tf.minimum(h, w)
  long_new = (tf.maximum(h, w) * short) // short_now
  new_h = tf.where(h <= w, short, long_new)
  new_w = tf.where(h <= w, long_new, short)
  return _resize(image, tf.stack([new_h, new_w]), method)


# tf.image.resize's antialiased kernels (it calls ScaleAndTranslate with these kernel names).
_SCALE_AND_TRANSLATE_KERNELS = {"bicubic": "keyscubic", "bilinear": "triangle"}


def _resize_short_side_center_crop(image: tf.Tensor, short: int, size: int, method: str) -> tf.Tensor:
  """``_resize_short_side`` then the central ``size``×``size`` crop, computing only the pixels kept.

  The antialiased resize is ``ScaleAndTranslate`` with scale = new/old size and no translation; translating by
  minus the crop offset makes it produce exactly the crop's pixels (same kernel, same sample positions), so the
  eval transform no longer resizes the ~43% of the 256×341 image the crop throws away (input_pipeline.py).
  """
  kernel = _SCALE_AND_TRANSLATE_KERNELS.get(method)
  if kernel is None:  # nearest / area: no ScaleAndTranslate kernel; resize the whole image
    return _central_crop(_resize_short_side(image, short, method), (size, size))
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  long_new = (tf.maximum(h, w) * short) // tf.minimum(h, w)
  new_hw = tf.stack([tf.where(h <= w, short, long_new), tf.where(h <= w, long_new, short)])
  scale = tf.cast(new_hw, tf.float32) / tf.cast(shape[:2], tf.float32)
  offset = tf.cast((new_hw - size) // 2, tf.float32)
  out = tf.raw_ops.ScaleAndTranslate(
    images=image[None],  # uint8 in, float out: the same values as from a float copy, without the copy
    size=tf.constant([size, size], tf.int32),
    scale=scale,
    translation=-offset,
    kernel_type=kernel,
    antialias=True,
  )[0]
  return _to_uint8(out)


@register("resize_small")
def resize_small(size, method="bilinear"):
  """Resizes so the short side is `size`, keeping the aspect ratio."""
  if not isinstance(size, int):
    raise ConfigError(f"resize_small takes an int size (the short side), got {size!r}.")
  method = _check_method(method)

  def op(example):
    return {**example, "image": _resize_short_side(_decoded(example, "resize_small"), size, method)}

  return op


def _central_crop(image: tf.Tensor, hw) -> tf.Tensor:
  shape = tf.shape(image)
  crop = _crop(image, (shape[0] - hw[0]) // 2, (shape[1] - hw[1]) // 2, hw[0], hw[1])
  return tf.ensure_shape(crop, [hw[0], hw[1], 3])


@register("central_crop")
def central_crop(size):
  """Crops the centre `size` (int or (h, w)); the image must be at least that big."""
  hw = _hw(size)

  def op(example):
    return {**example, "image": _central_crop(_decoded(example, "central_crop"), hw)}

  return op


@register("resize_center_crop")
def resize_center_crop(size, crop_ratio=0.875, method="bicubic"):
  """The benchmark's eval transform: short side to round(size / crop_ratio), centre crop `size`.

  With the defaults and size 224 this is resize 256 then crop 224.
  """
  if not isinstance(size, int):
    raise ConfigError(f"resize_center_crop takes an int size, got {size!r}.")
  if not 0 < crop_ratio <= 1:
    raise ConfigError(f"crop_ratio must be in (0, 1], got {crop_ratio!r}.")
  method = _check_method(method)
  short = int(round(size / crop_ratio))

  def op(example):
    image = _resize_short_side_center_crop(_decoded(example, "resize_center_crop"), short, size, method)
    return {**example, "image": tf.ensure_shape(image, [size, size, 3])}

  return op
