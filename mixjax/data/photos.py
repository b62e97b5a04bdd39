"""`mixjax_photos`: an ImageNet-shaped dataset made locally from scikit-image's photographs.

Full-size JPEGs (mostly 500x375 / 375x500 / 500x333 and other ImageNet-typical sizes, quality 90, 4:2:0
chroma) for 16 classes, each class one of the photographs that ship inside scikit-image (`skimage.data`,
no download): every example is a random crop of its class's photograph (area 35-100%, aspect jittered
around the target size's), resized to the example's size, colour-shifted (brightness, contrast, per-channel
gain, a little noise) and sometimes mirrored. Grey photographs get a class-specific tint, so all 16 classes
are RGB and distinct. It serves the real-shape smoke runs of the benchmark cells and the input-pipeline
benchmark: TFRecords of encoded JPEGs, exactly what `imagenet2012` holds, at ImageNet's per-image cost.

Two builder configs share the images:
  * `mixjax_photos` (= `mixjax_photos/default`): 16 classes, labels 0..15.
  * `mixjax_photos/in1k`: the same examples with their labels spread over a 1000-class label space (class c
    has label `c * 1000 // 16`), so models get ImageNet's 1000-way head.

Splits: `train` (48 per class) and `validation` (8 per class), drawn from disjoint random streams. Prepared
on first use into the TFDS data dir (file-locked, like `mixjax_digits`).
"""

import fcntl
import io
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

NAME = "mixjax_photos"
JPEG_QUALITY = 90
TRAIN_PER_CLASS = 48
VALIDATION_PER_CLASS = 8
IN1K_CLASSES = 1000

# (function in skimage.data, tint for grey photos as RGB gains). 16 classes, in label order.
PHOTOS = (
  ("astronaut", None),
  ("chelsea", None),
  ("coffee", None),
  ("hubble_deep_field", None),
  ("immunohistochemistry", None),
  ("retina", None),
  ("rocket", None),
  ("stereo_motorcycle", None),
  ("camera", (1.0, 0.85, 0.6)),
  ("brick", (1.0, 0.55, 0.45)),
  ("grass", (0.5, 1.0, 0.45)),
  ("gravel", (0.75, 0.75, 1.0)),
  ("coins", (1.0, 0.9, 0.4)),
  ("moon", (0.6, 0.8, 1.0)),
  ("cell", (0.55, 1.0, 0.9)),
  ("clock", (1.0, 0.6, 1.0)),
)
NUM_CLASSES = len(PHOTOS)

# ImageNet-like (width, height) mix: most ILSVRC-2012 train images are 500 px on the long side, with 4:3
# landscape the most common shape; the "other" share draws the long side from 300..500 and the aspect ratio
# from 0.6..1 (either orientation).
SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (500, 400), (400, 300))
SIZE_PROBS = (0.40, 0.12, 0.14, 0.05, 0.06, 0.04, 0.03)  # the rest (0.16): "other"
_SPLIT_STREAMS = {"train": 0, "validation": 1}
_SEED = 2024


def _load_photo(index: int) -> np.ndarray:
  """Photograph `index` of PHOTOS as float32 RGB 0..255 (grey ones tinted)."""
  import skimage.data  # pylint: disable=g-import-not-at-top

  name, tint = PHOTOS[index]
  image = getattr(skimage.data, name)()
  if name == "stereo_motorcycle":
    image = image[0]  # (left view, right view, disparity)
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None] * np.asarray(tint, np.float32)
  return image[..., :3]


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
  """An ImageNet-like (width, height)."""
  i = rng.choice(len(SIZES) + 1, p=(*SIZE_PROBS, 1.0 - sum(SIZE_PROBS)))
  if i < len(SIZES):
    return SIZES[i]
  long_side = int(rng.integers(300, 501))
  short_side = int(round(long_side * rng.uniform(0.6, 1.0)))
  return (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)


def make_example(photo: np.ndarray, rng: np.random.Generator) -> bytes:
  """One JPEG: a random crop of `photo` at an ImageNet-like size, colour-jittered, quality 90."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (ships with scikit-image / matplotlib)

  width, height = sample_size(rng)
  ph, pw = photo.shape[:2]
  area = rng.uniform(0.35, 1.0) * ph * pw
  aspect = (width / height) * np.exp(rng.uniform(-0.15, 0.15))
  crop_w = int(min(pw, max(16, round(np.sqrt(area * aspect)))))
  crop_h = int(min(ph, max(16, round(np.sqrt(area / aspect)))))
  top = int(rng.integers(0, ph - crop_h + 1))
  left = int(rng.integers(0, pw - crop_w + 1))
  crop = photo[top : top + crop_h, left : left + crop_w]
  # Colour shift: brightness, contrast around the mean, per-channel gain, sensor-like noise.
  mean = crop.mean()
  crop = (crop - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.8, 1.2)
  crop = crop * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
  image = Image.fromarray(np.clip(np.round(crop), 0, 255).astype(np.uint8))
  image = image.resize((width, height), Image.BICUBIC)
  pixels = np.asarray(image, np.float32) + rng.normal(0.0, 4.0, (height, width, 3)).astype(np.float32)
  if rng.random() < 0.5:
    pixels = pixels[:, ::-1]
  image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=2)  # 2 = 4:2:0
  return buffer.getvalue()


def examples_per_class(split: str) -> int:
  return {"train": TRAIN_PER_CLASS, "validation": VALIDATION_PER_CLASS}[split]


def generate_split(split: str):
  """Yields (key, jpeg bytes, class index) of `split`; deterministic, independent of the builder config."""
  for c in range(NUM_CLASSES):
    photo = _load_photo(c)
    for i in range(examples_per_class(split)):
      rng = np.random.default_rng([_SEED, _SPLIT_STREAMS[split], c, i])
      yield c * 10_000 + i, make_example(photo, rng), c


class MixjaxPhotosConfig(tfds.core.BuilderConfig):
  """`num_classes`: size of the label space; class c gets label c * num_classes // 16."""

  def __init__(self, *, num_classes: int, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes


class MixjaxPhotos(tfds.core.GeneratorBasedBuilder):
  """TFDS builder of the locally made ImageNet-shaped photos; nothing is downloaded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    MixjaxPhotosConfig(
      name="default", num_classes=NUM_CLASSES, description=f"{NUM_CLASSES} classes, labels 0..{NUM_CLASSES - 1}."
    ),
    MixjaxPhotosConfig(
      name="in1k",
      num_classes=IN1K_CLASSES,
      description=f"The same examples, labels spread over {IN1K_CLASSES} classes.",
    ),
  ]
  # See mixjax/data/digits.py: keeps TFDS's source lookup away from importlib_resources.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        f"{NUM_CLASSES} scikit-image photographs, randomly cropped, colour-shifted and resized to "
        f"ImageNet-like sizes (mostly 500x375), JPEG quality {JPEG_QUALITY}; "
        f"{TRAIN_PER_CLASS}/{VALIDATION_PER_CLASS} train/validation examples per class."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with scikit-image.
    return {split: self._generate_examples(split) for split in _SPLIT_STREAMS}

  def _generate_examples(self, split):
    num_classes = self.builder_config.num_classes
    for key, jpeg, c in generate_split(split):
      yield key, {"image": jpeg, "label": c * num_classes // NUM_CLASSES}


def _config_name(name: str) -> str:
  """'mixjax_photos' → 'default', 'mixjax_photos/in1k' → 'in1k' (a ':version' suffix is ignored)."""
  base, _, config = name.partition("/")
  if base.split(":")[0] != NAME:
    raise ValueError(f"Not a {NAME} dataset name: {name!r}.")
  config = config.split(":")[0] or "default"
  valid = [c.name for c in MixjaxPhotos.BUILDER_CONFIGS]
  if config not in valid:
    raise ValueError(f"Unknown {NAME} config {config!r} in {name!r}; valid: {valid}.")
  return config


def prepared_builder(data_dir: str, name: str = NAME) -> MixjaxPhotos:
  """Returns the builder of `name` (`mixjax_photos[/<config>]`), preparing it into `data_dir` on first use.

  An exclusive file lock makes concurrent calls prepare it once (see mixjax/data/digits.py).
  """
  config = _config_name(name)
  builder = MixjaxPhotos(data_dir=data_dir, config=config)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{NAME}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = MixjaxPhotos(data_dir=data_dir, config=config)
      if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        builder = MixjaxPhotos(data_dir=data_dir, config=config)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return builder
