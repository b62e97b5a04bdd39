"""Cost of each mixing method: full train-step time with the method ÷ the same step with ``vanilla``.

Same model, batch, resolution and optimizer for every method, in one process; each step is compiled once and
timed over ``--steps`` runs after ``--warmup`` runs (median). Prints a table; nothing is asserted.

    python benchmarks/mixing_overhead.py                                  # CPU-sized default
    python benchmarks/mixing_overhead.py --model=resnet50 --size=224 --batch=128 --dtype=bfloat16   # GPU

Goals: every input-level method ≤ 1.01× vanilla on ResNet-50-sized steps (issue 3); PuzzleMix ≤ 1.7×, the
other model-aware methods ≤ 1.2× (issue 6); AutoMix/SAMix ≤ 2.2× (issue 7). TransMix/TokenMix need a ViT
(``--model=deit_tiny``); AttentiveMix+ needs ``--set=attentivemix.allow_random_extractor=True`` (or a checkpoint).
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import jax
import numpy as np


def build_step(method: str, args):
  import ml_collections
  from mixjax import mixing, optim
  from mixjax.sharding import host_batch_to_global, make_mesh
  from mixjax.train_step import build_step_functions

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = args.batch
  c.compute_dtype = args.dtype
  c.data = ml_collections.ConfigDict(dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)))
  model_kwargs = {**({"stem": args.stem} if args.stem else {}), **getattr(args, "model_kwargs", {})}
  c.model = ml_collections.ConfigDict(dict(name=args.model, **model_kwargs))
  c.mixing = mixing.default_mixing_config()
  c.mixing.method = method
  c.mixing.alpha = 1.0
  for item in args.set:  # e.g. attentivemix.allow_random_extractor=True
    key, value = item.split("=", 1)
    name, hp = key.split(".", 1)
    if name == method:
      c.mixing.args[name][hp] = ast.literal_eval(value)
  c.loss = ml_collections.ConfigDict(dict(name="soft_ce", label_smoothing=0.0))
  c.optimizer = optim.default_optimizer_config()
  c.ema = ml_collections.ConfigDict(dict(decay=0.0))
  c.epochs = 1
  mesh = make_mesh()
  fns = build_step_functions(c, mesh=mesh, num_classes=args.classes, steps_per_epoch=100)
  state, step = fns.init_state(), fns.train_step
  rng = np.random.default_rng(0)
  batch = host_batch_to_global(
    {
      "image": rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8),
      "label": rng.integers(0, args.classes, (args.batch,), dtype=np.int32),
    },
    mesh,
  )
  return state, step, batch


def time_method(method: str, args) -> tuple[float, float]:
  state, step, batch = build_step(method, args)
  t0 = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s


def main():
  from mixjax import mixing

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet18")
  p.add_argument("--stem", default="", help="model stem kwarg (e.g. cifar for small images)")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--methods", default="all", help="comma-separated, or all")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    help="method hyper-parameter, METHOD.KEY=VALUE (repeatable), e.g. attentivemix.allow_random_extractor=True",
  )
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  args = p.parse_args()
  methods = mixing.list_methods() if args.methods == "all" else args.methods.split(",")
  methods = ["vanilla"] + [m for m in methods if m != "vanilla"]
  print(
    f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  model={args.model} size={args.size} "
    f"batch={args.batch} dtype={args.dtype} steps={args.steps}"
  )
  print(f"{'method':<22}{'step ms':>10}{'× vanilla':>11}{'compile s':>11}")
  base = None
  for method in methods:
    seconds, compile_s = time_method(method, args)
    base = base or seconds
    print(f"{method:<22}{seconds * 1e3:>10.1f}{seconds / base:>11.3f}{compile_s:>11.1f}", flush=True)


if __name__ == "__main__":
  main()
