"""Shared helpers for the end-to-end tests: running the real CLI in subprocesses and reading checkpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small, fast variant of the demo: a width-8 ResNet-18 for 2 epochs of the digits (11 steps each).
FAST_OVERRIDES = (
  "--config.model.width=8",
  "--config.epochs=2",
  "--config.log_every_steps=5",
  "--config.log_mixed_samples=0",
)


def demo_config(arg: str | None = None):
  """``configs/demo.py:<arg>`` loaded in process, shrunk to the width-8 ResNet-18 every test uses (no pictures)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("mixjax_demo_config", os.path.join(REPO, "configs", "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.model.width = 8
  config.log_mixed_samples = 0
  return config


def cli_env(num_devices: int = 4) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def main_cmd(config: str, workdir: str | None, *extra: str) -> list[str]:
  cmd = [sys.executable, "-m", "mixjax.main", f"--config={os.path.join(REPO, config)}"]
  if workdir:
    cmd.append(f"--workdir={workdir}")
  return cmd + list(extra)


def run_cli(cmd: list[str], *, num_devices: int = 4, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, env=cli_env(num_devices), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def load_state(workdir: str, step: int | None = None) -> dict:
  """The saved train state of a run as numpy arrays (latest step by default)."""
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    restore_args = ocp.checkpoint_utils.construct_restore_args(meta)
    import jax

    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def start_cli(cmd: list[str], *, num_devices: int = 4) -> subprocess.Popen:
  """The CLI in the background (stderr captured as text), for tests that signal or race a running job."""
  return subprocess.Popen(cmd, env=cli_env(num_devices), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until(condition, *, timeout: float = 300.0, poll: float = 0.02) -> bool:
  """Polls ``condition()`` until it is true or ``timeout`` seconds pass; returns its last value."""
  import time

  deadline = time.time() + timeout
  while not condition() and time.time() < deadline:
    time.sleep(poll)
  return bool(condition())
