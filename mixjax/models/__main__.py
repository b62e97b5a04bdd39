"""``python -m mixjax.models``: a table of every registered model.

Columns: name, parameters (1000 classes), XLA's FLOP count for one 224 px image in eval mode (from the cost
analysis of the jitted forward; XLA counts a multiply-add as 2 FLOPs, so papers' "GFLOPs", which are
multiply-accumulates, correspond to the GMACs column), the exposed feature stages, the stages that accept
``mix_stage``, and whether class-token attention maps are available. Models are built abstractly
(``nnx.eval_shape``), so no weights are allocated; only the FLOP analysis lowers each forward.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models import build_model, count_params, list_models


def forward_flops(model: nnx.Module, size: int) -> float | None:
  """XLA cost-analysis FLOPs of ``model(x, train=False)`` for one ``size x size`` image."""
  graphdef, state = nnx.split(model)

  def forward(state, x):
    return nnx.merge(graphdef, state)(x, False)

  lowered = jax.jit(forward).lower(state, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  try:
    cost = lowered.cost_analysis()
  except Exception:  # some backends only analyse compiled programs
    cost = None
  if not cost or "flops" not in cost:
    cost = lowered.compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="*", default=None, help="subset of names (default: all)")
  parser.add_argument("--size", type=int, default=224, help="input resolution for the FLOP count")
  parser.add_argument("--no-flops", action="store_true", help="skip the (slower) FLOP analysis")
  args = parser.parse_args(argv)
  names = args.models or list_models()
  header = f"{'model':<18} {'params (M)':>10} {'GFLOPs':>8} {'GMACs':>7}  {'stages':<14} {'mix_stage':<11} attention"
  print(header)
  print("-" * len(header))
  for name in names:
    model = nnx.eval_shape(lambda: build_model(name, num_classes=1000, rngs=nnx.Rngs(0)))
    flops = None if args.no_flops else forward_flops(model, args.size)
    gflops = "-" if flops is None else f"{flops / 1e9:.2f}"
    gmacs = "-" if flops is None else f"{flops / 2e9:.2f}"
    stages = f"stage0..{len(model.stage_names) - 1}"
    mix = ",".join(str(s) for s in model.mix_stages)
    attn = "yes" if model.supports_attention else "no"
    print(
      f"{name:<18} {count_params(model) / 1e6:>10.2f} {gflops:>8} {gmacs:>7}  {stages:<14} {mix:<11} {attn}", flush=True
    )


if __name__ == "__main__":
  main()
