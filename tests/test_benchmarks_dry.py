"""The benchmark scripts of issue 14 at tiny sizes: the accelerator suite's CPU dry mode, the compiled-cost table
and the input-pipeline workers. Behaviour only (what is produced and how the numbers relate), never wall-clock."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))  # method_cost imports mixing_overhead
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def test_accelerator_suite_cpu_dry_writes_one_complete_json(tmp_path):
  out = tmp_path / "suite.json"
  env = dict(os.environ, PYTHON=sys.executable)
  proc = subprocess.run(
    [os.path.join(REPO, "benchmarks", "accelerator_suite.sh"), "--cpu-dry", f"--out={out}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["mode"] == "cpu-dry" and report["platform"] == "cpu"
  assert report["errors"] == {} and report["skipped"] == []
  assert report["throughput"]["jax_images_per_s"] > 0
  if "images_per_s" in report["torch"]:
    assert report["throughput"]["jax_over_torch"] > 0
  else:
    assert "skipped" in report["torch"]
  methods = report["methods"]
  assert set(methods) == {"vanilla", "cutmix", "automix"}
  assert all(m["loss_finite"] for m in methods.values())
  assert methods["cutmix"]["ratio"]["gflops"] == pytest.approx(1.0, abs=0.01)
  automix = report["automix_samix"]["automix"]
  # AutoMix's passes: 2 classifier fwd+bwd, 1 encoder fwd, 1 encoder fwd + input bwd ≈ 3× a vanilla step.
  assert 2.7 < automix["flops_ratio"] < 3.4
  assert automix["memory_ratio"] > 1.0 and automix["time_ratio"] > 1.0
  cell = report["cell"]
  assert cell["status"] == "ok", cell["error"]
  assert cell["train_shape"][1:] == [64, 64, 3] and math.isfinite(cell["loss"])
  # A new process gets the vanilla step from the step cache, without tracing it (a key that differed between the
  # processes would compile instead).
  cached = report["step_cache"]
  assert cached["repeated_source"] == "step cache", cached
  assert 0 < cached["repeated_load_s"] and cached["ratio"] == pytest.approx(
    cached["repeated_load_s"] / cached["cold_compile_s"]
  )


def test_method_cost_table_and_accounting_at_a_tiny_size():
  mc = _load("method_cost")
  args = mc.step_args("resnet18", 32, 2, "float32")
  rows = {m: mc.method_cost(m, args) for m in ("vanilla", "mixup")}
  for r in rows.values():
    assert r["flops"] > 0 and r["bytes"] > 0 and r["peak"] >= r["temp"] > 0
  assert rows["mixup"]["flops"] / rows["vanilla"]["flops"] == pytest.approx(1.0, abs=0.01)
  table = mc.markdown_table(rows, "tiny")
  assert "| mixup |" in table and "flops ≤ 1.01× ✓" in table
  passes = mc.pass_costs("resnet18", 32, 2, "float32")
  f = {k: v["flops"] for k, v in passes.items()}
  # A backward to the parameters costs about two forwards, one to the input only about one.
  assert 2.5 < f["fwd_bwd_params"] / f["fwd"] < 3.5
  assert 1.5 < f["fwd_bwd_input"] / f["fwd"] < 2.5
  assert f["fwd_feature"] < f["fwd"]
  acc = mc.automix_accounting(passes, rows["vanilla"]["flops"], 2)
  assert acc["predicted"] == pytest.approx(sum(acc["terms"].values()))
  # The vanilla step is the same fwd+bwd plus the optimizer (which dominates at this tiny size).
  assert f["fwd_bwd_params"] < rows["vanilla"]["flops"] < acc["predicted"]


def test_input_pipeline_workers_measure_the_same_recipe_in_both_frameworks():
  ip = _load("input_pipeline")
  rows = ip.recipe_specs(["pytorch_style", "rsb_a3"])
  names = [r["name"] for r in rows]
  assert names == ["pytorch_style train", "rsb_a3 train", "eval 224 0.875", "eval 224 0.95"]
  assert rows[0]["spec"].startswith("decode_jpeg_and_random_resized_crop(224") and rows[0]["torch"][1] == 224
  assert "randaugment_timm('rand-m6" in rows[1]["spec"] and rows[1]["torch"][2] == "rand-m6-mstd0.5-inc1"
  common = ["--batch=8", "--seconds=0.5", f"--data_dir={os.environ['TFDS_DATA_DIR']}", "--ncores=1"]
  tf_out = ip._run_worker(["--worker=tf", f"--spec={rows[1]['spec']}", "--split=train", *common], timeout=600)
  assert tf_out.get("images_per_s", 0) > 0, tf_out
  tf_eval = ip._run_worker(["--worker=tf", f"--spec={rows[3]['spec']}", "--split=eval", *common], timeout=600)
  assert tf_eval.get("images_per_s", 0) > 0, tf_eval
  if ip._torch_available():
    folder = ip.export_jpegs(os.environ["TFDS_DATA_DIR"])
    assert sum(len(files) for _, _, files in os.walk(folder)) == 768 + 1  # + the completion marker
    th = ip._run_worker(
      ["--worker=torch", f"--torch_kind={json.dumps(rows[1]['torch'])}", f"--folder={folder}", *common], timeout=600
    )
    assert th.get("images_per_s", 0) > 0, th
