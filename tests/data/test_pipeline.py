"""Train/eval iterators: determinism, resume, sharding, eval padding, errors."""

import collections
import hashlib
import itertools
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mixjax import data
from mixjax.data import digits
from tests.data.image_files import make_color_folder, write_image


def _take(it, n):
  return list(itertools.islice(it, n))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _key(image, label):
  return hashlib.sha1(image.tobytes()).hexdigest(), int(label)


def _split_multiset(data_dir, split):
  """(decoded image, label) multiset of a digits split, read directly."""
  builder = digits.prepared_builder(data_dir)
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return collections.Counter(_key(tf.io.decode_image(ex["image"], channels=3).numpy(), ex["label"]) for ex in ds)


def _rows(batches, mask=True):
  return collections.Counter(
    _key(img, lab)
    for b in batches
    for img, lab, m in zip(b["image"], b["label"], b.get("mask", np.ones(len(b["label"]), bool)))
    if m == mask
  )


# -------------------------------------------------------------- train ---


def test_train_batches_types_and_steps(digits_cfg):
  info = data.get_dataset_info(digits_cfg)
  assert info == data.DatasetInfo("mixjax_digits", 10, 1437, 360)
  assert data.train_steps_per_epoch(digits_cfg, info, 64, process_count=1) == 1437 // 64
  digits_cfg.num_shards = 4
  assert data.train_steps_per_epoch(digits_cfg, info, 64) == (1437 // 4) // 16
  batch = next(data.make_train_iterator(digits_cfg, global_batch_size=64, seed=0, process_index=1, process_count=2))
  assert batch["image"].shape == (32, 16, 16, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert set(batch) == {"image", "label"}


def test_determinism_and_exact_resume_across_epochs(digits_cfg):
  # 1437 // 256 = 5 steps per epoch: 9 batches cross one epoch boundary.
  kw = dict(global_batch_size=256, process_index=0, process_count=1)
  fresh = _take(data.make_train_iterator(digits_cfg, seed=3, **kw), 9)
  again = _take(data.make_train_iterator(digits_cfg, seed=3, **kw), 9)
  _assert_batches_equal(fresh, again)
  other = _take(data.make_train_iterator(digits_cfg, seed=4, **kw), 1)
  assert not np.array_equal(other[0]["label"], fresh[0]["label"])
  for start in (2, 5, 7):
    resumed = _take(data.make_train_iterator(digits_cfg, seed=3, start_step=start, **kw), 9 - start)
    _assert_batches_equal(resumed, fresh[start:])


def test_epochs_hold_each_example_at_most_once_and_shards_are_disjoint(digits_cfg, digits_dir):
  digits_cfg.pp_train = "decode|central_crop(32)"  # No augmentation: exact pixels.
  digits_cfg.num_shards = 2
  info = data.get_dataset_info(digits_cfg)
  steps = data.train_steps_per_epoch(digits_cfg, info, 100, process_count=2)
  assert steps == 14  # 1437 -> 2 shards of 718 -> 14 batches of 50 each.
  split = _split_multiset(digits_dir, "train")
  per_process = [
    _take(
      data.make_train_iterator(digits_cfg, global_batch_size=100, seed=0, process_index=p, process_count=2), 2 * steps
    )
    for p in range(2)
  ]
  for epoch in range(2):
    seen = [_rows(batches[epoch * steps : (epoch + 1) * steps]) for batches in per_process]
    union = seen[0] + seen[1]
    assert sum(union.values()) == 2 * steps * 50
    # No example is repeated within an epoch, and the two shards do not
    # overlap (beyond images that genuinely occur twice in the split).
    assert not union - split
    assert not (seen[0] & seen[1]) - collections.Counter({k: v for k, v in split.items() if v > 1})
  # The second epoch is reshuffled.
  assert not np.array_equal(per_process[0][0]["label"], per_process[0][steps]["label"])


def test_two_processes_equal_one_process_with_same_num_shards(digits_cfg):
  digits_cfg.num_shards = 2
  kw = dict(global_batch_size=64, seed=11)
  single = _take(
    data.make_train_iterator(digits_cfg, process_index=0, process_count=1, **kw), 13
  )  # crosses epoch (11 steps)
  halves = [_take(data.make_train_iterator(digits_cfg, process_index=p, process_count=2, **kw), 13) for p in range(2)]
  joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)]
  _assert_batches_equal(joined, single)


def test_num_shards_must_be_multiple_of_process_count(digits_cfg):
  digits_cfg.num_shards = 3
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    data.make_train_iterator(digits_cfg, global_batch_size=60, seed=0, process_index=0, process_count=2)


def test_pp_without_fixed_size_is_rejected(digits_cfg):
  digits_cfg.pp_train = "decode|resize_small(8)"
  # The long side depends on each image: batching would fail later.
  with pytest.raises(ValueError, match="pp_train"):
    data.make_train_iterator(digits_cfg, global_batch_size=8, seed=0, process_index=0, process_count=1)


def test_bad_split_lists_splits(digits_cfg):
  digits_cfg.eval_split = "validation"
  with pytest.raises(ValueError, match="'test'"):
    data.get_dataset_info(digits_cfg)


# --------------------------------------------------------------- eval ---


@pytest.mark.parametrize("split,size", [("test", 360), ("test[:101]", 101)])
def test_eval_counts_each_example_once_with_masks(digits_cfg, digits_dir, split, size):
  digits_cfg.eval_split = split
  digits_cfg.num_shards = 2
  results = [
    data.make_eval_iterator(digits_cfg, global_batch_size=64, process_index=p, process_count=2) for p in range(2)
  ]
  counts = {n for _, n in results}
  assert counts == {-(-(-(-size // 2)) // 32)}  # ceil(ceil(size / 2) / 32), same everywhere.
  batches = [list(make()) for make, _ in results]
  assert [len(b) for b in batches] == [counts.pop()] * 2
  every = [row for bs in batches for row in bs]
  for b in every:
    assert b["image"].shape == (32, 32, 32, 3) and b["mask"].dtype == bool
    assert b["label"].dtype == np.int32
  assert sum(b["mask"].sum() for b in every) == size
  expected = _split_multiset(digits_dir, split)
  assert _rows(every) == expected
  padding = [(img, lab) for b in every for img, lab, m in zip(b["image"], b["label"], b["mask"]) if not m]
  assert all(img.max() == 0 and lab == 0 for img, lab in padding)
  # Shards are uneven (51 / 50) only when the split does not divide.
  per_process = [sum(b["mask"].sum() for b in bs) for bs in batches]
  assert per_process == [-(-size // 2), size // 2]
  # The factory restarts from the beginning.
  _assert_batches_equal(list(results[0][0]()), batches[0])


# ------------------------------------------------------------- errors ---


def test_missing_tfds_dataset_says_how_to_build(tmp_path, digits_cfg):
  digits_cfg.data_dir = str(tmp_path)
  digits_cfg.name = "cifar10"
  with pytest.raises(data.DatasetNotFoundError) as err:
    data.get_dataset_info(digits_cfg)
  assert f"tfds build cifar10 --data_dir={tmp_path}" in str(err.value)

  digits_cfg.name = "imagenet2012"
  with pytest.raises(data.DatasetNotFoundError) as err:
    data.get_dataset_info(digits_cfg)
  message = str(err.value)
  for needle in (
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
    os.path.join(str(tmp_path), "downloads", "manual"),
    f"tfds build imagenet2012 --data_dir={tmp_path}",
    "--manual_dir",
  ):
    assert needle in message
  assert not list(tmp_path.rglob("*.tar*"))  # Nothing was downloaded.


def test_unknown_dataset_name_points_to_alternatives(digits_cfg):
  digits_cfg.name = "imagenet2021_typo"
  with pytest.raises(data.DatasetNotFoundError) as err:
    data.get_dataset_info(digits_cfg)
  message = str(err.value)
  assert "imagenet2021_typo" in message and "image_folder" in message
  assert "mixjax_digits" in message and "imagenet2012" in message  # Close match.


def test_image_folder_without_root(digits_cfg, tmp_path):
  digits_cfg.name = "image_folder"
  digits_cfg.folder_root = str(tmp_path / "missing")
  with pytest.raises(data.DatasetNotFoundError, match="folder_root"):
    data.get_dataset_info(digits_cfg)


# ------------------------------------------------------- image folder ---


@pytest.fixture
def folder_cfg(tmp_path):
  values = make_color_folder(str(tmp_path / "imgs"))
  cfg = data.default_data_config()
  cfg.name = "image_folder"
  cfg.folder_root = str(tmp_path / "imgs")
  cfg.train_split, cfg.eval_split = "train", "val"
  cfg.pp_train = "decode_jpeg_and_random_resized_crop(12)|flip_lr"
  cfg.pp_eval = "decode|resize_center_crop(12)"
  return cfg, values


def test_image_folder_reads_jpeg_png_and_grey(folder_cfg):
  cfg, values = folder_cfg
  info = data.get_dataset_info(cfg)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (2, 10, 10)
  make, n = data.make_eval_iterator(cfg, global_batch_size=4, process_index=0, process_count=1)
  batches = list(make())
  assert n == 3 and len(batches) == 3
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  assert sorted(labels.tolist()) == [0] * 5 + [1] * 5
  # Sorted class folders: 0 = 'dark', 1 = 'light'; flat colours survive resizing.
  expected = np.where(labels == 0, values["dark"], values["light"])
  np.testing.assert_allclose(images.reshape(10, -1).mean(1), expected, atol=3)
  train = next(data.make_train_iterator(cfg, global_batch_size=4, seed=0, process_index=0, process_count=1))
  assert train["image"].shape == (4, 12, 12, 3)
  for img, lab in zip(train["image"], train["label"]):
    assert abs(img.mean() - (values["dark"], values["light"])[lab]) < 3


def test_corrupt_jpeg_raises_clear_error_or_is_skipped(folder_cfg):
  cfg, _ = folder_cfg
  bad = os.path.join(cfg.folder_root, "val", "dark", "broken.jpg")
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
  make, _ = data.make_eval_iterator(cfg, global_batch_size=4, process_index=0, process_count=1)
  with pytest.raises(data.CorruptImageError) as err:
    list(make())
  message = str(err.value)
  assert "image_folder" in message and "'val'" in message
  assert bad in message  # the error names the file
  assert "--config.data.skip_corrupt=True" in message

  cfg.skip_corrupt = True
  make, n = data.make_eval_iterator(cfg, global_batch_size=4, process_index=0, process_count=1)
  batches = list(make())
  assert len(batches) == n == 3  # 11 files -> ceil(11 / 4) batches.
  assert sum(b["mask"].sum() for b in batches) == 10  # The broken file is dropped.


def test_corrupt_image_in_train_split(folder_cfg):
  cfg, _ = folder_cfg
  write_image(os.path.join(cfg.folder_root, "train", "light", "ok.png"), np.full((20, 20, 3), 220, np.uint8))
  with open(os.path.join(cfg.folder_root, "train", "light", "ok.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n truncated")
  it = data.make_train_iterator(cfg, global_batch_size=11, seed=0, process_index=0, process_count=1)
  with pytest.raises(data.CorruptImageError, match="'train'"):
    next(it)


def test_cache_serves_later_epochs_from_memory(folder_cfg):
  cfg, _ = folder_cfg
  cfg.cache, cfg.prefetch, cfg.shuffle_buffer = True, 0, 2
  it = data.make_train_iterator(cfg, global_batch_size=4, seed=0, process_index=0, process_count=1)
  _take(it, 2)  # One epoch (10 files, 2 steps) fills the cache.
  shutil.rmtree(os.path.join(cfg.folder_root, "train"))
  assert len(_take(it, 6)) == 6  # Three more epochs without touching the files.


def test_image_folder_warns_about_classes_and_skipped_files(folder_cfg):
  """Empty train classes, classes of one split only and skipped corrupt files are counted and named."""
  cfg, _ = folder_cfg
  root = cfg.folder_root
  os.makedirs(os.path.join(root, "train", "empty"))  # a class folder without images
  write_image(os.path.join(root, "val", "valonly", "0.jpg"), np.full((20, 20, 3), 90, np.uint8))
  bad = os.path.join(root, "train", "dark", "zz_broken.jpg")
  with open(bad, "wb") as f:
    f.write(b"not an image at all")
  cfg.skip_corrupt = True
  cfg.eval_split = "test"  # not a folder here: 'val' is found instead
  info = data.get_dataset_info(cfg)
  assert cfg.eval_split == "val"
  assert info.num_classes == 4 and info.num_train_examples == 10  # the corrupt file is left out
  text = " | ".join(info.warnings)
  assert "2 of 4 classes have no training images" in text and "empty" in text and "valonly" in text
  assert "appear only in split 'val'" not in text or "valonly" in text
  assert "1 of 11 images of split 'train' do not decode" in text and bad in text
  batches = data.make_train_iterator(cfg, global_batch_size=5, seed=0, process_index=0, process_count=1)
  assert next(batches)["image"].shape == (5, 12, 12, 3)  # trains without the bad file


def test_image_folder_without_an_eval_folder_names_the_flag(folder_cfg):
  cfg, _ = folder_cfg
  shutil.rmtree(os.path.join(cfg.folder_root, "val"))
  cfg.eval_split = "test"
  with pytest.raises(data.DatasetNotFoundError, match="--config.data.eval_split"):
    data.get_dataset_info(cfg)
