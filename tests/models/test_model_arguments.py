"""``config.model``: the backbone's name and keyword arguments, as a user sets them on the command line."""

import os

import pytest
from flax import nnx

from mixjax import config_loading, models, train_state
from tests.helpers import REPO


def test_model_section_takes_the_models_own_keywords_and_names_a_misspelt_one():
  """``config.model`` holds the backbone's keyword arguments: one the recipe does not set may be added
  (``--config.model.init=torch_default``, docs/deviations.md), one the model does not take is an error naming it."""
  spec = os.path.join(REPO, "configs", "rsb_a3.py") + ":cutmix"
  config = config_loading.config_from_args(spec, [("model.init", "torch_default"), ("model.width", "8")])
  assert config.model.init == "torch_default"
  config.model.name = "resnet18"
  model = train_state.build_model(config, 10, nnx.Rngs(0))
  assert model.head.num_classes == 10
  config = config_loading.config_from_args(spec, [("model.inti", "torch_default")])
  with pytest.raises(models.UnknownModelError, match=r"resnet50 takes no argument 'inti' \(config.model.inti\)"):
    nnx.eval_shape(lambda: train_state.build_model(config, 10, nnx.Rngs(0)))
