"""Writers of small image files for image_folder tests."""

import os

import numpy as np
import tensorflow as tf


def write_image(path: str, pixels: np.ndarray):
  """Writes uint8 pixels as JPEG or PNG depending on the file extension."""
  pixels = tf.constant(pixels, tf.uint8)
  encoded = tf.io.encode_png(pixels) if path.endswith(".png") else tf.io.encode_jpeg(pixels, quality=95)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, encoded)


def make_color_folder(root: str, per_class: int = 5) -> dict:
  """train/ and val/ folders of flat-colour images; class 'dark' ~ 30, 'light' ~ 220.

  Includes a PNG and a grayscale JPEG so the non-JPEG and 1-channel paths run.
  Returns the class value per label name.
  """
  rng = np.random.default_rng(0)
  values = {"dark": 30, "light": 220}
  for split in ("train", "val"):
    for name, value in values.items():
      for i in range(per_class):
        h, w = rng.integers(20, 40, size=2)
        channels = 1 if (i == 1) else 3
        pixels = np.full((h, w, channels), value, np.uint8)
        ext = ".png" if i == 0 else ".jpg"
        write_image(os.path.join(root, split, name, f"{i}{ext}"), pixels)
  return values
