"""The OpenMixup ImageNet benchmark tables as data: rows = methods, columns = (recipe, backbone, epochs).

Source of every published number: **the benchmark document**, OpenMixup's
``configs/classification/imagenet/mixups/README.md`` (verbatim in ``../shared/reference/benchmark_tables.md``),
cell for cell. ``None`` marks a cell the document leaves empty or marks "-" (``EMPTY`` in a table lists the
cells that are empty rather than "-", so ``python -m mixjax.report --published`` prints the document's layout).
The α of each row is not here: it lives once, in the row of ``configs/<recipe>.py`` that runs it, and
:func:`mixjax.recipes.cells.document_alpha` derives the document's α column from it. Rows are named by
this repo's recipe method names (the ``configs/<recipe>.py`` METHODS keys); columns by registered model names.
Cells whose method or model is not registered yet still exist here: :mod:`mixjax.recipes.cells` marks them
"not implemented yet".

Rows and columns that are NOT in the benchmark document are kept because the recipes run them, and each says
where its numbers come from (``row_sources`` / ``Column.source`` / ``Table.source``): the PyTorch-style "DeiT"
row, GridMix, SMMix, the DeiT-B and PVT-S columns, and the whole Tiny-ImageNet table come from OpenMixup's docs
pages (``docs/en/mixup_benchmarks/Mixup_imagenet.md`` and ``Mixup_tiny_imagenet.md`` at commit 37e1372), a
near-copy that differs from the document in 16 cells; treat them as secondary. ``Cell.in_document`` tells which
cells are the benchmark's own.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from mixjax import models

DOCUMENT = (
  "benchmark document: OpenMixup configs/classification/imagenet/mixups/README.md "
  "(../shared/reference/benchmark_tables.md)"
)
DOCS_PAGE = (
  "OpenMixup docs page docs/en/mixup_benchmarks/Mixup_imagenet.md at commit 37e1372 (not in the benchmark document)"
)
TINY_DOCS_PAGE = (
  "OpenMixup docs page docs/en/mixup_benchmarks/Mixup_tiny_imagenet.md at commit 37e1372 "
  "(the benchmark document has no Tiny-ImageNet table)"
)

# Default row labels (the recipes' method names → the document's wording); a table may override its own
# (``Table.labels``), e.g. the RSB table writes "SAMix" where the others write "SAMix*".
ROW_LABELS = {
  "vanilla": "Vanilla",
  "mixup": "MixUp",
  "cutmix": "CutMix",
  "deit": "DeiT",
  "rsb": "RSB",
  "manifoldmix": "ManifoldMix",
  "saliencymix": "SaliencyMix",
  "attentivemix": "AttentiveMix+",
  "fmix": "FMix*",
  "gridmix": "GridMix",
  "puzzlemix": "PuzzleMix",
  "comixup": "Co-Mixup📖",
  "supermix": "SuperMix📖",
  "resizemix": "ResizeMix*",
  "alignmix": "AlignMix📖",
  "grafting": "Grafting📖",
  "automix": "AutoMix",
  "samix": "SAMix*",
  "transmix": "TransMix📖",
  "tokenmix": "TokenMix📖",
  "smmix": "SMMix📖",
  "smoothmix": "SmoothMix",
  "decouplemix": "DecoupleMix",
}

MODEL_LABELS = {
  "resnet18": "ResNet-18",
  "resnet34": "ResNet-34",
  "resnet50": "ResNet-50",
  "resnet101": "ResNet-101",
  "resnext101_32x4d": "ResNeXt-101",
  "resnext50_32x4d": "ResNeXt-50",
  "efficientnet_b0": "Eff-B0",
  "mobilenet_v2": "Mob.V2 1x",
  "deit_tiny": "DeiT-T",
  "deit_small": "DeiT-S",
  "deit_base": "DeiT-B",
  "pvt_tiny": "PVT-T",
  "pvt_small": "PVT-S",
  "swin_tiny": "Swin-T",
  "convnext_tiny": "ConvNeXt-T",
  "moganet_tiny": "MogaNet-T",
}


@dataclasses.dataclass(frozen=True)
class Column:
  recipe: str  # configs/<recipe>.py
  model: str  # registered (or planned) model name
  epochs: int
  label: str  # our heading (e.g. "ResNet-50 A3")
  source: str = DOCUMENT  # where this column's numbers come from
  doc_heading: tuple[str, ...] = ()  # the document's header cells for this column (one per header row)

  @property
  def in_document(self) -> bool:
    return self.source == DOCUMENT


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  title: str
  metric: str  # "median" (last 5 / 10 epochs) or "best"
  columns: tuple[Column, ...]
  published: Mapping[str, tuple]  # row → top-1 per column (None: empty / "-")
  source: str = DOCUMENT  # the table as a whole
  row_sources: Mapping[str, str] = dataclasses.field(default_factory=dict)  # rows not in the document
  labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # row labels differing from ROW_LABELS
  empty: frozenset = frozenset()  # (row, model) cells the document leaves empty (not "-")
  doc_section: str = ""  # the document's heading above this table
  doc_header: tuple[str, ...] = ()  # the document's first column, header rows ("Backbones", "Epochs")
  doc_alpha_header: tuple[str, ...] = ()  # the document's α column, header rows

  def __post_init__(self):
    for row, values in self.published.items():
      if len(values) != len(self.columns):
        raise ValueError(f"Table {self.name} row {row}: {len(values)} values for {len(self.columns)} columns.")
    models = {c.model for c in self.columns}
    for row, model in self.empty:
      if row not in self.published or model not in models:
        raise ValueError(f"Table {self.name}: empty cell ({row}, {model}) is not a cell of the table.")
      if self.published[row][[c.model for c in self.columns].index(model)] is not None:
        raise ValueError(f"Table {self.name}: empty cell ({row}, {model}) holds a number.")

  def label(self, row: str) -> str:
    return self.labels.get(row, ROW_LABELS.get(row, row))

  def row_source(self, row: str) -> str:
    return self.row_sources.get(row, self.source)

  def document_rows(self) -> list[str]:
    return [r for r in self.published if self.row_source(r) == DOCUMENT]

  def document_columns(self) -> list[Column]:
    return [c for c in self.columns if c.in_document]


@dataclasses.dataclass(frozen=True)
class Cell:
  table: str
  row: str
  column: Column
  published: float | None
  source: str = DOCUMENT

  @property
  def in_document(self) -> bool:
    return self.source == DOCUMENT

  @property
  def config_string(self) -> str:
    c = self.column
    return f"configs/{c.recipe}.py:{self.row},model={c.model},epochs={c.epochs}"


def _cols(
  recipe: str,
  epochs: int,
  models: Sequence[str],
  *,
  heading: str | None = None,
  off_document: Sequence[str] = (),
  source: str = DOCUMENT,
) -> tuple[Column, ...]:
  out = []
  for m in models:
    col_source = DOCS_PAGE if m in off_document else source
    doc = (MODEL_LABELS[m],) + ((heading,) if heading else ())
    out.append(
      Column(recipe, m, epochs, f"{MODEL_LABELS[m]} {epochs}ep", col_source, doc if col_source == DOCUMENT else ())
    )
  return tuple(out)


_ = None  # empty or "-" in the document

PYTORCH_100 = Table(
  name="pytorch_style_100ep",
  title="PyTorch-style training, 100 epochs",
  metric="median",
  columns=_cols(
    "pytorch_style", 100, ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x4d"), heading="100 epochs"
  ),
  published=dict(
    vanilla=(70.04, 73.85, 76.83, 78.18, 78.71),
    mixup=(69.98, 73.97, 77.12, 78.97, 79.98),
    cutmix=(68.95, 73.58, 77.17, 78.96, 80.42),
    deit=(_, _, 77.27, _, _),
    manifoldmix=(69.98, 73.98, 77.01, 79.02, 79.93),
    saliencymix=(69.16, 73.56, 77.14, 79.32, 80.27),
    attentivemix=(68.57, _, 77.28, _, _),
    fmix=(69.96, 74.08, 77.19, 79.09, 80.06),
    gridmix=(_, _, 77.04, _, _),
    puzzlemix=(70.12, 74.26, 77.54, 79.43, 80.53),
    comixup=(_, _, 77.60, _, _),
    supermix=(_, _, 77.63, _, _),
    resizemix=(69.50, 73.88, 77.42, 79.27, 80.55),
    alignmix=(_, _, 78.00, _, _),
    grafting=(_, _, 77.74, _, _),
    automix=(70.50, 74.52, 77.91, 79.87, 80.89),
    samix=(70.83, 74.95, 78.06, 80.05, 80.98),
  ),
  row_sources=dict(deit=DOCS_PAGE, gridmix=DOCS_PAGE),
  doc_section="### **PyTorch-style Training Settings on ImageNet-1k**",
  doc_header=("Backbones", "Epochs"),
  doc_alpha_header=("$Beta$", "$\\alpha$"),
)

PYTORCH_300 = Table(
  name="pytorch_style_300ep",
  title="PyTorch-style training, 300 epochs",
  metric="median",
  columns=_cols("pytorch_style", 300, ("resnet18", "resnet34", "resnet50", "resnet101"), heading="300 epochs"),
  published=dict(
    vanilla=(71.83, 75.29, 77.35, 78.91),
    mixup=(71.72, 75.73, 78.44, 80.60),
    cutmix=(71.01, 75.16, 78.69, 80.59),
    manifoldmix=(71.73, 75.44, 78.21, 80.64),
    saliencymix=(70.21, 75.01, 78.46, 80.45),
    fmix=(70.30, 75.12, 78.51, 80.20),
    gridmix=(_, _, 78.50, _),
    puzzlemix=(71.64, 75.84, 78.86, 80.67),
    resizemix=(71.32, 75.64, 78.91, 80.52),
    alignmix=(_, _, 79.32, _),
    automix=(72.05, 76.10, 79.25, 80.98),
    samix=(72.27, 76.28, 79.39, 81.10),
  ),
  row_sources=dict(gridmix=DOCS_PAGE),
  doc_header=("Backbones", "Epochs"),
  doc_alpha_header=("$Beta$", "$\\alpha$"),
)

RSB = Table(
  name="rsb",
  title="timm RSB A3 (100 ep, 160 px) / A2 (300 ep, 224 px)",
  metric="median",
  columns=(
    Column("rsb_a3", "resnet50", 100, "ResNet-50 A3", doc_heading=("ResNet-50", "A3")),
    Column("rsb_a2", "resnet50", 300, "ResNet-50 A2", doc_heading=("ResNet-50", "A2")),
    Column("rsb_a3", "efficientnet_b0", 100, "Eff-B0 A3", doc_heading=("Eff-B0", "A3")),
    Column("rsb_a2", "efficientnet_b0", 300, "Eff-B0 A2", doc_heading=("Eff-B0", "A2")),
    Column("rsb_a3", "mobilenet_v2", 100, "Mob.V2 1x A3", doc_heading=("Mob.V2 1x", "A3")),
    Column("rsb_a2", "mobilenet_v2", 300, "Mob.V2 1x A2", doc_heading=("Mob.V2 1x", "A2")),
  ),
  published=dict(
    rsb=(78.08, 79.80, 74.02, 77.26, 69.86, 72.87),
    mixup=(77.66, _, 73.87, 77.19, 70.17, 72.78),
    cutmix=(77.62, 79.38, 73.46, 77.24, 69.62, 72.23),
    manifoldmix=(77.78, 79.47, 73.83, 77.22, 70.05, 72.34),
    attentivemix=(77.46, 79.34, 72.16, 75.95, 67.32, 70.30),
    saliencymix=(77.93, 79.42, 73.42, 77.67, 69.69, 72.07),
    fmix=(77.76, 79.05, 73.71, 77.33, 70.10, 72.79),
    puzzlemix=(78.02, 79.78, 74.10, 77.35, 70.04, 72.85),
    resizemix=(77.85, 79.74, 73.67, 77.27, 69.94, 72.50),
    automix=(78.44, _, 74.61, 77.58, 71.16, 73.19),
    samix=(78.64, _, 75.28, 77.69, 71.24, 73.42),
  ),
  labels=dict(samix="SAMix"),
  doc_section="### **Timm RSB A2/A3 Training Settings on ImageNet-1k**",
  doc_header=("Backbones", "Settings"),
  doc_alpha_header=("$Beta$", "$\\alpha$"),
)

DEIT = Table(
  name="deit",
  title="DeiT-style training of Transformers and modern ConvNets, 300 epochs",
  metric="best",
  columns=_cols(
    "deit",
    300,
    ("deit_tiny", "deit_small", "deit_base", "pvt_tiny", "pvt_small", "swin_tiny", "convnext_tiny", "moganet_tiny"),
    off_document=("deit_base", "pvt_small"),
  ),
  # Columns: DeiT-T, DeiT-S, DeiT-B (docs page), PVT-T, PVT-S (docs page), Swin-T, ConvNeXt-T, MogaNet-T.
  published=dict(
    vanilla=(_, 75.66, 77.09, _, 77.76, 80.21, 79.22, 79.25),
    deit=(74.50, 79.80, 81.83, 75.10, 78.95, 81.20, 82.10, 79.02),
    mixup=(74.69, 77.72, 78.98, 75.24, 78.69, 81.01, 80.88, 79.29),
    cutmix=(73.82, 80.13, 81.61, 75.53, 79.64, 81.23, 81.57, 78.37),
    manifoldmix=(_, _, _, _, _, _, 80.57, 79.07),
    attentivemix=(74.07, 80.32, 82.42, 74.98, 79.84, 81.29, 81.14, 77.53),
    saliencymix=(_, 79.88, 80.72, 75.71, 79.69, 81.37, 81.33, 78.74),
    puzzlemix=(73.85, 80.45, 81.63, 75.48, 79.70, 81.47, 81.48, 78.12),
    fmix=(74.41, 77.37, 79.84, 75.28, 78.72, 79.60, 81.04, 79.05),
    resizemix=(74.79, 78.61, 80.89, 76.05, 79.55, 81.36, 81.64, 78.77),
    transmix=(72.92, 80.70, 82.51, 75.50, 80.50, 81.80, _, _),
    tokenmix=(75.31, 80.80, 82.90, 75.60, _, 81.60, _, _),
    smmix=(_, _, _, _, 81.03, _, _, _),
    automix=(75.52, 80.78, 82.18, 76.38, 80.64, 81.80, 82.28, 79.43),
    samix=(_, 80.94, 82.85, 76.60, 80.75, 81.87, 82.35, _),
  ),
  row_sources=dict(smmix=DOCS_PAGE),
  empty=frozenset(
    {
      ("vanilla", "deit_tiny"),
      ("vanilla", "pvt_tiny"),
      ("saliencymix", "deit_tiny"),
      ("samix", "deit_tiny"),
      ("samix", "moganet_tiny"),
    }
  ),
  doc_section="### **DeiT Training Settings with ViTs on ImageNet-1k**",
  doc_header=("Methods",),
  doc_alpha_header=("$\\alpha$",),
)

TINY_IMAGENET = Table(
  name="tiny_imagenet",
  title="Tiny-ImageNet, 400 epochs",
  metric="median",
  columns=_cols("tiny_imagenet", 400, ("resnet18", "resnext50_32x4d"), source=TINY_DOCS_PAGE),
  published=dict(
    vanilla=(61.68, 65.04),
    mixup=(63.86, 66.36),
    cutmix=(65.53, 66.47),
    manifoldmix=(64.15, 67.30),
    smoothmix=(66.65, 69.65),
    saliencymix=(64.60, 66.55),
    attentivemix=(64.85, 67.42),
    fmix=(63.47, 65.08),
    puzzlemix=(65.81, 67.83),
    comixup=(65.92, 68.02),
    resizemix=(63.74, 65.87),
    gridmix=(65.14, 66.53),
    grafting=(64.84, _),
    alignmix=(66.87, _),
    automix=(67.33, 70.72),
    samix=(68.89, 72.18),
  ),
  source=TINY_DOCS_PAGE,
)

# The four published ImageNet tables of the benchmark document (the RSB table holds A3 and A2), plus
# Tiny-ImageNet (docs page only).
IMAGENET_TABLES = (PYTORCH_100, PYTORCH_300, RSB, DEIT)
TABLES = {t.name: t for t in (*IMAGENET_TABLES, TINY_IMAGENET)}


def get_table(name: str) -> Table:
  try:
    return TABLES[name]
  except KeyError:
    raise KeyError(f"Unknown benchmark table {name!r}; valid: {', '.join(TABLES)}.") from None


def cell_source(table: Table, row: str, column: Column) -> str:
  """Where a cell's published number comes from: the document only if both its row and column are in it."""
  if table.row_source(row) != DOCUMENT:
    return table.row_source(row)
  return column.source


def cells(tables: Sequence[Table] | None = None) -> list[Cell]:
  """Every (row, column) cell of the given tables (default: all), in table order."""
  out = []
  for table in TABLES.values() if tables is None else tables:
    for row, values in table.published.items():
      for column, value in zip(table.columns, values):
        out.append(Cell(table.name, row, column, value, cell_source(table, row, column)))
  return out


def published_top1(recipe: str, method: str, model: str, epochs: int) -> float | None:
  """The published number for a run's cell, or None when no table has it."""
  for table in TABLES.values():
    for i, column in enumerate(table.columns):
      if (column.recipe, column.model, column.epochs) == (recipe, model, epochs) and method in table.published:
        return table.published[method][i]
  return None


def format_alpha(alpha) -> str:
  """The document's α notation: None → "-", 1.0 → "1", (0.8, 1.0) → "0.8, 1"."""
  if alpha is None:
    return "-"
  if isinstance(alpha, (tuple, list)):
    return ", ".join(format_alpha(a) for a in alpha)
  return f"{float(alpha):g}"


def is_transformer(model: str) -> bool:
  """Whether the benchmark reports ``model`` with the best top-1 (its family in the model registry)."""
  return models.model_family(model) == "transformer"
