"""Every registered mixing method trains the demo config end to end (a few steps, in process, 4 devices)."""
import importlib.util
import json
import math
import os

import pytest

from mixjax import mixing, train

DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")


def _config(method):
  spec = importlib.util.spec_from_file_location("demo_cfg_methods", DEMO)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(method)
  config.model.width = 8
  config.max_steps = 2
  config.log_mixed_samples = 4
  return config


@pytest.mark.parametrize("method", mixing.list_methods())
def test_demo_trains_with_method(method, tmp_path):
  config = _config(method)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["status"] == "completed"
  assert results["config"]["mixing"]["method"] == method
  (entry,) = results["history"]
  assert entry["step"] == 2 and math.isfinite(entry["loss"])
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["history"] == results["history"]


def test_decouple_loss_trains(tmp_path):
  config = _config("cutmix")
  config.loss.name = "decouple"
  results = train.train_and_evaluate(config, str(tmp_path))
  assert math.isfinite(results["history"][-1]["loss"])


def test_demo_config_arg_selects_method_model_epochs():
  config = _config("cutmix,model=resnet34,epochs=7")
  assert (config.mixing.method, config.model.name, config.num_epochs) == ("cutmix", "resnet34", 7)
  assert config.mixing.alpha == 1.0
