"""AttentiveMix+ extractors from torchvision checkpoints: the DeiT cells' pretrained ResNet-50 loads and runs
(it used to fail with a shape error: the extractor model defaulted to ResNet-18), the architecture is read off
the state_dict, and a contradicting explicit extractor is a clear error."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from mixjax import mixing
from mixjax.mixing.model_aware import attentivemix
from mixjax.recipes import cells, tables

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchvision") is None:  # looked up, not imported: it crashes beside TensorFlow
  pytest.skip("torchvision is not installed", allow_module_level=True)

# torchvision runs in a subprocess: it writes a ResNet-50 state_dict (.pth) and the parameter shapes of the
# architectures the tests read (JSON); this process only loads them with plain torch.
_MAKE_CHECKPOINTS = """
import json, sys, torch, torchvision
out = sys.argv[1]
torch.manual_seed(0)
torch.save(torchvision.models.resnet50().state_dict(), out + "/resnet50_torchvision.pth")
builders = {
  "resnet18": lambda: torchvision.models.resnet18(),
  "resnet34": lambda: torchvision.models.resnet34(),
  "resnet101": lambda: torchvision.models.resnet101(),
  "resnext101_32x4d": lambda: torchvision.models.ResNet(
    torchvision.models.resnet.Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4),
  "resnet50_200": lambda: torchvision.models.resnet50(num_classes=200),
}
shapes = {name: {k: list(v.shape) for k, v in build().state_dict().items()} for name, build in builders.items()}
json.dump(shapes, open(out + "/shapes.json", "w"))
"""


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
  out = tmp_path_factory.mktemp("extractor")
  subprocess.run([sys.executable, "-c", _MAKE_CHECKPOINTS, str(out)], check=True, timeout=600)
  return out


@pytest.fixture(scope="module")
def r50_checkpoint(torchvision_files):
  path = torchvision_files / "resnet50_torchvision.pth"
  return str(path), torch.load(path, map_location="cpu")


def _deit_cell_hp(**overrides):
  """The DeiT-S AttentiveMix+ cell's typed hyper-parameters, as its run's plan builds them."""
  cell = next(c for c in tables.cells([tables.DEIT]) if c.row == "attentivemix" and c.column.model == "deit_small")
  mixing_config = cells.build_cell_config(cell).mixing
  mixing_config.args.attentivemix.update(overrides)
  (mode,) = mixing.resolve_mixing_config(mixing_config).modes
  return mode.hyper_parameters


def test_deit_cell_loads_a_torchvision_resnet50(r50_checkpoint):
  path, state_dict = r50_checkpoint
  hp = _deit_cell_hp(extractor_checkpoint=path)
  assert hp.extractor == "resnet50" and hp.extractor_checkpoint == path
  params, stats = attentivemix.load_extractor_weights(hp)
  np.testing.assert_array_equal(
    np.asarray(params["stem_conv"]["kernel"]), np.transpose(state_dict["conv1.weight"].numpy(), (2, 3, 1, 0))
  )
  np.testing.assert_array_equal(np.asarray(stats["stem_bn"]["mean"]), state_dict["bn1.running_mean"].numpy())
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 224, 224, 3)), jnp.float32)
  grid = attentivemix.attention_grid(attentivemix.extractor_fn(hp), params, stats, images, 224)
  assert grid.shape == (2, 7, 7) and bool(jnp.all(jnp.isfinite(grid))) and float(jnp.std(grid)) > 0
  # 'auto' reads the same architecture and head size off the checkpoint.
  assert attentivemix._extractor_spec(dataclasses.replace(hp, extractor="auto"))[::2] == ("resnet50", 1000)


def test_explicit_extractor_contradicting_the_checkpoint_is_refused(r50_checkpoint):
  path, _ = r50_checkpoint
  hp = attentivemix.AttentiveMix.Params(extractor="resnet18", extractor_checkpoint=path)
  with pytest.raises(ValueError, match="holds a resnet50.*extractor='resnet50'"):
    attentivemix.load_extractor_weights(hp)


@pytest.mark.parametrize(
  "name,key,num_classes",
  [
    ("resnet18", "resnet18", 1000),
    ("resnet34", "resnet34", 1000),
    ("resnet101", "resnet101", 1000),
    ("resnext101_32x4d", "resnext101_32x4d", 1000),
    ("resnet50", "resnet50_200", 200),
  ],
)
def test_architecture_is_read_off_the_state_dict(torchvision_files, name, key, num_classes):
  state_shapes = json.load(open(torchvision_files / "shapes.json"))[key]
  shapes = {f"module.{k}": tuple(v) for k, v in state_shapes.items()}  # prefixed keys too
  assert attentivemix.infer_torch_resnet(shapes) == (name, num_classes)
