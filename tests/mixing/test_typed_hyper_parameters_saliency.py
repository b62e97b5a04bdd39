"""Typed hyper-parameters of PuzzleMix, Co-Mixup, Saliency Grafting, SuperMix, AutoMix and SAMix: a value of the
wrong type or an unknown choice stops the config with one error naming ``config.mixing.args.<method>.<key>``;
values of the right type arrive typed (a YAML/CLI integer for a float field becomes a float, a list a tuple)."""

import dataclasses

import pytest

from mixjax import mixing
from mixjax.config_args import ConfigError

# (method, key, wrong value, what the message must say the key accepts)
WRONG = [
  ("puzzlemix", "block_num", "four", "int"),
  ("puzzlemix", "solver", "graph_cut", "'row_dp' or 'chain_descent'"),
  ("puzzlemix", "transport", 1, "bool"),
  ("comixup", "m_part", 2.5, "int"),
  ("comixup", "m_thres_type", "linear", "'hard' or 'soft'"),
  ("comixup", "prior_alpha", "beta", "float or 'alpha'"),
  ("comixup", "solver", "graph_cut", "'row_dp' or 'chain'"),
  ("grafting", "grid", "8", "int"),
  ("grafting", "temperature", "hot", "float"),
  ("supermix", "k", "two", "int"),
  ("supermix", "success_test", "topk", "'distinct' or 'authors'"),
  ("supermix", "teacher_kwargs", 8, "dict"),
  ("automix", "lam_margin", "small", "float"),
  ("automix", "lam_embedding", "add", "'concat' or 'mul' or 'none'"),
  ("automix", "mask_loss_schedule", "linear", "'cosine' or 'compounding' or 'constant'"),
  ("automix", "mixblock_momentum", "fast", "float or None"),
  ("samix", "qk_input", "concat", "'shared' or 'pair_concat'"),
  ("samix", "mixblock_lr_by_epoch", "yes", "bool or None"),
]


def _resolve(method, args):
  return mixing.resolve_mixing_config({"method": method, "alpha": 1.0, "args": {method: args}})


@pytest.mark.parametrize("method,key,value,accepts", WRONG)
def test_wrong_type_or_choice_is_a_config_error_naming_the_key(method, key, value, accepts):
  with pytest.raises(ConfigError) as error:
    _resolve(method, {key: value})
  message = str(error.value)
  assert f"config.mixing.args.{method}.{key} must be {accepts}" in message, message
  assert repr(value) in message


@pytest.mark.parametrize("method", ["puzzlemix", "comixup", "grafting", "supermix", "automix", "samix"])
def test_unknown_key_is_a_config_error_listing_the_valid_ones(method):
  with pytest.raises(ConfigError, match=rf"unknown hyper-parameter\(s\) \['lam_margn'\] for mixing method '{method}'"):
    _resolve(method, {"lam_margn": 0.1})


def test_values_arrive_typed():
  hp = _resolve("comixup", {"m_beta": 1, "prior_alpha": "alpha", "m_part": 8.0}).modes[0].hyper_parameters
  assert hp.m_beta == 1.0 and type(hp.m_beta) is float
  assert hp.m_part == 8 and type(hp.m_part) is int
  assert hp.prior_alpha == "alpha"
  hp = _resolve("automix", {"mixblock_momentum": 0, "mixblock_lr": None}).modes[0].hyper_parameters
  assert hp.mixblock_momentum == 0.0 and type(hp.mixblock_momentum) is float and hp.mixblock_lr is None
  hp = _resolve("supermix", {"teacher_kwargs": {"width": 8}}).modes[0].hyper_parameters
  assert hp.teacher_kwargs == {"width": 8}


def test_samix_defaults_differ_from_automix_only_in_its_design_loss_and_eta():
  """SAMix's Params subclasses AutoMix's: the shared fields are declared once, seven defaults differ."""
  automix = dataclasses.asdict(mixing.get_method("automix").step.hyper_parameters())
  samix = dataclasses.asdict(mixing.get_method("samix").step.hyper_parameters())
  assert set(automix) == set(samix)
  differ = {k: (automix[k], samix[k]) for k in automix if automix[k] != samix[k]}
  assert differ == {
    "lam_embedding": ("concat", "mul"),
    "qk_input": ("shared", "pair_concat"),
    "value_net": ("linear", "conv_neck"),
    "value_dropout": (0.0, 0.1),
    "upsample": ("nearest", "bilinear"),
    "mask_variance_weight": (0.0, 2.0),
    "mixblock_loss_eta": (0.0, 0.1),
  }
