"""Benchmark tables from finished runs: ``python -m mixjax.report --runs=DIR [DIR...]``.

Each ``DIR`` (or glob) is a run directory holding ``results.json`` (see :mod:`mixjax.results`) or a folder searched
recursively for them (e.g. ``--runs=runs/rsb_a3``). Runs are grouped by recipe and epochs into one markdown table
each, in the benchmark's layout (rows = methods, columns = backbones). Every cell shows our top-1, the published
number of the OpenMixup README (:mod:`mixjax.recipes.tables`) and the difference:

    | Method | ResNet-50 | ...
    | MixUp  | 77.31 (77.12, +0.19) | ...

Metric (spec §5): CNN recipes report the median top-1 of the last 5 evaluations for runs of ≤ 100 epochs and of
the last 10 otherwise; the DeiT-family recipe (and transformer backbones in general) report the best top-1.
A run that has not finished is marked ``†`` with its epochs done.

``python -m mixjax.report --published`` prints the published tables alone, in the benchmark document's layout
(its section headings, row order and labels with 📖 and ``*``, the α column, the same columns; "-" and empty
cells as there), so they can be diffed against ``../shared/reference/benchmark_tables.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys

from mixjax.recipes import cells, tables
from mixjax.results import reported_top1

METRICS = ("auto", "median", "best", "last")


@dataclasses.dataclass(frozen=True)
class Run:
  path: str
  recipe: str
  method: str
  model: str
  epochs: int
  results: dict


def find_result_files(patterns: list[str]) -> list[str]:
  """results.json paths under the given run dirs / folders / globs (sorted, unique)."""
  found = []
  for pattern in patterns:
    matches = glob.glob(pattern) or [pattern]
    for path in matches:
      if os.path.isfile(path) and os.path.basename(path) == "results.json":
        found.append(path)
      elif os.path.isfile(os.path.join(path, "results.json")):
        found.append(os.path.join(path, "results.json"))
      elif os.path.isdir(path):
        found += glob.glob(os.path.join(path, "**", "results.json"), recursive=True)
      else:
        raise FileNotFoundError(
          f"--runs entry {pattern!r} is neither a run directory with results.json nor a folder containing runs."
        )
  return sorted(set(os.path.normpath(p) for p in found))


def _method_name(config: dict) -> str:
  method = (config.get("mixing") or {}).get("method", "?")
  name = "+".join(method) if isinstance(method, list) else str(method)
  if (config.get("loss") or {}).get("name") == "decouple":
    name += "+decouple"
  return name


def load_run(path: str) -> Run:
  with open(path) as f:
    results = json.load(f)
  config = results.get("config") or {}
  recipe = config.get("recipe") or {}
  return Run(
    path=os.path.dirname(path),
    recipe=recipe.get("name") or "custom",
    method=recipe.get("method") or _method_name(config),
    model=recipe.get("model") or (config.get("model") or {}).get("name", "?"),
    epochs=int(recipe.get("epochs") or results.get("total_epochs") or config.get("epochs") or 0),
    results=results,
  )


def metric_for(run: Run, metric: str = "auto") -> str:
  """The results.json field this run is reported with."""
  if metric == "auto":
    configured = ((run.results.get("config") or {}).get("recipe") or {}).get("report_metric")
    metric = configured or ("best" if tables.is_transformer(run.model) else "median")
  if metric == "best":
    return "top1_best"
  if metric == "last":
    return "top1_last"
  if metric == "median":
    return "top1_median_last5" if run.epochs <= 100 else "top1_median_last10"
  raise ValueError(f"Unknown metric {metric!r}; valid: {', '.join(METRICS)}.")


def _order(keys, preferred):
  rank = {k: i for i, k in enumerate(preferred)}
  return sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))


def format_cell(ours: float | None, published: float | None, unfinished: str = "") -> str:
  text = "–" if ours is None else f"{ours:.2f}{unfinished}"
  if published is not None:
    text += f" ({published:.2f}" + ("" if ours is None else f", {ours - published:+.2f}") + ")"
  return text


def render(runs: list[Run], metric: str = "auto") -> str:
  """Markdown tables, one per (recipe, epochs) group."""
  groups: dict[tuple[str, int], list[Run]] = {}
  for run in runs:
    groups.setdefault((run.recipe, run.epochs), []).append(run)
  out = []
  for (recipe, epochs), members in sorted(groups.items()):
    models = _order({r.model for r in members}, list(tables.MODEL_LABELS))
    methods = _order({r.method for r in members}, list(tables.ROW_LABELS))
    by_cell = {}
    for r in members:
      by_cell.setdefault((r.method, r.model), []).append(r)
    fields = sorted({metric_for(r, metric) for r in members})
    out += [
      f"### {recipe}, {epochs} epochs — top-1 (%) by {', '.join(fields)}; "
      "in brackets: published (benchmark document; docs page for cells outside it), difference",
      "",
    ]
    out.append("| Method | " + " | ".join(tables.MODEL_LABELS.get(m, m) for m in models) + " |")
    out.append("|---|" + "---|" * len(models))
    for method in methods:
      cells = []
      for model in models:
        candidates = by_cell.get((method, model), [])
        published = tables.published_top1(recipe, method, model, epochs)
        if not candidates:
          cells.append(format_cell(None, published))
          continue
        run = candidates[-1]  # several runs of one cell: the last path in sorted order
        value = reported_top1(run.results, metric_for(run, metric))
        done, total = run.results.get("epochs_done"), run.results.get("total_epochs")
        unfinished = "" if run.results.get("status") == "completed" and done == total else f"†{done}/{total}"
        cells.append(format_cell(value, published, unfinished))
      out.append(f"| {tables.ROW_LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Benchmark tables from finished runs' results.json.")
  parser.add_argument("--runs", nargs="+", action="extend", default=[], help="run dirs, folders of runs, or globs")
  parser.add_argument(
    "--published", action="store_true", help="print the benchmark document's published tables (its layout) and exit"
  )
  parser.add_argument("more_runs", nargs="*", help="more run dirs (so --runs=A B C works too)")
  parser.add_argument(
    "--metric",
    default="auto",
    choices=METRICS,
    help="auto: median of last 5/10 for CNN recipes, best for transformers (spec §5)",
  )
  args = parser.parse_args(argv)
  if args.published:
    print(cells.document_markdown(tables.IMAGENET_TABLES), end="")
    return 0
  if not args.runs and not args.more_runs:
    parser.print_usage(sys.stderr)
    print("ERROR: give --runs=DIR [DIR...] (or --published).", file=sys.stderr)
    return 2
  try:
    paths = find_result_files(args.runs + args.more_runs)
  except FileNotFoundError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 2
  if not paths:
    print(f"ERROR: no results.json found under {args.runs}.", file=sys.stderr)
    return 2
  print(render([load_run(p) for p in paths], args.metric))
  return 0


if __name__ == "__main__":
  sys.exit(main())
