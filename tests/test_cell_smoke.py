"""benchmarks/cell_smoke.py: benchmark cells at their real shapes, one train step and one eval batch each.

CI runs a small representative subset (a few minutes on 2 cores): the RSB-A3 ResNet-50 cell (160 px train /
224 px eval, RandAugment, LAMB + BCE, bf16, the Mixup/CutMix switch), DeiT-S with TransMix (224 px, RandAugment +
random erasing, AdamW, EMA) and the Tiny-ImageNet ResNet-18 (64 px, CIFAR stem). The issue's larger subset (every
method once on the RSB-A3 ResNet-50 cell, every backbone once) runs with MIXJAX_CELL_SMOKE_FULL=1; every cell:
``python benchmarks/cell_smoke.py --all --isolate``.
"""

import importlib.util
import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


cell_smoke = _load("cell_smoke")

CI_CELLS = {
  # cell: (train image side, eval image side)
  "rsb_a3:rsb:resnet50": (160, 224),
  "deit:transmix:deit_small": (224, 224),
  "tiny_imagenet:cutmix:resnet18": (64, 64),
}

FULL = os.environ.get("MIXJAX_CELL_SMOKE_FULL") == "1"
FULL_CELLS = (
  [
    f"rsb_a3:{m}:resnet50"
    for m in (
      "vanilla",
      "mixup",
      "cutmix",
      "manifoldmix",
      "attentivemix",
      "saliencymix",
      "fmix",
      "puzzlemix",
      "resizemix",
      "automix",
      "samix",
    )
  ]
  + [f"pytorch_style:{m}:resnet50" for m in ("gridmix", "alignmix")]
  + ["deit:tokenmix:deit_small", "tiny_imagenet:smoothmix:resnet18"]
  + [f"pytorch_style:vanilla:{m}" for m in ("resnet18", "resnet34", "resnet101", "resnext101_32x4d")]
  + [f"rsb_a3:vanilla:{m}" for m in ("efficientnet_b0", "mobilenet_v2")]
  + [f"deit:deit:{m}" for m in ("deit_tiny", "pvt_tiny", "swin_tiny", "convnext_tiny", "moganet_tiny")]
)


def _check_ok(result, train_side, eval_side, per_device_batch=2):
  assert result.status == "ok", result.error
  import jax

  batch = per_device_batch * jax.device_count()
  assert result.train_shape == (batch, train_side, train_side, 3)
  assert result.eval_shape[1:] == (eval_side, eval_side, 3)
  assert math.isfinite(result.loss) and result.loss > 0
  assert 0.0 <= result.eval_top1 <= 100.0
  assert result.peak_gb > 0 and result.temp_gb > 0
  assert result.compile_s > 0 and result.step_s > 0


@pytest.mark.parametrize("cell", sorted(CI_CELLS))
def test_ci_cell_trains_and_evaluates_at_its_real_shape(cell):
  ((key, config_string),) = cell_smoke.select_cells(cells=[cell])
  assert key == cell
  result = cell_smoke.smoke_cell(
    config_string, key=key, steps=1, per_device_batch=2, eval_per_device_batch=2, eval_batches=1
  )
  _check_ok(result, *CI_CELLS[cell])


@pytest.mark.skipif(not FULL, reason="the issue's larger subset: set MIXJAX_CELL_SMOKE_FULL=1 (about an hour)")
@pytest.mark.parametrize("cell", FULL_CELLS)
def test_full_subset_cell(cell):
  ((key, config_string),) = cell_smoke.select_cells(cells=[cell])
  result = cell_smoke.smoke_cell(
    config_string, key=key, steps=1, per_device_batch=2, eval_per_device_batch=2, eval_batches=1
  )
  assert result.status == "ok", result.error


def test_selection_covers_tables_once_per_shape():
  everything = cell_smoke.select_cells(all_cells=True)
  keys = [k for k, _ in everything]
  assert len(keys) == len(set(keys))
  # The 100- and 300-epoch PyTorch-style tables share their shapes: run once.
  assert "pytorch_style:mixup:resnet50" in keys
  rsb = cell_smoke.select_cells(tables=["rsb"])
  assert {k.split(":")[0] for k, _ in rsb} == {"rsb_a2", "rsb_a3"}
  assert {"rsb_a3:automix:resnet50", "rsb_a2:puzzlemix:mobilenet_v2"} <= {k for k, _ in rsb}
  # Pending cells are left out unless asked for.
  pending = cell_smoke.select_cells(tables=["deit"], implemented_only=False)
  assert len(pending) > len(cell_smoke.select_cells(tables=["deit"]))
  # Config strings and recipe:method:model name the same cell.
  assert cell_smoke._split_cells("rsb_a3:rsb:resnet50,configs/deit.py:deit,model=deit_tiny,epochs=300") == [
    "rsb_a3:rsb:resnet50",
    "configs/deit.py:deit,model=deit_tiny,epochs=300",
  ]


def test_pending_cell_is_reported_not_run():
  result = cell_smoke.smoke_cell("configs/deit.py:smmix,model=deit_small,epochs=300")
  assert result.status == "not implemented"
  assert "smmix" in result.error


def test_resume_keeps_finished_cells_and_runs_failed_ones_again(tmp_path, capsys):
  """A sweep of hours writes its JSON after every cell; --resume goes on from it."""
  import json

  path = tmp_path / "cells.json"
  done = cell_smoke.CellResult(
    cell="tiny_imagenet:cutmix:resnet18", config_string="configs/tiny_imagenet.py:cutmix", status="ok", compile_s=123.0
  )
  crashed = cell_smoke.CellResult(
    cell="deit:smmix:deit_small", config_string="configs/deit.py:smmix", status="failed", error="killed"
  )
  cell_smoke._write_results(str(path), [done, crashed])
  argv = [
    "--cells=tiny_imagenet:cutmix:resnet18,deit:smmix:deit_small",
    "--include_pending",
    f"--json={path}",
    "--resume",
    "--quiet",
  ]
  assert cell_smoke.main(argv) == 0
  by_cell = {r["cell"]: r for r in json.loads(path.read_text())}
  assert by_cell["tiny_imagenet:cutmix:resnet18"]["compile_s"] == 123.0  # kept, not run again
  assert by_cell["deit:smmix:deit_small"]["status"] == "not implemented"  # the failed one ran again
  assert not os.path.exists(f"{path}.tmp")
  # --report summarises a JSON per recipe (ok, failed, compile and step seconds) and lists every row.
  capsys.readouterr()
  assert cell_smoke.main([f"--report={path}"]) == 0
  report = capsys.readouterr().out
  assert "| tiny_imagenet | 1 | 1 | 0 | 123.0 / 123.0 |" in report
  assert "| deit | 1 | 0 | 0 | – / – |" in report and "| all | 2 | 1 | 0 |" in report
  assert "`deit:smmix:deit_small` | not implemented" in report


def test_cells_that_need_a_network_or_a_group_get_what_lets_them_run():
  """SuperMix/AttentiveMix+ without a checkpoint get a random network; Co-Mixup one whole group per device."""
  shared = dict(per_device_batch=2, num_devices=1, steps=1, dataset="mixjax_photos/in1k", data_dir=None)
  supermix = cell_smoke.load_cell_config("configs/pytorch_style.py:supermix,model=resnet18")
  cell_smoke.smoke_overrides(supermix, **shared)
  assert supermix.mixing.args.supermix.allow_random_teacher and supermix.batch_size == 2
  attentive = cell_smoke.load_cell_config("configs/rsb_a3.py:attentivemix,model=resnet50")
  cell_smoke.smoke_overrides(attentive, **shared)
  assert attentive.mixing.args.attentivemix.allow_random_extractor
  comixup = cell_smoke.load_cell_config("configs/pytorch_style.py:comixup,model=resnet18")
  cell_smoke.smoke_overrides(comixup, **shared)
  assert comixup.batch_size == 16  # m_part = 16, the authors' ImageNet group
  cell_smoke.smoke_overrides(comixup, **{**shared, "per_device_batch": 40, "num_devices": 2})
  assert comixup.batch_size == 64  # two whole groups on each of two devices
