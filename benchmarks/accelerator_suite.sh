#!/usr/bin/env bash
# One unattended accelerator check (issue 14): on one GPU/TPU host, in under 8 minutes, writes ONE JSON with
#   * throughput: ResNet-50 bf16 train images/s (mixjax's real jitted step, synthetic uint8 batch) and the same
#     step in timm/PyTorch on the same device (AMP bf16, channels-last, SGD) when torch+timm are installed;
#   * methods: per mixing method the train-step time and the compiled step's peak device memory (XLA's
#     memory_analysis: arguments + outputs + temporaries − donated aliases) and FLOPs, each ÷ vanilla;
#   * automix_samix: AutoMix/SAMix time and memory ratios (goals: ≤ 2.2× time, ≤ 2.0× memory);
#   * cell: one real-shape table cell end to end through the input pipeline (tf.data on the locally made
#     ImageNet-shaped JPEGs, benchmarks/cell_smoke.py), with images/s vs the synthetic step.
#   * step_cache: a new process loads the vanilla step from the step cache (mixjax/step_cache.py) as a
#     repeated run does: its load time ÷ the cold compile (goal ≤ 0.10).
# Stages run in priority order and the later ones are skipped (recorded as such) when the time budget runs out.
#
#   benchmarks/accelerator_suite.sh [--out=FILE] [--budget_s=450] [--batch=256] [--methods=a,b,...]
#   benchmarks/accelerator_suite.sh --cpu-dry [--out=FILE]     # tiny sizes on CPU (CI)
#   # through the device tool:  run(command="benchmarks/accelerator_suite.sh --out=$OUT/suite.json", carry=[".venv"])
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), TFDS_DATA_DIR (where mixjax_photos
# is prepared on first use, ~30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
MODE=full OUT=accelerator_suite.json BUDGET= BATCH= METHODS=
for arg in "$@"; do
  case "$arg" in
    --cpu-dry) MODE=cpu-dry ;;
    --out=*) OUT=${arg#--out=} ;;
    --budget_s=*) BUDGET=${arg#--budget_s=} ;;
    --batch=*) BATCH=${arg#--batch=} ;;
    --methods=*) METHODS=${arg#--methods=} ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [[ $MODE == cpu-dry ]]; then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- PyTorch/timm reference (own process, first:
# JAX preallocates most of the device memory once it starts)
"$PY" - "$MODE" "$WORK/torch.json" "${BATCH}" <<'PYEOF' || echo '{"error": "torch stage crashed"}' > "$WORK/torch.json"
import json, statistics, sys, time
mode, out, batch = sys.argv[1], sys.argv[2], sys.argv[3]
dry = mode == "cpu-dry"
result = {}
try:
  import timm, torch
  device = "cuda" if torch.cuda.is_available() and not dry else "cpu"
  name, size = ("resnet18", 32) if dry else ("resnet50", 224)
  batch = int(batch or (8 if dry else 256))
  net = timm.create_model(name, num_classes=1000).to(device).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (batch,), device=device)
  times = []
  for i in range(3 if dry else 25):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
      loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    if device == "cuda":
      torch.cuda.synchronize()
    if i >= (1 if dry else 5):
      times.append(time.perf_counter() - t0)
  step = statistics.median(times)
  result = {"framework": f"torch {torch.__version__} + timm {timm.__version__}", "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu", "model": name,
            "size": size, "batch": batch, "amp": "bf16" if device == "cuda" else "fp32",
            "step_ms": 1e3 * step, "images_per_s": batch / step,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None}
except ImportError as e:
  result = {"skipped": f"torch/timm not installed ({e})"}
except Exception as e:  # noqa: BLE001
  result = {"error": f"{type(e).__name__}: {e}"[:300]}
json.dump(result, open(out, "w"))
PYEOF

# ---------------------------------------------------------------- JAX stages
"$PY" - "$MODE" "$OUT" "$WORK/torch.json" "${BUDGET}" "${BATCH}" "${METHODS}" <<'PYEOF'
import json, math, os, shutil, statistics, subprocess, sys, tempfile, time, traceback, types
T0 = time.time()
mode, out_path, torch_path, budget, batch, methods = sys.argv[1:7]
dry = mode == "cpu-dry"
budget = float(budget or (300 if dry else 450))   # seconds for the JAX stages (torch ran before)
import jax
import numpy as np

# Cold compiles only: the compile times are the figures, and the step_cache stage stores a fresh executable.
jax.config.update("jax_enable_compilation_cache", False)

sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
from mixing_overhead import build_step
from mixjax import step_cache

P = dict(model="resnet18", model_kwargs={"stem": "cifar", "width": 8}, size=32, batch=8,
         dtype="float32", steps=2, warmup=1,
         methods=["vanilla", "cutmix", "automix"]) if dry else dict(
         model="resnet50", model_kwargs={}, size=224, batch=256 * jax.device_count(), dtype="bfloat16", steps=20,
         warmup=3, methods=["vanilla", "automix", "samix", "mixup", "cutmix", "puzzlemix", "manifoldmix",
                            "attentivemix", "fmix", "alignmix", "saliencymix", "resizemix", "gridmix", "smoothmix"])
if batch:
  P["batch"] = int(batch) * jax.device_count()
if methods:
  P["methods"] = ["vanilla"] + [m for m in methods.split(",") if m != "vanilla"]
CELL = ("configs/tiny_imagenet.py:vanilla,model=resnet18", dict(steps=2, per_device_batch=2, eval_per_device_batch=2,
        eval_batches=1)) if dry else ("configs/rsb_a3.py:rsb,model=resnet50", dict(steps=30, per_device_batch=256,
        eval_per_device_batch=128, eval_batches=0))

report = {"suite": "benchmarks/accelerator_suite.sh", "mode": mode, "jax": jax.__version__,
          "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
          "device_count": jax.device_count(), "cpu_cores": os.cpu_count(), "params": P, "stages": {},
          "skipped": [], "errors": {}}
report["torch"] = json.load(open(torch_path)) if os.path.exists(torch_path) else {"error": "no output"}


def save():
  report["elapsed_s"] = round(time.time() - T0, 1)
  with open(out_path, "w") as f:
    json.dump(report, f, indent=1, default=float)


def left() -> float:
  return budget - (time.time() - T0)


def build_args():
  """``mixing_overhead.build_step``'s arguments for this suite's sizes (JSON-able: the step_cache stage's new
  process rebuilds the same step from them, so its key matches)."""
  return dict(model=P["model"], stem="", model_kwargs=P["model_kwargs"], size=P["size"], batch=P["batch"],
              classes=1000, dtype=P["dtype"], set=["attentivemix.allow_random_extractor=True"])


STEP_CACHE = tempfile.mkdtemp(prefix="suite_step_cache_")


def measure(method):
  """Compile (timed), compiled cost/memory, median step time of the real jitted train step."""
  state, step, batch = build_step(method, types.SimpleNamespace(**build_args()))
  # Through the step cache (the store happens after the timed compile), so the step_cache stage can load it.
  compiled, timing = step_cache.compile_step(step, (state, batch), directory=STEP_CACHE,
                                             context={"method": method, "args": build_args()})
  r = {"compile_s": timing["compile_s"], "trace_s": timing["trace_s"]}
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  r["gflops"] = float(cost.get("flops", math.nan)) / 1e9
  mem = compiled.memory_analysis()
  if mem is not None:
    r["peak_gb"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                    - mem.alias_size_in_bytes) / 1e9
    r["temp_gb"] = mem.temp_size_in_bytes / 1e9
  times = []
  for i in range(P["warmup"] + P["steps"]):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    if i >= P["warmup"]:
      times.append(time.perf_counter() - t0)
  r["step_ms"] = 1e3 * statistics.median(times)
  r["images_per_s"] = P["batch"] / statistics.median(times)
  r["loss_finite"] = bool(np.isfinite(float(metrics["loss"])))
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    r["process_peak_device_gb_so_far"] = stats["peak_bytes_in_use"] / 1e9
  del state, compiled, step, batch
  jax.clear_caches()
  return r


def stage(name, fn, min_left):
  if left() < min_left:
    report["skipped"].append(f"{name} (time budget: {left():.0f}s left)")
    save()
    return None
  try:
    value = fn()
    report["stages"][name] = round(time.time() - T0, 1)
    return value
  except Exception as e:  # noqa: BLE001
    report["errors"][name] = f"{type(e).__name__}: {e}"[:400]
    traceback.print_exc()
    return None
  finally:
    save()


save()
methods_out = report.setdefault("methods", {})
# 1. vanilla: the throughput figure and the base of every ratio.
methods_out["vanilla"] = stage("vanilla", lambda: measure("vanilla"), 0)
if methods_out["vanilla"]:
  v = methods_out["vanilla"]
  t = report["torch"]
  report["throughput"] = {"model": P["model"], "size": P["size"], "global_batch": P["batch"], "dtype": P["dtype"],
                          "jax_images_per_s": v["images_per_s"], "jax_step_ms": v["step_ms"],
                          "jax_compile_s": v["compile_s"],
                          # img/s scaled to the anchors' 24.5 GFLOP per ResNet-50/224 training image
                          "images_per_s_x_gflop_per_image_over_24.5": v["images_per_s"] * v["gflops"]
                          / (P["batch"] / jax.device_count()) / 24.5,
                          "torch_images_per_s": t.get("images_per_s"),
                          "jax_over_torch": v["images_per_s"] / t["images_per_s"] if t.get("images_per_s") else None}


def ratios(r, base):
  return {k: r[k] / base[k] for k in ("step_ms", "peak_gb", "temp_gb", "gflops")
          if r and base and k in r and k in base and base[k]}


# 2. AutoMix/SAMix first (the key ratios), 3. the real-shape cell, 4. the other methods while time is left.
order = [m for m in P["methods"] if m in ("automix", "samix")]
rest = [m for m in P["methods"] if m not in order and m != "vanilla"]
for m in order:
  methods_out[m] = stage(f"method:{m}", lambda m=m: measure(m), 60 if not dry else 0)


def run_cell():
  import cell_smoke
  r = cell_smoke.smoke_cell(CELL[0], key=CELL[0], **CELL[1])
  d = {k: getattr(r, k) for k in ("cell", "status", "error", "train_shape", "eval_shape", "compile_s",
                                  "first_step_s", "step_s", "peak_gb", "temp_gb", "eval_s", "eval_top1", "loss")}
  if r.status == "ok" and r.step_s:
    d["images_per_s_through_pipeline"] = r.train_shape[0] / r.step_s
  return d


report["cell"] = stage("cell", run_cell, 90 if not dry else 0)


# A repeated run: a new process rebuilds the vanilla step's inputs and gets its step from the step cache.
LOADER = """
import json, sys, time, types
t0 = time.time()
import jax
from mixjax import step_cache
ns = json.loads(sys.argv[1])
sys.path.insert(0, ns["benchmarks"])
from mixing_overhead import build_step
state, step, batch = build_step("vanilla", types.SimpleNamespace(**ns["args"]))
t1 = time.time()
compiled, timing = step_cache.compile_step(step, (state, batch), directory=ns["dir"],
                                           context={"method": "vanilla", "args": ns["args"]})
state, metrics = compiled(state, batch)
jax.block_until_ready(metrics)
print("STEP_CACHE " + json.dumps(dict(timing, first_step_done_s=time.time() - t1, set_up_s=t1 - t0)))
"""


def run_step_cache():
  v = methods_out.get("vanilla")
  if not v:
    raise RuntimeError("the vanilla stage did not run, nothing to load")
  arg = json.dumps({"args": build_args(), "dir": STEP_CACHE, "benchmarks": os.path.join(os.getcwd(), "benchmarks")})
  proc = subprocess.run([sys.executable, "-c", LOADER, arg], capture_output=True, text=True, timeout=max(60, left()))
  lines = [l for l in proc.stdout.splitlines() if l.startswith("STEP_CACHE ")]
  if proc.returncode or not lines:
    sys.stderr.write(proc.stderr[-5000:])
    raise RuntimeError(f"loader exited {proc.returncode}: {proc.stderr[-300:]}")
  t = json.loads(lines[-1][len("STEP_CACHE "):])
  return {"cold_compile_s": v["compile_s"], "cold_trace_s": v.get("trace_s"), "repeated_source": t["source"],
          "repeated_load_s": t["compile_s"], "ratio": t["compile_s"] / v["compile_s"], "goal_ratio": 0.10,
          "repeated_first_step_done_s": t["first_step_done_s"]}


report["step_cache"] = stage("step_cache", run_step_cache, 60 if not dry else 0)
for m in rest:
  methods_out[m] = stage(f"method:{m}", lambda m=m: measure(m), 45 if not dry else 0)
base = methods_out.get("vanilla")
for m, r in methods_out.items():
  if r and base:
    r["ratio"] = ratios(r, base)
report["automix_samix"] = {m: {"time_ratio": methods_out[m]["ratio"].get("step_ms"),
                               "memory_ratio": methods_out[m]["ratio"].get("peak_gb"),
                               "temp_memory_ratio": methods_out[m]["ratio"].get("temp_gb"),
                               "flops_ratio": methods_out[m]["ratio"].get("gflops"),
                               "goals": {"time": 2.2, "memory": 2.0}}
                           for m in ("automix", "samix") if methods_out.get(m)}
save()
shutil.rmtree(STEP_CACHE, ignore_errors=True)
print(json.dumps({k: report[k] for k in ("device", "elapsed_s", "skipped", "errors")}, default=float))
print(f"wrote {out_path}")
PYEOF
