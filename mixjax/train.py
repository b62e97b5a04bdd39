"""Training and evaluation, top to bottom, in the phases of one run.

  setup → data → model & optimizer → checkpoint / resume → steps → loop → finish

Everything a researcher changes lives in the config; this file only wires the pieces. The loop never waits for
the devices except when it logs, evaluates or checkpoints (metrics are fetched in batches), and the single jitted
step is compiled once per run.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from mixjax import data, losses, mixing, optim, recipes
from mixjax.checkpoint import Checkpointer, locate_checkpoint
from mixjax.config_args import ConfigError
from mixjax.results import summarize, write_results
from mixjax.sharding import check_batch_size, make_mesh, prefetch_to_device
from mixjax.train_step import build_step_functions, denormalize_images, run_evaluation


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN/inf; the run stopped without checkpointing the bad state."""


def validate_config(config) -> None:
  """Fails fast, before any data is read, on names that do not exist (or benchmark cells not built yet)."""
  recipes.check_implemented(config)
  mixing.validate_mixing_config(config.mixing)
  if config.loss.name not in (*losses.LOSSES, "decouple"):
    raise ConfigError(f"Unknown loss {config.loss.name!r}. Valid losses: {', '.join(losses.LOSSES)}, decouple.")
  if config.optimizer.name not in optim.OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer {config.optimizer.name!r}. Valid: {', '.join(optim.OPTIMIZERS)}.")


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


class _PreemptionFlag:
  """Set by SIGTERM (the usual preemption notice); the loop checkpoints and exits at the next step."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not in the main thread (e.g. called from a worker thread): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _write_mixed_samples(writer, mixed_batch_fn, batch, config, step: int) -> None:
  """TensorBoard picture of the first mixed training samples (all processes run the jit, process 0 writes)."""
  n = int(config.get("log_mixed_samples", 0))
  if not n or mixed_batch_fn is None:
    return
  mix = jax.jit(mixed_batch_fn)(jnp.asarray(step, jnp.int32), batch)
  local = np.asarray(mix.images.addressable_shards[0].data)[:n]
  if jax.process_index() == 0:
    writer.write_images(step, {"train/mixed_samples": np.asarray(
        denormalize_images(jnp.asarray(local), config.data))})


def train_and_evaluate(config, workdir: str, *, auto_resume: bool = True, resume_from: str | None = None,
                       load_checkpoint: str | None = None, devices=None) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoints by default) and returns results.json.

  ``devices`` restricts the mesh to some devices (default: all devices of all processes).
  """
  # ---------------------------------------------------------------- setup
  validate_config(config)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  config_json = config_to_json(config)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_json, f, indent=2, sort_keys=True)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=True)
  mesh = make_mesh(devices)
  check_batch_size(config.batch_size, mesh)
  logging.info("Mesh: %s over %d processes.", dict(mesh.shape), jax.process_count())

  # ---------------------------------------------------------------- data
  info = data.get_dataset_info(config.data)
  steps_per_epoch = data.train_steps_per_epoch(config.data, info, config.batch_size)
  total_steps = steps_per_epoch * config.epochs
  if config.get("max_steps"):  # stop early (smoke tests, profiling); the schedule still spans epochs
    total_steps = min(total_steps, int(config.max_steps))
  eval_batch_size = config.get("eval_batch_size") or config.batch_size
  check_batch_size(eval_batch_size, mesh)
  eval_batches, _ = data.make_eval_iterator(config.data, global_batch_size=eval_batch_size)
  logging.info("Dataset %s: %d train / %d eval examples, %d classes; %d steps/epoch, %d steps.", info.name,
               info.num_train_examples, info.num_eval_examples, info.num_classes, steps_per_epoch, total_steps)

  # ---------------------------------------------------------------- model, optimizer & steps
  fns = build_step_functions(config, mesh=mesh, num_classes=info.num_classes, steps_per_epoch=steps_per_epoch)
  logging.info("Model %s: %.3fM parameters.", config.model.name, fns.num_params / 1e6)
  abstract_state = fns.abstract_state

  # ---------------------------------------------------------------- checkpoint / resume
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 2))
  meta: dict[str, Any] = {}
  if resume_from:
    directory, step = locate_checkpoint(resume_from)
    state, meta = Checkpointer(directory, read_only=True).restore(step, abstract_state)
    logging.info("Resumed the full train state from %s step %d.", directory, step)
  elif auto_resume and ckpt.latest_step() is not None:
    state, meta = ckpt.restore(None, abstract_state)
    logging.info("Auto-resumed from %s step %d.", ckpt.directory, int(state.step))
  else:
    state = fns.init_state()
    if load_checkpoint:
      directory, step = locate_checkpoint(load_checkpoint)
      loaded, _ = Checkpointer(directory, read_only=True).restore(step, abstract_state)
      state = state.replace(params=loaded.params, batch_stats=loaded.batch_stats,
                            ema_params=loaded.ema_params if config.ema.decay else {})
      logging.info("Loaded weights (fresh optimizer) from %s step %d.", directory, step)
  history: list[dict] = list(meta.get("history", []))
  start_step = int(jax.device_get(state.step))

  train_step, eval_step = fns.train_step, fns.eval_step
  use_ema = bool(config.ema.get("decay", 0.0))

  def evaluate(epoch: int, step: int) -> dict:
    t0 = time.time()
    params = state.ema_params if use_ema else state.params
    result = run_evaluation(eval_step, params, state.batch_stats, prefetch_to_device(eval_batches(), mesh))
    entry = {"epoch": epoch, "step": step, "top1": result["top1"], "top5": result["top5"], "loss": result["loss"]}
    scalars = {"eval/top1": result["top1"], "eval/top5": result["top5"], "eval/loss": result["loss"]}
    if use_ema:
      raw = run_evaluation(eval_step, state.params, state.batch_stats, prefetch_to_device(eval_batches(), mesh))
      entry["top1_raw"] = raw["top1"]
      scalars["eval/top1_raw"] = raw["top1"]
    writer.write_scalars(step, scalars)
    logging.info("Epoch %d (step %d): eval top-1 %.2f%%, top-5 %.2f%% on %d examples (%.1fs).", epoch, step,
                 result["top1"], result["top5"], result["count"], time.time() - t0)
    return entry

  def save(step: int) -> None:
    ckpt.save(step, state, {"step": step, "epoch": step // steps_per_epoch, "history": history,
                            "config": config_json})

  def write_summary(status: str) -> dict:
    results = summarize(history, epochs_done=int(jax.device_get(state.step)) // steps_per_epoch,
                        total_epochs=config.epochs, config_json=config_json, status=status)
    if is_main:
      write_results(workdir, results)
    return results

  # ---------------------------------------------------------------- loop
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer if is_main else None,
                                           every_secs=30.0)
  pending: list[dict] = []
  last_flush = (time.time(), start_step)

  def flush_metrics(step: int) -> None:
    """Fetches the accumulated step metrics (one device sync), checks them, writes their means."""
    nonlocal pending, last_flush
    if not pending:
      return
    fetched = jax.device_get(pending)
    pending = []
    losses_seen = np.array([m["loss"] for m in fetched])
    if any(m["nonfinite"] for m in fetched):
      bad = step - len(fetched) + 1 + int(np.argmax(~np.isfinite(losses_seen)))
      ckpt.wait()
      good = ckpt.latest_step()
      raise NonFiniteLossError(
          f"Training loss became {losses_seen[~np.isfinite(losses_seen)][0]} at step {bad}. The run stopped; the "
          f"last good checkpoint (step {good}) in {ckpt.directory} is kept and was not overwritten. Lower the "
          "learning rate (--config.optimizer.lr), enable clipping (--config.optimizer.grad_clip_norm=1.0) or "
          "use float32 compute, then rerun the same command to resume from it.")
    now = time.time()
    seconds, steps = now - last_flush[0], step - last_flush[1]
    last_flush = (now, step)
    keys = ["loss", "top1", "grad_norm"] + [k for k in fetched[-1] if k.startswith("mix/")]
    scalars = {(k if k.startswith("mix/") else f"train/{k}"): float(np.mean([m[k] for m in fetched]))
               for k in keys}
    scalars["train/top1"] *= 100.0
    scalars["train/lr"] = float(fetched[-1]["lr"])
    if steps > 0 and seconds > 0:
      scalars["train/images_per_sec"] = steps * config.batch_size / seconds
    writer.write_scalars(step, scalars)

  if start_step >= total_steps:
    logging.info("All %d steps are already done in %s; nothing to train.", total_steps, workdir)
  train_iter = prefetch_to_device(
      data.make_train_iterator(config.data, global_batch_size=config.batch_size, seed=config.seed,
                               start_step=start_step), mesh, size=config.get("prefetch_to_device", 2))
  status = "completed"
  with _PreemptionFlag() as preemption:
    for step in range(start_step + 1, total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = next(train_iter)
        if step == start_step + 1 and start_step == 0:
          _write_mixed_samples(writer, fns.mixed_batch, batch, config, start_step)
        state, metrics = train_step(state, batch)
      pending.append(metrics)
      report(step)
      epoch_end = step % steps_per_epoch == 0
      preempted = preemption.raised or (jax.process_count() > 1 and ckpt.reached_preemption(step))
      if step % config.log_every_steps == 0 or epoch_end or preempted or step == total_steps:
        flush_metrics(step)
      if epoch_end:
        epoch = step // steps_per_epoch
        if epoch % config.eval_every_epochs == 0 or step == total_steps:
          history.append(evaluate(epoch, step))
          write_summary("running")
        if epoch % config.checkpoint_every_epochs == 0 or step == total_steps:
          save(step)
      elif (preempted or step == total_steps
            or (config.get("checkpoint_every_steps") and step % config.checkpoint_every_steps == 0)):
        flush_metrics(step)
        save(step)
      if preempted:
        logging.warning("Preemption notice (SIGTERM) received: checkpointed step %d, exiting.", step)
        status = "preempted"
        break

  # ---------------------------------------------------------------- finish
  ckpt.wait()
  if status == "completed" and int(jax.device_get(state.step)) >= total_steps and (
      not history or history[-1]["step"] < total_steps):
    history.append(evaluate(total_steps // steps_per_epoch, total_steps))
  results = write_summary(status)
  writer.flush()
  ckpt.close()
  if history:
    logging.info("Done (%s): top-1 last %.2f%%, best %.2f%%.", status, results["top1_last"],
                 results["top1_best"])
  return results
