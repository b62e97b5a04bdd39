"""Where examples come from: TFDS builders, image folders and the demo digits.

A source answers three questions for the pipeline: how many classes, how many
examples a split holds, and the encoded records of one even shard of a split
as `{"image": <encoded bytes>, "label": int64}`. Images are never decoded
here; preprocessing decides how (and how much of) each image to decode.
"""

import dataclasses
import difflib
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from mixjax.data import digits
from mixjax.data.errors import DatasetNotFoundError

IMAGE_FOLDER = "image_folder"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about a dataset before reading it."""
  name: str
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


def resolve_data_dir(data_cfg) -> str:
  """Same rule as TFDS: config value, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  data_dir = data_cfg.get("data_dir") or os.environ.get("TFDS_DATA_DIR")
  return os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))


def even_shard_bounds(num_examples: int, index: int, count: int,
                      drop_remainder: bool) -> tuple[int, int]:
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
      raise ValueError(
          f"Split {split!r} does not exist in dataset {self.name!r}; its "
          f"splits are {sorted(self._builder.info.splits.keys())} (slices "
          f"such as 'train[:90%]' work too). Set --config.data.train_split / "
          f"--config.data.eval_split accordingly.") from e

  def shard(self, split: str, index: int, count: int, drop_remainder: bool
            ) -> tuple[tf.data.Dataset, int]:
    sub_split = tfds.even_splits(split, count, drop_remainder=drop_remainder)[index]
    ds = self._builder.as_dataset(
        split=sub_split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(skip_prefetch=True, try_autocache=False),
    )
    ds = ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
    return ds, self._builder.info.splits[sub_split].num_examples


class ImageFolderSource:
  """`<folder_root>/<split>/<class>/<image>` read via `tfds.folder_dataset.ImageFolder`.

  ImageFolder fixes the example order (sorted, then a per-split seeded shuffle)
  and the class ids (sorted folder names); shards are contiguous index ranges
  of that order, read straight from the file list so a shard never touches
  the files of another.
  """

  def __init__(self, root: str):
    self.name = IMAGE_FOLDER
    self._builder = tfds.folder_dataset.ImageFolder(root)
    self._root = root

  @property
  def num_classes(self) -> int:
    return self._builder.info.features["label"].num_classes

  def num_examples(self, split: str) -> int:
    return len(self._examples(split))

  def _examples(self, split: str):
    # The builder's own ordered example list; ImageFolder has no public
    # accessor and its as_dataset() supports neither sub-splits nor skipping
    # files cheaply.
    examples = self._builder._split_examples  # pylint: disable=protected-access
    if split not in examples:
      raise ValueError(
          f"Split {split!r} is not a sub-folder of image folder "
          f"{self._root!r}; found {sorted(examples)}. Image folders support "
          f"whole splits only (no 'train[:10%]' slices).")
    return examples[split]

  def shard(self, split: str, index: int, count: int, drop_remainder: bool
            ) -> tuple[tf.data.Dataset, int]:
    examples = self._examples(split)
    start, end = even_shard_bounds(len(examples), index, count, drop_remainder)
    label_names = self._builder.info.features["label"]
    paths = [ex.image_path for ex in examples[start:end]]
    labels = [label_names.str2int(ex.label) for ex in examples[start:end]]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int64)))
    ds = ds.map(lambda path, label: {"image": tf.io.read_file(path), "label": label})
    return ds, end - start


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
      f"TFDS_DATA_DIR={data_dir}).")


def _tfds_instructions(name: str, data_dir: str) -> str:
  return (
      f"Dataset {name!r} is not prepared in data_dir {data_dir!r}; mixjax "
      f"never downloads it implicitly. Prepare it with:\n"
      f"  tfds build {name} --data_dir={data_dir}\n"
      f"then train with --config.data.data_dir={data_dir}.")


def _unknown_name(name: str) -> str:
  close = difflib.get_close_matches(
      name, list(tfds.list_builders()) + [digits.NAME, IMAGE_FOLDER], n=3)
  hint = f" Did you mean one of {close}?" if close else ""
  return (
      f"Unknown dataset name {name!r}: it is not a TFDS builder (see "
      f"`tfds.list_builders()`) nor a mixjax source.{hint} Alternatives: "
      f"name='{IMAGE_FOLDER}' with --config.data.folder_root=/path/to/root "
      f"holding <split>/<class>/<image> folders, or name='{digits.NAME}', "
      f"the bundled demo dataset that is prepared automatically.")


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
          f"<root>/val/cat/2.jpg; got folder_root={root!r}.")
    return ImageFolderSource(os.path.expanduser(root))

  data_dir = resolve_data_dir(data_cfg)
  if name == digits.NAME:
    return TfdsSource(name, digits.prepared_builder(data_dir))
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
  return DatasetInfo(
      name=data_cfg.name,
      num_classes=source.num_classes,
      num_train_examples=source.num_examples(data_cfg.train_split),
      num_eval_examples=source.num_examples(data_cfg.eval_split),
  )
