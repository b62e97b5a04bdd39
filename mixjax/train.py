"""Training and evaluation, top to bottom, in the phases of one run.

  setup → data → model & optimizer → restore → loop → finish

Everything a researcher changes lives in the config; this file only wires the pieces. The loop never waits for
the devices except when it logs, evaluates or checkpoints (metrics are fetched in batches) and to keep at most
two steps in flight (so a preemption notice is honoured within a step); the single jitted step is compiled once
per run (a repeated run of the same cell loads it from the step cache without tracing it, :mod:`mixjax.step_cache`).

Run-directory safety: the run holds ``<workdir>/.lock`` (a second run on it refuses), a resume must use the
config it was trained with (:mod:`mixjax.run_dir`), a checkpoint that fails to restore is moved aside and the
previous one used, and a failed save stops the run with ``results.json`` saying why.
"""

from __future__ import annotations

import dataclasses
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

from mixjax import compilation_cache, config_check, data, paths, precise_bn, run_dir, step_cache
from mixjax.checkpoint import Checkpointer, CheckpointSaveError, locate_checkpoint
from mixjax.errors import UserError
from mixjax.results import summarize, write_results
from mixjax.sharding import check_batch_size, global_batch_spec, make_mesh, prefetch_to_device
from mixjax.train_step import build_step_functions, denormalize_images, run_evaluation


class NonFiniteLossError(UserError):
  """The training loss became NaN/inf; the run stopped without checkpointing the bad state."""


def validate_config(config) -> None:
  """Every name and value check (see :mod:`mixjax.config_check`), before any data is read."""
  config_check.check_config(config)


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


class _PreemptionFlag:
  """Set by SIGTERM (the usual preemption notice); the loop checkpoints and exits at the next step boundary."""

  def __init__(self):
    self.raised = False
    self.step_at_signal: int | None = None
    self.current_step = 0
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not in the main thread (e.g. called from a worker thread): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    if not self.raised:
      self.raised, self.step_at_signal = True, self.current_step

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class _Schedule:
  """When the loop evaluates and saves (the predicates are the whole policy)."""

  steps_per_epoch: int
  total_steps: int
  eval_every_epochs: int
  checkpoint_every_epochs: int
  checkpoint_every_steps: int
  log_every_steps: int

  def epoch_end(self, step: int) -> bool:
    return step % self.steps_per_epoch == 0

  def should_eval(self, step: int) -> bool:
    return self.epoch_end(step) and (
      (step // self.steps_per_epoch) % self.eval_every_epochs == 0 or step == self.total_steps
    )

  def should_save(self, step: int, preempted: bool) -> bool:
    if preempted or step == self.total_steps:
      return True
    if self.epoch_end(step) and (step // self.steps_per_epoch) % self.checkpoint_every_epochs == 0:
      return True
    return bool(self.checkpoint_every_steps) and step % self.checkpoint_every_steps == 0

  def should_log(self, step: int, preempted: bool) -> bool:
    return step % self.log_every_steps == 0 or self.epoch_end(step) or preempted or step == self.total_steps


def _write_mixed_samples(writer, mixed_batch_fn, batch, config, step: int) -> None:
  """TensorBoard picture of the first mixed training samples (all processes run the jit, process 0 writes)."""
  n = int(config.get("log_mixed_samples", 0))
  if not n or mixed_batch_fn is None:
    return
  mix = jax.jit(mixed_batch_fn)(jnp.asarray(step, jnp.int32), batch)
  local = np.asarray(mix.images.addressable_shards[0].data)[:n]
  if jax.process_index() == 0:
    writer.write_images(step, {"train/mixed_samples": np.asarray(denormalize_images(jnp.asarray(local), config.data))})


def train_and_evaluate(
  config,
  workdir: str,
  *,
  auto_resume: bool = True,
  resume_from: str | None = None,
  load_checkpoint: str | None = None,
  accept_config_change: bool = False,
  devices=None,
) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoints by default) and returns results.json.

  ``devices`` restricts the mesh to some devices (default: all devices of all processes). Relative paths are
  resolved against the working directory.
  """
  workdir = paths.absolute(workdir)
  paths.resolve_config_paths(config)
  validate_config(config)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  with run_dir.WorkdirLock(workdir, enabled=is_main) as lock:
    return _Run(config, workdir, lock=lock, devices=devices).run(
      auto_resume=auto_resume,
      resume_from=paths.absolute(resume_from),
      load_checkpoint=paths.absolute(load_checkpoint),
      accept_config_change=accept_config_change,
    )


class _Run:
  """One run's pieces; :meth:`run` goes through the phases in order."""

  def __init__(self, config, workdir: str, *, lock: run_dir.WorkdirLock, devices):
    # ---------------------------------------------------------------- setup
    self.config, self.workdir, self.lock = config, workdir, lock
    self.is_main = jax.process_index() == 0
    self.config_json = config_to_json(config)
    data.limit_intra_op_threads()  # before the writer starts TensorFlow's runtime
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_main, asynchronous=True)
    self.mesh = make_mesh(devices)
    check_batch_size(config.batch_size, self.mesh)
    logging.info("Mesh: %s over %d processes.", dict(self.mesh.shape), jax.process_count())

    # ---------------------------------------------------------------- data
    self.info = data.get_dataset_info(config.data)
    steps_per_epoch = data.train_steps_per_epoch(config.data, self.info, config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.get("max_steps"):  # stop early (smoke tests, profiling); the schedule still spans epochs
      total_steps = min(total_steps, int(config.max_steps))
    self.schedule = _Schedule(
      steps_per_epoch,
      total_steps,
      config.eval_every_epochs,
      config.checkpoint_every_epochs,
      config.get("checkpoint_every_steps") or 0,
      config.log_every_steps,
    )
    eval_batch_size = config.get("eval_batch_size") or config.batch_size
    check_batch_size(eval_batch_size, self.mesh)
    self.eval_batches, _ = data.make_eval_iterator(config.data, global_batch_size=eval_batch_size)
    for warning in self.info.warnings:
      logging.warning("Data: %s", warning)
    logging.info(
      "Dataset %s: %d train / %d eval examples, %d classes; %d steps/epoch, %d steps.",
      self.info.name,
      self.info.num_train_examples,
      self.info.num_eval_examples,
      self.info.num_classes,
      steps_per_epoch,
      total_steps,
    )

    # ---------------------------------------------------------------- model & optimizer
    self.fns = build_step_functions(
      config, mesh=self.mesh, num_classes=self.info.num_classes, steps_per_epoch=steps_per_epoch
    )
    logging.info("Model %s: %.3fM parameters.", config.model.name, self.fns.num_params / 1e6)
    self.precise_bn = self._make_precise_bn(steps_per_epoch)
    self.ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 2))
    self.use_ema = bool(config.ema.get("decay", 0.0))
    self.history: list[dict] = []
    self.state = None
    self.extra: dict[str, Any] = {"data_warnings": list(self.info.warnings)} if self.info.warnings else {}

  def _make_precise_bn(self, steps_per_epoch: int) -> precise_bn.PreciseBN | None:
    """PreciseBN (``config.precise_bn_samples`` > 0): BN statistics re-estimated after every epoch."""
    if int(self.config.get("precise_bn_samples", 0) or 0) <= 0:
      return None
    if not jax.tree.leaves(self.fns.abstract_state.batch_stats):
      logging.warning(
        "precise_bn_samples is set but model %s has no BatchNorm: nothing to re-estimate.", self.config.model.name
      )
      return None
    return precise_bn.PreciseBN(self.config, ctx=self.fns.ctx, mesh=self.mesh, steps_per_epoch=steps_per_epoch)

  # ------------------------------------------------------------------ restore
  def restore(
    self, *, auto_resume: bool, resume_from: str | None, load_checkpoint: str | None, accept_config_change: bool
  ) -> None:
    config, abstract_state = self.config, self.fns.abstract_state

    def check_meta(meta: dict, step: int) -> None:
      run_dir.check_resume_config(
        meta.get("config"), self.config_json, where=f"the checkpoint at step {step}", accept_change=accept_config_change
      )

    meta: dict[str, Any] = {}
    if resume_from:
      directory, step = locate_checkpoint(resume_from)
      source = Checkpointer(directory, read_only=True)
      check_meta(source.restore_meta(step), step)
      self.state, meta = source.restore(step, abstract_state)
      logging.info("Resumed the full train state from %s step %d.", directory, step)
    elif auto_resume and self.ckpt.all_steps():
      self.state, meta, step = self.ckpt.restore_newest_intact(
        abstract_state, check_meta=check_meta, warn=logging.warning
      )
      logging.info("Auto-resumed from %s step %d.", self.ckpt.directory, step)
    else:
      self.state = self.fns.init_state()
      if load_checkpoint:
        directory, step = locate_checkpoint(load_checkpoint)
        loaded, _ = Checkpointer(directory, read_only=True).restore(step, abstract_state)
        self.state = self.state.replace(
          params=loaded.params, batch_stats=loaded.batch_stats, ema_params=loaded.ema_params if config.ema.decay else {}
        )
        logging.info("Loaded weights (fresh optimizer) from %s step %d.", directory, step)
    self.history = list(meta.get("history", []))
    if self.is_main:
      with open(os.path.join(self.workdir, "config.json"), "w") as f:
        json.dump(self.config_json, f, indent=2, sort_keys=True)

  # ------------------------------------------------------------------ evaluation, saving, summary
  def evaluate(self, epoch: int, step: int) -> dict:
    t0 = time.time()
    state = self.state
    params = state.ema_params if self.use_ema else state.params
    result = self._evaluate(params, state.batch_stats)
    entry = {"epoch": epoch, "step": step, "top1": result["top1"], "top5": result["top5"], "loss": result["loss"]}
    scalars = {"eval/top1": result["top1"], "eval/top5": result["top5"], "eval/loss": result["loss"]}
    if self.use_ema:
      entry["top1_raw"] = scalars["eval/top1_raw"] = self._evaluate(state.params, state.batch_stats)["top1"]
    variants = self.fns.eval_variants(state)
    for name, (variant_params, variant_stats) in variants.items():
      entry[f"top1_{name}"] = scalars[f"eval/top1_{name}"] = self._evaluate(variant_params, variant_stats)["top1"]
    if self.fns.eval_step_mix_head is not None:
      # The reference validates the mixup heads too (AutoMix: head_mix of q and of k) and reports the better head.
      for name, (head_params, head_stats) in {"": (params, state.batch_stats), **variants}.items():
        key = f"top1_{name}_mixhead" if name else "top1_mixhead"
        entry[key] = scalars[f"eval/{key}"] = self._evaluate(head_params, head_stats, mix_head=True)["top1"]
    self.writer.write_scalars(step, scalars)
    logging.info(
      "Epoch %d (step %d): eval top-1 %.2f%%, top-5 %.2f%% on %d examples (%.1fs).",
      epoch,
      step,
      result["top1"],
      result["top5"],
      result["count"],
      time.time() - t0,
    )
    return entry

  def _evaluate(self, params, batch_stats, *, mix_head: bool = False) -> dict:
    step = self.fns.eval_step_mix_head if mix_head else self.fns.eval_step
    return run_evaluation(step, params, batch_stats, prefetch_to_device(self.eval_batches(), self.mesh))

  def save(self, step: int) -> None:
    self.ckpt.save(
      step,
      self.state,
      {
        "step": step,
        "epoch": step // self.schedule.steps_per_epoch,
        "history": self.history,
        "config": self.config_json,
      },
    )

  def write_summary(self, status: str, **extra) -> dict:
    epochs_done = int(jax.device_get(self.state.step)) // self.schedule.steps_per_epoch
    results = summarize(
      self.history,
      epochs_done=epochs_done,
      total_epochs=self.config.epochs,
      config_json=self.config_json,
      status=status,
      extra={**self.extra, **extra},
    )
    if self.is_main:
      write_results(self.workdir, results)
    return results

  # ------------------------------------------------------------------ phases
  def run(self, **restore_args) -> dict:
    try:
      self.restore(**restore_args)
      try:
        status, stop = self.loop()
      except (CheckpointSaveError, NonFiniteLossError) as e:
        self.write_summary("failed", reason=str(e))
        raise
      return self.finish(status, stop)
    except BaseException:
      # Nothing may keep the process alive after an error: background saves and event writers end here.
      self.ckpt.abandon()
      self.writer.close()
      raise

  def loop(self) -> tuple[str, dict]:
    """The steps; returns the status and, after a preemption, the steps at signal and at save."""
    config, schedule, fns = self.config, self.schedule, self.fns
    start_step = int(jax.device_get(self.state.step))
    if start_step >= schedule.total_steps:
      logging.info("All %d steps are already done in %s; nothing to train.", schedule.total_steps, self.workdir)
      return "completed", {}
    report = periodic_actions.ReportProgress(
      num_train_steps=schedule.total_steps, writer=self.writer if self.is_main else None, every_secs=30.0
    )
    metrics_log = _MetricsLog(self, start_step)
    train_batches = data.make_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step
    )
    # The step is compiled (or loaded from the step cache) while tf.data makes the first batches.
    pending = self._start_compile(fns.train_step, train_batches.element_spec)
    train_iter = prefetch_to_device(train_batches, self.mesh, size=config.get("prefetch_to_device", 2))
    in_flight, train_step = None, fns.train_step
    with _PreemptionFlag() as preemption:
      for step in range(start_step + 1, schedule.total_steps + 1):
        preemption.current_step = step - 1
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = next(train_iter)
          if step == start_step + 1:
            train_step = self._finish_compile(pending, train_step, batch)
            if start_step == 0:
              _write_mixed_samples(self.writer, fns.mixed_batch, batch, config, start_step)
            t0 = time.time()
          self.state, metrics = train_step(self.state, batch)
        if step == start_step + 1:
          jax.block_until_ready(metrics["loss"])
          self.extra.setdefault("timing", {})["first_step_s"] = round(time.time() - t0, 2)
          logging.info("First step ran in %.1f s; training.", time.time() - t0)
        # At most two steps in flight: the host never runs far ahead of the devices, so a SIGTERM, a NaN or a
        # failed background save is acted on within a step.
        if in_flight is not None:
          jax.block_until_ready(in_flight)
        in_flight = metrics["loss"]
        preemption.current_step = step
        self.ckpt.check_for_errors()
        metrics_log.append(metrics)
        report(step)
        preempted = preemption.raised or (jax.process_count() > 1 and self.ckpt.reached_preemption(step))
        if schedule.should_log(step, preempted):
          metrics_log.flush(step)
          self.lock.heartbeat()
        if self.precise_bn is not None and schedule.epoch_end(step):
          # After every epoch, before its evaluation and checkpoint (the reference's PreciseBNHook).
          self.state = self.precise_bn(self.state, step // schedule.steps_per_epoch)
        if schedule.should_eval(step):
          self.history.append(self.evaluate(step // schedule.steps_per_epoch, step))
          self.write_summary("running")
        if schedule.should_save(step, preempted):
          self.save(step)
        if preempted:
          logging.warning(
            "Preemption notice (SIGTERM) received during step %s: checkpointed step %d, exiting.",
            preemption.step_at_signal,
            step,
          )
          return "preempted", {"signal_step": preemption.step_at_signal, "saved_step": step}
    return "completed", {}

  def _start_compile(self, train_step, element_spec):
    """Starts compiling the step ahead of its first call, on a thread, for the batches ``element_spec``
    describes (the shardings are explicit, so the executable serves every step): minutes for a big model on a
    CPU, seconds from the caches (a repeated run loads the executable from the step cache without tracing,
    :mod:`mixjax.step_cache`). Returns the pending compile and the batch spec it was started for (None: a batch
    shape is not static, so the step is compiled once the first batch exists)."""
    logging.info(
      "Compiling the train step (minutes for a large model on a CPU; seconds when the compilation cache has it)..."
    )
    batch_spec = global_batch_spec(element_spec, self.mesh)
    if batch_spec is None:
      return None
    future = step_cache.compile_step_in_background(
      train_step, (self.state, batch_spec), directory=compilation_cache.active_directory(), context=self._step_context()
    )
    return future, batch_spec

  def _step_context(self) -> dict:
    info = self.info
    return dict(
      config=self.config_json,
      dataset=[info.name, info.num_classes, info.num_train_examples, info.num_eval_examples],
      schedule=[self.schedule.steps_per_epoch, self.schedule.total_steps],
    )

  def _finish_compile(self, pending, train_step, batch):
    """Waits for the step :meth:`_start_compile` began and logs how long it took, and how long the loop waited
    for it once the first batch was there (``timing.step_wait_s``)."""
    t0 = time.time()
    if pending is not None and step_cache.same_signature(pending[1], batch):
      compiled, timing = pending[0].result()
    else:
      if pending is not None:  # never expected: the batches differ from their spec; compile for the real one
        logging.warning("The first batch does not match its tf.data spec; compiling the train step for it.")
      compiled, timing = step_cache.compile_step(
        train_step, (self.state, batch), directory=compilation_cache.active_directory(), context=self._step_context()
      )
    wait_s = round(time.time() - t0, 2)
    self.extra.setdefault("timing", {}).update(
      trace_s=timing["trace_s"], compile_s=timing["compile_s"], step_source=timing["source"], step_wait_s=wait_s
    )
    if timing["source"] == "step cache":
      logging.info(
        "Train step loaded from the step cache in %.1f s (no tracing); waited %.1f s for it after the first batch.",
        timing["compile_s"],
        wait_s,
      )
    else:
      logging.info(
        "Train step compiled in %.1f s (tracing and lowering %.1f s, XLA %.1f s); waited %.1f s for it after the "
        "first batch.",
        timing["compile_s"],
        timing["trace_s"],
        timing["compile_s"] - timing["trace_s"],
        wait_s,
      )
    return compiled

  def finish(self, status: str, stop: dict) -> dict:
    schedule = self.schedule
    self.ckpt.wait()
    if (
      status == "completed"
      and int(jax.device_get(self.state.step)) >= schedule.total_steps
      and (not self.history or self.history[-1]["step"] < schedule.total_steps)
    ):
      self.history.append(self.evaluate(schedule.total_steps // schedule.steps_per_epoch, schedule.total_steps))
    results = self.write_summary(status, **({"preemption": stop} if stop else {}))
    self.writer.flush()
    self.ckpt.close()
    if self.history:
      logging.info("Done (%s): top-1 last %.2f%%, best %.2f%%.", status, results["top1_last"], results["top1_best"])
    return results


class _MetricsLog:
  """Step metrics kept on device until a flush, then fetched in one transfer, checked and written."""

  def __init__(self, run: _Run, start_step: int):
    self.run = run
    self.pending: list[dict] = []
    self.last = (time.time(), start_step)

  def append(self, metrics: dict) -> None:
    self.pending.append(metrics)

  def flush(self, step: int) -> None:
    if not self.pending:
      return
    fetched = jax.device_get(self.pending)
    self.pending = []
    losses_seen = np.array([m["loss"] for m in fetched])
    if any(m["nonfinite"] for m in fetched):
      bad = step - len(fetched) + 1 + int(np.argmax(~np.isfinite(losses_seen)))
      ckpt = self.run.ckpt
      ckpt.wait()
      raise NonFiniteLossError(
        f"Training loss became {losses_seen[~np.isfinite(losses_seen)][0]} at step {bad}. The run stopped; the "
        f"last good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept and was not overwritten.",
        hint="lower the learning rate (--config.optimizer.lr), enable clipping (--config.optimizer.grad_clip_norm"
        "=1.0) or use float32 compute, then rerun the same command to resume from it",
      )
    now = time.time()
    seconds, steps = now - self.last[0], step - self.last[1]
    self.last = (now, step)
    keys = ["loss", "top1", "grad_norm"] + [k for k in fetched[-1] if k.startswith("mix/")]
    scalars = {(k if k.startswith("mix/") else f"train/{k}"): float(np.mean([m[k] for m in fetched])) for k in keys}
    scalars["train/top1"] *= 100.0
    scalars["train/lr"] = float(fetched[-1]["lr"])
    if steps > 0 and seconds > 0:
      scalars["train/images_per_sec"] = steps * self.run.config.batch_size / seconds
    self.run.writer.write_scalars(step, scalars)
