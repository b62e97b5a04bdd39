"""Train and eval iterators of host-local numpy batches.

Sharding (reproducible on any cluster shape): a split is cut into
`num_shards` disjoint even parts (`tfds.even_splits`); process p of P owns
shards [p*k, (p+1)*k) with k = num_shards / P. Each shard runs its own
tf.data pipeline with batch global_batch / num_shards, and a process's batch
is its shards' batches concatenated in shard order. Hence the global batch at
step s depends only on (config, seed, num_shards, s), not on P.

Determinism: each pass over each shard (an epoch, unless augmentations are
repeated) is shuffled with a seed derived from (seed, shard, pass), and every
example carries its own stateless seed derived from (seed, shard, position in
the shard's stream) that random pp ops consume.
Resuming at `start_step` skips whole passes arithmetically and the consumed
part of the current pass on encoded records, before any decoding.

Repeated augmentation (`data.repeated_aug = r`, Hoffer et al. 2020 "Augment
your batch"; DeiT/RSB's RepeatAugSampler): each shard's stream of shuffled
passes is repeated element-wise r times, the copies adjacent and each with
its own seed (its position in the stream). An epoch keeps its length, so it
sees about 1/r of the shard's examples, and r consecutive epochs cover each
example r times. r = 1 is the plain pipeline, bit for bit.

Eval: big_vision's padding scheme (credited there to Andreas Steiner and
CLU): each shard's examples are followed by zero examples with mask False,
and every process reads the same number of batches.
"""

import math
import re
from typing import Callable, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mixjax.data import pp_registry
from mixjax.data.errors import CorruptImageError
from mixjax.data.pp_ops import SEED_KEY
from mixjax.data.sources import DatasetInfo, open_source
from mixjax.data.tf_runtime import limit_intra_op_threads
from mixjax.config_args import ConfigError

_TRAIN_STREAM, _EVAL_STREAM = 0, 1
_MAX_EPOCHS = 2**20  # Epoch counter range folded into the shuffle seed.
_DECODE_ERROR = re.compile(r"jpeg|png|gif|bmp|image", re.IGNORECASE)


# -------------------------------------------------------------- sharding ---


def _processes(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index {process_index} outside [0, {process_count}).")
  return process_index, process_count


def _num_shards(data_cfg, process_count: int) -> int:
  num_shards = data_cfg.get("num_shards") or process_count
  if num_shards % process_count:
    raise ConfigError(
      f"data.num_shards={num_shards} must be a multiple of the number of "
      f"processes ({process_count}); set --config.data.num_shards to a "
      f"multiple of {process_count} (e.g. {process_count * max(1, num_shards // process_count)})."
    )
  return num_shards


def _per_shard_batch(global_batch_size: int, num_shards: int) -> int:
  if global_batch_size <= 0 or global_batch_size % num_shards:
    raise ConfigError(
      f"global batch size {global_batch_size} must be a positive multiple of "
      f"data.num_shards={num_shards} (each shard contributes an equal part)."
    )
  return global_batch_size // num_shards


def _shard_key(seed: int, shard: int, stream: int) -> int:
  """A 31-bit key mixing (seed, shard, stream) through numpy's SeedSequence."""
  state = np.random.SeedSequence([seed % 2**64, shard, stream]).generate_state(1)
  return int(state[0] >> 1)


def train_steps_per_epoch(
  data_cfg, info: DatasetInfo, global_batch_size: int, *, process_count: Optional[int] = None
) -> int:
  """Batches per epoch: the (equal) shard size // the per-shard batch."""
  if process_count is None:
    _, process_count = _processes(None, None)
  num_shards = _num_shards(data_cfg, process_count)
  per_shard = _per_shard_batch(global_batch_size, num_shards)
  steps = (info.num_train_examples // num_shards) // per_shard
  if steps == 0:
    raise ConfigError(
      f"Global batch {global_batch_size} is larger than the train split "
      f"{data_cfg.train_split!r} of {info.name!r} ({info.num_train_examples} "
      f"examples over {num_shards} shards); lower the batch size."
    )
  return steps


# ------------------------------------------------------------ per example ---


def _preprocess_fn(spec: str, with_mask: bool) -> Callable[[dict], dict]:
  """The map function of a pp spec. The ops are written as graph code (``tf.cond``, ``tf.switch_case``), so
  AutoGraph is told not to rewrite them: its conversion of RandAugment's ops took 5-8 s of every run's start (the
  DeiT recipe's train pipeline: 6.0 s to build, 1.1 s without) and changes nothing they compute."""
  pp = pp_registry.build(spec)

  @tf.autograph.experimental.do_not_convert
  def apply(example):
    out = pp(example)
    result = {"image": out["image"], "label": tf.cast(out["label"], tf.int32)}
    if with_mask:
      result["mask"] = tf.constant(True)
    return result

  return apply


def _check_output(ds: tf.data.Dataset, spec_field: str, spec: str):
  image = ds.element_spec["image"]
  if image.dtype != tf.uint8 or not image.shape.is_fully_defined():
    raise ConfigError(
      f"data.{spec_field}={spec!r} must end with a fixed-size uint8 image "
      f"(got {image.dtype.name} of shape {image.shape}); end it with a "
      f"resizing op such as resize(224), central_crop(224) or "
      f"resize_center_crop(224)."
    )


def _with_seed(key: int, index_offset):
  def add(index, example):
    return {**example, SEED_KEY: tf.stack([tf.constant(key, tf.int64), index_offset + index])}

  return add


def _parallel(data_cfg) -> int:
  calls = data_cfg.get("num_parallel_calls", -1)
  return tf.data.AUTOTUNE if calls is None or calls < 0 else calls


def _repeated_aug(data_cfg) -> int:
  repeats = data_cfg.get("repeated_aug", 1)
  if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
    raise ConfigError(f"data.repeated_aug must be an int >= 1 (1 turns it off, DeiT/RSB use 3), got {repeats!r}.")
  return repeats


# --------------------------------------------------------- shard pipelines ---


def _train_shard(source, data_cfg, shard, num_shards, per_shard, seed, start_step):
  raw, size = source.shard(data_cfg.train_split, shard, num_shards, drop_remainder=True)
  steps = size // per_shard
  if steps == 0:
    raise ConfigError(
      f"Shard {shard} of {data_cfg.train_split!r} holds {size} examples, fewer "
      f"than its batch of {per_shard}; lower the batch size or num_shards."
    )
  if data_cfg.get("cache", False):
    raw = raw.cache()
  per_epoch = steps * per_shard
  key = _shard_key(seed, shard, _TRAIN_STREAM)
  repeats = _repeated_aug(data_cfg)
  buffer = max(1, int(data_cfg.shuffle_buffer))
  # Position of the first example to yield in the shard's endless stream,
  # then in the stream of distinct examples it repeats, then in the pass
  # over the shard ("plain epoch") that holds it.
  first = start_step * per_shard
  first_distinct, first_copy = divmod(first, repeats)
  start_pass, skip = divmod(first_distinct, per_epoch)

  def one_pass(pass_index):
    ds = raw.shuffle(buffer, seed=key * _MAX_EPOCHS + pass_index % _MAX_EPOCHS).enumerate()
    ds = ds.skip(tf.where(pass_index == start_pass, tf.constant(skip, tf.int64), 0))
    # Drop the remainder (< one batch) with a filter rather than take(): the
    # shard is then read to its end every pass, which a cache needs to fill.
    ds = ds.filter(lambda index, _: index < per_epoch)
    return ds.map(lambda _, example: example)

  ds = tf.data.Dataset.range(start_pass, 2**62).flat_map(one_pass)
  if repeats > 1:
    # Each distinct example is yielded `repeats` times in a row; the copies
    # get different positions, hence different augmentation seeds.
    ds = ds.flat_map(lambda example: tf.data.Dataset.from_tensors(example).repeat(repeats))
    ds = ds.skip(first_copy)
  ds = ds.enumerate(start=first).map(_with_seed(key, 0))
  ds = ds.map(_preprocess_fn(data_cfg.pp_train, with_mask=False), num_parallel_calls=_parallel(data_cfg))
  _check_output(ds, "pp_train", data_cfg.pp_train)
  if data_cfg.get("skip_corrupt", False):
    # Dropped records shift the rest of the stream; it stays deterministic.
    ds = ds.ignore_errors()
  return ds.batch(per_shard, drop_remainder=True), steps


def _eval_shard(source, data_cfg, shard, num_shards, per_shard, num_batches):
  raw, _ = source.shard(data_cfg.eval_split, shard, num_shards, drop_remainder=False)
  if data_cfg.get("cache", False):
    raw = raw.cache()
  ds = raw.enumerate().map(_with_seed(_shard_key(0, shard, _EVAL_STREAM), 0))
  ds = ds.map(_preprocess_fn(data_cfg.pp_eval, with_mask=True), num_parallel_calls=_parallel(data_cfg))
  _check_output(ds, "pp_eval", data_cfg.pp_eval)
  if data_cfg.get("skip_corrupt", False):
    ds = ds.ignore_errors()
  padding = {k: tf.zeros(s.shape, s.dtype) for k, s in ds.element_spec.items()}
  padding["mask"] = tf.constant(False)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
  return ds.batch(per_shard, drop_remainder=True).take(num_batches)


def _merge_shards(shards: list[tf.data.Dataset]) -> tf.data.Dataset:
  """Zips the shard pipelines and concatenates their batches in shard order."""
  if len(shards) == 1:
    return shards[0]
  return tf.data.Dataset.zip(tuple(shards)).map(
    lambda *batches: {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]}
  )


def _finish(ds: tf.data.Dataset, data_cfg) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = bool(data_cfg.get("autotune", False))  # see config.py
  ds = ds.with_options(options)
  return ds.prefetch(max(0, int(data_cfg.get("prefetch", 2))))


class _Batches:
  """numpy batches of a dataset; decode failures become CorruptImageError."""

  def __init__(self, ds: tf.data.Dataset, dataset_name: str, split: str, source=None):
    self._it = iter(tfds.as_numpy(ds))
    self._spec = ds.element_spec
    self._where = f"dataset {dataset_name!r}, split {split!r}"
    self._source, self._split = source, split

  def __iter__(self):
    return self

  @property
  def element_spec(self) -> dict:
    """name → ``tf.TensorSpec`` of this process's batches (static shapes for the train iterator)."""
    return self._spec

  def __next__(self) -> dict:
    try:
      return next(self._it)
    except tf.errors.InvalidArgumentError as e:
      if not _DECODE_ERROR.search(e.message or ""):
        raise
      detail = (e.message or "").strip().splitlines()[0][:300]
      found = self._source.find_corrupt(self._split) if hasattr(self._source, "find_corrupt") else []
      which = f"File {found[0]} ({self._where})" if found else f"An image in {self._where}"
      raise CorruptImageError(
        f"{which} could not be decoded ({detail}).",
        hint="re-encode or delete the bad file, or pass --config.data.skip_corrupt=True to skip undecodable images",
      ) from None


# ---------------------------------------------------------------- public ---


def make_train_iterator(
  data_cfg, *, global_batch_size: int, seed: int, start_step: int = 0, process_index=None, process_count=None
) -> Iterator[dict]:
  """Endless iterator of this process's train batches.

  Yields {"image": uint8 [b, H, W, 3], "label": int32 [b]} with
  b = global_batch_size // process_count. Every epoch yields exactly
  `train_steps_per_epoch` batches; `start_step=k` yields the same batches as
  a fresh iterator from its k-th batch on.
  """
  limit_intra_op_threads()
  process_index, process_count = _processes(process_index, process_count)
  if start_step < 0:
    raise ConfigError(f"start_step must be >= 0, got {start_step}.")
  num_shards = _num_shards(data_cfg, process_count)
  per_shard = _per_shard_batch(global_batch_size, num_shards)
  source = open_source(data_cfg)
  source.num_examples(data_cfg.train_split)  # Clear error for a bad split.
  per_process = num_shards // process_count
  shards = [
    _train_shard(source, data_cfg, shard, num_shards, per_shard, seed, start_step)[0]
    for shard in range(process_index * per_process, (process_index + 1) * per_process)
  ]
  ds = _finish(_merge_shards(shards), data_cfg)
  return _Batches(ds, data_cfg.name, data_cfg.train_split, source)


def make_eval_iterator(
  data_cfg, *, global_batch_size: int, process_index=None, process_count=None
) -> tuple[Callable[[], Iterator[dict]], int]:
  """One-pass eval batches of this process, and their count (equal on all processes).

  The factory returns a fresh iterator of {"image": uint8, "label": int32,
  "mask": bool} batches of size global_batch_size // process_count. Each
  example of the eval split appears exactly once with mask True; padding
  rows are zeros with mask False.
  """
  limit_intra_op_threads()
  process_index, process_count = _processes(process_index, process_count)
  num_shards = _num_shards(data_cfg, process_count)
  per_shard = _per_shard_batch(global_batch_size, num_shards)
  source = open_source(data_cfg)
  num_examples = source.num_examples(data_cfg.eval_split)
  num_batches = math.ceil(math.ceil(num_examples / num_shards) / per_shard)
  per_process = num_shards // process_count
  shards = [
    _eval_shard(source, data_cfg, shard, num_shards, per_shard, num_batches)
    for shard in range(process_index * per_process, (process_index + 1) * per_process)
  ]
  ds = _finish(_merge_shards(shards), data_cfg)

  def batches() -> Iterator[dict]:
    return _Batches(ds, data_cfg.name, data_cfg.eval_split, source)

  return batches, num_batches
