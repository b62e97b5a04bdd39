"""Train-step throughput (images/s) of every registered backbone, and of the same step in PyTorch/timm.

The JAX step is mixjax's real one (vanilla mixing, SGD, soft CE), compiled once, timed as the median of
``--steps`` runs after warm-up. With ``torch`` and ``timm``/``torchvision`` installed (the optional torch extra)
the same model, batch and resolution are timed in PyTorch (forward + backward + SGD step) and the ratio printed.
Nothing is asserted.

    python benchmarks/model_throughput.py --size=64 --batch=16 --models=resnet18,resnet50
    python benchmarks/model_throughput.py --size=224 --batch=128 --dtype=bfloat16      # on a GPU

On the CPU the JAX side runs with ``mixjax.cpu_backend``'s settings (``MIXJAX_CPU_TUNING=0`` for XLA's
defaults). PyTorch runs in this same process here; ``benchmarks/cpu_vs_torch.py`` runs each side in its own
process, interleaved, with the CIFAR stem and the untuned JAX step as well (the CPU comparison of issue 15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mixjax import cpu_backend  # noqa: E402  (no jax import; must run before jax starts a backend)

cpu_backend.configure_xla_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

# timm/torchvision names of our models, for the PyTorch side of the comparison.
TORCH_NAMES = {
  "resnet18": "resnet18",
  "resnet34": "resnet34",
  "resnet50": "resnet50",
  "resnet101": "resnet101",
  "resnext101_32x4d": "resnext101_32x4d",
  "efficientnet_b0": "efficientnet_b0",
  "mobilenet_v2": "mobilenetv2_100",
  "deit_tiny": "deit_tiny_patch16_224",
  "deit_small": "deit_small_patch16_224",
  "convnext_tiny": "convnext_tiny",
  "swin_tiny": "swin_tiny_patch4_window7_224",
  "pvt_tiny": "pvt_v2_b0",
}


def jax_images_per_sec(model: str, args) -> float:
  import ml_collections
  from mixjax import mixing, optim
  from mixjax.sharding import host_batch_to_global, make_mesh
  from mixjax.train_step import build_step_functions

  c = ml_collections.ConfigDict()
  c.seed, c.batch_size, c.epochs, c.compute_dtype = 0, args.batch, 1, args.dtype
  c.data = ml_collections.ConfigDict(dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)))
  c.model = ml_collections.ConfigDict(dict(name=model))
  c.mixing = mixing.default_mixing_config()
  c.mixing.method = "vanilla"
  c.loss = ml_collections.ConfigDict(dict(name="soft_ce", label_smoothing=0.0))
  c.optimizer = optim.default_optimizer_config()
  c.ema = ml_collections.ConfigDict(dict(decay=0.0))
  mesh = make_mesh()
  fns = build_step_functions(c, mesh=mesh, num_classes=1000, steps_per_epoch=100)
  state = fns.init_state()
  rng = np.random.default_rng(0)
  batch = host_batch_to_global(
    {
      "image": rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8),
      "label": rng.integers(0, 1000, (args.batch,), dtype=np.int32),
    },
    mesh,
  )
  times = []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    state, metrics = fns.train_step(state, batch)
    jax.block_until_ready(metrics)
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  return args.batch / statistics.median(times)


def torch_images_per_sec(model: str, args) -> float | None:
  try:
    import timm
    import torch
  except ImportError:
    return None
  name = TORCH_NAMES.get(model)
  if name is None:
    return None
  net = timm.create_model(name, num_classes=1000)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  x = torch.randn(args.batch, 3, args.size, args.size)
  y = torch.randint(0, 1000, (args.batch,))
  times = []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  return args.batch / statistics.median(times)


def main():
  from mixjax import models

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="all")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--no_torch", action="store_true")
  args = p.parse_args()
  names = models.list_models() if args.models == "all" else args.models.split(",")
  print(
    f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  size={args.size} batch={args.batch} "
    f"dtype={args.dtype}"
  )
  print(f"{'model':<20}{'jax img/s':>11}{'torch img/s':>13}{'jax/torch':>11}")
  for name in names:
    ours = jax_images_per_sec(name, args)
    theirs = None if args.no_torch else torch_images_per_sec(name, args)
    ratio = f"{ours / theirs:>11.2f}" if theirs else f"{'-':>11}"
    print(f"{name:<20}{ours:>11.1f}{(f'{theirs:.1f}' if theirs else '-'):>13}{ratio}", flush=True)


if __name__ == "__main__":
  main()
