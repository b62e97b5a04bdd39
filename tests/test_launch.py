"""launch/: the sweep writes one parseable command per cell; the launch scripts pass arguments through intact."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys

import pytest

from mixjax.recipes import availability, cells, tables
from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, "launch"))
import sweep  # noqa: E402


def _commands(path):
  with open(path) as f:
    lines = [l.rstrip("\n") for l in f]
  commands = [l for l in lines if l and not l.startswith("#") and not l.startswith(("cd ", "set "))]
  skipped = [l for l in lines if l.startswith("# SKIPPED")]
  return lines, commands, skipped


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, argv
  return values[0]


@pytest.mark.parametrize(
  "launcher,prefix",
  [("local", ["bash", "launch/local.sh"]), ("slurm", ["sbatch"]), ("tpu", ["bash", "launch/tpu_pod.sh"])],
)
def test_sweep_writes_one_command_per_implemented_cell(tmp_path, launcher, prefix):
  out = tmp_path / "sweep.sh"
  # smmix stands for a table row whose method is not built yet: its cells must be written as comments.
  assert "smmix" not in availability.mixing.list_methods()
  assert (
    sweep.main(
      [
        "--recipe=configs/deit.py",
        "--methods=mixup,cutmix,smmix",
        "--models=deit_small,deit_tiny",
        "--epochs=300,50",
        f"--launcher={launcher}",
        f"--out={out}",
        "--extra=--config.data.data_dir=/data/tfds",
      ]
    )
    == 0
  )
  assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
  assert os.stat(out).st_mode & stat.S_IXUSR
  _, commands, skipped = _commands(out)
  assert len(commands) == 2 * 2 * 2 and len(skipped) == 2 * 2
  seen = set()
  for command in commands:
    argv = shlex.split(command.split(" || ")[0])
    assert argv[: len(prefix)] == prefix
    if launcher == "slurm":
      assert argv[2] == "launch/slurm_gpu.sh"
    config, workdir = _flag(argv, "config"), _flag(argv, "workdir")
    assert argv[-1] == "--config.data.data_dir=/data/tfds"
    recipe, arg = cells.split_config_string(config)
    c = cells.load_recipe(recipe).get_config(arg)  # the command's config resolves (implemented cell)
    assert workdir == f"runs/deit/{c.recipe.model}/{c.recipe.method}_ep{c.recipe.epochs}"
    seen.add((c.recipe.method, c.recipe.model, c.epochs))
  assert seen == {
    (m, model, e) for m in ("mixup", "cutmix") for model in ("deit_small", "deit_tiny") for e in (300, 50)
  }


def test_sweep_over_a_whole_published_table(tmp_path):
  out = tmp_path / "rsb.sh"
  assert sweep.main(["--table=rsb", f"--out={out}"]) == 0
  _, commands, skipped = _commands(out)
  table_cells = tables.cells([tables.RSB])
  implemented = [c for c in table_cells if availability.is_implemented(cells.build_cell_config(c))]
  assert len(commands) == len(implemented) and len(commands) + len(skipped) == len(table_cells)
  workdirs = [_flag(shlex.split(c.split(" || ")[0]), "workdir") for c in commands]
  assert len(set(workdirs)) == len(workdirs)  # A2 and A3 cells of one backbone do not collide
  assert any(w.startswith("runs/rsb_a2/") for w in workdirs) and any(w.startswith("runs/rsb_a3/") for w in workdirs)


def _fake_bin(tmp_path, name):
  """An executable that prints each argument on its own line (stands in for python / gcloud / srun)."""
  path = tmp_path / name
  path.write_text("#!/usr/bin/env bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
  path.chmod(0o755)
  return str(path)


def test_launch_scripts_pass_arguments_through(tmp_path):
  config = "--config=configs/deit.py:deit,model=deit_small"
  spaced = "--config.data.data_dir=/data with space"
  env = dict(os.environ, PYTHON=_fake_bin(tmp_path, "python"), PATH=f"{tmp_path}:{os.environ['PATH']}")
  for script in ("local.sh", "slurm_gpu.sh", "tpu_pod.sh"):
    assert subprocess.run(["bash", "-n", os.path.join(REPO, "launch", script)]).returncode == 0
  local = subprocess.run(
    ["bash", os.path.join(REPO, "launch", "local.sh"), config, spaced],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert local.stdout.splitlines() == ["-m", "mixjax.main", config, spaced]

  _fake_bin(tmp_path, "srun")
  slurm = subprocess.run(
    ["bash", os.path.join(REPO, "launch", "slurm_gpu.sh"), config, spaced],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert slurm.stdout.splitlines()[-4:] == ["-m", "mixjax.main", "--multihost=auto", config, spaced][-4:]

  _fake_bin(tmp_path, "gcloud")
  tpu_env = dict(env, TPU_NAME="pod", ZONE="z1", REMOTE_DIR="/srv/mixjax")
  tpu = subprocess.run(
    ["bash", os.path.join(REPO, "launch", "tpu_pod.sh"), config, spaced],
    env=tpu_env,
    capture_output=True,
    text=True,
    check=True,
  )
  lines = tpu.stdout.splitlines()
  assert lines[:4] == ["compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in lines
  remote = [l for l in lines if l.startswith("--command=")][0][len("--command=") :]
  # The remote shell sees exactly the original arguments again (quoting survives the ssh hop).
  argv = shlex.split(remote.split("&&", 1)[1])
  assert argv[-2:] == [config, spaced] and argv[1:4] == ["-m", "mixjax.main", "--multihost=on"]

  missing = subprocess.run(
    ["bash", os.path.join(REPO, "launch", "tpu_pod.sh"), config], env=env, capture_output=True, text=True
  )
  assert missing.returncode != 0 and "TPU_NAME" in missing.stderr


def test_sweep_skips_a_backbone_the_method_refuses(tmp_path):
  """ManifoldMix on DeiT-T ("-" in the document: a ViT mixes only its input) would stop at start: the sweep
  writes it as a comment saying why, and runs the ConvNeXt-T cell."""
  out = tmp_path / "deit.sh"
  assert (
    sweep.main(
      ["--recipe=configs/deit.py", "--methods=manifoldmix", "--models=deit_tiny,convnext_tiny", f"--out={out}"]
    )
    == 0
  )
  _, commands, skipped = _commands(out)
  assert len(commands) == 1 and "model=convnext_tiny" in commands[0]
  assert len(skipped) == 1 and "not applicable" in skipped[0] and "deit_tiny" in skipped[0]
