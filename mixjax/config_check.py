"""Every check a config can fail, run before data, devices or compilation are touched.

Two kinds: values (ranges and types of the numbers a user sets) and names (method, model, loss, optimizer,
dataset, benchmark cell). Each failure is a :class:`~mixjax.config_args.ConfigError` (or the registry's own
:class:`~mixjax.errors.UserError`) whose message names the key and what would work. ``mixjax.main`` calls
:func:`check_config` right after loading the config, so a mistake costs a second or two, not a compile.
"""

from __future__ import annotations

import math
import os
from typing import Any

from mixjax.config_args import ConfigError
from mixjax.data.errors import DatasetNotFoundError
from mixjax.errors import did_you_mean

COMPUTE_DTYPES = ("float32", "bfloat16")
# Datasets mixjax makes itself (prepared locally on first use) and the image-folder reader.
LOCAL_DATASETS = ("mixjax_digits", "mixjax_photos", "image_folder")


def _number(config, key: str) -> Any:
  node = config
  for part in key.split("."):
    if node is None or part not in node:
      return None
    node = node[part]
  return node


def _require(config, key: str, ok, expectation: str, *, integer: bool = False, optional: bool = False) -> None:
  value = _number(config, key)
  if value is None:
    if optional or _missing(config, key):
      return
    raise ConfigError(f"config.{key} must be set: {expectation}.")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
    raise ConfigError(f"config.{key} must be {expectation if integer else 'a number ' + expectation}, got {value!r}.")
  if not (math.isfinite(value) and ok(value)):
    raise ConfigError(f"config.{key} must be {expectation}, got {value!r}.")


def _missing(config, key: str) -> bool:
  node = config
  for part in key.split("."):
    if part not in node:
      return True
    node = node[part]
  return False


def check_values(config) -> None:
  """Ranges of the numbers a user sets (types too: ``epochs=abc`` is an error here, not deep in the optimizer)."""
  _require(config, "epochs", lambda v: v >= 1, "an integer >= 1", integer=True)
  _require(config, "batch_size", lambda v: v >= 1, "an integer >= 1 (the global batch)", integer=True)
  _require(config, "eval_batch_size", lambda v: v >= 1, "an integer >= 1", integer=True, optional=True)
  _require(config, "max_steps", lambda v: v >= 0, "an integer >= 0 (0: run every epoch)", integer=True, optional=True)
  _require(config, "seed", lambda v: True, "an integer", integer=True)
  for key in ("log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints"):
    _require(config, key, lambda v: v >= 1, "an integer >= 1", integer=True, optional=True)
  for key in ("checkpoint_every_steps", "log_mixed_samples", "prefetch_to_device", "precise_bn_samples"):
    _require(config, key, lambda v: v >= 0, "an integer >= 0", integer=True, optional=True)

  _require(config, "optimizer.lr", lambda v: v > 0, "> 0 (the learning rate)")
  _require(config, "optimizer.base_batch_size", lambda v: v > 0, "> 0", optional=True)
  for key in ("min_lr", "weight_decay", "warmup_epochs", "grad_clip_norm"):
    _require(config, f"optimizer.{key}", lambda v: v >= 0, ">= 0", optional=True)
  _require(config, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)", optional=True)
  _require(config, "loss.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)", optional=True)
  _require(config, "ema.decay", lambda v: 0 <= v < 1, "in [0, 1) (0: no EMA)", optional=True)

  _require(config, "data.shuffle_buffer", lambda v: v >= 1, "an integer >= 1", integer=True, optional=True)
  _require(config, "data.num_shards", lambda v: v >= 1, "an integer >= 1", integer=True, optional=True)
  _require(config, "data.prefetch", lambda v: v >= 0, "an integer >= 0", integer=True, optional=True)
  repeated = _number(config, "data.repeated_aug")
  if repeated is not None and not isinstance(repeated, bool):
    _require(config, "data.repeated_aug", lambda v: v >= 1, "an integer >= 1", integer=True)
  for key in ("mean", "std"):
    value = _number(config, f"data.{key}")
    if value is not None and (
      not isinstance(value, (tuple, list)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)
    ):
      raise ConfigError(f"config.data.{key} must be three numbers (R, G, B in 0-255 units), got {value!r}.")
  std = _number(config, "data.std")
  if std is not None and min(std) <= 0:
    raise ConfigError(f"config.data.std must be > 0 per channel, got {std!r}.")
  width = _number(config, "model.width")
  if width is not None:
    _require(config, "model.width", lambda v: v >= 1, "an integer >= 1", integer=True)

  dtype = config.get("compute_dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise ConfigError(
      f"config.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}."
      f"{did_you_mean(dtype, COMPUTE_DTYPES)}"
    )
  _check_mixing_numbers(config.mixing)


def _as_list(value) -> list:
  return list(value) if isinstance(value, (tuple, list)) else [value]


def _check_mixing_numbers(mixing_cfg) -> None:
  for alpha in _as_list(mixing_cfg.get("alpha", 1.0)):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
      raise ConfigError(f"config.mixing.alpha must be >= 0 (the Beta(α, α) parameter), got {alpha!r}.")
  prob = mixing_cfg.get("prob")
  if prob is not None:
    probs = _as_list(prob)
    if any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1 for p in probs):
      raise ConfigError(f"config.mixing.prob entries must be probabilities in [0, 1], got {probs!r}.")
    if not math.isclose(sum(probs), 1.0, abs_tol=1e-4):
      raise ConfigError(f"config.mixing.prob must sum to 1, got {probs!r} (sum {sum(probs):g}).")


def check_dataset_name(data_cfg, *, data_paths: bool = True) -> None:
  """Unknown dataset names fail here (before TensorFlow loads); whether it is prepared is checked later.

  ``data_paths=False`` (a dry run) skips the check that an image folder exists.
  """
  name = data_cfg.name
  if name == "image_folder" and not data_paths:
    return
  if name == "image_folder":
    root = data_cfg.get("folder_root")
    if not root or not os.path.isdir(os.path.expanduser(root)) and "://" not in root:
      raise DatasetNotFoundError(
        f"name='image_folder' needs --config.data.folder_root pointing to an existing directory laid out as "
        f"<root>/<split>/<class>/<image>; got folder_root={root!r}."
      )
    return
  base = name.split("/")[0].split(":")[0]
  if base in LOCAL_DATASETS:
    return
  import tensorflow_datasets as tfds  # light: registers builders without loading TensorFlow

  known = list(tfds.core.registered.list_imported_builders())
  if base not in known:
    raise DatasetNotFoundError(
      f"Unknown dataset {name!r}: not a TFDS builder nor a mixjax dataset.{did_you_mean(base, known + list(LOCAL_DATASETS))}",
      hint="use a TFDS name (e.g. imagenet2012), image_folder with --config.data.folder_root=DIR, or the bundled "
      "mixjax_digits",
    )


def check_names(config, *, data_paths: bool = True) -> None:
  """Method, model, loss, optimizer, dataset and benchmark-cell names (imports jax and the registries)."""
  from mixjax import losses, mixing, models, optim, recipes

  recipes.check_implemented(config)
  plan = mixing.resolve_mixing_config(config.mixing)
  models.get_model_builder(config.model.name)
  conflicts = plan.model_conflicts(config.model)
  if conflicts:
    raise ConfigError(" ".join(conflicts))
  loss_names = (*losses.LOSSES, "decouple")
  if config.loss.name not in loss_names:
    raise ConfigError(
      f"Unknown loss {config.loss.name!r}.{did_you_mean(config.loss.name, loss_names)} "
      f"Valid losses: {', '.join(loss_names)}."
    )
  if config.optimizer.name not in optim.OPTIMIZERS:
    raise ConfigError(
      f"Unknown optimizer {config.optimizer.name!r}.{did_you_mean(config.optimizer.name, optim.OPTIMIZERS)}"
      f" Valid: {', '.join(optim.OPTIMIZERS)}."
    )
  check_dataset_name(config.data, data_paths=data_paths)


def check_config(config, *, data_paths: bool = True) -> None:
  """All checks; raises the first problem found. ``data_paths=False`` for a dry run (no data is read)."""
  check_values(config)
  check_names(config, data_paths=data_paths)
