"""mixjax.report on real finished demo runs: the printed table holds the results.json numbers."""

from __future__ import annotations

import json
import os

import pytest

from mixjax import report, train
from mixjax.recipes import cells, tables


def _demo_config(method):
  c = cells.load_recipe("demo").get_config(method)  # configs/demo.py, loaded like --config does
  c.model.width, c.epochs, c.log_mixed_samples = 8, 2, 0
  return c


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  out = {}
  for method in ("vanilla", "mixup"):
    workdir = str(root / method)
    out[method] = (workdir, train.train_and_evaluate(_demo_config(method), workdir))
  return root, out


def _table_cells(text: str, row_label: str) -> list[str]:
  for line in text.splitlines():
    if line.startswith(f"| {row_label} |"):
      return [c.strip() for c in line.strip().strip("|").split("|")][1:]
  raise AssertionError(f"row {row_label!r} not in:\n{text}")


def test_report_prints_the_results_json_medians(demo_runs, capsys):
  root, runs = demo_runs
  assert report.main(["--runs", runs["vanilla"][0], runs["mixup"][0]]) == 0
  text = capsys.readouterr().out
  assert "| Method | ResNet-18 |" in text
  for method, label in (("vanilla", "Vanilla"), ("mixup", "MixUp")):
    with open(os.path.join(runs[method][0], "results.json")) as f:
      results = json.load(f)
    assert results["epochs_done"] == results["total_epochs"] == 2
    # A 2-epoch CNN run reports the median of its last (≤ 5) evaluations.
    expected = results["top1_median_last5"]
    top1 = [h["top1"] for h in results["history"]]
    assert len(top1) == 2 and expected == pytest.approx((top1[0] + top1[1]) / 2)
    assert _table_cells(text, label) == [f"{expected:.2f}"]

  # A folder of runs (glob / recursive search) gives the same table.
  assert report.main([f"--runs={root}"]) == 0
  assert capsys.readouterr().out == text


def test_metric_rules_and_published_comparison():
  def run(model, epochs, recipe="pytorch_style", method="mixup", metric=None):
    config = {"recipe": {"name": recipe, "method": method, "model": model, "epochs": epochs}}
    if metric:
      config["recipe"]["report_metric"] = metric
    return report.Run(
      "x",
      recipe,
      method,
      model,
      epochs,
      dict(
        config=config,
        status="completed",
        epochs_done=epochs,
        total_epochs=epochs,
        top1_best=80.0,
        top1_median_last5=70.0,
        top1_median_last10=60.0,
        top1_last=50.0,
      ),
    )

  assert report.metric_for(run("resnet18", 100)) == "top1_median_last5"
  assert report.metric_for(run("resnet18", 300)) == "top1_median_last10"
  assert report.metric_for(run("deit_small", 300, recipe="custom")) == "top1_best"
  assert report.metric_for(run("convnext_tiny", 300, recipe="deit", metric="best")) == "top1_best"
  text = report.render([run("resnet18", 100)])
  # Our median 70.00 beside the published MixUp R-18 100-epoch number and the difference.
  published = tables.published_top1("pytorch_style", "mixup", "resnet18", 100)
  assert published == 69.98
  assert _table_cells(text, "MixUp") == [f"70.00 (69.98, {70.0 - 69.98:+.2f})"]


def test_unfinished_runs_are_marked():
  r = report.Run(
    "x",
    "rsb_a3",
    "rsb",
    "resnet50",
    100,
    dict(config={}, status="running", epochs_done=40, total_epochs=100, top1_median_last5=71.5),
  )
  cells_ = _table_cells(report.render([r]), "RSB")
  assert cells_ == ["71.50†40/100 (78.08, -6.58)"]


def test_missing_runs_dir_is_a_clear_error(tmp_path, capsys):
  assert report.main([f"--runs={tmp_path / 'nope'}"]) == 2
  assert "neither a run directory" in capsys.readouterr().err


def test_without_runs_or_published_is_a_clear_error(capsys):
  assert report.main([]) == 2
  assert "--published" in capsys.readouterr().err
  assert report.main(["--published"]) == 0
  out = capsys.readouterr().out
  assert "| SAMix*        | 2        | 70.83" in out and "DeiT-B" not in out  # the document's tables only


def test_automix_reports_the_better_encoder_like_the_reference():
  """q and k are both evaluated; the reported median is the better of their medians (OpenMixup's summary rule)."""
  from mixjax.results import reported_top1, summarize

  history = [
    {"epoch": e, "step": e, "top1": q, "top5": 0.0, "loss": 0.0, "top1_momentum": k}
    for e, (q, k) in enumerate([(50, 40), (60, 62), (61, 63), (59, 64), (62, 65), (60, 66)], 1)
  ]
  results = summarize(history, epochs_done=6, total_epochs=6, config_json={}, status="completed")
  assert results["top1_median_last5"] == 60 and results["top1_momentum_median_last5"] == 64
  assert reported_top1(results, "top1_median_last5") == 64
  assert reported_top1(results, "top1_best") == 66
  plain = summarize(
    [{k: v for k, v in h.items() if k != "top1_momentum"} for h in history],
    epochs_done=6,
    total_epochs=6,
    config_json={},
    status="completed",
  )
  assert "top1_momentum_best" not in plain and reported_top1(plain, "top1_median_last5") == 60
  # With two heads per encoder (AutoMix cells): the best head of the best encoder, here k's mixup head.
  heads = [{**h, "top1_mixhead": h["top1"] - 1, "top1_momentum_mixhead": h["top1_momentum"] + 2} for h in history]
  results = summarize(heads, epochs_done=6, total_epochs=6, config_json={}, status="completed")
  assert results["top1_mixhead_median_last5"] == 59 and results["top1_momentum_mixhead_median_last5"] == 66
  assert reported_top1(results, "top1_median_last5") == 66 and reported_top1(results, "top1_best") == 68
