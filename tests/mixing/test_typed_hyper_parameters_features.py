"""Typed hyper-parameters (issue 13) of AlignMix, TransMix, TokenMix and AttentiveMix+: a value of the wrong type
or a choice outside a ``Literal`` stops the config before anything compiles, with a message naming
``config.mixing.args.<method>.<key>``; valid values arrive converted to the field's type."""

import pytest

from mixjax import mixing
from mixjax.config_args import ConfigError


def _resolve(method, **args):
  return mixing.resolve_mixing_config({"method": method, "alpha": 1.0, "args": {method: args}})


def _hp(method, **args):
  (mode,) = _resolve(method, **args).modes
  return mode.hyper_parameters


@pytest.mark.parametrize(
  "method,key,value,expected",
  [
    ("alignmix", "max_iter", "many", "must be int"),
    ("alignmix", "eps", "small", "must be float"),
    ("alignmix", "manifoldmix_prob", True, "must be float"),
    ("alignmix", "manifoldmix_layer", [0, 1, 2], "must be a list"),
    ("transmix", "ratio", "half", "must be float"),
    ("tokenmix", "minimum_tokens", 1.5, "must be int"),
    ("tokenmix", "mask_type", "grid", "must be 'block' or 'random'"),
    ("tokenmix", "label_rule", "reference", "must be 'paper' or 'openmixup'"),
    ("attentivemix", "top_k", "six", "must be int"),
    ("attentivemix", "feat_size", 22.5, "must be int"),
    ("attentivemix", "extractor_bn", "frozen", "must be 'eval' or 'train'"),
    ("attentivemix", "extractor_kwargs", "width=8", "must be dict"),
    ("attentivemix", "allow_random_extractor", "yes", "must be bool"),
  ],
)
def test_wrong_type_or_choice_is_a_config_error_naming_the_key(method, key, value, expected):
  with pytest.raises(ConfigError, match=f"config.mixing.args.{method}.{key} {expected}"):
    _resolve(method, **{key: value})


@pytest.mark.parametrize("method", ["alignmix", "transmix", "tokenmix", "attentivemix"])
def test_unknown_key_is_a_config_error_listing_the_valid_ones(method):
  with pytest.raises(ConfigError, match=f"unknown hyper-parameter.*'typo'.*{method}"):
    _resolve(method, typo=1)


def test_valid_values_arrive_typed():
  align = _hp("alignmix", manifoldmix_layer=[0, 2], max_iter=5.0, eps=1)
  assert align.manifoldmix_layer == (0, 2) and align.max_iter == 5 and isinstance(align.max_iter, int)
  assert isinstance(align.eps, float) and align.manifoldmix_prob == 0.0
  assert _hp("transmix", ratio=1).ratio == 1.0
  token = _hp("tokenmix", label_rule="openmixup")
  assert (token.mask_type, token.minimum_tokens, token.label_rule) == ("block", 14, "openmixup")
  attentive = _hp("attentivemix", extractor="resnet50", extractor_bn="train", extractor_kwargs={"width": 8})
  assert attentive.extractor_kwargs == {"width": 8} and attentive.extractor_bn == "train"
  assert attentive.top_k == 0 and attentive.feat_size == 224 and attentive.allow_random_extractor is False


def test_defaults_come_from_params():
  """``defaults`` (what ``config.mixing.args.<method>`` starts from) is derived from each method's Params."""
  assert mixing.get_method("alignmix").step.defaults == {
    "eps": 0.1,
    "max_iter": 100,
    "manifoldmix_prob": 0.0,
    "manifoldmix_layer": (0, 3),
  }
  assert mixing.get_method("transmix").step.defaults == {"ratio": 0.5}
  assert mixing.get_method("tokenmix").step.defaults == {
    "mask_type": "block",
    "minimum_tokens": 14,
    "label_rule": "paper",
  }
  assert mixing.get_method("attentivemix").step.defaults == {
    "extractor": "auto",
    "extractor_kwargs": {},
    "extractor_num_classes": 1000,
    "extractor_checkpoint": "",
    "allow_random_extractor": False,
    "feat_size": 224,
    "top_k": 0,
    "extractor_bn": "eval",
  }
