"""Every registered mixing method trains the demo config end to end (a few steps, in process, 4 devices)."""

import json
import math

import ml_collections
import pytest

from mixjax import mixing, train
from tests.helpers import demo_config


# Methods that need a transformer's class-token attention run the demo on a tiny DeiT (4×4 patches of 32 px).
TINY_VIT = dict(name="deit_tiny", patch_size=4, img_size=32, depth=4, embed_dim=32, num_heads=2)
NEEDS_VIT = ("transmix", "tokenmix")


def _config(method):
  config = demo_config(method)
  config.max_steps = 2
  config.log_mixed_samples = 4
  name = config.mixing.method
  if name in NEEDS_VIT:
    config.model = ml_collections.ConfigDict(TINY_VIT)
  if name == "attentivemix":
    # A randomly initialised extractor exercises the mechanics only (a real run points extractor_checkpoint
    # at a trained model; tests/mixing/test_model_aware.py does that with a real run's checkpoint).
    config.mixing.args.attentivemix.allow_random_extractor = True
    config.mixing.args.attentivemix.feat_size = 32
    config.mixing.args.attentivemix.extractor_kwargs = {"stem": "cifar", "width": 8}
  if name == "comixup":
    config.mixing.args.comixup.m_part = 8  # groups of 8: the solver's work on 32 px digits in a ninth of the time
  if name == "supermix":
    # A random, small teacher (a real run points teacher_checkpoint at a trained model; tests/mixing/
    # test_supermix.py loads one from a real run's checkpoint) and a few Newton steps: the mechanics only.
    config.mixing.args.supermix.allow_random_teacher = True
    config.mixing.args.supermix.teacher = "resnet18"
    config.mixing.args.supermix.teacher_kwargs = {"stem": "cifar", "width": 8}
    config.mixing.args.supermix.teacher_num_classes = 10
    config.mixing.args.supermix.max_iter = 1
  if name in ("automix", "samix"):  # as the table cells: the mixed losses through a second head
    config.model.mix_head = True
    config.mixing.args[name].separate_heads = True
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
  if method in ("automix", "samix"):  # both encoders, each with both heads, as the reference validates
    assert {"top1_momentum", "top1_mixhead", "top1_momentum_mixhead"} <= set(entry)
    assert "top1_momentum_mixhead_best" in results


def test_decouple_loss_trains(tmp_path):
  config = _config("cutmix")
  config.loss.name = "decouple"
  results = train.train_and_evaluate(config, str(tmp_path))
  assert math.isfinite(results["history"][-1]["loss"])


def test_demo_config_arg_selects_method_model_epochs():
  config = _config("cutmix,model=resnet34,epochs=7")
  assert (config.mixing.method, config.model.name, config.epochs) == ("cutmix", "resnet34", 7)
  assert config.mixing.alpha == 1.0


def test_transmix_trains_a_swin_on_its_pooled_token_attention(tmp_path):
  """Swin has no class token: TransMix reads the pooled token's attention over the last stage. A two-stage
  Swin on 32 px digits has a 4×4 last map of stride 8 in 2×2 windows, shifted in its second block, so the
  step exercises the window partition, the roll and the stride-to-pixel mapping inside the sharded train step."""
  config = demo_config("transmix")
  config.max_steps = 2
  config.model = ml_collections.ConfigDict(
    dict(name="swin_tiny", embed_dim=8, depths=(2, 2), num_heads=(1, 2), window=2)
  )
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["status"] == "completed"
  (entry,) = results["history"]
  assert math.isfinite(entry["loss"]) and 0.0 <= entry["top1"] <= 100.0
