"""The RSB cells' weight-decay mask is the reference's: its regex, applied to mmcv's parameter names, leaves the
ResNet downsample BN scale decayed (spec §3.2 PITFALL); ``optimizer.wd_include=()`` excludes every 1-D parameter."""

import re

import jax
import pytest

from mixjax import optim, train_state
from mixjax.config_loading import apply_overrides
from mixjax.recipes import cells

# The reference RSB configs' paramwise options (spec §3.2): wd 0 where one of these is searched in the name.
REFERENCE_NO_WD = (r"(bn|gn)(\d+)?.(weight|bias)", r"bias")


def _mmcv_name(path: str) -> str:
  """Our ResNet parameter path as mmcv's ResNet names it: 'stages/1/0/downsample/1/scale' ->
  'layer2.0.downsample.1.weight', 'stem_bn/scale' -> 'bn1.weight', 'head/fc/bias' -> 'head.fc.bias'."""
  path = path.replace("stem_conv/", "conv1/").replace("stem_bn/", "bn1/")
  path = re.sub(r"^stages/(\d+)/", lambda m: f"layer{int(m.group(1)) + 1}/", path)
  path = re.sub(r"/(scale|kernel)$", "/weight", path)
  return path.replace("/", ".")


def _mask(config):
  _, params, _ = train_state.model_fn_and_shapes(config, 1000)
  mask = optim.weight_decay_mask(params, config.optimizer)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return {optim.param_path(p): (decayed, leaf.ndim) for (p, leaf), decayed in zip(leaves, jax.tree.leaves(mask))}


@pytest.mark.parametrize("recipe", ["rsb_a3", "rsb_a2"])
def test_rsb_resnet50_decays_exactly_the_downsample_bn_scales_among_1d_parameters(recipe):
  c = cells.load_recipe(recipe).get_config("rsb")
  assert c.model.name == "resnet50"
  flat = _mask(c)
  decayed_1d = sorted(name for name, (decayed, ndim) in flat.items() if decayed and ndim <= 1)
  assert decayed_1d == [f"stages/{i}/0/downsample/1/scale" for i in range(4)]
  assert all(decayed for decayed, ndim in flat.values() if ndim > 1)
  # The same mask as the reference's rule on mmcv's names, parameter by parameter.
  for name, (decayed, _) in flat.items():
    reference_decays = not any(re.search(p, _mmcv_name(name)) for p in REFERENCE_NO_WD)
    assert decayed == reference_decays, (name, _mmcv_name(name))


def test_the_flag_restores_excluding_every_1d_parameter():
  c = cells.load_recipe("rsb_a3").get_config("rsb")
  apply_overrides(c, [("optimizer.wd_include", "()")])
  assert tuple(c.optimizer.wd_include) == ()
  flat = _mask(c)
  assert all(decayed == (ndim > 1) for decayed, ndim in flat.values())


@pytest.mark.parametrize("model", ["efficientnet_b0", "mobilenet_v2"])
def test_rsb_mobile_nets_exclude_every_1d_parameter_as_before(model):
  c = cells.load_recipe("rsb_a3").get_config(f"rsb,model={model}")
  flat = _mask(c)
  assert any(ndim <= 1 for _, ndim in flat.values())
  assert all(decayed == (ndim > 1) for decayed, ndim in flat.values())


def test_wd_include_overrides_both_exclusions():
  params = {"a": {"bn": {"scale": jax.numpy.ones(3)}, "pos_embed": jax.numpy.ones((2, 3))}, "w": jax.numpy.ones((3, 3))}
  cfg = optim.default_optimizer_config()
  cfg.update(wd_exclude_1d=True, wd_exclude=("pos_embed",), wd_include=())
  assert jax.tree.leaves(optim.weight_decay_mask(params, cfg)) == [False, False, True]
  cfg.wd_include = ("bn/scale$", "pos_embed")
  assert jax.tree.leaves(optim.weight_decay_mask(params, cfg)) == [True, True, True]
