"""Command line: ``python -m mixjax.main --config=configs/<recipe>.py:<arg> --workdir=DIR``.

Flags map onto OpenMixup's ``tools/train.py``: auto-resume from ``--workdir`` is the default
(``--noauto_resume`` starts fresh), ``--resume_from=CKPT`` restores the full state (weights, optimizer, step),
``--load_checkpoint=CKPT`` loads weights only with a fresh optimizer. ``--config.key=value`` overrides any key.
``--dry_run`` resolves the config and builds the model abstractly, prints the parameter count and the config,
and exits without reading data.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe config file, e.g. configs/demo.py:cutmix.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard events, results.json.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Resolve config and model, print them, exit (no data read).")
_AUTO_RESUME = flags.DEFINE_bool("auto_resume", True, "Resume from the latest checkpoint in --workdir.")
_RESUME_FROM = flags.DEFINE_string("resume_from", None, "Checkpoint to resume the full train state from.")
_LOAD_CHECKPOINT = flags.DEFINE_string("load_checkpoint", None, "Checkpoint to load weights from (fresh optimizer).")
_MULTIHOST = flags.DEFINE_enum("multihost", "auto", ["auto", "on", "off"],
                               "jax.distributed: auto-detect (TPU pod, Slurm, MPI, explicit flags), on, off.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")


def dry_run(config) -> None:
  """Validates the config and builds the model abstractly; prints parameters and the resolved config."""
  from mixjax import train, train_state
  train.validate_config(config)
  num_classes = int(config.data.get("num_classes", 0) or 1000)
  _, params, _ = train_state.model_fn_and_shapes(config, num_classes)
  print(f"model: {config.model.name}  parameters: {train_state.parameter_count(params):,} "
        f"({train_state.parameter_count(params) / 1e6:.2f}M, {num_classes} classes)")
  print(config)


def _user_errors() -> tuple[type[BaseException], ...]:
  """Errors caused by the command or config (printed as one clear line), as opposed to bugs (tracebacks)."""
  from mixjax import checkpoint, config_args, data, mixing, models, train
  return (config_args.ConfigError, mixing.UnknownMixMethodError, models.UnknownModelError,
          data.DatasetNotFoundError, data.CorruptImageError, checkpoint.CheckpointNotFoundError,
          train.NonFiniteLossError)


def main(argv) -> int:
  del argv
  try:
    return _main()
  except _user_errors() as e:
    logging.error("%s", e)
    print(f"ERROR ({type(e).__name__}): {e}", file=sys.stderr)
    return 2


def _main() -> int:
  from mixjax.log_filter import quiet_library_logs
  quiet_library_logs()
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
  if _DRY_RUN.value:
    dry_run(config)
    return 0
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (checkpoints, events and results.json go there).")
  from mixjax import multihost
  multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, mode=_MULTIHOST.value)
  from mixjax import train
  train.train_and_evaluate(config, _WORKDIR.value, auto_resume=_AUTO_RESUME.value,
                           resume_from=_RESUME_FROM.value, load_checkpoint=_LOAD_CHECKPOINT.value)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
