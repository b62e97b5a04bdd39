"""The embedded demo dataset builder."""

import collections
import threading

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mixjax.data import digits


def _split_arrays(builder, split):
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  encoded, labels = zip(*[(ex["image"], ex["label"]) for ex in tfds.as_numpy(ds)])
  return list(encoded), np.array(labels)


def test_digits_splits_labels_and_jpeg_images(digits_dir):
  builder = digits.prepared_builder(digits_dir)
  assert str(builder.info.version) == "1.0.0"
  assert builder.info.features["label"].num_classes == 10
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert sizes == {"train": 1437, "test": 360}

  train_jpegs, train_labels = _split_arrays(builder, "train")
  test_jpegs, test_labels = _split_arrays(builder, "test")
  for labels in (train_labels, test_labels):
    assert labels.min() == 0 and labels.max() == 9
    assert set(labels) == set(range(10))
  # Stratified: every class has ~20% of its examples in test (360 / 1797).
  per_class = collections.Counter(train_labels) + collections.Counter(test_labels)
  test_count = collections.Counter(test_labels)
  for c in range(10):
    assert abs(test_count[c] - per_class[c] * 360 / 1797) <= 1
  assert all(tf.io.is_jpeg(j) for j in train_jpegs[:20])
  image = tf.io.decode_jpeg(test_jpegs[0]).numpy()
  assert image.shape == (32, 32, 3)
  assert image.max() > 200 and image.min() < 30  # Full 0..255 range, not 0..16.


def test_concurrent_first_use_prepares_once(tmp_path):
  data_dir = str(tmp_path / "tfds")
  results, errors = [], []

  def prepare():
    try:
      results.append(digits.prepared_builder(data_dir).info.splits["train"].num_examples)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=prepare) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert results == [1437, 1437]
  # Exactly one prepared version folder, no leftover incomplete ones.
  assert sorted(p.name for p in (tmp_path / "tfds" / digits.NAME).iterdir()) == ["1.0.0"]
