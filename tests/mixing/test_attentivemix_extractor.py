"""AttentiveMix+ extractors from torchvision checkpoints: the DeiT cells' pretrained ResNet-50 loads and runs
(it used to fail with a shape error: the extractor model defaulted to ResNet-18), the architecture is read off
the state_dict, and a contradicting explicit extractor is a clear error."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing.model_aware import attentivemix
from mixjax.recipes import cells, tables

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
  torch.manual_seed(0)
  state_dict = torchvision.models.resnet50().state_dict()
  path = tmp_path_factory.mktemp("extractor") / "resnet50_torchvision.pth"
  torch.save(state_dict, path)
  return str(path), state_dict


def _deit_cell_hp():
  cell = next(c for c in tables.cells([tables.DEIT]) if c.row == "attentivemix" and c.column.model == "deit_small")
  return dict(cells.build_cell_config(cell).mixing.args.attentivemix.to_dict())


def test_deit_cell_loads_a_torchvision_resnet50(r50_checkpoint):
  path, state_dict = r50_checkpoint
  hp = dict(_deit_cell_hp(), extractor_checkpoint=path)
  assert hp["extractor"] == "resnet50"
  params, stats = attentivemix.load_extractor_weights(hp)
  np.testing.assert_array_equal(np.asarray(params["stem_conv"]["kernel"]),
                                np.transpose(state_dict["conv1.weight"].numpy(), (2, 3, 1, 0)))
  np.testing.assert_array_equal(np.asarray(stats["stem_bn"]["mean"]), state_dict["bn1.running_mean"].numpy())
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 224, 224, 3)), jnp.float32)
  grid = attentivemix.attention_grid(attentivemix.extractor_fn(hp), params, stats, images, 224)
  assert grid.shape == (2, 7, 7) and bool(jnp.all(jnp.isfinite(grid))) and float(jnp.std(grid)) > 0
  # 'auto' reads the same architecture and head size off the checkpoint.
  assert attentivemix._extractor_spec(dict(hp, extractor="auto"))[::2] == ("resnet50", 1000)


def test_explicit_extractor_contradicting_the_checkpoint_is_refused(r50_checkpoint):
  path, _ = r50_checkpoint
  hp = dict(attentivemix.AttentiveMix.defaults, extractor="resnet18", extractor_checkpoint=path)
  with pytest.raises(ValueError, match="holds a resnet50.*extractor='resnet50'"):
    attentivemix.load_extractor_weights(hp)


@pytest.mark.parametrize("name,builder,kwargs", [
    ("resnet18", "resnet18", {}), ("resnet34", "resnet34", {}), ("resnet101", "resnet101", {}),
    ("resnext101_32x4d", "resnext101_32x4d", {}), ("resnet50", "resnet50", {"num_classes": 200})])
def test_architecture_is_read_off_the_state_dict(name, builder, kwargs):
  model = getattr(torchvision.models, builder)(**kwargs) if hasattr(torchvision.models, builder) else \
      torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
  shapes = {f"module.{k}": tuple(v.shape) for k, v in model.state_dict().items()}   # prefixed keys too
  assert attentivemix.infer_torch_resnet(shapes) == (name, kwargs.get("num_classes", 1000))
