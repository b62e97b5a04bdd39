"""Every cell of the benchmark tables as a config string, resolved the way ``--config=...`` resolves it.

    python -m mixjax.recipes.cells                      # one line per cell: status and config string
    python -m mixjax.recipes.cells --markdown > docs/benchmark_cells.md
    python -m mixjax.recipes.cells --table=rsb --implemented_only

A cell is "implemented" when its method(s) and backbone are registered; otherwise its config still resolves
and the CLI (``--dry_run`` or training) raises ``NotImplementedYetError`` for them before anything else.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
from types import ModuleType

from typing import Sequence

from mixjax import mixing
from mixjax.recipes import availability, base, tables
from mixjax.recipes.availability import PLANNED_METHODS
from mixjax.config_args import ConfigError

_PACKAGE_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def configs_dir() -> str:
  """Where the recipe files are: ``$MIXJAX_CONFIGS``, else ``./configs`` (a clone's root, as the README's
  commands assume), else the ``configs/`` beside the package (an editable install)."""
  for candidate in (os.environ.get("MIXJAX_CONFIGS"), os.path.join(os.getcwd(), "configs"), _PACKAGE_CONFIGS):
    if candidate and os.path.isdir(candidate):
      return os.path.abspath(candidate)
  raise ConfigError(
    "No configs/ directory found (looked in $MIXJAX_CONFIGS, ./configs and beside the package).",
    hint="run from the root of a mixjax clone, or set MIXJAX_CONFIGS=/path/to/mixjax/configs",
  )


def list_recipes(directory: str | None = None) -> list[str]:
  """The recipe files of ``configs/``: every ``<name>.py`` that defines ``build_config`` (the demo does not)."""
  directory = directory or configs_dir()
  names = []
  for file in sorted(os.listdir(directory)):
    if file.endswith(".py") and not file.startswith("_"):
      with open(os.path.join(directory, file)) as f:
        if "\ndef build_config(" in f.read():
          names.append(file[:-3])
  return names


@functools.lru_cache(maxsize=None)
def load_recipe(recipe: str, directory: str | None = None) -> ModuleType:
  """Imports ``configs/<recipe>.py`` (the same file ``--config`` loads)."""
  directory = directory or configs_dir()
  path = os.path.join(directory, f"{recipe}.py")
  if not os.path.exists(path):
    raise ConfigError(f"No recipe config {path}; recipes: {', '.join(list_recipes(directory))}.")
  spec = importlib.util.spec_from_file_location(f"mixjax_recipe_{recipe}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def split_config_string(config_string: str) -> tuple[str, str]:
  """'configs/rsb_a3.py:mixup,model=x' → ('rsb_a3', 'mixup,model=x')."""
  path, _, arg = config_string.partition(":")
  return os.path.splitext(os.path.basename(path))[0], arg


def build_cell_config(cell: tables.Cell):
  """The cell's resolved config, without the implemented check."""
  recipe, arg = split_config_string(cell.config_string)
  return load_recipe(recipe).build_config(arg)


def get_cell_config(cell: tables.Cell):
  """What ``--config=<cell.config_string>`` gives: raises ``NotImplementedYetError`` for pending cells."""
  recipe, arg = split_config_string(cell.config_string)
  config = load_recipe(recipe).get_config(arg)
  availability.check_implemented(config)  # what the CLI's --dry_run / training does first
  return config


def cell_status(cell: tables.Cell) -> str:
  """The status: "implemented", "not implemented yet (<what is missing>)" or "not applicable (<why the method
  refuses the backbone>)"."""
  config = build_cell_config(cell)
  missing = availability.missing_parts(config)
  if missing:
    return "not implemented yet (" + "; ".join(missing) + ")"
  conflicts = availability.inapplicable_parts(config)
  if conflicts:
    # A published number means the pair did run somewhere: then the backbone lacks what the method needs.
    kind = "not implemented yet" if cell.published is not None else "not applicable"
    return f"{kind} (" + "; ".join(availability.conflict_reason(c) for c in conflicts) + ")"
  return "implemented"


def _uses_alpha(method: str) -> bool:
  """Whether a row's method draws its mixing ratio from Beta(α, α) (vanilla does not: the document prints "-")."""
  if method in mixing.list_methods():
    return mixing.get_method(method).uses_alpha
  return method in PLANNED_METHODS  # not built yet: its table row prints an α


def document_alpha(table: tables.Table, row: str):
  """The benchmark document's α for ``row`` of ``table``, derived from the one place α is written: the row of
  ``configs/<recipe>.py`` on the recipe's default backbone (per-backbone exceptions such as ResNet-18's α 0.2
  are the rows' ``per_model`` entries and not part of the document's column). None where no mode of the row
  uses α ("-"); a pair for two-mode rows whose α differ (``(0.8, 1.0)``), one value when they agree (AlignMix)."""
  module = load_recipe(table.columns[0].recipe)
  row_config = base.resolve_row(module.METHODS, row, getattr(module, "DEFAULT_MODEL", "resnet50"))
  methods = row_config["method"]
  methods = (methods,) if isinstance(methods, str) else tuple(methods)
  if not any(_uses_alpha(m) for m in methods):
    return None
  alpha = row_config["alpha"]
  if isinstance(alpha, (tuple, list)):
    alpha = tuple(float(a) for a in alpha)
    return alpha[0] if len(set(alpha)) == 1 else alpha
  return float(alpha)


def document_rows(table: tables.Table) -> list[list[str]]:
  """The table as the document prints it: header rows, then one row per document method; every cell a
  string (numbers with two decimals, "-" or "" for cells without a number). Off-document rows and columns
  are left out."""
  columns = table.document_columns()
  header_rows = len(table.doc_header)
  out = []
  for h in range(header_rows):
    out.append([table.doc_header[h], table.doc_alpha_header[h]] + [c.doc_heading[h] for c in columns])
  for row in table.document_rows():
    values = []
    for c, value in zip(table.columns, table.published[row]):
      if not c.in_document:
        continue
      if value is not None:
        values.append(f"{value:.2f}")
      else:
        values.append("" if (row, c.model) in table.empty else "-")
    out.append([table.label(row), tables.format_alpha(document_alpha(table, row))] + values)
  return out


def document_markdown(table_list: Sequence[tables.Table] = tables.IMAGENET_TABLES) -> str:
  """The benchmark document's tables (section headings and markdown tables), for diffing against it."""
  lines = []
  for table in table_list:
    if table.source != tables.DOCUMENT:
      continue
    if table.doc_section:
      lines += [table.doc_section, ""]
    rows = document_rows(table)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths)) + " |"  # noqa: E731
    lines.append(fmt(rows[0]))
    lines.append(
      "|" + "|".join("-" * (widths[0] + 2) if i == 0 else ":" + "-" * widths[i] + ":" for i in range(len(widths))) + "|"
    )
    lines += [fmt(r) for r in rows[1:]]
    lines.append("")
  return "\n".join(lines)


def _fmt(value) -> str:
  return "–" if value is None else f"{value:.2f}"


def _source_mark(table: tables.Table, cell: tables.Cell) -> str:
  """ᵈ for a number outside the benchmark document (whole off-document tables are said in their heading)."""
  return "" if cell.in_document or cell.published is None or table.source != tables.DOCUMENT else " ᵈ"


def markdown(table_list=None) -> str:
  """README fragment: per table, every cell with its config string, status and published top-1."""
  table_list = list(tables.TABLES.values()) if table_list is None else table_list
  lines = [
    "# Benchmark cells",
    "",
    "Generated by `python -m mixjax.recipes.cells --markdown`. Each cell runs with",
    "`python -m mixjax.main --config=<config string> --workdir=...`; cells marked *not implemented yet* fail",
    "at `--dry_run` with `NotImplementedYetError` until their method or backbone is registered; cells marked",
    "*not applicable* fail there with a `ConfigError` naming the backbones the method can use.",
    "Published top-1: the benchmark document (OpenMixup `configs/classification/imagenet/mixups/README.md`,",
    "`../shared/reference/benchmark_tables.md`); – = empty or \"-\" there. Numbers marked ᵈ are in rows or",
    "columns the document does not have (PyTorch-style DeiT row, GridMix, SMMix, DeiT-B, PVT-S) and come from",
    "OpenMixup's docs page `docs/en/mixup_benchmarks/Mixup_imagenet.md`; the Tiny-ImageNet table comes from",
    "`Mixup_tiny_imagenet.md` (the document has none).",
    "",
  ]
  summary_at = len(lines) - 1  # the count goes right after the header paragraph
  total = implemented = inapplicable = 0
  for table in table_list:
    note = [] if table.source == tables.DOCUMENT else [f"Published numbers: {table.source}.", ""]
    lines += [
      f"## {table.title} (`{table.name}`, metric: {table.metric})",
      "",
      *note,
      "| Method | Backbone | Config string | Status | Published top-1 |",
      "|---|---|---|---|---|",
    ]
    for cell in tables.cells([table]):
      status = cell_status(cell)
      total += 1
      implemented += status == "implemented"
      inapplicable += status.startswith("not applicable")
      mark = {"implemented": "✅ ", "not applicable": "➖ "}.get(status.split(" (")[0], "⏳ ") + status
      lines.append(
        f"| {table.label(cell.row)} | {cell.column.label} | "
        f"`{cell.config_string}` | {mark} | {_fmt(cell.published)}{_source_mark(table, cell)} |"
      )
    lines.append("")
  lines.insert(
    summary_at,
    f"{implemented} of {total} cells are implemented; {inapplicable} are not applicable (the method refuses the "
    "backbone, and the document prints \"-\").",
  )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--markdown", action="store_true", help="print the README fragment")
  parser.add_argument("--table", action="append", choices=sorted(tables.TABLES), help="restrict to tables")
  parser.add_argument("--implemented_only", action="store_true", help="list only runnable cells")
  args = parser.parse_args(argv)
  selected = [tables.get_table(t) for t in args.table] if args.table else None
  if args.markdown:
    print(markdown(selected))
    return 0
  for cell in tables.cells(selected):
    status = cell_status(cell)
    if args.implemented_only and status != "implemented":
      continue
    print(f"{cell.table:20s} {status.split(' (')[0]:22s} {cell.config_string}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
