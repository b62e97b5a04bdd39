"""The published tables equal the benchmark document cell for cell.

The benchmark document (OpenMixup's ``configs/classification/imagenet/mixups/README.md``) lies verbatim in
``../shared/reference/benchmark_tables.md`` beside the repository (the CI clone has ``shared/`` next to it).
This test parses its four markdown tables and compares them with ``mixjax.recipes.tables`` and with what
``python -m mixjax.report --published`` prints: headers, row order, labels (📖, ``*``), the α column, every number,
and which cells are "-" or empty.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from mixjax import report
from mixjax.recipes import cells, tables

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCUMENT = REPO.parent / "shared" / "reference" / "benchmark_tables.md"

_SEPARATOR = re.compile(r"^:?-+:?$")


def parse_markdown_tables(text: str) -> list[list[list[str]]]:
  """Every markdown table of ``text``: a list of rows, each a list of stripped cell strings (the alignment row
  ``|---|:---:|`` dropped)."""
  out, current = [], []
  for line in text.splitlines() + [""]:
    stripped = line.strip()
    if stripped.startswith("|"):
      cells = [c.strip() for c in stripped.strip("|").split("|")]
      if not all(_SEPARATOR.match(c) for c in cells):
        current.append(cells)
    elif current:
      out.append(current)
      current = []
  return out


@pytest.fixture(scope="module")
def document_text() -> str:
  if not DOCUMENT.exists():
    pytest.skip(f"the benchmark document is not here: {DOCUMENT} (expected ../shared/reference/ beside the repo)")
  return DOCUMENT.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def document_tables(document_text) -> list[list[list[str]]]:
  parsed = parse_markdown_tables(document_text)
  assert len(parsed) == 4, f"the benchmark document should hold 4 tables, found {len(parsed)}"
  return parsed


def _number(cell: str):
  return None if cell in ("", "-") else float(cell)


def test_every_cell_of_the_document_equals_ours(document_tables):
  """Numbers, α and blanks, by row label and column: a '-' or empty document cell has no number here."""
  checked = 0
  for table, doc in zip(tables.IMAGENET_TABLES, document_tables):
    header_rows = len(table.doc_header)
    columns = table.document_columns()
    # Column headings (each header row) in the document's order.
    for h in range(header_rows):
      assert doc[h][0] == table.doc_header[h] and doc[h][1] == table.doc_alpha_header[h], table.name
      assert doc[h][2:] == [c.doc_heading[h] for c in columns], table.name
    body = doc[header_rows:]
    # Same rows in the same order, with the document's labels.
    assert [r[0] for r in body] == [table.label(r) for r in table.document_rows()], table.name
    positions = [i for i, c in enumerate(table.columns) if c.in_document]
    for row_name, doc_row in zip(table.document_rows(), body):
      assert len(doc_row) == 2 + len(columns), (table.name, doc_row)
      assert doc_row[1] == tables.format_alpha(cells.document_alpha(table, row_name)), (table.name, row_name)
      for i, doc_cell, column in zip(positions, doc_row[2:], columns):
        ours = table.published[row_name][i]
        where = (table.name, row_name, column.label)
        expected = _number(doc_cell)
        if expected is None:
          assert ours is None, f"{where}: the document has no number ({doc_cell!r}) but we publish {ours}"
          assert ((row_name, column.model) in table.empty) == (doc_cell == ""), where
        else:
          assert ours == pytest.approx(expected, abs=1e-9), where
        checked += 1
  assert checked == 5 * 15 + 4 * 11 + 6 * 11 + 6 * 14


def test_rows_and_columns_outside_the_document_say_where_they_come_from(document_tables):
  for table, doc in zip(tables.IMAGENET_TABLES, document_tables):
    labels = {r[0] for r in doc[len(table.doc_header) :]}
    for row in table.published:
      if table.label(row) in labels:
        assert table.row_source(row) == tables.DOCUMENT, (table.name, row)
      else:
        assert table.row_source(row) != tables.DOCUMENT and "not in the benchmark document" in table.row_source(row), (
          table.name,
          row,
        )
    for column in table.columns:
      if not column.in_document:
        assert "not in the benchmark document" in column.source, (table.name, column.label)
  # The cell list marks them too.
  off = [c for c in tables.cells(tables.IMAGENET_TABLES) if not c.in_document]
  assert {(c.table, c.row) for c in off if c.column.in_document} == {
    ("pytorch_style_100ep", "deit"),
    ("pytorch_style_100ep", "gridmix"),
    ("pytorch_style_300ep", "gridmix"),
    ("deit", "smmix"),
  }
  assert {c.column.model for c in off if c.table == "deit" and c.row == "mixup"} == {"deit_base", "pvt_small"}
  assert not tables.TINY_IMAGENET.source == tables.DOCUMENT


def test_report_published_prints_the_document(document_text, document_tables, capsys):
  """``python -m mixjax.report --published`` gives the document's tables and section headings, cell for cell."""
  assert report.main(["--published"]) == 0
  printed = capsys.readouterr().out
  assert parse_markdown_tables(printed) == document_tables
  headings = [line for line in printed.splitlines() if line.startswith("###")]
  assert headings == [
    line for line in document_text.splitlines() if line.startswith("### **") and "Getting Started" not in line
  ]
  # The known corrections against the docs-page copy (issue 11) are in.
  assert tables.published_top1("pytorch_style", "saliencymix", "resnet18", 300) == 70.21
  assert tables.published_top1("pytorch_style", "samix", "resnet50", 100) == 78.06
  assert tables.published_top1("deit", "transmix", "deit_tiny", 300) == 72.92
  assert tables.published_top1("rsb_a2", "automix", "resnet50", 300) is None
