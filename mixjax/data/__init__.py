"""Input pipeline: TFDS / image-folder sources, string pp specs, sharded iterators.

The config defaults and the errors load without TensorFlow, so a config file (or a config check) that imports
``mixjax.data`` stays fast; the pipeline and the sources load TensorFlow on first use.
"""

import importlib

from mixjax.data.config import default_data_config
from mixjax.data.errors import CorruptImageError, DatasetNotFoundError

_LAZY = {
  "limit_intra_op_threads": "mixjax.data.tf_runtime",
  "make_eval_iterator": "mixjax.data.pipeline",
  "make_train_iterator": "mixjax.data.pipeline",
  "train_steps_per_epoch": "mixjax.data.pipeline",
  "DatasetInfo": "mixjax.data.sources",
  "get_dataset_info": "mixjax.data.sources",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'mixjax.data' has no attribute {name!r}")


__all__ = [
  "CorruptImageError",
  "DatasetInfo",
  "DatasetNotFoundError",
  "default_data_config",
  "get_dataset_info",
  "limit_intra_op_threads",
  "make_eval_iterator",
  "make_train_iterator",
  "train_steps_per_epoch",
]
