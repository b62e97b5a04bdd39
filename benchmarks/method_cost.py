"""Compiled cost of each mixing method: FLOPs, bytes accessed and peak memory of the whole jitted train step ÷ vanilla.

Deterministic (no timing): every method's real train step (``benchmarks/mixing_overhead.py``'s ``build_step``:
same model, batch, resolution, optimizer) is lowered and compiled once; XLA's ``cost_analysis()`` gives the
FLOPs and bytes accessed of the whole step, ``memory_analysis()`` its temporaries and its peak (arguments +
outputs + temporaries − donated aliases), per device. Prints one markdown table per (model, batch, dtype) with the
ratio to vanilla and the goal of issue 14; with ``--accounting`` also the pass accounting of AutoMix/SAMix from
separately compiled network passes.

    python benchmarks/method_cost.py                                   # ResNet-50 & DeiT-S /224, batch 32 & 128, fp32 & bf16
    python benchmarks/method_cost.py --models=resnet50 --batches=32 --dtypes=float32,bfloat16 --accounting

Batches are per device (the global batch is ×device count). TransMix/TokenMix need a ViT and are skipped on CNNs;
AttentiveMix+ runs with a random-weight extractor (same cost as a pretrained one).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import types

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixing_overhead import build_step  # noqa: E402  pylint: disable=wrong-import-position

INPUT_LEVEL = ("mixup", "cutmix", "fmix", "gridmix", "resizemix", "smoothmix", "saliencymix")
VIT_ONLY = ("transmix", "tokenmix")
# Multi-mode plans measured as one row each (row name → config.mixing.method): the DeiT/RSB recipes' per-step
# Mixup/CutMix switch, both kernels compiled into one step under lax.switch (mixjax/mixing/core/dispatch.py).
PLANS = {"mixup+cutmix": ("mixup", "cutmix")}

# Goals of issue 14, as (metric, limit) pairs on the ratio to vanilla.
GOALS = {
  **{m: (("flops", 1.01), ("peak", 1.02)) for m in INPUT_LEVEL + tuple(PLANS)},
  "manifoldmix": (("flops", 1.02), ("peak", 1.02)),
  "attentivemix": (("flops", 1.15),),
  "puzzlemix": (("flops", 1.7),),
  "automix": (("peak", 2.0),),
  "samix": (("peak", 2.0),),
}


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {"flops": float(cost.get("flops", math.nan)), "bytes": float(cost.get("bytes accessed", math.nan))}
  mem = compiled.memory_analysis()
  if mem is not None:
    out["temp"] = float(mem.temp_size_in_bytes)
    out["args"] = float(mem.argument_size_in_bytes)
    out["peak"] = float(
      mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    )
  return out


def step_args(model: str, size: int, per_device_batch: int, dtype: str, classes: int = 1000):
  """The argparse namespace ``mixing_overhead.build_step`` reads."""
  return types.SimpleNamespace(
    model=model,
    stem="",
    size=size,
    batch=per_device_batch * jax.device_count(),
    classes=classes,
    dtype=dtype,
    set=["attentivemix.allow_random_extractor=True", "supermix.allow_random_teacher=True"],
    steps=0,
    warmup=0,
  )


def method_cost(method: str, args) -> dict:
  """Compiled cost of ``method``'s full train step (dict of flops, bytes, temp, peak, compile_s); ``method`` is
  a registered method or a row of ``PLANS``."""
  state, step, batch = build_step(PLANS.get(method, method), args)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  out = {**_cost(compiled), "compile_s": time.perf_counter() - t0}
  del state, step, batch, compiled
  gc.collect()
  jax.clear_caches()
  return out


# ---------------------------------------------------------------- pass accounting (AutoMix / SAMix) ---


def pass_costs(
  model: str, size: int, per_device_batch: int, dtype: str, classes: int = 1000, feature: str = "stage3"
) -> dict:
  """FLOPs/bytes of the network passes AutoMix/SAMix are made of, each compiled on its own (abstract inputs).

  fwd: train-mode forward (logits + BN statistics); fwd_feature: the encoder forward the MixBlock reads
  (up to ``feature``; XLA drops the rest); fwd_bwd_params: forward + backward to the parameters (a vanilla
  step without the optimizer); fwd_bwd_input: forward + backward to the input only (no weight gradients: the
  MixBlock's gradient through the frozen momentum encoder).
  """
  import ml_collections
  from mixjax.train_state import model_fn_and_shapes

  c = ml_collections.ConfigDict(dict(seed=0, compute_dtype=dtype, model=dict(name=model)))
  model_fn, params, stats = model_fn_and_shapes(c, classes)
  cdt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  x = jax.ShapeDtypeStruct((per_device_batch, size, size, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((per_device_batch, classes), jnp.float32)

  def loss(p, s, images, targets):
    logits, new_stats = model_fn(p, s, images.astype(cdt), train=True)
    ce = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), -1))
    return ce, new_stats

  def fwd(p, s, images):
    logits, new_stats = model_fn(p, s, images.astype(cdt), train=True)
    return logits, new_stats

  def fwd_feature(p, s, images):
    (_, feats), _ = model_fn(p, s, images.astype(cdt), train=True, return_features=True)
    return feats[feature]

  fns = {
    "fwd": (fwd, (params, stats, x)),
    "fwd_feature": (fwd_feature, (params, stats, x)),
    "fwd_bwd_params": (jax.value_and_grad(loss, has_aux=True), (params, stats, x, y)),
    "fwd_bwd_input": (jax.value_and_grad(loss, argnums=2, has_aux=True), (params, stats, x, y)),
  }
  out = {}
  for name, (fn, fn_args) in fns.items():
    out[name] = _cost(jax.jit(fn).lower(*fn_args).compile())
  jax.clear_caches()
  return out


def automix_accounting(passes: dict, vanilla_flops: float, per_device_batch: int, merged_clean: bool = True) -> dict:
  """Predicted FLOPs of an AutoMix/SAMix step from its passes (see the module's README section).

  classifier q: forward+backward on the mixed batch (= the vanilla step's network work) + forward+backward on
  the clean batch (``clean_loss_weight`` > 0); momentum encoder k: forward on the clean batch (the MixBlock's
  features and k's BN statistics; ``loss`` and ``update_aux`` compute the same pass, which XLA merges when
  ``merged_clean``), forward on the MixBlock-mixed batch + backward to its input (no weight gradients);
  MixBlock, blends, the EMA of k and the MixBlock's optimizer are small and left to the residual.
  """
  f = {k: v["flops"] for k, v in passes.items()}
  terms = {
    "vanilla step (q fwd+bwd on mixed, optimizer)": vanilla_flops,
    "q fwd+bwd on clean": f["fwd_bwd_params"],
    "k fwd on clean": f["fwd"] if merged_clean else f["fwd"] + f["fwd_feature"],
    "k fwd on mixed + bwd to input": f["fwd_bwd_input"],
  }
  return {"terms": terms, "predicted": sum(terms.values()), "F": f["fwd"]}


# ----------------------------------------------------------------------------------------- output ---


def _ratio(a, b) -> float:
  return a / b if b and not math.isnan(b) else math.nan


def goal_verdict(method: str, ratios: dict) -> str:
  goals = GOALS.get(method)
  if not goals:
    return ""
  parts = []
  for metric, limit in goals:
    value = ratios.get(metric, math.nan)
    ok = value <= limit
    parts.append(f"{metric} ≤ {limit:g}× {'✓' if ok else f'✗ ({value:.2f}×)'}")
  return ", ".join(parts)


def markdown_table(rows: dict, title: str) -> str:
  base = rows.get("vanilla")
  lines = [
    f"### {title}",
    "",
    "| method | GFLOP | × vanilla | bytes GB | × vanilla | temp GB | × vanilla | peak GB | × vanilla | compile s |"
    " goal |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for method, r in rows.items():
    if "error" in r:
      lines.append(f"| {method} | – | – | – | – | – | – | – | – | – | {r['error']} |")
      continue
    ratios = {k: _ratio(r.get(k, math.nan), base.get(k, math.nan)) for k in ("flops", "bytes", "temp", "peak")}
    lines.append(
      f"| {method} | {r['flops'] / 1e9:.1f} | {ratios['flops']:.3f} | {r['bytes'] / 1e9:.2f} | {ratios['bytes']:.3f} | "
      f"{r.get('temp', math.nan) / 1e9:.2f} | {ratios['temp']:.3f} | {r.get('peak', math.nan) / 1e9:.2f} | "
      f"{ratios['peak']:.3f} | {r['compile_s']:.0f} | {goal_verdict(method, ratios)} |"
    )
  return "\n".join(lines)


def accounting_table(acc: dict, measured: dict, vanilla: float) -> str:
  lines = ["| pass | GFLOP | in F (one train-mode forward) |", "|---|---|---|"]
  F = acc["F"]
  for name, flops in acc["terms"].items():
    lines.append(f"| {name} | {flops / 1e9:.1f} | {flops / F:.2f} |")
  lines.append(
    f"| **predicted total** | {acc['predicted'] / 1e9:.1f} | {acc['predicted'] / F:.2f} "
    f"(= {acc['predicted'] / vanilla:.3f}× vanilla) |"
  )
  for method, r in measured.items():
    lines.append(
      f"| measured {method} | {r['flops'] / 1e9:.1f} | {r['flops'] / F:.2f} (= {r['flops'] / vanilla:.3f}× "
      f"vanilla; residual {100 * (r['flops'] / acc['predicted'] - 1):+.1f}% vs predicted) |"
    )
  return "\n".join(lines)


def main(argv=None) -> int:
  from mixjax import mixing

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet50,deit_small")
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--batches", default="32,128", help="per-device batches, comma-separated")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--methods", default="all", help=f"comma-separated (methods or {', '.join(PLANS)}), or all")
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--accounting", action="store_true", help="AutoMix/SAMix pass accounting (4 extra compiles)")
  p.add_argument("--json", default="", help="also write all numbers here")
  args = p.parse_args(argv)
  methods = mixing.list_methods() + list(PLANS) if args.methods == "all" else args.methods.split(",")
  methods = ["vanilla"] + [m for m in methods if m != "vanilla"]
  print(
    f"# compiled train-step cost: {jax.device_count()}× {jax.devices()[0].device_kind}, size {args.size}, "
    f"jax {jax.__version__}",
    flush=True,
  )
  everything = []
  for model in args.models.split(","):
    vit = model.startswith(("deit", "vit"))
    for batch in (int(b) for b in args.batches.split(",")):
      for dtype in args.dtypes.split(","):
        sargs = step_args(model, args.size, batch, dtype, args.classes)
        rows = {}
        for method in methods:
          if method in VIT_ONLY and not vit:
            continue
          try:
            rows[method] = method_cost(method, sargs)
          except Exception as e:  # pylint: disable=broad-except
            rows[method] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"}
          print(
            f"  {model} b{batch} {dtype} {method}: "
            + json.dumps(
              {
                k: (round(v / 1e9, 3) if k != "compile_s" and isinstance(v, float) else v)
                for k, v in rows[method].items()
              }
            ),
            file=sys.stderr,
            flush=True,
          )
        title = f"{model} / {args.size} px, per-device batch {batch}, {dtype}"
        print("\n" + markdown_table(rows, title), flush=True)
        entry = {"model": model, "size": args.size, "batch": batch, "dtype": dtype, "rows": rows}
        aware = {m: rows[m] for m in ("automix", "samix") if m in rows and "error" not in rows[m]}
        if args.accounting and aware and "error" not in rows["vanilla"]:
          passes = pass_costs(model, args.size, batch, dtype, args.classes)
          acc = automix_accounting(passes, rows["vanilla"]["flops"], batch)
          print("\nAutoMix/SAMix pass accounting (F = one train-mode forward):\n", flush=True)
          print(accounting_table(acc, aware, rows["vanilla"]["flops"]), flush=True)
          entry["passes"], entry["accounting"] = passes, acc
        everything.append(entry)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(everything, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
