"""Evaluate a checkpoint: ``python -m mixjax.evaluate --config=configs/<recipe>.py:<arg> --checkpoint=CKPT``.

The counterpart of OpenMixup's ``tools/dist_test.sh``: top-1/top-5 on the config's eval split, single centre
crop, on one or many devices/hosts (launch it like training for multi-host). ``CKPT`` may be a step directory,
a checkpoints directory or a run directory (latest step). With EMA enabled in the config the EMA weights are
evaluated (``--noema`` for the raw ones).
"""

from __future__ import annotations

import json

from absl import flags

from mixjax import cli, compilation_cache, paths

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Step dir, checkpoints dir or run dir (latest step).")
_EMA = flags.DEFINE_bool("ema", True, "Evaluate the EMA weights when the config enables EMA.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional path of a JSON file for the result.")
_MULTIHOST = flags.DEFINE_enum("multihost", "auto", ["auto", "on", "off"], "jax.distributed mode.")


def evaluate_checkpoint(config, checkpoint: str, *, use_ema: bool = True) -> dict:
  """Restores ``checkpoint`` into the model of ``config`` and evaluates it on the eval split."""
  from mixjax import data
  from mixjax.checkpoint import Checkpointer, locate_checkpoint
  from mixjax.sharding import check_batch_size, make_mesh, prefetch_to_device
  from mixjax.train_step import build_step_functions, run_evaluation

  data.limit_intra_op_threads()  # before anything starts TensorFlow's runtime
  paths.resolve_config_paths(config)
  mesh = make_mesh()
  info = data.get_dataset_info(config.data)
  eval_batch_size = config.get("eval_batch_size") or config.batch_size
  check_batch_size(eval_batch_size, mesh)
  # The train-side pieces only shape the restore target (the optimizer state is in the same checkpoint).
  fns = build_step_functions(
    config,
    mesh=mesh,
    num_classes=info.num_classes,
    steps_per_epoch=data.train_steps_per_epoch(config.data, info, config.batch_size),
  )
  directory, step = locate_checkpoint(paths.absolute(checkpoint))
  state, _ = Checkpointer(directory, read_only=True).restore(step, fns.abstract_state)
  params = state.ema_params if (use_ema and config.ema.get("decay", 0.0)) else state.params
  batches, _ = data.make_eval_iterator(config.data, global_batch_size=eval_batch_size)
  result = run_evaluation(fns.eval_step, params, state.batch_stats, prefetch_to_device(batches(), mesh))
  result.update(checkpoint=directory, step=step, dataset=info.name, split=config.data.eval_split)
  return result


def main() -> int:
  from mixjax import config_check, config_loading
  from mixjax.log_filter import quiet_library_logs

  quiet_library_logs()
  config = config_loading.config_from_args(cli.ConfigArgs.spec, cli.ConfigArgs.overrides)
  if not _CHECKPOINT.value:
    raise cli.UserError(
      "--checkpoint is required: a step directory, a checkpoints directory or a run directory.",
      hint="e.g. --checkpoint=runs/demo",
    )
  paths.resolve_config_paths(config)
  config_check.check_config(config)
  compilation_cache.enable()
  import jax
  from mixjax import multihost

  multihost.initialize(mode=_MULTIHOST.value)
  result = evaluate_checkpoint(config, _CHECKPOINT.value, use_ema=_EMA.value)
  if jax.process_index() == 0:
    print(
      f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['count']} examples of "
      f"{result['dataset']}:{result['split']} (checkpoint step {result['step']})"
    )
    if _OUTPUT.value:
      with open(paths.absolute(_OUTPUT.value), "w") as f:
        json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  cli.run(main)
