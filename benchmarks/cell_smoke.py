"""Smoke of the benchmark table cells at their true shapes: N train steps + one eval per cell.

Each cell runs its own recipe config (``configs/<recipe>.py:<method>,model=…``: resolution, pp ops with
RandAugment / repeated augmentation / random erasing, model, optimizer, loss, EMA, mixing method) through the
real pieces of ``mixjax.train`` — ``build_step_functions``, the tf.data train/eval iterators, the device
prefetch and ``run_evaluation`` — on the locally made ImageNet-shaped JPEGs (``mixjax_photos/in1k``: 1000-way
head, ≈500×375 JPEGs), with only the batch size, the data source and the step count overridden. Per cell it
prints ok / failed / not implemented, compile seconds of the train step, seconds per train step, the compiled
step's peak memory per device (arguments + outputs + temporaries − donated aliases, from
``compiled.memory_analysis()``), the process's RSS high-water mark, and the eval time and top-1.

    python benchmarks/cell_smoke.py --cells=rsb_a3:cutmix:resnet50,deit:transmix:deit_small
    python benchmarks/cell_smoke.py --table=rsb --steps=2
    python benchmarks/cell_smoke.py --all --isolate --json=cell_smoke.json     # every runnable cell
    python benchmarks/cell_smoke.py --all --isolate --json=cell_smoke.json --resume   # go on after a stop
    python benchmarks/cell_smoke.py --report=cell_smoke.json    # per-recipe summary + every row, as markdown

A cell is ``recipe:method:model`` (e.g. ``rsb_a3:rsb:resnet50``) or a full config string
(``configs/rsb_a3.py:rsb,model=resnet50,epochs=100``). The 100- and 300-epoch PyTorch-style tables share their
shapes, so ``--table``/``--all`` run each (recipe, method, model) once. AttentiveMix+ cells without an
``extractor_checkpoint`` run with a randomly initialised extractor (same cost, meaningless accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import ml_collections

DEFAULT_DATASET = "mixjax_photos/in1k"


@dataclasses.dataclass
class CellResult:
  cell: str  # recipe:method:model
  config_string: str
  status: str  # ok | failed | not implemented
  error: str = ""
  train_shape: tuple = ()  # global train batch (B, H, W, C)
  eval_shape: tuple = ()
  compile_s: float = math.nan  # lower + compile of the train step
  first_step_s: float = math.nan
  step_s: float = math.nan  # median of the steps after the first (the first when there is one step)
  peak_gb: float = math.nan  # compiled train step, per device: args + outputs + temp − aliased
  temp_gb: float = math.nan
  rss_gb: float = math.nan  # process RSS high-water mark so far
  eval_s: float = math.nan  # eval compile + pass
  eval_top1: float = math.nan
  loss: float = math.nan


# ------------------------------------------------------------------ cells ---


def cell_key(cell) -> str:
  from mixjax.recipes import cells as cells_lib

  recipe, _ = cells_lib.split_config_string(cell.config_string)
  return f"{recipe}:{cell.row}:{cell.column.model}"


def to_config_string(spec: str) -> str:
  """``recipe:method:model`` or a config string → a config string."""
  if ".py" in spec:
    return spec
  parts = spec.split(":")
  if len(parts) != 3:
    raise ValueError(f"A cell is recipe:method:model (e.g. rsb_a3:cutmix:resnet50) or a config string; got {spec!r}.")
  recipe, method, model = parts
  return f"configs/{recipe}.py:{method},model={model}"


def select_cells(*, tables=None, cells=None, all_cells=False, implemented_only=True) -> list[tuple[str, str]]:
  """[(cell key, config string)] of the selection, one per (recipe, method, model)."""
  from mixjax.recipes import cells as cells_lib
  from mixjax.recipes import tables as tables_lib

  out, seen = [], set()
  if all_cells or tables:
    chosen = None if all_cells else [tables_lib.get_table(t) for t in tables]
    for cell in tables_lib.cells(chosen):
      key = cell_key(cell)
      if key in seen:
        continue
      if implemented_only and cells_lib.cell_status(cell) != "implemented":
        continue
      seen.add(key)
      out.append((key, cell.config_string))
  for spec in cells or []:
    cs = to_config_string(spec)
    recipe, arg = cells_lib.split_config_string(cs)
    parts = dict(p.split("=", 1) for p in arg.split(",")[1:] if "=" in p)
    key = f"{recipe}:{arg.split(',')[0]}:{parts.get('model', 'default')}"
    if key not in seen:
      seen.add(key)
      out.append((key, cs))
  return out


# ---------------------------------------------------------------- one cell ---


def load_cell_config(config_string: str):
  """The cell's config exactly as ``--config=<config_string>`` gives it (NotImplementedYetError if pending)."""
  from mixjax import recipes
  from mixjax.recipes import cells as cells_lib

  recipe, arg = cells_lib.split_config_string(config_string)
  config = cells_lib.load_recipe(recipe).get_config(arg)
  recipes.check_implemented(config)
  return config


def smoke_overrides(
  config, *, per_device_batch: int, num_devices: int, steps: int, dataset: str, data_dir: str | None
) -> None:
  """What the smoke changes in a cell's config: the data source, the batch and the step count.

  Two cells need more than that to run at all, and keep their cost: a pretrained network left unset
  (AttentiveMix+'s extractor, SuperMix's teacher) is randomly initialised (same passes, meaningless accuracy), and
  Co-Mixup, which mixes groups of ``m_part`` samples within a device, gets at least one whole group per device.
  """
  d = config.data
  d.name = dataset
  d.data_dir = data_dir
  d.train_split, d.eval_split = "train", "validation"
  d.shuffle_buffer = min(int(d.shuffle_buffer), 256)
  d.prefetch = 1
  config.batch_size = per_device_batch * num_devices
  config.max_steps = steps
  config.log_mixed_samples = 0
  methods = [config.mixing.method] if isinstance(config.mixing.method, str) else list(config.mixing.method)
  for method, role in (("attentivemix", "extractor"), ("supermix", "teacher")):
    if method in methods:
      hp = config.mixing.args.get(method)
      if hp is None:
        config.mixing.args[method] = hp = ml_collections.ConfigDict()
      if not hp.get(f"{role}_checkpoint"):
        hp[f"allow_random_{role}"] = True
  if "comixup" in methods:
    from mixjax.mixing.model_aware import comixup

    hp = config.mixing.args.get("comixup") or {}
    group = int(hp.get("m_part", comixup.CoMixup.Params.m_part))
    config.batch_size = max(per_device_batch, group) // group * group * num_devices


def _median(values):
  return statistics.median(values) if values else math.nan


def smoke_cell(
  config_string: str,
  *,
  key: str | None = None,
  steps: int = 1,
  per_device_batch: int = 2,
  eval_per_device_batch: int = 8,
  dataset: str = DEFAULT_DATASET,
  data_dir: str | None = None,
  eval_batches: int = 0,
  devices=None,
) -> CellResult:
  """Runs ``steps`` train steps and one eval of a cell; never raises (failures are in the result)."""
  import jax

  from mixjax.recipes.errors import NotImplementedYetError

  result = CellResult(cell=key or config_string, config_string=config_string, status="failed")
  try:
    config = load_cell_config(config_string)
  except NotImplementedYetError as e:
    result.status, result.error = "not implemented", str(e)
    return result
  except Exception as e:  # pylint: disable=broad-except
    result.error = _one_line(e)
    return result
  try:
    _train_and_eval(
      result,
      config,
      steps=steps,
      per_device_batch=per_device_batch,
      eval_per_device_batch=eval_per_device_batch,
      dataset=dataset,
      data_dir=data_dir,
      eval_batches=eval_batches,
      devices=devices,
    )
    result.status = "ok"
  except Exception as e:  # pylint: disable=broad-except
    result.error = _one_line(e)
    if os.environ.get("CELL_SMOKE_TRACEBACK"):
      traceback.print_exc()
  finally:
    result.rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    gc.collect()
    jax.clear_caches()
  return result


def _one_line(e: Exception) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _train_and_eval(
  result: CellResult,
  config,
  *,
  steps,
  per_device_batch,
  eval_per_device_batch,
  dataset,
  data_dir,
  eval_batches,
  devices,
) -> None:
  """The part of ``mixjax.train.train_and_evaluate`` a smoke needs, with the compile timed apart."""
  import jax
  import numpy as np

  from mixjax import data, train
  from mixjax.data import photos  # noqa: F401  (registers mixjax_photos[/in1k] with TFDS)
  from mixjax.sharding import make_mesh, prefetch_to_device
  from mixjax.train_step import build_step_functions, run_evaluation

  mesh = make_mesh(devices)
  smoke_overrides(
    config,
    per_device_batch=per_device_batch,
    num_devices=mesh.devices.size,
    steps=steps,
    dataset=dataset,
    data_dir=data_dir,
  )
  config.eval_batch_size = eval_per_device_batch * mesh.devices.size
  train.validate_config(config)
  info = data.get_dataset_info(config.data)
  config.data.num_classes = info.num_classes
  steps_per_epoch = data.train_steps_per_epoch(config.data, info, config.batch_size)
  fns = build_step_functions(config, mesh=mesh, num_classes=info.num_classes, steps_per_epoch=steps_per_epoch)
  state = fns.init_state()
  train_iter = prefetch_to_device(
    data.make_train_iterator(config.data, global_batch_size=config.batch_size, seed=config.seed), mesh, size=1
  )
  batch = next(train_iter)
  result.train_shape = tuple(batch["image"].shape)

  t0 = time.perf_counter()
  compiled = fns.train_step.lower(state, batch).compile()
  result.compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  if mem is not None:
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    result.peak_gb, result.temp_gb = peak / 1e9, mem.temp_size_in_bytes / 1e9

  times, losses = [], []
  for i in range(steps):
    if i:
      batch = next(train_iter)
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    metrics = jax.device_get(metrics)
    times.append(time.perf_counter() - t0)
    losses.append(float(metrics["loss"]))
  result.first_step_s = times[0]
  result.step_s = _median(times[1:]) if len(times) > 1 else times[0]
  result.loss = losses[-1]
  if not np.isfinite(losses).all():
    raise FloatingPointError(f"non-finite training loss {losses}")

  eval_iter, _ = data.make_eval_iterator(config.data, global_batch_size=config.eval_batch_size)

  def batches():
    for i, b in enumerate(prefetch_to_device(eval_iter(), mesh, size=1)):
      if eval_batches and i >= eval_batches:
        return
      result.eval_shape = tuple(b["image"].shape)
      yield b

  use_ema = bool(config.ema.get("decay", 0.0))
  t0 = time.perf_counter()
  evaluated = run_evaluation(fns.eval_step, state.ema_params if use_ema else state.params, state.batch_stats, batches())
  result.eval_s = time.perf_counter() - t0
  result.eval_top1 = evaluated["top1"]


# ----------------------------------------------------------------- output ---


def _fmt(value, spec=".1f") -> str:
  return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


HEADER = (
  "| cell | status | train batch | eval | compile s | step s | peak GB/dev | temp GB | RSS GB | eval s |"
  " loss | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown_row(r: CellResult) -> str:
  shape = "×".join(str(s) for s in r.train_shape) if r.train_shape else "–"
  eval_res = f"{r.eval_shape[1]}" if len(r.eval_shape) > 2 else "–"
  return (
    f"| `{r.cell}` | {r.status} | {shape} | {eval_res} | {_fmt(r.compile_s)} | {_fmt(r.step_s, '.2f')} | "
    f"{_fmt(r.peak_gb, '.2f')} | {_fmt(r.temp_gb, '.2f')} | {_fmt(r.rss_gb, '.1f')} | {_fmt(r.eval_s)} | "
    f"{_fmt(r.loss, '.3f')} | {r.error[:120]} |"
  )


def summary(results: list[CellResult]) -> str:
  """Per recipe: cells ok / failed, median and largest compile and step seconds, largest peak memory."""
  lines = [
    "| recipe | cells | ok | failed | compile s (median / max) | step s (median / max) | peak GB/dev (max) |"
    " eval s (median) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  recipes = sorted({r.cell.split(":")[0] for r in results})
  for recipe in [*recipes, "all"]:
    rows = [r for r in results if recipe == "all" or r.cell.split(":")[0] == recipe]
    ok = [r for r in rows if r.status == "ok"]
    failed = sum(r.status == "failed" for r in rows)

    def stat(field, fn, spec=".1f"):
      values = [getattr(r, field) for r in ok if not math.isnan(getattr(r, field))]
      return _fmt(fn(values), spec) if values else "–"

    lines.append(
      f"| {recipe} | {len(rows)} | {len(ok)} | {failed} | {stat('compile_s', statistics.median)} / "
      f"{stat('compile_s', max)} | {stat('step_s', statistics.median, '.2f')} / {stat('step_s', max, '.2f')} | "
      f"{stat('peak_gb', max, '.2f')} | {stat('eval_s', statistics.median)} |"
    )
  return "\n".join(lines)


def _run_isolated(key: str, config_string: str, args) -> CellResult:
  """One cell in a fresh interpreter (own RSS, a crash or OOM fails only that cell)."""
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [
      sys.executable,
      os.path.abspath(__file__),
      f"--cells={config_string}",
      f"--steps={args.steps}",
      f"--per_device_batch={args.per_device_batch}",
      f"--eval_per_device_batch={args.eval_per_device_batch}",
      f"--dataset={args.dataset}",
      f"--eval_batches={args.eval_batches}",
      f"--json={out.name}",
      "--quiet",
    ]
    if args.data_dir:
      cmd.append(f"--data_dir={args.data_dir}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
      result = _load_results(out.name)[0]
      result.cell = key
      return result
    except (json.JSONDecodeError, IndexError, FileNotFoundError):
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
      return CellResult(
        cell=key,
        config_string=config_string,
        status="failed",
        error=f"subprocess exit {proc.returncode}: {tail[0][:250]}",
      )


def _load_results(path: str) -> list[CellResult]:
  with open(path) as f:
    return [CellResult(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) for d in json.load(f)]


def _write_results(path: str, results: list[CellResult]) -> None:
  """Rewritten after every cell (atomically), so a sweep of hours that stops keeps what it measured."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
  os.replace(tmp, path)


def run(selection, args) -> list[CellResult]:
  results = []
  if getattr(args, "resume", False) and args.json and os.path.exists(args.json):
    results = [r for r in _load_results(args.json) if r.status != "failed"]
    done = {r.cell for r in results}
    selection = [(key, cs) for key, cs in selection if key not in done]
    if not args.quiet:
      print(f"# resuming {args.json}: {len(done)} cells kept, {len(selection)} to run", flush=True)
  if not args.quiet:
    import jax

    print(
      f"# cell smoke: {len(selection)} cells, {args.steps} step(s), per-device batch {args.per_device_batch}, "
      f"{jax.device_count()}× {jax.devices()[0].device_kind}, dataset {args.dataset}",
      flush=True,
    )
    print(HEADER, flush=True)
  for key, cs in selection:
    if args.isolate:
      r = _run_isolated(key, cs, args)
    else:
      r = smoke_cell(
        cs,
        key=key,
        steps=args.steps,
        per_device_batch=args.per_device_batch,
        eval_per_device_batch=args.eval_per_device_batch,
        dataset=args.dataset,
        data_dir=args.data_dir,
        eval_batches=args.eval_batches,
      )
    results.append(r)
    if args.json:
      _write_results(args.json, results)
    if not args.quiet:
      print(markdown_row(r), flush=True)
  if not args.quiet:
    print("\n" + summary(results), flush=True)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "not implemented")}
    print(f"\n{counts['ok']} ok, {counts['failed']} failed, {counts['not implemented']} not implemented", flush=True)
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cells", default="", help="comma-separated recipe:method:model or config strings")
  p.add_argument("--table", action="append", default=[], help="every runnable cell of a table (repeatable)")
  p.add_argument("--all", action="store_true", help="every runnable cell of every table")
  p.add_argument("--include_pending", action="store_true", help="also list cells not implemented yet")
  p.add_argument("--steps", type=int, default=1)
  p.add_argument("--per_device_batch", type=int, default=2)
  p.add_argument("--eval_per_device_batch", type=int, default=8)
  p.add_argument("--eval_batches", type=int, default=0, help="eval batches per cell (0: the whole split)")
  p.add_argument("--dataset", default=DEFAULT_DATASET)
  p.add_argument("--data_dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--isolate", action="store_true", help="each cell in its own process")
  p.add_argument("--json", default="", help="write the results as JSON here (rewritten after every cell)")
  p.add_argument(
    "--resume", action="store_true", help="keep the cells already in --json (except failed ones) and run the rest"
  )
  p.add_argument("--quiet", action="store_true")
  p.add_argument("--list", action="store_true", help="print the selected cells and exit")
  p.add_argument("--report", default="", help="print the per-recipe summary and every row of this JSON, and exit")
  args = p.parse_args(argv)
  if args.report:
    results = _load_results(args.report)
    print(summary(results) + "\n\n" + HEADER)
    for r in results:
      print(markdown_row(r))
    return 0
  # A config string holds commas: split --cells on commas that start a new cell.
  specs = [s for s in _split_cells(args.cells) if s]
  selection = select_cells(
    tables=args.table, cells=specs, all_cells=args.all, implemented_only=not args.include_pending
  )
  if not selection:
    p.error("nothing selected: pass --cells, --table or --all")
  if args.list:
    for key, cs in selection:
      print(f"{key:45s} {cs}")
    return 0
  results = run(selection, args)
  return 1 if any(r.status == "failed" for r in results) else 0


def _split_cells(text: str) -> list[str]:
  """'a:b:c,configs/x.py:m,model=y,d:e:f' → ['a:b:c', 'configs/x.py:m,model=y', 'd:e:f']."""
  out: list[str] = []
  for part in text.split(","):
    if out and "=" in part and ":" not in part:  # key=value of the previous config string
      out[-1] += "," + part
    else:
      out.append(part)
  return out


if __name__ == "__main__":
  sys.exit(main())
