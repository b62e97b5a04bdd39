"""A new user's first hour: the README's commands as written, run-directory safety, one-line errors.

The README commands run in a temporary working directory with relative paths, exactly as a user types them
(only a shorter schedule is appended). Checkpoint damage, config changes, a second run on the same directory
and a failing save are produced for real on disk.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from mixjax import config_loading, run_dir
from mixjax.config_args import ConfigError
from tests.helpers import FAST_OVERRIDES, REPO, checkpoint_steps, cli_env, main_cmd, run_cli, start_cli, wait_until

DEMO = "configs/demo.py"


def _readme_block(heading: str) -> list[str]:
  """The commands of the first ```bash block after ``heading`` in README.md, continuation lines joined."""
  text = open(os.path.join(REPO, "README.md")).read()
  section = text[text.index(heading) :]
  block = section[section.index("```bash") + len("```bash") :]
  block = block[: block.index("```")]
  return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _in_user_dir(tmp_path) -> str:
  """A working directory like a fresh clone's root: the configs are there, the package is on the path."""
  cwd = tmp_path / "user"
  cwd.mkdir()
  shutil.copytree(os.path.join(REPO, "configs"), cwd / "configs")
  return str(cwd)


def _run(command: str, cwd: str, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
  args = command.split()
  assert args[0] == "python"
  return subprocess.run(
    [sys.executable, *args[1:], *extra], cwd=cwd, env=cli_env(1), capture_output=True, text=True, timeout=timeout
  )


def _assert_ok(proc):
  assert proc.returncode == 0, f"exit {proc.returncode}\nSTDERR:\n{proc.stderr[-5000:]}"


def _one_line_error(proc) -> str:
  """Exit 2, an ``error:`` line (plus at most a ``hint:`` line), no traceback; returns the error line."""
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith(("error:", "hint:"))]
  assert lines and lines[0].startswith("error:"), proc.stderr[-3000:]
  assert len(lines) <= 2 and all(l.startswith("hint:") for l in lines[1:]), lines
  return lines[0]


# ------------------------------------------------------------------------------------------ README commands


def test_readme_quick_start_and_evaluate_commands_work_verbatim(tmp_path):
  """The Quick start's train command and the evaluate command, relative paths as written, in a fresh directory."""
  quick = [c for c in _readme_block("## Quick start") if c.startswith("python -m mixjax")]
  evaluate = [c for c in _readme_block("Evaluate a checkpoint") if c.startswith("python -m mixjax.evaluate")]
  assert quick == ["python -m mixjax.main --config=configs/demo.py --workdir=runs/demo"], quick
  assert evaluate, "README has no evaluate command"
  cwd = _in_user_dir(tmp_path)
  shorter = ("--config.epochs=1", "--config.model.width=8")
  _assert_ok(_run(quick[0], cwd, *shorter))
  results = json.load(open(os.path.join(cwd, "runs", "demo", "results.json")))
  assert results["status"] == "completed" and results["epochs_done"] == 1
  assert not os.path.exists(os.path.join(cwd, "runs", "demo", run_dir.LOCK_NAME))  # released at the end
  proc = _run(evaluate[0], cwd, "--config.model.width=8")
  _assert_ok(proc)
  assert f"top-1 {results['top1_last']:.2f}%" in proc.stdout


def test_readme_image_folder_command_works_as_written(tmp_path):
  """The README's image-folder command on a Tiny-ImageNet-style tree whose eval folder is ``val``."""
  from tests.data.image_files import make_color_folder

  cwd = _in_user_dir(tmp_path)
  make_color_folder(os.path.join(cwd, "data", "tiny"), per_class=8)
  commands = [c for c in _readme_block("## Training on an image folder") if "image_folder" in c]
  assert commands, "README has no image-folder command"
  command = commands[0].replace("<root>", "data/tiny")
  proc = _run(command, cwd, "--config.epochs=1", "--config.model.width=8", "--config.batch_size=8")
  _assert_ok(proc)
  results = json.load(open(os.path.join(cwd, re.search(r"--workdir=(\S+)", command).group(1), "results.json")))
  assert results["status"] == "completed"
  assert results["config"]["data"]["eval_split"] == "test"  # what the user's config said ...
  assert results["history"][-1]["step"] == 2  # ... and it trained and evaluated on the 'val' folder


# ------------------------------------------------------------------------------------------ run directories


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A 2-epoch demo run (checkpoints at steps 11 and 22) that tests copy and then damage or change."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  proc = run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES))
  _assert_ok(proc)
  assert checkpoint_steps(workdir) == [11, 22]
  return workdir


def _copy(run: str, tmp_path) -> str:
  target = str(tmp_path / "copy")
  shutil.copytree(run, target)
  return target


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  data_dir = os.path.join(workdir, "checkpoints", "22", "state", "ocdbt.process_0", "d")
  largest = max((os.path.join(data_dir, f) for f in os.listdir(data_dir)), key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(100)
  proc = run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES))
  _assert_ok(proc)
  warnings = [l for l in proc.stderr.splitlines() if "cannot be restored" in l]
  assert len(warnings) == 1 and "step 22" in warnings[0], proc.stderr[-3000:]
  assert "Auto-resumed from" in proc.stderr and "step 11" in proc.stderr
  damaged = os.listdir(os.path.join(workdir, "checkpoints_damaged"))
  assert len(damaged) == 1 and damaged[0].startswith("22-")  # kept aside, not deleted
  assert (
    os.path.getsize(
      os.path.join(
        workdir, "checkpoints_damaged", damaged[0], "state", "ocdbt.process_0", "d", os.path.basename(largest)
      )
    )
    == 100
  )
  assert checkpoint_steps(workdir) == [11, 22]  # step 22 trained again from 11
  assert json.load(open(os.path.join(workdir, "results.json")))["status"] == "completed"


def test_no_intact_checkpoint_is_one_line(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  for step in ("11", "22"):
    os.remove(os.path.join(workdir, "checkpoints", step, "state", "manifest.ocdbt"))
  line = _one_line_error(run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES)))
  assert "None of the checkpoints" in line and "checkpoints_damaged" in line
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_damaged")))[0].startswith("11-")


def test_changed_batch_size_is_refused_then_accepted_with_the_flag(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  before = open(os.path.join(workdir, "config.json")).read()
  line = _one_line_error(run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.batch_size=64")))
  assert "batch_size: 128 -> 64" in line
  assert open(os.path.join(workdir, "config.json")).read() == before  # nothing of the run was touched
  # Harmless changes pass without the flag; the trajectory change passes with it.
  _assert_ok(run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.log_every_steps=3")))
  proc = run_cli(
    main_cmd(
      DEMO, workdir, *FAST_OVERRIDES, "--config.batch_size=64", "--config.max_steps=24", "--accept_config_change"
    )
  )
  _assert_ok(proc)
  assert "batch_size: 128 -> 64" in proc.stderr and checkpoint_steps(workdir)[-1] == 24


def test_config_differences_split_trajectory_from_harmless():
  saved = {
    "batch_size": 128,
    "log_every_steps": 20,
    "data": {"data_dir": "/a", "name": "d"},
    "mixing": {"method": "cutmix", "args": {"cutmix": {"x": 1}, "fmix": {"decay": 3}}},
  }
  new = {
    "batch_size": 128,
    "log_every_steps": 5,
    "data": {"data_dir": "/b", "name": "d"},
    "mixing": {"method": "cutmix", "args": {"cutmix": {"x": 2}, "fmix": {"decay": 4}, "newmix": {}}},
  }
  changing, harmless = run_dir.config_differences(saved, new)
  assert changing == ["mixing.args.cutmix.x: 1 -> 2"]  # unused methods' defaults do not count
  assert harmless == ["data.data_dir: '/a' -> '/b'", "log_every_steps: 20 -> 5"]


def test_workdir_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
  workdir = str(tmp_path)
  with run_dir.WorkdirLock(workdir):
    held = json.load(open(os.path.join(workdir, run_dir.LOCK_NAME)))
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(run_dir.WorkdirLockedError, match=f"pid {os.getpid()}"):
      with run_dir.WorkdirLock(workdir):
        pass
  assert not os.path.exists(os.path.join(workdir, run_dir.LOCK_NAME))
  # A lock file left by a process that died (its flock is gone) is taken over.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  with open(os.path.join(workdir, run_dir.LOCK_NAME), "w") as f:
    json.dump(
      {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier", "heartbeat": time.time()}, f
    )
  with run_dir.WorkdirLock(workdir):
    assert json.load(open(os.path.join(workdir, run_dir.LOCK_NAME)))["pid"] == os.getpid()
  # A fresh lock of a run on another host (shared file system) is respected.
  with open(os.path.join(workdir, run_dir.LOCK_NAME), "w") as f:
    json.dump({"host": "elsewhere", "pid": 1, "started": "now", "heartbeat": time.time()}, f)
  with pytest.raises(run_dir.WorkdirLockedError, match="another host"):
    with run_dir.WorkdirLock(workdir):
      pass


def test_same_command_twice_at_once_second_refuses(tmp_path):
  workdir = str(tmp_path / "busy")
  first = start_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.epochs=50"))
  try:
    wait_until(lambda: os.path.exists(os.path.join(workdir, run_dir.LOCK_NAME)))
    line = _one_line_error(run_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.epochs=50")))
    assert "in use by another run" in line and f"pid {first.pid}" in line
  finally:
    first.kill()
    first.wait()


def test_failed_save_stops_the_run_and_says_why(tmp_path):
  """The checkpoint directory becomes unwritable after the first save: the next save stops the run at once."""
  workdir = str(tmp_path / "nosave")
  proc = start_cli(main_cmd(DEMO, workdir, *FAST_OVERRIDES, "--config.epochs=5"))
  ckpt = os.path.join(workdir, "checkpoints")
  wait_until(lambda: 11 in checkpoint_steps(workdir))
  os.rename(ckpt, ckpt + ".kept")
  open(ckpt, "w").close()  # a file where the directory was: every later write fails
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2, err[-3000:]
  assert "Traceback" not in err
  error = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(error) == 1 and "checkpoint" in error[0].lower(), err[-3000:]
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["status"] == "failed" and "checkpoint" in results["reason"].lower()
  assert results["epochs_done"] < 5
  kept = os.path.join(workdir, "checkpoints.kept")
  assert sorted(int(n) for n in os.listdir(kept) if n.isdigit()) == [11]  # what was written is intact


# ------------------------------------------------------------------------------------------ user mistakes


@pytest.mark.parametrize(
  "args,needle",
  [
    ((f"--config={DEMO}", "--config.epochs=-1"), "epochs must be an integer >= 1"),
    ((f"--config={DEMO}:cutmix,epochs=abc",), "epochs"),
    ((f"--config={DEMO}", "--config.optimizer.lrr=1"), 'Did you mean "optimizer.lr"'),
    ((f"--config={DEMO}", "--config.epochs=abc"), "expected an integer"),
    ((f"--config={DEMO}", "--config.mixing.alpha=-1"), "alpha must be >= 0"),
    ((f"--config={DEMO}", "--config.mixing.method=cutmixx"), 'Did you mean "cutmix"'),
    ((f"--config={DEMO}", "--config.model.name=resnet19"), 'Did you mean "resnet18"'),
    ((f"--config={DEMO}", "--config.data.name=imagenet2013"), 'Did you mean "imagenet2012"'),
    ((f"--config={DEMO}", "--config.mixing.prob=(0.5,0.7)"), "sum to 1"),
    ((f"--config={DEMO}", "--config.optimizer.lr=0"), "lr must be > 0"),
    (("--config=configs/demmo.py",), 'Did you mean "demo.py"'),
    ((f"--config={DEMO}:cutmix,epoch=3",), "Valid keys"),
    ((f"--config={DEMO}", "--worrkdir=x"), "worrkdir"),
  ],
)
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, needle):
  proc = subprocess.run(
    [sys.executable, "-m", "mixjax.main", *args, f"--workdir={tmp_path / 'w'}"],
    cwd=REPO,
    env=cli_env(1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  line = _one_line_error(proc)
  assert needle in line, line
  assert not os.path.exists(tmp_path / "w")  # reported before anything was created


def test_kwargs_sections_take_new_keys_or_a_dict_and_nothing_else_does():
  """``*_kwargs`` sections (a pretrained network's model arguments, empty by default) accept new keys and whole
  dict literals from the command line; every other section still refuses unknown keys."""
  spec = os.path.join(REPO, "configs", "pytorch_style.py") + ":supermix"
  config = config_loading.config_from_args(
    spec,
    [
      ("mixing.args.supermix.teacher_kwargs.width", "8"),
      ("mixing.args.attentivemix.extractor_kwargs", "{'width': 16, 'depth': 2}"),
    ],
  )
  assert config.mixing.args.supermix.teacher_kwargs.to_dict() == {"width": 8}
  assert config.mixing.args.attentivemix.extractor_kwargs.to_dict() == {"width": 16, "depth": 2}
  with pytest.raises(ConfigError, match="expected a dict"):
    config_loading.config_from_args(spec, [("mixing.args.supermix.teacher_kwargs", "8")])
  with pytest.raises(ConfigError, match='Did you mean "mixing.args.supermix.teacher_kwargs"'):
    config_loading.config_from_args(spec, [("mixing.args.supermix.teacher_kwarg.width", "8")])
  with pytest.raises(ConfigError, match="Unknown config key"):
    config_loading.config_from_args(spec, [("optimizer.new_key", "1")])
