"""Preprocessing registry and ops, run eagerly on small images."""

import numpy as np
import pytest
import tensorflow as tf

from mixjax.data import pp_ops, pp_registry


def _example(pixels, seed=(1, 2), encode=None):
  image = tf.constant(pixels, tf.uint8)
  if encode == "jpeg":
    image = tf.io.encode_jpeg(image, quality=95)
  elif encode == "png":
    image = tf.io.encode_png(image)
  return {"image": image, "label": tf.constant(3, tf.int64), "_seed": tf.constant(seed, tf.int64)}


def _gradient(h, w):
  """Pixels that encode their position, so crops and flips are visible."""
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([y * 255 // max(h - 1, 1), x * 255 // max(w - 1, 1), (x + y) % 256], axis=-1).astype(np.uint8)


# ----------------------------------------------------------------- registry ---


def test_parse_spec_positional_keyword_and_bare():
  parsed = pp_registry.parse_spec(
    "decode|decode_jpeg_and_random_resized_crop(224, scale=(0.35, 1.0), method='bilinear')|flip_lr"
  )
  assert parsed == [
    ("decode", (), {}),
    ("decode_jpeg_and_random_resized_crop", (224,), {"scale": (0.35, 1.0), "method": "bilinear"}),
    ("flip_lr", (), {}),
  ]


def test_unknown_op_lists_valid_ops():
  with pytest.raises(ValueError) as err:
    pp_registry.build("decode|no_such_op(3)")
  message = str(err.value)
  assert "no_such_op" in message
  for name in ("decode", "flip_lr", "resize_center_crop", "random_resized_crop"):
    assert name in message


@pytest.mark.parametrize("spec", ["decode|resize(", "decode||flip_lr", "decode|resize(size=x)", "decode|ops.resize(3)"])
def test_malformed_spec_is_quoted(spec):
  with pytest.raises(ValueError, match="Malformed") as err:
    pp_registry.build(spec)
  assert repr(spec) in str(err.value)


def test_bad_op_arguments_are_reported():
  with pytest.raises(ValueError, match="resize"):
    pp_registry.build("decode|resize(32, colour=1)")
  with pytest.raises(ValueError, match="method"):
    pp_registry.build("decode|resize(32, method='cubicle')")


# ---------------------------------------------------------------------- ops ---


def test_decode_turns_grey_into_rgb():
  grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10, 1)
  out = pp_registry.build("decode")(_example(grey, encode="png"))["image"].numpy()
  assert out.shape == (12, 10, 3)
  np.testing.assert_array_equal(out, np.repeat(grey, 3, axis=-1))


@pytest.mark.parametrize("spec", ["decode_jpeg_and_random_resized_crop(24)", "decode|random_resized_crop((24, 20))"])
def test_random_resized_crop_shape_dtype_range(spec):
  pixels = _gradient(60, 90)
  for seed in range(5):
    out = pp_registry.build(spec)(_example(pixels, (seed, 7), encode="jpeg"))["image"]
    assert out.dtype == tf.uint8
    assert out.shape[:2] in ((24, 24), (24, 20)) and out.shape[2] == 3
    # The crop comes from a gradient image: values stay inside the source range.
    assert out.numpy().max() <= 255 and out.numpy().min() >= 0


def test_random_resized_crop_box_obeys_scale_and_ratio():
  seeds = tf.stack([tf.range(400, dtype=tf.int64), tf.fill([400], tf.constant(5, tf.int64))], 1)
  shape = tf.constant([120, 200])
  boxes = tf.map_fn(
    lambda s: pp_ops.sample_random_resized_crop(shape, s, (0.2, 0.6), (0.5, 2.0)), seeds, fn_output_signature=tf.int32
  ).numpy()
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 120).all() and (left + w <= 200).all()
  area = h * w / (120 * 200)
  # Rounding the sides moves the area by at most a couple of pixel rows.
  assert area.min() >= 0.2 - 0.02 and area.max() <= 0.6 + 0.02
  assert (w / h).min() >= 0.5 - 0.05 and (w / h).max() <= 2.0 + 0.05
  assert len({tuple(b) for b in boxes}) > 350  # Seeds give different boxes.
  assert np.std(left / np.maximum(200 - w, 1)) > 0.2  # Corners spread out.


def test_random_resized_crop_fallback_is_clamped_centre_crop():
  # An area of 2-3x the image never fits: torchvision falls back to the
  # centre crop with the aspect ratio clamped to max 4/3.
  box = pp_ops.sample_random_resized_crop(
    tf.constant([100, 300]), tf.constant([0, 1], tf.int64), (2.0, 3.0), (3 / 4, 4 / 3)
  )
  np.testing.assert_array_equal(box.numpy(), [0, (300 - 133) // 2, 100, 133])


def test_fused_jpeg_crop_matches_decode_then_crop():
  pixels = _gradient(64, 80)
  fused = pp_registry.build("decode_jpeg_and_random_resized_crop(20)")
  separate = pp_registry.build("decode|random_resized_crop(20)")
  for seed in range(4):
    a = fused(_example(pixels, (seed, 0), encode="jpeg"))["image"].numpy().astype(int)
    b = separate(_example(pixels, (seed, 0), encode="jpeg"))["image"].numpy().astype(int)
    assert np.abs(a - b).mean() < 1.5  # Same box; only JPEG block decoding differs.
    png_a = fused(_example(pixels, (seed, 0), encode="png"))["image"].numpy()
    png_b = separate(_example(pixels, (seed, 0), encode="png"))["image"].numpy()
    np.testing.assert_array_equal(png_a, png_b)


def test_random_ops_are_pure_functions_of_the_seed():
  pp = pp_registry.build("decode|random_resized_crop(16)|flip_lr")
  pixels = _gradient(40, 40)
  a = pp(_example(pixels, (3, 9), encode="png"))
  b = pp(_example(pixels, (3, 9), encode="png"))
  c = pp(_example(pixels, (4, 9), encode="png"))
  np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
  assert not np.array_equal(a["image"].numpy(), c["image"].numpy())
  assert not np.array_equal(a["_seed"].numpy(), [3, 9])  # The seed moved on.


def test_flip_lr_flips_about_half():
  pixels = _gradient(8, 12)
  pp = pp_registry.build("flip_lr")
  flips = 0
  for seed in range(40):
    out = pp(_example(pixels, (seed, 1)))["image"].numpy()
    if np.array_equal(out, pixels[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, pixels)
  assert 8 <= flips <= 32


def test_resize_center_crop_uses_crop_ratio():
  pixels = _gradient(48, 64)
  out = pp_registry.build("resize_center_crop(28, crop_ratio=0.875)")({"image": tf.constant(pixels)})["image"].numpy()
  # Short side 48 -> round(28 / 0.875) = 32, long side 64 * 32 // 48 = 42;
  # then the centred 28x28 window starts at ((32-28)//2, (42-28)//2).
  ref = tf.image.resize(tf.constant(pixels, tf.float32), (32, 42), "bicubic", antialias=True)
  ref = tf.cast(tf.clip_by_value(tf.round(ref), 0, 255), tf.uint8).numpy()[2:30, 7:35]
  np.testing.assert_array_equal(out, ref)
  # crop_ratio=1 keeps the whole short side.
  full = pp_registry.build("resize_center_crop(32, crop_ratio=1.0)")({"image": tf.constant(pixels)})["image"]
  assert full.shape == (32, 32, 3)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_resize_center_crop_computes_exactly_the_crop_of_the_full_resize(method):
  """The eval op resizes only the kept window (ScaleAndTranslate translated by the crop offset); its pixels are
  those of resizing the whole photo and cropping, up to float rounding at .5 (≤ 1 level, ≥ 99.99% equal)."""
  from skimage import data as photos

  for h, w in ((375, 500), (500, 375), (333, 500), (256, 256), (257, 999), (240, 250)):
    pixels = np.asarray(tf.image.resize(photos.astronaut(), (h, w)), np.uint8)  # ImageNet-like shapes
    out = pp_registry.build(f"resize_center_crop(224, method='{method}')")({"image": tf.constant(pixels)})["image"]
    short = 256
    nh, nw = (short, w * short // h) if h <= w else (h * short // w, short)
    ref = tf.image.resize(tf.constant(pixels, tf.float32), (nh, nw), method, antialias=True)
    ref = tf.cast(tf.clip_by_value(tf.round(ref), 0, 255), tf.int32).numpy()
    top, left = (nh - 224) // 2, (nw - 224) // 2
    diff = np.abs(out.numpy().astype(np.int32) - ref[top : top + 224, left : left + 224])
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.9999, (h, w, diff.max(), np.mean(diff == 0))


def test_resize_small_keeps_aspect_and_central_crop_slices():
  pixels = _gradient(30, 60)
  out = pp_registry.build("resize_small(10)")({"image": tf.constant(pixels)})["image"]
  assert out.shape == (10, 20, 3) and out.dtype == tf.uint8
  tall = pp_registry.build("resize_small(10)")({"image": tf.constant(pixels.transpose(1, 0, 2))})
  assert tall["image"].shape == (20, 10, 3)
  crop = pp_registry.build("central_crop((10, 20))")({"image": tf.constant(pixels)})["image"]
  np.testing.assert_array_equal(crop.numpy(), pixels[10:20, 20:40])


def test_ops_check_decoded_vs_encoded_input():
  with pytest.raises(ValueError, match="decode"):
    pp_registry.build("flip_lr")(_example(_gradient(4, 4), encode="png"))
  with pytest.raises(ValueError, match="already decoded"):
    pp_registry.build("decode|decode")(_example(_gradient(4, 4), encode="png"))


@pytest.mark.parametrize(
  "spec,shape",
  [
    ("decode_jpeg_and_random_resized_crop(24)|flip_lr", (24, 24, 3)),
    ("decode|random_resized_crop((24, 20))|flip_lr", (24, 20, 3)),
    ("decode|resize((10, 12))", (10, 12, 3)),
    ("decode|resize_small(40)|central_crop(32)", (32, 32, 3)),
    ("decode|resize_center_crop(28)", (28, 28, 3)),
  ],
)
def test_specs_have_static_output_shape_inside_tf_data(spec, shape):
  # Eager tensors always know their shape; tf.data graphs need it statically
  # to batch, so trace each spec inside a map.
  ds = tf.data.Dataset.from_tensors(_example(_gradient(50, 70), encode="jpeg"))
  ds = ds.map(pp_registry.build(spec))
  assert tuple(ds.element_spec["image"].shape) == shape
  assert ds.element_spec["image"].dtype == tf.uint8
  assert next(iter(ds))["image"].shape == shape


# Together these specs use every registered op (checked below), with RandAugment's every branch traced.
_GRAPH_SPECS = [
  "decode|central_crop(40)|resize(24)",
  "decode|color_jitter(0.4)|flip_lr|resize_small(30)|resize_center_crop(24)",
  "decode_jpeg_and_random_resized_crop(24)|random_erasing(1.0)",
  "decode|random_resized_crop(24)|randaugment(2, 9)|randaugment_timm('rand-m9-mstd0.5-inc1')|random_erasing(0.25)",
]


def test_every_op_runs_as_graph_code_without_autograph():
  """The pipeline maps its pp function with AutoGraph off (its conversion of RandAugment took seconds of every
  run's start), so an op must be written with graph control flow (tf.cond, tf.switch_case): a Python `if` on a
  tensor fails to trace here."""
  for spec in _GRAPH_SPECS:
    fn = tf.autograph.experimental.do_not_convert(pp_registry.build(spec))
    ds = tf.data.Dataset.from_tensors(_example(_gradient(50, 70), encode="jpeg")).map(fn)
    assert next(iter(ds))["image"].shape == (24, 24, 3)
  used = {name for spec in _GRAPH_SPECS for name, _, _ in pp_registry.parse_spec(spec)}
  assert used == set(pp_registry.registered_ops()), "add a spec using the new op to _GRAPH_SPECS"
