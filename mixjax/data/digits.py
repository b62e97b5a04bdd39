"""`mixjax_digits`: a tiny, download-free demo dataset in the ImageNet format.

It turns scikit-learn's bundled handwritten digits (UCI "Optical Recognition of
Handwritten Digits", 1797 images of 8x8 pixels, values 0..16) into 32x32 RGB
JPEGs stored by TFDS. The demo therefore exercises exactly the path real
ImageNet data takes: TFRecords, encoded JPEG bytes, fused decode-and-crop.
"""

import fcntl
import os

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

NAME = "mixjax_digits"
IMAGE_SIZE = 32
NUM_TEST = 360
_SPLIT_SEED = 0
_JPEG_QUALITY = 95


def _digits_as_jpegs() -> tuple[list[bytes], np.ndarray]:
  """Upsamples every digit to 32x32 (bicubic), 0..255, 3 channels, JPEG q95."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  small = digits.images.astype(np.float32)[..., None] * (255.0 / 16.0)
  big = tf.image.resize(small, (IMAGE_SIZE, IMAGE_SIZE), method="bicubic")
  big = tf.cast(tf.clip_by_value(tf.round(big), 0.0, 255.0), tf.uint8)
  rgb = tf.tile(big, (1, 1, 1, 3))
  jpegs = [tf.io.encode_jpeg(img, quality=_JPEG_QUALITY).numpy() for img in rgb]
  return jpegs, digits.target.astype(np.int64)


def _stratified_split(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Seeded split keeping the class proportions: 1437 train / 360 test."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  train_idx, test_idx = model_selection.train_test_split(
    np.arange(len(labels)), test_size=NUM_TEST, stratify=labels, random_state=_SPLIT_SEED
  )
  return {"train": np.sort(train_idx), "test": np.sort(test_idx)}


class MixjaxDigits(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for the demo digits; nothing is downloaded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # TFDS 4.9.10 locates a builder's source through `importlib_resources`,
  # which it only declares as a dependency for Python < 3.9; naming the file
  # here keeps that lookup (and the package) out of the way.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "scikit-learn load_digits() upsampled to 32x32 RGB JPEG (bicubic, quality 95), stratified 1437/360 split."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with scikit-learn.
    jpegs, labels = _digits_as_jpegs()
    splits = _stratified_split(labels)
    return {split: self._generate_examples(jpegs, labels, indices) for split, indices in splits.items()}

  def _generate_examples(self, jpegs, labels, indices):
    for i in indices:
      yield int(i), {"image": jpegs[i], "label": int(labels[i])}


def prepared_builder(data_dir: str) -> MixjaxDigits:
  """Returns the builder, preparing it into `data_dir` on first use.

  An exclusive file lock makes concurrent calls (several processes on one
  host, or hosts sharing a POSIX file system) prepare it once; the others
  wait a few seconds and then read the finished files.
  """
  builder = MixjaxDigits(data_dir=data_dir)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{NAME}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = MixjaxDigits(data_dir=data_dir)
      if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        builder = MixjaxDigits(data_dir=data_dir)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return builder
