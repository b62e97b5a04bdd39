"""Registry behaviour, parameter counts and stage-feature shapes of every registered model.

Everything here is abstract (``nnx.eval_shape``): big nets are counted and traced without allocating
weights or compiling, so this file stays cheap even for ResNet-101.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mixjax.models import UnknownModelError, build_model, count_params, list_models

# Reference parameter counts at 1000 classes (torchvision / timm exact counts; papers where timm lacks the model).
REFERENCE_PARAMS = {
  "resnet18": 11_689_512,
  "resnet34": 21_797_672,
  "resnet50": 25_557_032,
  "resnet101": 44_549_160,
  "resnext101_32x4d": 44_177_704,
  "efficientnet_b0": 5_288_548,
  "mobilenet_v2": 3_504_872,
  "deit_tiny": 5_717_416,
  "deit_small": 22_050_664,
  "convnext_tiny": 28_589_128,
  "swin_tiny": 28_288_354,
  "pvt_tiny": 13_230_000,  # published 13.23M (rounded)
  "moganet_tiny": 5_200_000,  # published 5.20M (rounded)
}


def abstract_model(name, **kwargs):
  return nnx.eval_shape(lambda: build_model(name, num_classes=1000, rngs=nnx.Rngs(0), **kwargs))


def test_core_models_are_registered():
  names = list_models()
  for required in ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x4d"):
    assert required in names
  assert names == sorted(names)


def test_every_registered_model_has_a_reference_count():
  missing = set(list_models()) - set(REFERENCE_PARAMS)
  assert not missing, f"add reference parameter counts for {missing}"


def test_unknown_name_lists_valid_names():
  with pytest.raises(UnknownModelError) as err:
    build_model("resnet5O", num_classes=10, rngs=nnx.Rngs(0))
  assert isinstance(err.value, ValueError)
  for name in list_models():
    assert name in str(err.value)


def test_bad_kwargs_are_rejected_with_the_choices():
  with pytest.raises(ValueError, match="imagenet"):
    build_model("resnet18", num_classes=10, rngs=nnx.Rngs(0), stem="tiny")
  with pytest.raises(ValueError, match="kaiming"):
    build_model("resnet18", num_classes=10, rngs=nnx.Rngs(0), init="xavier")


@pytest.mark.parametrize("name", list_models())
def test_param_count_and_feature_shapes(name):
  """Count within 0.5% of the reference; at 224 and 160 px (variable resolution) logits are float32
  [B, 1000] and stage features match the documented ``feature_shapes`` contract."""
  model = abstract_model(name)
  n, ref = count_params(model), REFERENCE_PARAMS[name]
  assert abs(n - ref) / ref < 0.005, f"{name}: {n} params vs reference {ref}"
  for size in (224, 160):
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    logits, feats = nnx.eval_shape(lambda m, x: m(x, False, return_features=True), model, x)
    assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
    assert feats["pre_logits"].shape == (2, model.num_features)
    expected = model.feature_shapes(size, size)
    assert set(expected) == set(model.stage_names)
    for stage, hwc in expected.items():
      assert feats[stage].shape == (2, *hwc), (name, size, stage)


def test_resnet_cifar_stem_strides_and_width():
  model = abstract_model("resnet50", stem="cifar", width=16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  _, feats = nnx.eval_shape(lambda m, x: m(x, False, return_features=True), model, x)
  assert feats["stage0"].shape == (2, 32, 32, 16)
  assert feats["stage1"].shape == (2, 32, 32, 64)
  assert feats["stage4"].shape == (2, 4, 4, 512)


def test_count_excludes_batch_stats():
  model = abstract_model("resnet18")
  stats = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
  assert stats > 0
  total = sum(x.size for x in jax.tree.leaves(nnx.state(model)))
  assert count_params(model) == total - stats - _non_param_non_stat(model)


def _non_param_non_stat(model):
  rest = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.BatchStat)))
  return sum(getattr(x, "size", 0) for x in jax.tree.leaves(rest))


def test_cli_flop_count_and_table(capsys):
  """``python -m mixjax.models``: XLA counts 2 FLOPs per multiply-add; torchvision quotes ResNet-18 at
  1.82 GMACs (XLA skips taps that fall on padding, hence the tolerance)."""
  from mixjax.models.__main__ import forward_flops, main

  flops = forward_flops(abstract_model("resnet18"), 224)
  assert 0.9 * 2 * 1.82e9 < flops < 1.1 * 2 * 1.82e9
  main(["--no-flops", "--models", "resnet50"])
  row = capsys.readouterr().out.splitlines()[-1].split()
  assert row[:2] == ["resnet50", "25.56"] and row[4] == "stage0..4"


def test_every_model_has_a_family_the_report_reads():
  """The reporting rule (best top-1 for transformers, median for CNNs) comes from the registry, not name prefixes."""
  from mixjax.models import model_family
  from mixjax.recipes import tables

  transformers = {name for name in list_models() if model_family(name) == "transformer"}
  assert transformers == {"deit_tiny", "deit_small", "pvt_tiny", "swin_tiny"}
  assert all(model_family(name) in ("cnn", "transformer") for name in list_models())
  assert tables.is_transformer("swin_tiny") and not tables.is_transformer("convnext_tiny")
