"""Shared pieces of the recipe configs (``configs/<recipe>.py``): argument grammar, config skeleton, data blocks
and the method-row table format.

Every recipe file holds ONE readable table of its rows (method → α and hyper-parameters, with per-backbone
exceptions) and one table of per-backbone settings; this module turns a row into the config's ``mixing`` /
``loss`` sections, so the tables stay data.

Row format (a dict)::

    method:    registry name, or a tuple for OpenMixup's multi-mode switching (one mode drawn per step)
    alpha:     float, or a tuple (one per mode)
    prob:      None (uniform over the modes) or a tuple of probabilities
    args:      {method: {hyper_parameter: value}} overrides (registered methods only)
    loss:      {key: value} overrides of config.loss (e.g. name='decouple')
    overrides: {'dotted.config.key': value} anything else the row changes (e.g. TransMix's EMA)
    model:     {model keyword: value} model arguments the row adds (e.g. AutoMix's zero_init_residual)
    per_model: {model: {any of the keys above}} per-backbone exceptions, merged over the row
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections
from ml_collections.config_dict import placeholder

from mixjax import optim
from mixjax.constants import IMAGENET_MEAN, IMAGENET_STD
from mixjax.config_args import ConfigArgError, parse_arg
from mixjax.data import default_data_config
from mixjax.mixing import default_mixing_config


ROW_KEYS = ("method", "alpha", "prob", "args", "loss", "overrides", "model", "per_model")


def recipe_args(
  arg: str | None,
  *,
  recipe: str,
  rows: Mapping[str, Any],
  default_model: str,
  default_epochs: int,
  extra: Mapping[str, Any] | None = None,
) -> dict:
  """Parses ``<method>[,model=NAME][,epochs=N]`` (plus recipe-specific ``extra`` keys) against ``rows``."""
  args = parse_arg(arg, allowed=dict(method=None, model=default_model, epochs=default_epochs, **(extra or {})))
  valid = ", ".join(rows)
  if args["method"] is None:
    raise ConfigArgError(
      f"configs/{recipe}.py needs a method, e.g. configs/{recipe}.py:{next(iter(rows))}. "
      f"Methods of this recipe: {valid}."
    )
  if args["method"] not in rows:
    raise ConfigArgError(f"Unknown method {args['method']!r} for recipe {recipe}. Methods of this recipe: {valid}.")
  if not isinstance(args["epochs"], int) or args["epochs"] < 1:
    raise ConfigArgError(f"epochs must be a positive integer, got {args['epochs']!r}.")
  if not isinstance(args["model"], str):
    raise ConfigArgError(f"model must be a model name, got {args['model']!r}.")
  return args


def resolve_row(rows: Mapping[str, Mapping[str, Any]], name: str, model: str) -> dict:
  """The row ``name`` with its ``per_model[model]`` exception merged in (dict keys merged one level deep)."""
  row = dict(rows[name])
  unknown = set(row) - set(ROW_KEYS)
  if unknown:
    raise ValueError(f"Row {name!r} has unknown keys {sorted(unknown)}; valid: {ROW_KEYS}.")
  exception = dict((row.pop("per_model", None) or {}).get(model, {}))
  for key, value in exception.items():
    if isinstance(value, Mapping) and isinstance(row.get(key), Mapping):
      row[key] = {**row[key], **value}
    else:
      row[key] = value
  return row


def set_dotted(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """config['a.b.c'] = value, creating nothing: every part of the path must exist (typos fail loudly)."""
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  if leaf not in node:
    raise KeyError(f"Config key {key!r} does not exist; a row can only override existing keys.")
  node[leaf] = value


def skeleton(*, recipe: str, method: str, model: str, epochs: int, report_metric: str) -> ml_collections.ConfigDict:
  """The config keys every recipe shares (same layout as configs/demo.py), with neutral values."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.epochs = epochs
  c.max_steps = 0
  c.batch_size = 256
  c.compute_dtype = "float32"
  c.data = default_data_config()
  c.model = ml_collections.ConfigDict(dict(name=model))
  c.mixing = default_mixing_config()
  c.loss = ml_collections.ConfigDict(
    dict(
      name="soft_ce",
      label_smoothing=0.0,
      bce_reduction="sum_classes",
      decouple=dict(eta=0.1, pairing="clean"),
      lam_batch_mean=False,  # True: per-sample λ replaced by its batch mean (OpenMixup's non-multi-label heads)
    )
  )
  c.optimizer = optim.default_optimizer_config()
  c.ema = ml_collections.ConfigDict(dict(decay=0.0, warmup_epochs=0.0))
  c.log_every_steps = 100
  c.eval_every_epochs = 1
  # PreciseBN (mixjax/precise_bn.py): BatchNorm running statistics re-estimated on this many training samples
  # after every epoch, before evaluation; 0: off.
  c.precise_bn_samples = 0
  c.checkpoint_every_epochs = 1
  c.checkpoint_every_steps = 0
  c.keep_checkpoints = 2
  c.log_mixed_samples = 8
  c.prefetch_to_device = 2
  # Which benchmark cell this is: read by mixjax.report (via results.json) and by the dry-run check.
  c.recipe = ml_collections.ConfigDict(
    dict(name=recipe, method=method, model=model, epochs=epochs, report_metric=report_metric)
  )
  return c


def set_data(
  c: ml_collections.ConfigDict,
  *,
  name: str,
  num_classes: int,
  pp_train: str,
  pp_eval: str,
  train_split: str = "train",
  eval_split: str = "validation",
  mean=IMAGENET_MEAN,
  std=IMAGENET_STD,
  repeated_aug: int = 0,
  shuffle_buffer: int = 10_000,
) -> None:
  d = c.data
  d.name, d.num_classes = name, num_classes
  d.train_split, d.eval_split = train_split, eval_split
  d.pp_train, d.pp_eval = pp_train, pp_eval
  d.mean, d.std = tuple(mean), tuple(std)
  d.shuffle_buffer = shuffle_buffer
  if "folder_root" not in d:
    d.folder_root = placeholder(str)
  if repeated_aug:
    # Repeated augmentation (DeiT / RSB A2: each image appears `repeated_aug` times per epoch, differently
    # augmented). Keep the type of the pipeline's own default if it declares the field.
    d.repeated_aug = bool(repeated_aug) if isinstance(d.get("repeated_aug"), bool) else int(repeated_aug)


def random_resized_crop(size: int) -> str:
  """torchvision RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bicubic), decoding only the crop."""
  return f"decode_jpeg_and_random_resized_crop({size}, scale=(0.08, 1.0))"


def center_crop_eval(size: int, crop_ratio: float) -> str:
  """Resize the short side to size/crop_ratio (bicubic), centre-crop ``size``."""
  return f"decode|resize_center_crop({size}, crop_ratio={crop_ratio})"


def set_optimizer(c: ml_collections.ConfigDict, **values) -> None:
  for key, value in values.items():
    if key not in c.optimizer:
      raise KeyError(f"Unknown optimizer key {key!r}; valid: {', '.join(c.optimizer)}.")
    c.optimizer[key] = tuple(value) if isinstance(value, list) else value


def set_pytorch_sgd(c: ml_collections.ConfigDict, *, lr: float, base_batch_size: int) -> None:
  """The PyTorch-style optimizer (spec §3.1, also Tiny-ImageNet): SGD momentum 0.9 without Nesterov, weight
  decay 1e-4 on every parameter, no warmup, cosine to 0 stepped per epoch, no clipping."""
  set_optimizer(
    c,
    name="sgd",
    lr=lr,
    base_batch_size=base_batch_size,
    momentum=0.9,
    nesterov=False,
    weight_decay=1e-4,
    wd_exclude_1d=False,
    wd_exclude=(),
    warmup_epochs=0.0,
    min_lr=0.0,
    schedule_by_epoch=True,
    grad_clip_norm=0.0,
  )


def apply_row(c: ml_collections.ConfigDict, row: Mapping[str, Any]) -> None:
  """Writes a resolved row into ``c.mixing`` / ``c.loss`` / overrides."""
  method = row["method"]
  c.mixing.method = list(method) if isinstance(method, (tuple, list)) else method
  alpha = row.get("alpha", 1.0)
  c.mixing.alpha = list(alpha) if isinstance(alpha, (tuple, list)) else float(alpha)
  prob = row.get("prob")
  c.mixing.prob = list(prob) if prob is not None else None
  for name, hyper in (row.get("args") or {}).items():
    if name not in c.mixing.args:
      c.mixing.args[name] = {}
    for key, value in hyper.items():
      c.mixing.args[name][key] = list(value) if isinstance(value, tuple) else value
  for key, value in (row.get("loss") or {}).items():
    c.loss[key] = value
  for key, value in (row.get("overrides") or {}).items():
    set_dotted(c, key, value)
  model_kwargs(c, row.get("model") or {})


def model_kwargs(c: ml_collections.ConfigDict, kwargs: Mapping[str, Any]) -> None:
  for key, value in kwargs.items():
    c.model[key] = value
