"""Default `config.data` block; experiment configs start from it and override."""

import ml_collections
from ml_collections import config_dict


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every field the input pipeline reads.

  Defaults describe the bundled demo dataset (`mixjax_digits`, 32x32 JPEGs),
  so a fresh checkout trains without any download. ImageNet configs override
  `name`, the splits and both preprocessing specs.
  """
  cfg = ml_collections.ConfigDict()
  # 'mixjax_digits' | 'imagenet2012' | 'image_folder' | any TFDS builder name.
  cfg.name = "mixjax_digits"
  # TFDS data dir; None means $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  cfg.data_dir = config_dict.placeholder(str)
  # For name='image_folder': root holding <split>/<class>/<image> folders.
  cfg.folder_root = config_dict.placeholder(str)
  cfg.train_split = "train"
  cfg.eval_split = "test"
  # Preprocessing specs, see mixjax.data.pp_ops for the op names.
  cfg.pp_train = "decode_jpeg_and_random_resized_crop(32, scale=(0.35, 1.0))|flip_lr"
  cfg.pp_eval = "decode|resize(32)"
  # Examples held by the shuffle buffer of EACH shard pipeline.
  cfg.shuffle_buffer = 10_000
  # Disjoint parts the splits are cut into; None means one per process. Fix it
  # to a multiple of every process count you use to get the same data stream
  # on any cluster shape.
  cfg.num_shards = config_dict.placeholder(int)
  # Repeated augmentation (DeiT / RSB A2 use 3): each example is yielded this
  # many times in a row with different augmentations; epochs keep their
  # length, so an epoch sees ~1/repeated_aug of the distinct images.
  cfg.repeated_aug = 1
  # Keep the encoded records in host RAM after the first epoch (ImageNet
  # needs ~150 GB across all hosts).
  cfg.cache = False
  # Batches prepared ahead on the host by tf.data.
  cfg.prefetch = 2
  # Drop records whose image fails to decode instead of stopping.
  cfg.skip_corrupt = False
  # Parallelism of the preprocessing map; -1 means tf.data AUTOTUNE (one call per core while autotune is off).
  cfg.num_parallel_calls = -1
  # tf.data's autotuner. Off by default: on the 2-core machine it stalled one-pass eval iterators (CPU busy 55-75%
  # of the time, 150-220 img/s) where the same pipeline with it off kept the core busy (300+ img/s); the map's
  # parallelism and the prefetch depths above are set explicitly instead (benchmarks/input_pipeline.py).
  cfg.autotune = False
  return cfg
