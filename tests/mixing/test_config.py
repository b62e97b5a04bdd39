"""Registry and config validation: clear errors up front."""

import jax
import jax.numpy as jnp
import pytest

from mixjax import mixing


def test_unknown_method_error_lists_valid_names():
  cfg = mixing.default_mixing_config()
  cfg.method = "mixupp"
  with pytest.raises(mixing.UnknownMixMethodError) as err:
    mixing.validate_mixing_config(cfg)
  for name in mixing.list_methods("input"):
    assert name in str(err.value)
  assert isinstance(err.value, ValueError)


def test_unknown_name_inside_a_list_and_in_args():
  cfg = mixing.default_mixing_config()
  cfg.method = ["mixup", "cutmixx"]
  cfg.alpha = [0.2, 1.0]
  with pytest.raises(mixing.UnknownMixMethodError, match="cutmixx"):
    mixing.validate_mixing_config(cfg)
  cfg = mixing.default_mixing_config()
  cfg.args.nosuchmix = {"a": 1}
  with pytest.raises(mixing.UnknownMixMethodError, match="nosuchmix"):
    mixing.validate_mixing_config(cfg)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("alpha", [0.1, 1.0, 2.0], "alpha' has 3 entries"),
    ("prob", [1.0], "prob' has 1 entries"),
    ("prob", [0.7, 0.7], "sum to 1"),
    ("prob", [-0.5, 1.5], ">= 0"),
  ],
)
def test_list_mismatches_are_reported(field, value, message):
  cfg = mixing.default_mixing_config()
  cfg.method = ["mixup", "cutmix"]
  cfg.alpha = [0.1, 1.0]
  setattr(cfg, field, value)
  with pytest.raises(ValueError, match=message):
    mixing.validate_mixing_config(cfg)


def test_bad_alpha_and_unknown_hyper_parameter():
  cfg = mixing.default_mixing_config()
  cfg.method, cfg.alpha = "cutmix", 0.0
  with pytest.raises(ValueError, match="must be > 0"):
    mixing.validate_mixing_config(cfg)
  cfg = mixing.default_mixing_config()
  cfg.args.mixup.pair = "flip"
  with pytest.raises(ValueError, match="valid: .*pairing"):
    mixing.validate_mixing_config(cfg)


def test_defaults_carry_every_method_hyper_parameter_and_resolve():
  cfg = mixing.default_mixing_config()
  for name in mixing.list_methods("input"):
    method = mixing.get_method(name)
    for key in method.defaults:
      assert key in cfg.args[name], (name, key)
  cfg.method = list(mixing.list_methods("input"))
  cfg.alpha = [1.0] * len(cfg.method)
  plan = mixing.resolve_mixing_config(cfg)
  assert [m.method.name for m in plan.modes] == mixing.list_methods("input")
  assert sum(plan.probs) == pytest.approx(1.0)
  # Overrides land in the resolved hyper-parameters.
  cfg.args.mixup.pairing = "flip"
  cfg.args.gridmix.crop = "reference"
  plan = mixing.resolve_mixing_config(cfg)
  modes = {m.method.name: m for m in plan.modes}
  assert modes["mixup"].hyper_parameters.pairing == "flip"
  assert modes["gridmix"].hyper_parameters.crop == "reference"
  assert modes["cutmix"].hyper_parameters.pairing == "permutation"


def test_mix_batch_rejects_integer_labels_and_non_nhwc():
  cfg = mixing.default_mixing_config()
  images = jnp.zeros((4, 8, 8, 3))
  with pytest.raises(ValueError, match="one-hot"):
    mixing.mix_batch(cfg, jax.random.key(0), images, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="NHWC"):
    mixing.mix_batch(cfg, jax.random.key(0), images[0], jnp.zeros((4, 3)))
