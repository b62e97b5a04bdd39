"""End-to-end training through the real CLI: sharding invariance, multi-process, kill/resume, errors, outputs.

All runs use the demo dataset (real TFDS data prepared from scikit-learn's digits) and a width-8 ResNet-18, so
every run compiles the same small program (the persistent compilation cache makes later runs cheap).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import (
  FAST_OVERRIDES,
  checkpoint_steps,
  cli_env,
  demo_config,
  free_port,
  load_state,
  main_cmd,
  run_cli,
  start_cli,
  wait_until,
)

DEMO = "configs/demo.py"


def _assert_ok(proc):
  assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"


def _params_close(a, b, *, rtol, atol):
  import jax

  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a["params"], b["params"])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a["batch_stats"], b["batch_stats"])


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
  """One reference run: 4 devices, 2 epochs, mixup (exercises the mixing hook and the per-device shard_map)."""
  workdir = str(tmp_path_factory.mktemp("run4"))
  proc = run_cli(main_cmd(DEMO + ":mixup", workdir, *FAST_OVERRIDES, "--config.data.num_shards=2"), num_devices=4)
  _assert_ok(proc)
  return workdir, proc


def test_run_leaves_events_checkpoints_and_results(four_device_run):
  workdir, _ = four_device_run
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["status"] == "completed" and results["epochs_done"] == 2
  for key in ("top1_last", "top1_best", "top1_median_last5", "top1_median_last10", "config"):
    assert results[key] is not None, key
  assert [h["epoch"] for h in results["history"]] == [1, 2]
  assert results["top1_best"] == max(h["top1"] for h in results["history"])
  assert results["config"]["mixing"]["method"] == "mixup"
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert checkpoint_steps(workdir) == [11, 22]
  assert os.path.exists(os.path.join(workdir, "config.json"))


def test_rerun_resumes_and_does_not_retrain(four_device_run):
  workdir, _ = four_device_run
  before = open(os.path.join(workdir, "results.json")).read()
  proc = run_cli(main_cmd(DEMO + ":mixup", workdir, *FAST_OVERRIDES, "--config.data.num_shards=2"))
  _assert_ok(proc)
  assert "nothing to train" in proc.stderr
  assert checkpoint_steps(workdir) == [11, 22]
  assert json.loads(open(os.path.join(workdir, "results.json")).read())["history"] == json.loads(before)["history"]


def _demo_config(arg):
  config = demo_config(arg)
  config.max_steps = SHARDING_STEPS
  config.data.num_shards = 2
  return config


# Runs compared across device/process layouts stop after a few steps: their all-reduces sum in a different order,
# so they agree only to float rounding (about 1e-8 after one step), and training amplifies such differences
# (measured: ~1e-6 after 2 steps, 3e-3 after 11 steps at the demo's learning rate), hence atol 2e-5 against
# parameters of order 0.1-1.
SHARDING_STEPS = 2
SHARDING_OVERRIDES = (
  "--config.model.width=8",
  f"--config.max_steps={SHARDING_STEPS}",
  "--config.log_mixed_samples=0",
  "--config.data.num_shards=2",
)


@pytest.fixture(scope="module")
def in_process_runs(tmp_path_factory):
  """In-process reference runs on the 4 fake devices of the test process (and on 1 of them)."""
  import jax
  from mixjax import train

  assert len(jax.devices()) == 4
  root = tmp_path_factory.mktemp("inproc")
  runs = {}
  for name, arg, n in (("mixup4", "mixup", 4), ("vanilla4", "vanilla", 4), ("vanilla1", "vanilla", 1)):
    workdir = str(root / name)
    runs[name] = (workdir, train.train_and_evaluate(_demo_config(arg), workdir, devices=jax.devices()[:n]))
  return runs


def test_four_devices_match_one_device(in_process_runs):
  """Same global batch on 1 and on 4 devices: equal loss and parameters within float tolerance."""
  (d1, r1), (d4, r4) = in_process_runs["vanilla1"], in_process_runs["vanilla4"]
  np.testing.assert_allclose(r1["history"][-1]["loss"], r4["history"][-1]["loss"], rtol=1e-5)
  a, b = load_state(d1), load_state(d4)
  assert int(a["step"]) == int(b["step"]) == SHARDING_STEPS
  _params_close(a, b, rtol=1e-4, atol=2e-5)
  # The comparison is not vacuous: the optimizer really moved (non-zero momentum everywhere it should be).
  import jax

  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(a["opt_state"])) > 1e-3


def test_two_processes_match_one_process(in_process_runs, tmp_path):
  """2 processes × 2 CPU devices (jax.distributed, gloo) == 1 process × 4 devices, with mixup, same shards."""
  ref_dir, ref = in_process_runs["mixup4"]
  workdir = str(tmp_path / "run2x2")
  port = free_port()
  procs = [
    subprocess.Popen(
      main_cmd(
        DEMO + ":mixup",
        workdir,
        *SHARDING_OVERRIDES,
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      env=cli_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-5000:]
  assert "2-process job" in outs[0][1]
  a, b = load_state(workdir), load_state(ref_dir)
  assert int(a["step"]) == int(b["step"]) == SHARDING_STEPS
  _params_close(a, b, rtol=1e-4, atol=2e-5)
  got = json.load(open(os.path.join(workdir, "results.json")))
  np.testing.assert_allclose(got["history"][-1]["loss"], ref["history"][-1]["loss"], rtol=1e-5)


def test_sigkill_then_auto_resume_matches_uninterrupted(tmp_path):
  """Kill -9 mid-run, rerun the same command: final parameters equal an uninterrupted run's bitwise.

  Bitwise because every input of the resumed steps is identical: the restored state is the saved bytes, the data
  stream is a pure function of (seed, step) and the step rng is fold_in(seed, step); on one CPU XLA program the
  arithmetic is deterministic.
  """
  args = (*FAST_OVERRIDES, "--config.epochs=3", "--config.checkpoint_every_steps=4")
  ref_dir, kill_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
  ref = start_cli(main_cmd(DEMO + ":cutmix", ref_dir, *args))  # the uninterrupted run, beside the killed one
  proc = start_cli(main_cmd(DEMO + ":cutmix", kill_dir, *args))
  wait_until(lambda: any(s >= 12 for s in checkpoint_steps(kill_dir)))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  _, err = ref.communicate(timeout=600)
  assert ref.returncode == 0, err[-5000:]
  killed_at = checkpoint_steps(kill_dir)
  assert killed_at and max(killed_at) < 33, f"the run was not killed mid-run: {killed_at}"
  _assert_ok(run_cli(main_cmd(DEMO + ":cutmix", kill_dir, *args)))
  a, b = load_state(ref_dir), load_state(kill_dir)
  assert int(a["step"]) == int(b["step"]) == 33
  import jax

  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a["params"], b["params"])
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a["opt_state"], b["opt_state"])


def test_sigterm_checkpoints_at_the_next_step_and_exits(tmp_path):
  """SIGTERM mid-epoch: the checkpoint is the step after the one running when the notice came (at most two steps
  are in flight), the process exits 0 and results.json says preempted."""
  workdir = str(tmp_path / "term")
  proc = start_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.epochs=50"))
  wait_until(lambda: checkpoint_steps(workdir))
  time.sleep(1.0)  # into the second epoch, away from its end
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["status"] == "preempted"
  stop = results["preemption"]
  assert stop["saved_step"] == checkpoint_steps(workdir)[-1]
  assert 0 <= stop["saved_step"] - stop["signal_step"] <= 2, stop
  assert stop["saved_step"] < 50 * 11


def test_evaluate_command_matches_training_eval(four_device_run):
  workdir, _ = four_device_run
  out = os.path.join(workdir, "eval.json")
  proc = run_cli(
    [
      sys.executable,
      "-m",
      "mixjax.evaluate",
      f"--config={DEMO}:mixup",
      f"--checkpoint={workdir}",
      "--config.model.width=8",
      f"--output={out}",
    ]
  )
  _assert_ok(proc)
  result = json.load(open(out))
  last = json.load(open(os.path.join(workdir, "results.json")))["history"][-1]
  assert result["count"] == 360 and result["step"] == 22
  assert result["top1"] == pytest.approx(last["top1"], abs=1e-6)
  assert "top-1" in proc.stdout


def test_dry_run_prints_parameter_count():
  proc = run_cli(main_cmd(DEMO + ":cutmix", None, "--dry_run"))
  _assert_ok(proc)
  assert "method: cutmix" in proc.stdout and "parameters: 701,466" in proc.stdout
  # The standard ImageNet ResNet-18 has torchvision's exact parameter count.
  proc = run_cli(
    main_cmd(
      DEMO,
      None,
      "--dry_run",
      "--config.model.width=64",
      "--config.model.stem=imagenet",
      "--config.data.num_classes=1000",
    )
  )
  _assert_ok(proc)
  assert "parameters: 11,689,512" in proc.stdout


@pytest.mark.parametrize(
  "override,needle",
  [
    ("--config.mixing.method=mixupp", "mixup"),
    ("--config.model.name=resnet19", "resnet18"),
    ("--config.optimizer.name=adam9", "lamb"),
  ],
)
def test_unknown_names_fail_fast_listing_valid_ones(override, needle):
  proc = run_cli(main_cmd(DEMO, None, "--dry_run", override))
  assert proc.returncode == 2
  assert "error:" in proc.stderr and needle in proc.stderr and "Traceback" not in proc.stderr


def test_bad_override_key_is_named():
  proc = run_cli(main_cmd(DEMO, None, "--dry_run", "--config.optimizer.lrr=0.1"))
  assert proc.returncode != 0
  assert "lrr" in proc.stderr


def test_missing_dataset_says_how_to_prepare(tmp_path):
  proc = run_cli(
    main_cmd(
      DEMO, str(tmp_path / "w"), "--config.data.name=imagenet2012", f"--config.data.data_dir={tmp_path / 'empty'}"
    )
  )
  assert proc.returncode == 2
  assert "manual" in proc.stderr and "tfds build" in proc.stderr


def test_nan_loss_stops_and_keeps_last_good_checkpoint(four_device_run, tmp_path):
  import shutil

  src, _ = four_device_run
  workdir = str(tmp_path / "nan")
  shutil.copytree(src, workdir)
  good = load_state(workdir)
  proc = run_cli(
    main_cmd(
      DEMO + ":mixup",
      workdir,
      *FAST_OVERRIDES,
      "--config.data.num_shards=2",
      "--config.epochs=4",
      "--config.optimizer.lr=1e30",
      "--accept_config_change",
    )
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "became" in proc.stderr and "last good checkpoint (step 22)" in proc.stderr
  assert checkpoint_steps(workdir) == [11, 22]
  import jax

  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), good["params"], load_state(workdir)["params"])
