"""Where examples come from: TFDS builders, image folders and the demo digits.

A source answers three questions for the pipeline: how many classes, how many
examples a split holds, and the encoded records of one even shard of a split
as `{"image": <encoded bytes>, "label": int64}`. Images are never decoded
here; preprocessing decides how (and how much of) each image to decode.
"""

import collections
import dataclasses
import difflib
import functools
import os

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from mixjax.data import digits
from mixjax.data.errors import DatasetNotFoundError
from mixjax.config_args import ConfigError

IMAGE_FOLDER = "image_folder"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about a dataset before reading it."""

  name: str
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  # Things a user should know about the data (empty classes, skipped files); logged and kept in results.json.
  warnings: tuple = ()


def resolve_data_dir(data_cfg) -> str:
  """Same rule as TFDS: config value, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  data_dir = data_cfg.get("data_dir") or os.environ.get("TFDS_DATA_DIR")
  return os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))


def even_shard_bounds(num_examples: int, index: int, count: int, drop_remainder: bool) -> tuple[int, int]:
  """[start, end) of shard `index` of `count`, as `tfds.even_splits` cuts it.

  Without drop_remainder the first `num_examples % count` shards get one
  extra example; with it every shard gets `num_examples // count`.
  """
  base, rem = divmod(num_examples, count)
  if drop_remainder:
    return index * base, (index + 1) * base
  start = index * base + min(index, rem)
  return start, start + base + (1 if index < rem else 0)


class TfdsSource:
  """A prepared TFDS dataset (ImageNet, the demo digits, CIFAR, ...)."""

  def __init__(self, name: str, builder: tfds.core.DatasetBuilder):
    self.name = name
    self._builder = builder

  @property
  def num_classes(self) -> int:
    return self._builder.info.features["label"].num_classes

  def num_examples(self, split: str) -> int:
    try:
      return self._builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
      raise ConfigError(
        f"Split {split!r} does not exist in dataset {self.name!r}; its "
        f"splits are {sorted(self._builder.info.splits.keys())} (slices "
        f"such as 'train[:90%]' work too). Set --config.data.train_split / "
        f"--config.data.eval_split accordingly."
      ) from e

  def shard(self, split: str, index: int, count: int, drop_remainder: bool) -> tuple[tf.data.Dataset, int]:
    sub_split = tfds.even_splits(split, count, drop_remainder=drop_remainder)[index]
    ds = self._builder.as_dataset(
      split=sub_split,
      shuffle_files=False,
      decoders={"image": tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(skip_prefetch=True, try_autocache=False),
    )
    ds = ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
    return ds, self._builder.info.splits[sub_split].num_examples


EVAL_SPLIT_CANDIDATES = ("val", "validation", "test")
_NAMES_SHOWN = 5


def _some(names, n: int = _NAMES_SHOWN) -> str:
  names = list(names)
  return ", ".join(names[:n]) + (f", … ({len(names) - n} more)" if len(names) > n else "")


class ImageFolderSource:
  """`<folder_root>/<split>/<class>/<image>` read via `tfds.folder_dataset.ImageFolder`.

  ImageFolder fixes the example order (sorted, then a per-split seeded shuffle)
  and the class ids (sorted folder names of all splits); shards are contiguous
  index ranges of that order, read straight from the file list so a shard
  never touches the files of another. With ``skip_corrupt`` the files that do
  not decode are found once at start (one parallel decode pass), named in a
  warning and left out of the order, so the stream stays deterministic.
  """

  def __init__(self, root: str, *, skip_corrupt: bool = False):
    self.name = IMAGE_FOLDER
    self._builder = tfds.folder_dataset.ImageFolder(root)
    self._root = root
    self._skip_corrupt = skip_corrupt
    self._usable: dict[str, list] = {}
    self.warnings: list[str] = []

  @property
  def num_classes(self) -> int:
    return self._builder.info.features["label"].num_classes

  @property
  def splits(self) -> list[str]:
    return sorted(self._builder._split_examples)  # pylint: disable=protected-access

  def num_examples(self, split: str) -> int:
    return len(self._examples(split))

  def _examples(self, split: str):
    # The builder's own ordered example list; ImageFolder has no public
    # accessor and its as_dataset() supports neither sub-splits nor skipping
    # files cheaply.
    examples = self._builder._split_examples  # pylint: disable=protected-access
    if split not in examples:
      raise DatasetNotFoundError(
        f"Split {split!r} is not a sub-folder of image folder "
        f"{self._root!r}; found {sorted(examples)}. Image folders support "
        f"whole splits only (no 'train[:10%]' slices).",
        hint="set --config.data.train_split / --config.data.eval_split to one of those folders",
      )
    if split not in self._usable:
      usable = examples[split]
      if self._skip_corrupt:
        bad = set(find_undecodable([ex.image_path for ex in usable]))
        if bad:
          self.warnings.append(
            f"skip_corrupt: {len(bad)} of {len(usable)} images of split {split!r} do not decode and are "
            f"skipped: {_some(sorted(bad))}"
          )
          usable = [ex for ex in usable if ex.image_path not in bad]
      self._usable[split] = usable
    return self._usable[split]

  def check_classes(self, train_split: str, eval_split: str) -> None:
    """Warns about classes with no training images and classes found in only one of the two splits."""
    names = self._builder.info.features["label"].names
    counts = {
      split: collections.Counter(ex.label for ex in self._examples(split)) for split in (train_split, eval_split)
    }
    empty = [n for n in names if counts[train_split][n] == 0]
    only_eval = [n for n in names if counts[train_split][n] == 0 and counts[eval_split][n] > 0]
    only_train = [n for n in names if counts[eval_split][n] == 0 and counts[train_split][n] > 0]
    warnings = []
    if empty:
      warnings.append(
        f"{len(empty)} of {len(names)} classes have no training images in {train_split!r} (the model still "
        f"has {len(names)} outputs; these are never learned): {_some(empty)}"
      )
    if only_eval and only_eval != empty:
      warnings.append(f"{len(only_eval)} classes appear only in split {eval_split!r}: {_some(only_eval)}")
    if only_train:
      warnings.append(
        f"{len(only_train)} classes appear only in split {train_split!r} (never evaluated): {_some(only_train)}"
      )
    self.warnings.extend(w for w in warnings if w not in self.warnings)

  def find_corrupt(self, split: str) -> list[str]:
    """The files of ``split`` that do not decode (slow: decodes the split; used to name a corrupt file)."""
    return find_undecodable([ex.image_path for ex in self._examples(split)], stop_at_first=True)

  def shard(self, split: str, index: int, count: int, drop_remainder: bool) -> tuple[tf.data.Dataset, int]:
    examples = self._examples(split)
    start, end = even_shard_bounds(len(examples), index, count, drop_remainder)
    label_names = self._builder.info.features["label"]
    paths = [ex.image_path for ex in examples[start:end]]
    labels = [label_names.str2int(ex.label) for ex in examples[start:end]]
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(labels, tf.int64)))
    ds = ds.map(lambda path, label: {"image": tf.io.read_file(path), "label": label})
    return ds, end - start


def find_undecodable(paths: list[str], *, stop_at_first: bool = False) -> list[str]:
  """Paths among ``paths`` whose image fails to decode, found with one parallel tf.data decode pass."""
  if not paths:
    return []
  ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))

  def decodes(index, path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return index, tf.shape(image)  # the shape is an output, so the decode cannot be pruned

  ds = ds.map(decodes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
  bad, expected = [], 0
  for index, _ in ds.as_numpy_iterator():
    bad.extend(paths[expected : int(index)])
    expected = int(index) + 1
    if stop_at_first and bad:
      return bad
  bad.extend(paths[expected:])
  return bad


@functools.lru_cache(maxsize=8)
def _image_folder(root: str, skip_corrupt: bool) -> ImageFolderSource:
  """One source per folder per process: the listing and the corrupt-file scan are done once."""
  return ImageFolderSource(root, skip_corrupt=skip_corrupt)


def resolve_image_folder_eval_split(source: ImageFolderSource, data_cfg) -> None:
  """Uses the first of val / validation / test when the configured eval split is not a sub-folder."""
  splits = source.splits
  if data_cfg.eval_split in splits:
    return
  for candidate in EVAL_SPLIT_CANDIDATES:
    if candidate in splits and candidate != data_cfg.train_split:
      logging.info("Image folder %s has no %r split; evaluating on %r.", source._root, data_cfg.eval_split, candidate)
      data_cfg.eval_split = candidate
      return
  raise DatasetNotFoundError(
    f"Image folder {source._root!r} has no evaluation split: looked for {data_cfg.eval_split!r} and "
    f"{', '.join(EVAL_SPLIT_CANDIDATES)}; its sub-folders are {splits}.",
    hint="name the folder with --config.data.eval_split=NAME",
  )


def _imagenet_instructions(data_dir: str) -> str:
  manual = os.path.join(data_dir, "downloads", "manual")
  return (
    f"Dataset 'imagenet2012' is not prepared in data_dir {data_dir!r}. "
    f"TFDS cannot download ImageNet itself. To prepare it:\n"
    f"  1. Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
    f"from https://image-net.org (needs an account) into {manual}/\n"
    f"  2. Run: tfds build imagenet2012 --data_dir={data_dir}\n"
    f"     (if the tars live elsewhere add --manual_dir=/path/to/tars)\n"
    f"  3. Train with --config.data.data_dir={data_dir} (or export "
    f"TFDS_DATA_DIR={data_dir})."
  )


def _tfds_instructions(name: str, data_dir: str) -> str:
  return (
    f"Dataset {name!r} is not prepared in data_dir {data_dir!r}; mixjax "
    f"never downloads it implicitly. Prepare it with:\n"
    f"  tfds build {name} --data_dir={data_dir}\n"
    f"then train with --config.data.data_dir={data_dir}."
  )


def _unknown_name(name: str) -> str:
  close = difflib.get_close_matches(
    name, list(tfds.core.registered.list_imported_builders()) + [digits.NAME, IMAGE_FOLDER], n=3
  )
  hint = f" Did you mean one of {close}?" if close else ""
  return (
    f"Unknown dataset name {name!r}: it is not a TFDS builder (see "
    f"`tfds.list_builders()`) nor a mixjax source.{hint} Alternatives: "
    f"name='{IMAGE_FOLDER}' with --config.data.folder_root=/path/to/root "
    f"holding <split>/<class>/<image> folders, or name='{digits.NAME}', "
    f"the bundled demo dataset that is prepared automatically."
  )


def open_source(data_cfg):
  """Returns the source named by `data_cfg.name`, ready to read.

  Raises:
    DatasetNotFoundError: the name is unknown or the data is not on disk; the
      message says how to prepare it.
  """
  name = data_cfg.name
  if name == IMAGE_FOLDER:
    root = data_cfg.get("folder_root")
    if not root or not tf.io.gfile.isdir(os.path.expanduser(root)):
      raise DatasetNotFoundError(
        f"name='{IMAGE_FOLDER}' needs --config.data.folder_root pointing to "
        f"an existing directory laid out as <root>/<split>/<class>/<image>"
        f" (.jpg/.jpeg/.png), e.g. <root>/train/cat/1.jpg and "
        f"<root>/val/cat/2.jpg; got folder_root={root!r}."
      )
    source = _image_folder(os.path.expanduser(root), bool(data_cfg.get("skip_corrupt", False)))
    resolve_image_folder_eval_split(source, data_cfg)
    return source

  data_dir = resolve_data_dir(data_cfg)
  if name == digits.NAME:
    return TfdsSource(name, digits.prepared_builder(data_dir))
  if name.split("/")[0].split(":")[0] == "mixjax_photos":  # ImageNet-shaped JPEGs made locally (data/photos.py)
    from mixjax.data import photos  # pylint: disable=g-import-not-at-top

    return TfdsSource(name, photos.prepared_builder(data_dir, name))
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetNotFoundError(_unknown_name(name)) from None
  if not builder.is_prepared():
    if name.split("/")[0].split(":")[0] == "imagenet2012":
      raise DatasetNotFoundError(_imagenet_instructions(data_dir))
    raise DatasetNotFoundError(_tfds_instructions(name, data_dir))
  return TfdsSource(name, builder)


def get_dataset_info(data_cfg) -> DatasetInfo:
  """Class count and split sizes of the configured train and eval splits.

  Prepares the demo dataset on first use; never downloads anything else.
  """
  source = open_source(data_cfg)
  num_train = source.num_examples(data_cfg.train_split)
  num_eval = source.num_examples(data_cfg.eval_split)
  if isinstance(source, ImageFolderSource):
    source.check_classes(data_cfg.train_split, data_cfg.eval_split)
  return DatasetInfo(
    name=data_cfg.name,
    num_classes=source.num_classes,
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    warnings=tuple(getattr(source, "warnings", ())),
  )
