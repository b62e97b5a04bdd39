"""Input pipeline: TFDS / image-folder sources, string pp specs, sharded iterators."""

from mixjax.data.config import default_data_config
from mixjax.data.errors import CorruptImageError, DatasetNotFoundError
from mixjax.data.pipeline import make_eval_iterator, make_train_iterator, train_steps_per_epoch
from mixjax.data.sources import DatasetInfo, get_dataset_info

__all__ = [
    "CorruptImageError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "default_data_config",
    "get_dataset_info",
    "make_eval_iterator",
    "make_train_iterator",
    "train_steps_per_epoch",
]
