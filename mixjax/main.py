"""Command line: ``python -m mixjax.main --config=configs/<recipe>.py:<arg> --workdir=DIR``.

Flags map onto OpenMixup's ``tools/train.py``: auto-resume from ``--workdir`` is the default
(``--noauto_resume`` starts fresh), ``--resume_from=CKPT`` restores the full state (weights, optimizer, step),
``--load_checkpoint=CKPT`` loads weights only with a fresh optimizer. ``--config.key=value`` overrides any key.
``--dry_run`` resolves the config and builds the model abstractly, prints the parameter count and the config,
and exits without reading data.

Order of work: the config is loaded and checked (names, ranges) before jax initialises its devices or
TensorFlow loads, so a mistake is one line within seconds; then the compilation cache, the processes, the run.
"""

from __future__ import annotations

from absl import flags, logging

from mixjax import cli, compilation_cache, paths

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard events, results.json.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Resolve config and model, print them, exit (no data read).")
_AUTO_RESUME = flags.DEFINE_bool("auto_resume", True, "Resume from the latest checkpoint in --workdir.")
_RESUME_FROM = flags.DEFINE_string("resume_from", None, "Checkpoint to resume the full train state from.")
_LOAD_CHECKPOINT = flags.DEFINE_string("load_checkpoint", None, "Checkpoint to load weights from (fresh optimizer).")
_ACCEPT_CHANGE = flags.DEFINE_bool(
  "accept_config_change",
  False,
  "Resume although the config differs from the run's in settings that change the training trajectory.",
)
_MULTIHOST = flags.DEFINE_enum(
  "multihost",
  "auto",
  ["auto", "on", "off"],
  "jax.distributed: auto-detect (TPU pod, Slurm, MPI, explicit flags), on, off.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")


def dry_run(config) -> None:
  """Builds the model abstractly (no devices touched); prints parameters and the resolved config."""
  from mixjax import train_state

  num_classes = int(config.data.get("num_classes", 0) or 1000)
  _, params, _ = train_state.model_fn_and_shapes(config, num_classes)
  print(
    f"model: {config.model.name}  parameters: {train_state.parameter_count(params):,} "
    f"({train_state.parameter_count(params) / 1e6:.2f}M, {num_classes} classes)"
  )
  print(config)


def main() -> int:
  from mixjax import config_check, config_loading
  from mixjax.log_filter import quiet_library_logs

  quiet_library_logs()
  config = config_loading.config_from_args(cli.ConfigArgs.spec, cli.ConfigArgs.overrides)
  paths.resolve_config_paths(config)
  config_check.check_config(config, data_paths=not _DRY_RUN.value)
  if _DRY_RUN.value:
    dry_run(config)
    return 0
  if not _WORKDIR.value:
    raise cli.UserError(
      "--workdir is required (checkpoints, events and results.json go there).", hint="e.g. --workdir=runs/demo"
    )
  compilation_cache.enable()
  from mixjax import multihost

  multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, mode=_MULTIHOST.value)
  from mixjax import train

  results = train.train_and_evaluate(
    config,
    paths.absolute(_WORKDIR.value),
    auto_resume=_AUTO_RESUME.value,
    resume_from=paths.absolute(_RESUME_FROM.value),
    load_checkpoint=paths.absolute(_LOAD_CHECKPOINT.value),
    accept_config_change=_ACCEPT_CHANGE.value,
  )
  logging.info("results.json: status %s.", results["status"])
  return 0


if __name__ == "__main__":
  cli.run(main)
