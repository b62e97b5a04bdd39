"""The locally made ImageNet-shaped photo dataset (mixjax_photos)."""

import collections
import hashlib
import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from mixjax import data
from mixjax.data import photos


@pytest.fixture(scope="module")
def photos_dir():
  data_dir = os.environ["TFDS_DATA_DIR"]  # set by tests/conftest.py
  photos.prepared_builder(data_dir)
  return data_dir


def _split(builder, split):
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  encoded, labels = zip(*[(ex["image"], ex["label"]) for ex in tfds.as_numpy(ds)])
  return list(encoded), np.array(labels)


def test_splits_labels_and_imagenet_like_jpegs(photos_dir):
  builder = photos.prepared_builder(photos_dir)
  assert builder.info.features["label"].num_classes == photos.NUM_CLASSES == 16
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert sizes == {"train": 16 * photos.TRAIN_PER_CLASS, "validation": 16 * photos.VALIDATION_PER_CLASS}
  train, train_labels = _split(builder, "train")
  val, val_labels = _split(builder, "validation")
  assert collections.Counter(train_labels) == {c: photos.TRAIN_PER_CLASS for c in range(16)}
  assert collections.Counter(val_labels) == {c: photos.VALIDATION_PER_CLASS for c in range(16)}
  # Disjoint splits: no JPEG appears in both.
  digest = lambda jpegs: {hashlib.sha1(j).hexdigest() for j in jpegs}
  assert len(digest(train)) == len(train) and not digest(train) & digest(val)

  shapes = []
  for jpeg in train + val:
    assert tf.io.is_jpeg(jpeg)
    image = Image.open(io.BytesIO(jpeg))
    assert image.mode == "RGB"
    shapes.append(image.size)
  widths, heights = np.array(shapes).T
  aspect = widths / heights
  assert 180 <= min(widths.min(), heights.min()) and max(widths.max(), heights.max()) <= 500
  assert 0.55 <= aspect.min() and aspect.max() <= 1.8  # ImageNet: 3:4 … 16:9 mostly
  long_side = np.maximum(widths, heights)
  assert np.mean(long_side == 500) > 0.7  # ImageNet: mostly 500 px on the long side
  landscape_4_3 = np.mean((widths == 500) & (heights == 375))
  assert 0.3 < landscape_4_3 < 0.55  # the most common ImageNet size
  assert np.mean(aspect < 1) > 0.1  # some portrait images
  assert 120_000 < np.mean(widths * heights) < 220_000  # ImageNet's mean is ≈ 400×350 … 500×375
  # Quality 90: PIL's luminance table scaled by (200 - 2·90)% → DC quantiser round(16·0.2) = 3.
  assert Image.open(io.BytesIO(train[0])).quantization[0][0] == 3


def test_classes_are_distinct(photos_dir):
  """A nearest-class-mean classifier on 8×8 thumbnails separates the classes well."""
  builder = photos.prepared_builder(photos_dir)

  def thumbnails(split):
    ds = builder.as_dataset(split=split).map(
      lambda ex: (tf.reshape(tf.image.resize(ex["image"], (8, 8), antialias=True), [-1]), ex["label"])
    )
    x, y = zip(*tfds.as_numpy(ds))
    return np.stack(x), np.array(y)

  x_train, y_train = thumbnails("train")
  x_val, y_val = thumbnails("validation")
  means = np.stack([x_train[y_train == c].mean(0) for c in range(16)])
  predicted = np.argmin(((x_val[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert np.mean(predicted == y_val) > 0.75


def test_in1k_config_spreads_the_same_examples_over_1000_labels(photos_dir):
  small = photos.prepared_builder(photos_dir)
  big = photos.prepared_builder(photos_dir, "mixjax_photos/in1k")
  assert big.info.features["label"].num_classes == 1000
  jpegs_small, labels_small = _split(small, "validation")
  jpegs_big, labels_big = _split(big, "validation")
  assert sorted(jpegs_small) == sorted(jpegs_big)
  by_jpeg = dict(zip(jpegs_small, labels_small))
  assert all(label == by_jpeg[j] * 1000 // 16 for j, label in zip(jpegs_big, labels_big))
  assert len(set(labels_big)) == 16 and labels_big.max() < 1000


def test_config_names_and_the_real_pipeline(photos_dir):
  with pytest.raises(ValueError, match="valid"):
    photos.prepared_builder(photos_dir, "mixjax_photos/nope")
  cfg = data.default_data_config()
  cfg.data_dir = photos_dir
  cfg.name = "mixjax_photos/in1k"
  cfg.eval_split = "validation"
  cfg.pp_train = "decode_jpeg_and_random_resized_crop(160)|flip_lr|randaugment_timm('rand-m6-mstd0.5-inc1')"
  cfg.pp_eval = "decode|resize_center_crop(224, crop_ratio=0.95)"
  info = data.get_dataset_info(cfg)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (1000, 768, 128)
  batch = next(data.make_train_iterator(cfg, global_batch_size=4, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (4, 160, 160, 3) and batch["image"].dtype == np.uint8
  assert set(batch["label"]) <= {c * 1000 // 16 for c in range(16)}
  batches, count = data.make_eval_iterator(cfg, global_batch_size=64, process_index=0, process_count=1)
  assert count == 2
  eval_batch = next(batches())
  assert eval_batch["image"].shape == (64, 224, 224, 3) and eval_batch["mask"].all()
