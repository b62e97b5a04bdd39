"""Grouped and depthwise convolutions on XLA:CPU: ``lax.conv_general_dilated`` vs mixjax's per-tap form.

For the grouped layers of the backbones (ResNeXt-101 32x4d's 3x3 convolutions with 32 groups, the depthwise
convolutions of MobileNetV2/EfficientNet-B0, ConvNeXt-T's 7x7 and MogaNet-T's dilated 5x5), prints the time of
one forward and of one forward + backward (gradients of input and kernel) three ways: XLA's grouped convolution,
the per-tap form unrolled, and what ``mixjax.cpu_backend.conv_general_dilated`` runs on the CPU backend (a loop
over the taps for depthwise layers; XLA's forward with per-tap gradients for wider groups), with the largest
relative difference
of their gradients.

    python benchmarks/grouped_conv.py                 # batch 2, the CPU flags mixjax.main uses
    python benchmarks/grouped_conv.py --batch=8 --repeats=5
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, spatial size, channels in, channels out, groups, kernel, stride, dilation)
LAYERS = (
  ("resnext101 stage1 3x3 g32", 56, 128, 128, 32, 3, 1, 1),
  ("resnext101 stage2 3x3 g32 s2", 56, 256, 256, 32, 3, 2, 1),
  ("resnext101 stage2 3x3 g32", 28, 256, 256, 32, 3, 1, 1),
  ("resnext101 stage3 3x3 g32", 14, 512, 512, 32, 3, 1, 1),
  ("resnext101 stage4 3x3 g32", 7, 1024, 1024, 32, 3, 1, 1),
  ("mobilenet_v2 dw 3x3 s2", 112, 96, 96, 96, 3, 2, 1),
  ("efficientnet_b0 dw 3x3", 28, 144, 144, 144, 3, 1, 1),
  ("efficientnet_b0 dw 5x5", 14, 480, 480, 480, 5, 1, 1),
  ("convnext_tiny dw 7x7", 56, 96, 96, 96, 7, 1, 1),
  ("moganet_tiny dw 5x5 d2", 28, 48, 48, 48, 5, 1, 2),
)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)

  from mixjax import cpu_backend

  cpu_backend.configure_xla_flags()
  import jax
  import jax.numpy as jnp
  from jax import lax

  dn = ("NHWC", "HWIO", "NHWC")
  print(
    f"# ms for forward / forward + backward, batch {args.batch}, {jax.devices()[0].device_kind}, best of {args.repeats}"
  )
  print("| layer | lax.conv | per tap | mixjax (cpu_backend) | max rel. diff of gradients |")
  print("|---|---|---|---|---|")
  for name, size, c_in, c_out, groups, k, stride, dilation in LAYERS:
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (args.batch, size, size, c_in))
    w = jax.random.normal(kw, (k, k, c_in // groups, c_out)) * 0.1
    pad = dilation * (k - 1) // 2
    conv_args = dict(rhs_dilation=(dilation, dilation), dimension_numbers=dn, feature_group_count=groups)

    def plain(x, w):
      return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), **conv_args)

    def per_tap(x, w):
      return cpu_backend.grouped_conv(
        x, w, (stride, stride), ((pad, pad), (pad, pad)), groups=groups, rhs_dilation=(dilation, dilation)
      )

    def chosen(x, w):  # what mixjax's models run on the CPU
      return cpu_backend.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), **conv_args)

    def best_ms(fn):
      fn(x, w)
      times = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x, w))
        times.append(time.perf_counter() - t0)
      return min(times) * 1e3

    cells, grads = [], []
    for fn in (plain, per_tap, chosen):
      step = jax.jit(jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
      grads.append(jax.block_until_ready(step(x, w)))
      cells.append(f"{best_ms(jax.jit(fn)):.1f} / {best_ms(step):.1f}")
    diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for g in grads[1:] for a, b in zip(g, grads[0]))
    print(f"| {name} | {' | '.join(cells)} | {diff:.1e} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
