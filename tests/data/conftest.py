"""Shared fixtures: the demo digits prepared once per session."""

import os

import pytest

from mixjax import data
from mixjax.data import digits


@pytest.fixture(scope="session")
def digits_dir():
  """A data_dir holding mixjax_digits (prepared on first use, then reused)."""
  data_dir = os.environ.get("TFDS_DATA_DIR") or None
  if data_dir is None:
    pytest.fail("tests/conftest.py should set TFDS_DATA_DIR")
  digits.prepared_builder(data_dir)
  return data_dir


@pytest.fixture
def digits_cfg(digits_dir):
  cfg = data.default_data_config()
  cfg.data_dir = digits_dir
  cfg.pp_train = "decode_jpeg_and_random_resized_crop(16)|flip_lr"
  cfg.pp_eval = "decode|central_crop(32)"
  cfg.shuffle_buffer = 500
  return cfg
