"""mixjax vs PyTorch train-step throughput on the CPU, side by side: same model, stem, size and batch.

Each side runs in its own worker process (torchvision crashes beside TensorFlow in one process, and XLA flags
are per process): mixjax's real train step (``benchmarks/mixing_overhead.py``'s ``build_step``: vanilla
mixing, SGD, soft-label CE, float32) with the CPU settings of ``mixjax.cpu_backend``; with ``--untuned`` also the
same step with XLA's defaults (``MIXJAX_CPU_TUNING=0``); and torchvision/timm's model with SGD + CE. After
compilation and warm-up the workers take turns, ``--steps`` steps each per round for ``--rounds`` rounds, so a
busy machine slows all sides alike. Prints the median (and best) images/s of each side and the ratio to
PyTorch (to the faster PyTorch side with ``--torch_passive``); nothing is asserted.

    python benchmarks/cpu_vs_torch.py                      # the four cases of issue 15
    python benchmarks/cpu_vs_torch.py --cases=resnet18:cifar:32:32 --untuned --rounds=5
    python benchmarks/cpu_vs_torch.py --cases=resnet50::224:4,deit_tiny::224:4

A case is ``model:stem:size:batch`` (empty stem = the model's default). ``process_cpu_ms`` is the CPU time of
the whole worker per step (all its threads): PyTorch's OpenMP threads spin while waiting, so compare it only
between the mixjax columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from mixjax.cpu_backend import CPU_XLA_FLAGS

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CASES = "resnet18:cifar:32:32,resnet50::112:8,resnet50::224:4,deit_tiny::224:4"
CLASSES = 1000
# timm names of the non-torchvision models (as in benchmarks/model_throughput.py)
TIMM_NAMES = {
  "deit_tiny": "deit_tiny_patch16_224",
  "deit_small": "deit_small_patch16_224",
  "efficientnet_b0": "efficientnet_b0",
  "mobilenet_v2": "mobilenetv2_100",
  "convnext_tiny": "convnext_tiny",
  "swin_tiny": "swin_tiny_patch4_window7_224",
  "pvt_tiny": "pvt_v2_b0",
}


# ----------------------------------------------------------------------------------------------- workers


def _serve(step_once) -> None:
  """Worker loop: 'run N' -> one JSON line with per-step wall and process-CPU seconds; 'quit' -> exit."""
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      return
    wall, cpu = [], []
    for _ in range(int(cmd[1])):
      t0, c0 = time.perf_counter(), time.process_time()
      step_once()
      wall.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
    print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def jax_worker(model: str, stem: str, size: int, batch: int, warmup: int) -> None:
  sys.path.insert(0, os.path.dirname(HERE))
  from mixjax import cpu_backend

  cpu_backend.configure_xla_flags()  # before jax starts a backend; no-op with MIXJAX_CPU_TUNING=0
  import argparse as ap

  import jax

  sys.path.insert(0, HERE)
  from mixing_overhead import build_step

  args = ap.Namespace(model=model, stem=stem, size=size, batch=batch, classes=CLASSES, dtype="float32", set=[])
  t0 = time.perf_counter()
  holder = list(build_step("vanilla", args))  # state, step, batch

  def step_once():
    holder[0], metrics = holder[1](holder[0], holder[2])
    jax.block_until_ready(metrics)

  step_once()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    step_once()
  print(f"READY {compile_s:.1f} {jax.default_backend()} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  _serve(step_once)


def torch_worker(model: str, stem: str, size: int, batch: int, warmup: int) -> None:
  import torch

  torch.manual_seed(0)
  if model.startswith("resnet") and model[6:].isdigit():
    import torchvision

    net = getattr(torchvision.models, model)(num_classes=CLASSES)
    if stem == "cifar":  # mixjax's CIFAR stem: 3x3/1 conv, no max-pool
      net.conv1 = torch.nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
      net.maxpool = torch.nn.Identity()
  else:
    import timm

    extra = {"img_size": size} if model.startswith(("deit", "vit")) else {}
    net = timm.create_model(TIMM_NAMES.get(model, model), num_classes=CLASSES, **extra)
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  x = torch.randn(batch, 3, size, size)
  y = torch.randint(0, CLASSES, (batch,))

  def step_once():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()

  t0 = time.perf_counter()
  step_once()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    step_once()
  print(f"READY {compile_s:.1f} torch {torch.__version__} threads={torch.get_num_threads()}", flush=True)
  _serve(step_once)


# ------------------------------------------------------------------------------------------- orchestration


class Worker:
  def __init__(self, kind: str, case: tuple, warmup: int, env: dict | None = None):
    model, stem, size, batch = case
    cmd = [
      sys.executable,
      os.path.abspath(__file__),
      f"--worker={kind}",
      f"--model={model}",
      f"--stem={stem}",
      f"--size={size}",
      f"--batch={batch}",
      f"--warmup={warmup}",
    ]
    self.kind = kind
    self.proc = subprocess.Popen(
      cmd,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
    self.wall, self.cpu = [], []
    self.info = self._read_line("READY")

  def _read_line(self, prefix: str | None = None) -> str:
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f"{self.kind} worker exited (code {self.proc.wait()}); see its stderr above")
      if prefix is None and line.startswith("{") or prefix and line.startswith(prefix):
        return line.strip()

  def run(self, steps: int) -> None:
    self.proc.stdin.write(f"run {steps}\n")
    self.proc.stdin.flush()
    out = json.loads(self._read_line())
    self.wall += out["wall"]
    self.cpu += out["cpu"]

  def close(self) -> None:
    try:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=60)
    except Exception:  # already gone
      self.proc.kill()


def parse_case(text: str) -> tuple:
  model, stem, size, batch = text.split(":")
  return model, stem, int(size), int(batch)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated model:stem:size:batch")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=2, help="steps per side per round")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--untuned", action="store_true", help="also time mixjax with XLA's defaults (before issue 15)")
  p.add_argument("--no_torch", action="store_true")
  p.add_argument(
    "--torch_passive",
    action="store_true",
    help="also time PyTorch with OMP_WAIT_POLICY=PASSIVE (its threads sleep instead of spinning, "
    "which helps it on a busy machine); the ratio is taken to the faster PyTorch side",
  )
  p.add_argument("--json", default="", help="also write the results here")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--model", default="", help=argparse.SUPPRESS)
  p.add_argument("--stem", default="", help=argparse.SUPPRESS)
  p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    fn = {"jax": jax_worker, "torch": torch_worker}[args.worker]
    fn(args.model, args.stem, args.size, args.batch, args.warmup)
    return

  print(
    f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds x {args.steps} "
    f"steps per side, interleaved; images/s = batch / step time (median, best)",
    flush=True,
  )
  sides = [("mixjax", "jax", {})]
  if args.untuned:
    # XLA's defaults: no matmul 1x1 convs, and none of cpu_backend's flags even if this process's XLA_FLAGS has them.
    cpu_flags = {f.split("=", 1)[0] for f in CPU_XLA_FLAGS}
    untuned_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=", 1)[0] not in cpu_flags)
    sides.append(("mixjax-untuned", "jax", {"MIXJAX_CPU_TUNING": "0", "XLA_FLAGS": untuned_flags}))
  if not args.no_torch:
    sides.append(("torch", "torch", {}))
    if args.torch_passive:
      sides.append(("torch-passive", "torch", {"OMP_WAIT_POLICY": "PASSIVE"}))
  results = []
  header = (
    f"{'case':<28}{'side':<16}{'img/s med':>10}{'img/s best':>11}{'step ms':>9}{'process_cpu_ms':>15}{'vs torch':>9}"
  )
  print(header)
  for text in args.cases.split(","):
    case = parse_case(text)
    workers = []
    try:
      for name, kind, env in sides:
        workers.append((name, Worker(kind, case, args.warmup, env)))
      for _ in range(args.rounds):
        for _, w in workers:
          w.run(args.steps)
    finally:
      for _, w in workers:
        w.close()
    batch = case[3]
    rows = {}
    for name, w in workers:
      med = statistics.median(w.wall)
      rows[name] = dict(
        images_per_s=batch / med,
        best_images_per_s=batch / min(w.wall),
        step_ms=med * 1e3,
        process_cpu_ms=statistics.median(w.cpu) * 1e3,
        info=w.info,
      )
    torch_best = max((r["images_per_s"] for n, r in rows.items() if n.startswith("torch")), default=float("nan"))
    for name, r in rows.items():
      ratio = r["images_per_s"] / torch_best
      r["ratio_vs_torch"] = ratio
      print(
        f"{text:<28}{name:<16}{r['images_per_s']:>10.2f}{r['best_images_per_s']:>11.2f}{r['step_ms']:>9.0f}"
        f"{r['process_cpu_ms']:>15.0f}{ratio:>9.2f}",
        flush=True,
      )
    results.append({"case": text, **{k: v for k, v in rows.items()}})
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
