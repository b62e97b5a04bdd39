"""RandAugment, random erasing, colour jitter and repeated augmentation.

Pixel ops are checked against hand-computed values and against PIL, which is
what timm (and so the benchmark) runs; the random ops for determinism, their
probabilities and the number of ops applied.
"""

import collections
import hashlib
import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from mixjax import data
from mixjax.data import augment_ops as aug
from mixjax.data import pp_registry

FILL = (124, 116, 104)


def _example(pixels, seed=(1, 2)):
  return {
    "image": tf.constant(pixels, tf.uint8),
    "label": tf.constant(0, tf.int64),
    "_seed": tf.constant(seed, tf.int64),
  }


def _run(spec, pixels, seed=(1, 2)):
  return pp_registry.build(spec)(_example(pixels, seed))["image"].numpy()


def _noise(h, w, seed=0, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, (h, w, 3), dtype=np.uint8)


def _const(h, w, value):
  return np.full((h, w, 3), value, np.uint8)


# ------------------------------------------------------- pixel ops by hand ---


def test_invert_posterize_solarize_by_hand():
  row = np.array([0, 63, 64, 127, 128, 183, 255], np.uint8)
  pixels = tf.constant(np.stack([row] * 3, axis=-1)[None])  # [1, 7, 3]
  ch = lambda out: out.numpy()[0, :, 0].tolist()  # noqa: E731
  assert ch(aug.invert(pixels)) == [255, 192, 191, 128, 127, 72, 0]
  assert ch(aug.posterize(pixels, 2)) == [0, 0, 64, 64, 128, 128, 192]
  assert ch(aug.posterize(pixels, 0)) == [0] * 7
  assert ch(aug.posterize(pixels, 8)) == row.tolist()
  assert ch(aug.solarize(pixels, 128)) == [0, 63, 64, 127, 127, 72, 0]
  assert ch(aug.solarize(pixels, 256)) == row.tolist()
  assert ch(aug.solarize_add(pixels, 100)) == [100, 163, 164, 227, 128, 183, 255]
  assert ch(aug.solarize_add(pixels, 200)) == [200, 255, 255, 255, 128, 183, 255]


def test_auto_contrast_and_brightness_by_hand():
  pixels = np.zeros((1, 3, 3), np.uint8)
  pixels[0, :, 0] = [50, 100, 150]  # Stretched to [0, 255]: scale 2.55.
  pixels[0, :, 1] = [7, 7, 7]  # Flat channel: left alone.
  pixels[0, :, 2] = [0, 128, 255]  # Already full range.
  out = aug.auto_contrast(pixels).numpy()[0]
  assert out[:, 0].tolist() == [0, 127, 255]  # 127.5 truncates, as in PIL.
  assert out[:, 1].tolist() == [7, 7, 7]
  assert out[:, 2].tolist() == [0, 128, 255]
  assert aug.adjust_brightness(pixels, 0.5).numpy()[0, :, 0].tolist() == [25, 50, 75]
  np.testing.assert_array_equal(aug.adjust_brightness(pixels, 1.0), pixels)


def test_rotate_90_with_fill_by_hand():
  pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
  out = aug.rotate(pixels, 90, FILL).numpy()
  # Counter-clockwise about the centre: the middle 2x2 block turns, the
  # columns that come from outside the 2x4 image take the fill colour.
  np.testing.assert_array_equal(out[:, 1:3], np.rot90(pixels[:, 1:3]))
  np.testing.assert_array_equal(out[:, [0, 3]], np.broadcast_to(FILL, (2, 2, 3)))
  square = _noise(5, 5)
  np.testing.assert_array_equal(aug.rotate(square, 90, FILL), np.rot90(square))
  np.testing.assert_array_equal(aug.rotate(square, -90, FILL), np.rot90(square, -1))
  np.testing.assert_array_equal(aug.rotate(square, 0, FILL), square)


def test_translate_shift_amount_by_hand():
  pixels = _noise(4, 8)
  left = aug.translate_x_rel(pixels, 0.25, FILL).numpy()  # 0.25 * 8 = 2 pixels.
  np.testing.assert_array_equal(left[:, :6], pixels[:, 2:])
  np.testing.assert_array_equal(left[:, 6:], np.broadcast_to(FILL, (4, 2, 3)))
  right = aug.translate_x_rel(pixels, -0.25, FILL).numpy()
  np.testing.assert_array_equal(right[:, 2:], pixels[:, :6])
  np.testing.assert_array_equal(right[:, :2], np.broadcast_to(FILL, (4, 2, 3)))
  down = aug.translate_y_rel(pixels, -0.5, FILL).numpy()  # 0.5 * 4 = 2 rows.
  np.testing.assert_array_equal(down[2:], pixels[:2])
  np.testing.assert_array_equal(down[:2], np.broadcast_to(FILL, (2, 8, 3)))


# ----------------------------------------------------- pixel ops vs PIL ---

_PIL_EXACT = [
  ("auto_contrast", aug.auto_contrast, ImageOps.autocontrast),
  ("equalize", aug.equalize, ImageOps.equalize),
  ("color_0.3", lambda im: aug.adjust_color(im, 0.3), lambda p: ImageEnhance.Color(p).enhance(0.3)),
  ("color_1.7", lambda im: aug.adjust_color(im, 1.7), lambda p: ImageEnhance.Color(p).enhance(1.7)),
  ("contrast_0.4", lambda im: aug.adjust_contrast(im, 0.4), lambda p: ImageEnhance.Contrast(p).enhance(0.4)),
  ("contrast_1.6", lambda im: aug.adjust_contrast(im, 1.6), lambda p: ImageEnhance.Contrast(p).enhance(1.6)),
  ("brightness_1.3", lambda im: aug.adjust_brightness(im, 1.3), lambda p: ImageEnhance.Brightness(p).enhance(1.3)),
  ("sharpness_0.2", lambda im: aug.adjust_sharpness(im, 0.2), lambda p: ImageEnhance.Sharpness(p).enhance(0.2)),
  ("sharpness_1.9", lambda im: aug.adjust_sharpness(im, 1.9), lambda p: ImageEnhance.Sharpness(p).enhance(1.9)),
  (
    "rotate_17.5",
    lambda im: aug.rotate(im, 17.5, FILL),
    lambda p: p.rotate(17.5, resample=Image.BILINEAR, fillcolor=FILL),
  ),
  (
    "rotate_-30",
    lambda im: aug.rotate(im, -30, FILL),
    lambda p: p.rotate(-30, resample=Image.BILINEAR, fillcolor=FILL),
  ),
]


@pytest.mark.parametrize("name,ours,pil", _PIL_EXACT, ids=[c[0] for c in _PIL_EXACT])
def test_ops_equal_pil(name, ours, pil):
  del name
  pixels = _noise(14, 17, low=20, high=230)
  pixels[:4] = _noise(4, 17, seed=1)  # Some full-range rows, so every LUT is non-trivial.
  np.testing.assert_array_equal(ours(pixels).numpy(), np.asarray(pil(Image.fromarray(pixels))))


def test_shear_matches_pil_up_to_float_rounding():
  # PIL accumulates sample positions by repeated addition, so a sample that
  # lands exactly on the image edge may fall either side; these factors
  # avoid such ties (random magnitudes hit them with probability ~0).
  pixels = _noise(14, 17)
  for coeffs, ours in [
    ((1, 0.3, 0, 0, 1, 0), aug.shear_x(pixels, 0.3, FILL)),
    ((1, 0, 0, -0.23, 1, 0), aug.shear_y(pixels, -0.23, FILL)),
  ]:
    ref = np.asarray(
      Image.fromarray(pixels).transform((17, 14), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=FILL)
    )
    diff = np.abs(ours.numpy().astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05  # Truncation of float32 vs double.


# ------------------------------------------------------------ RandAugment ---


def test_randaugment_deterministic_uint8_same_shape():
  pixels = _noise(12, 16)
  spec = "randaugment(num_ops=2, magnitude=9, prob=1.0)"
  outs = [_run(spec, pixels, (s, 7)) for s in range(8)]
  assert all(o.dtype == np.uint8 and o.shape == pixels.shape for o in outs)
  np.testing.assert_array_equal(outs[3], _run(spec, pixels, (3, 7)))
  assert len({o.tobytes() for o in outs}) >= 7


def test_randaugment_has_static_shape_in_tf_data():
  ds = tf.data.Dataset.from_tensors(_example(_noise(12, 16)))
  ds = ds.map(pp_registry.build("randaugment|random_erasing|color_jitter"))
  assert tuple(ds.element_spec["image"].shape) == (12, 16, 3)
  assert next(iter(ds))["image"].dtype == tf.uint8


def test_randaugment_identities():
  pixels = _noise(9, 11)
  for seed in range(6):
    np.testing.assert_array_equal(_run("randaugment(prob=0.0)", pixels, (seed, 0)), pixels)
    np.testing.assert_array_equal(_run("randaugment(num_ops=0)", pixels, (seed, 0)), pixels)
  # Ops whose magnitude-0 argument is the identity (timm: Posterize keeps 4
  # bits at 0, AutoContrast/Equalize/Invert ignore the magnitude).
  zero_is_identity = tuple(set(aug.INCREASING_OP_SET) - {"AutoContrast", "Equalize", "Invert", "PosterizeIncreasing"})
  assert len(zero_is_identity) == 11
  for seed in range(12):
    out = pp_registry.build("randaugment")(_example(pixels, (seed, 1)))
    assert not np.array_equal(out["_seed"].numpy(), [seed, 1])  # The seed moves on.
    zero = aug.randaugment(num_ops=3, magnitude=0, magnitude_std=0, prob=1.0, ops=zero_is_identity)(
      _example(pixels, (seed, 1))
    )
    np.testing.assert_array_equal(zero["image"].numpy(), pixels)


def test_randaugment_applies_exactly_num_ops():
  # SolarizeAdd at magnitude 1 adds int(0.1 * 110) = 11 to a black image per
  # application, so the pixel value counts the ops that fired.
  black = _const(4, 4, 0)
  for num_ops in (1, 2, 3):
    out = _run(f"randaugment(num_ops={num_ops}, magnitude=1, magnitude_std=0, prob=1.0, ops=('SolarizeAdd',))", black)
    assert np.all(out == 11 * num_ops)
  # With prob 0.5 the count is Binomial(2, 1/2) and never 3.
  pp = aug.randaugment(num_ops=2, magnitude=1, magnitude_std=0, prob=0.5, ops=("SolarizeAdd",))
  counts = collections.Counter(int(pp(_example(black, (s, 3)))["image"].numpy()[0, 0, 0]) for s in range(200))
  assert set(counts) == {0, 11, 22}
  assert 30 <= counts[0] <= 70 and 75 <= counts[11] <= 125 and 30 <= counts[22] <= 70


def test_randaugment_draws_ops_with_replacement_in_order():
  # On black: SA,SA -> 22; SA then Invert -> 244; Invert then SA -> 255
  # (>= 128 is left alone); Invert twice -> 0.
  pp = aug.randaugment(num_ops=2, magnitude=1, magnitude_std=0, prob=1.0, ops=("SolarizeAdd", "Invert"))
  outcomes = collections.Counter(
    int(pp(_example(_const(2, 2, 0), (s, 5)))["image"].numpy()[0, 0, 0]) for s in range(80)
  )
  assert set(outcomes) == {22, 244, 255, 0}
  assert min(outcomes.values()) >= 8


def test_randaugment_magnitude_noise_clip_and_sign():
  grey = _const(2, 2, 0)
  adds = lambda spec: [int(_run(spec, grey, (s, 2))[0, 0, 0]) for s in range(60)]  # noqa: E731
  fixed = adds("randaugment(num_ops=1, magnitude=5, magnitude_std=0, prob=1.0, ops=('SolarizeAdd',))")
  assert set(fixed) == {55}
  noisy = adds("randaugment(num_ops=1, magnitude=5, magnitude_std=1.0, prob=1.0, ops=('SolarizeAdd',))")
  assert len(set(noisy)) > 5 and 11 <= min(noisy) and max(noisy) <= 99
  assert abs(np.mean(noisy) - 55) < 5
  clipped = adds("randaugment(num_ops=1, magnitude=10, magnitude_std=1.0, prob=1.0, ops=('SolarizeAdd',))")
  assert max(clipped) == 110 and 15 < clipped.count(110) < 45  # N(10, 1) clipped at 10.
  # Signed ops: TranslateXRel at M=10 shifts by +-0.45 * width, both ways.
  pixels = _noise(6, 20)
  left = aug.translate_x_rel(pixels, 0.45, FILL).numpy()
  right = aug.translate_x_rel(pixels, -0.45, FILL).numpy()
  sides = collections.Counter()
  for s in range(30):
    out = _run(
      "randaugment(num_ops=1, magnitude=10, magnitude_std=0, prob=1.0, ops=('TranslateXRel',))", pixels, (s, 4)
    )
    sides["left" if np.array_equal(out, left) else "right" if np.array_equal(out, right) else "other"] += 1
  assert sides["other"] == 0 and sides["left"] >= 5 and sides["right"] >= 5


def test_randaugment_timm_string():
  assert aug.parse_timm_rand_augment("rand-m9-mstd0.5-inc1") == dict(
    magnitude=9.0, num_ops=2, magnitude_std=0.5, increasing=True
  )
  parsed = aug.parse_timm_rand_augment("rand-n3-m7-mstd101-mmax12")
  assert parsed == dict(magnitude=7.0, num_ops=3, magnitude_std=float("inf"), increasing=False, magnitude_max=12.0)
  pixels = _noise(10, 10)
  for seed in range(4):
    np.testing.assert_array_equal(
      _run("randaugment_timm('rand-m7-mstd0.5-inc1')", pixels, (seed, 0)),
      _run("randaugment(magnitude=7, magnitude_std=0.5, increasing=True)", pixels, (seed, 0)),
    )
  for bad in ("rand-m9-w0", "augmix-m3", "rand-mx"):
    with pytest.raises(ValueError, match="RandAugment config"):
      pp_registry.build(f"randaugment_timm({bad!r})")


def test_randaugment_bad_arguments_name_the_fix():
  with pytest.raises(ValueError, match="valid: .*'ShearX'"):
    pp_registry.build("randaugment(ops=('Shear',))")
  with pytest.raises(ValueError, match="fill"):
    pp_registry.build("randaugment(fill=(300, 0, 0))")
  with pytest.raises(ValueError, match="interpolation"):
    pp_registry.build("randaugment(interpolation='bicubic')")
  with pytest.raises(ValueError, match="decode"):
    pp_registry.build("randaugment")({"image": tf.constant(b"x"), "_seed": tf.constant([1, 2], tf.int64)})


# --------------------------------------------------------- random erasing ---


def _erased_box(out, background):
  """(top, left, height, width) of the changed pixels; asserts they form a rectangle."""
  changed = np.any(out != background, axis=-1)
  if not changed.any():
    return None
  rows, cols = np.where(changed.any(1))[0], np.where(changed.any(0))[0]
  top, left = rows[0], cols[0]
  height, width = rows[-1] - top + 1, cols[-1] - left + 1
  assert changed.sum() == height * width  # A full rectangle.
  return top, left, height, width


def test_random_erasing_box_area_aspect_and_const_fill():
  h, w = 40, 48
  black = _const(h, w, 0)
  pp = pp_registry.build("random_erasing(prob=1.0, mode='const')")
  for s in range(60):
    out = pp(_example(black, (s, 0)))["image"].numpy()
    top, left, height, width = _erased_box(out, black)
    assert height < h and width < w
    # Sides are rounded: allow half a pixel on each.
    assert 0.02 * h * w - (height + width) / 2 <= height * width <= h * w / 3 + (height + width) / 2
    assert 0.3 - 1 / min(height, width) <= height / width <= 3.3 + 1 / min(height, width)
    np.testing.assert_array_equal(out[top, left], FILL)  # Rounded ImageNet mean.


def test_random_erasing_probability_and_determinism():
  pixels = _noise(16, 16, low=0, high=1)  # Black.
  pp = pp_registry.build("random_erasing(prob=0.25, mode='const')")
  outs = [pp(_example(pixels, (s, 9)))["image"].numpy() for s in range(240)]
  erased = sum(_erased_box(o, pixels) is not None for o in outs)
  assert 36 <= erased <= 84  # 60 expected.
  np.testing.assert_array_equal(outs[5], pp(_example(pixels, (5, 9)))["image"].numpy())
  for s in range(5):
    np.testing.assert_array_equal(_run("random_erasing(prob=0.0)", pixels, (s, 0)), pixels)


def test_random_erasing_pixel_and_rand_noise_use_mean_and_std():
  h = w = 48
  black = _const(h, w, 0)
  green = np.broadcast_to(np.array([0, 255, 0], np.uint8), (h, w, 3))  # Noise hardly hits it.
  spec = "random_erasing(prob=1.0, mode='{}', area=(0.3, 0.33))"
  out = _run(spec.format("pixel"), green, (0, 0))
  top, left, height, width = _erased_box(out, green)
  region = out[top : top + height, left : left + width].reshape(-1, 3).astype(float)
  np.testing.assert_allclose(region.mean(0), aug.IMAGENET_MEAN_RGB, atol=6)
  np.testing.assert_allclose(region.std(0), aug.IMAGENET_STD_RGB, atol=8)
  colours = set()
  for s in range(4):
    out = _run(spec.format("rand"), black, (s, 0))
    top, left, height, width = _erased_box(out, black)
    region = out[top : top + height, left : left + width].reshape(-1, 3)
    assert len(np.unique(region, axis=0)) == 1  # One colour per box.
    colours.add(tuple(region[0]))
  assert len(colours) == 4
  two = _run("random_erasing(prob=1.0, mode='const', count=2, area=(0.05, 0.1))", black)
  assert 0 < np.any(two != 0, -1).mean() <= 0.1 + 0.05  # Two boxes share the area budget.


def test_random_erasing_bad_arguments():
  with pytest.raises(ValueError, match="valid: \\['const', 'rand', 'pixel'\\]"):
    pp_registry.build("random_erasing(mode='noise')")
  with pytest.raises(ValueError, match="count"):
    pp_registry.build("random_erasing(count=0)")
  with pytest.raises(ValueError, match="area"):
    pp_registry.build("random_erasing(area=(0.5, 2.0))")


# ----------------------------------------------------------- colour jitter ---


def test_color_jitter_factors_and_identity():
  pixels = _const(3, 3, 100)
  values = {
    int(_run("color_jitter(brightness=0.4, contrast=0, saturation=0)", pixels, (s, 0))[0, 0, 0]) for s in range(40)
  }
  assert min(values) >= 60 and max(values) <= 140 and len(values) > 15
  noise = _noise(6, 6)
  np.testing.assert_array_equal(_run("color_jitter(brightness=0, contrast=0, saturation=0, hue=0)", noise), noise)
  a = _run("color_jitter(hue=0.1)", noise, (4, 4))
  np.testing.assert_array_equal(a, _run("color_jitter(hue=0.1)", noise, (4, 4)))
  assert not np.array_equal(a, _run("color_jitter(hue=0.1)", noise, (5, 4)))
  with pytest.raises(ValueError, match="hue"):
    pp_registry.build("color_jitter(hue=0.7)")


# ---------------------------------------------------- repeated augmentation ---


def _digest(image):
  return hashlib.sha1(image.tobytes()).hexdigest()


def _flat(batches, key="image"):
  return [x for b in batches for x in b[key]]


def test_repeated_aug_repeats_each_example_and_keeps_epoch_length(digits_cfg):
  digits_cfg.pp_train = "decode|central_crop(32)"  # Exact pixels.
  digits_cfg.repeated_aug = 3
  info = data.get_dataset_info(digits_cfg)
  steps = data.train_steps_per_epoch(digits_cfg, info, 64, process_count=1)
  assert steps == 1437 // 64 == 22  # Unchanged: 1408 examples per epoch.
  kw = dict(global_batch_size=64, seed=2, process_index=0, process_count=1)
  batches = list(itertools.islice(data.make_train_iterator(digits_cfg, **kw), 3 * steps))
  rows = [_digest(x) for x in _flat(batches)]
  labels = _flat(batches, "label")
  # Copies are adjacent: rows 3k, 3k+1, 3k+2 are one example.
  for k in range(0, len(rows), 3):
    assert rows[k] == rows[k + 1] == rows[k + 2] and labels[k] == labels[k + 2]
  assert rows[0] != rows[3]
  # An epoch holds 1408 rows of ceil(1408 / 3) = 470 distinct images ...
  epoch0 = rows[: steps * 64]
  assert len(epoch0) == 1408 and len(set(epoch0)) == 470
  # ... and 3 epochs are one full pass: 1408 distinct (records) x 3 copies.
  per_image = collections.Counter(rows)
  assert sum(per_image.values()) == 3 * 1408 and set(per_image.values()) <= {3, 6}
  assert len(per_image) >= 1400  # A few digit images occur twice in the split.


def test_repeated_aug_copies_get_different_augmentations_and_resume_exactly(digits_cfg):
  digits_cfg.repeated_aug = 3  # pp_train: random resized crop + flip.
  kw = dict(global_batch_size=64, seed=5, process_index=0, process_count=1)
  fresh = list(itertools.islice(data.make_train_iterator(digits_cfg, **kw), 70))
  first = fresh[0]["image"]
  assert all(fresh[0]["label"][k] == fresh[0]["label"][k + 2] for k in range(0, 63, 3))
  differing = sum(not np.array_equal(first[k], first[k + 1]) for k in range(0, 63, 3))
  assert differing >= 18  # Out of 21 groups; a crop+flip can repeat by chance.
  # Resume mid copy-group (5 * 64 = 320 = 3 * 106 + 2), in a later epoch,
  # and after the first full pass over the shard (3 * 1408 rows = step 66).
  for start in (5, 23, 67):
    resumed = list(itertools.islice(data.make_train_iterator(digits_cfg, start_step=start, **kw), 70 - start))
    assert len(resumed) == 70 - start
    for x, y in zip(resumed, fresh[start:]):
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["label"], y["label"])


def test_repeated_aug_must_be_positive_int(digits_cfg):
  digits_cfg.repeated_aug = 0
  with pytest.raises(ValueError, match="repeated_aug"):
    data.make_train_iterator(digits_cfg, global_batch_size=8, seed=0, process_index=0, process_count=1)
