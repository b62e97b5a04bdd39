"""Table cells run what produced their published numbers: each check reads the resolved config of a cell (the
cell API: exactly what ``--config=<cell.config_string>`` resolves to) against the value of the reference config
named beside it (OpenMixup snapshot 37e1372; spec = ``../shared/reference/openmixup_spec.md``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixjax import models, train_state
from mixjax.recipes import cells, tables

DEIT_S_AUTOMIX = "automix/deit/deit_s_l6_a2_near_lam_cat_switch0_8_8x128_ep300.py"
SWIN_T_AUTOMIX = "automix/swin/swin_t_l2_a2_near_lam_cat_switch0_8_8x128_ep300.py"
TINY_AUTOMIX = "tiny_imagenet/automix/basic/r18_l2_a2_near_mb_mlr1e_3_bb_mlr5e_2.py"
TINY_SAMIX = "tiny_imagenet/samix/basic/r18_l2_a2_bili_val_dp0_mul_mb_mlr1e_3_bb_mlr5e_2.py"
TINY_SAMIX_RX50 = "tiny_imagenet/samix/basic/rx50_l2_a2_bili_val_dp0_mul_mb_mlr1e_3_bb_mlr5e_2.py"
DEIT_ATTENTIVEMIX = "mixups/deit/deit_small/deit_small_smooth_attentivemix_a2_4xb256_ep300.py"
R50_ATTENTIVEMIX = "mixups/basic/r50_attentivemix_CE_none_4xb64.py"


def _cells(table: str, row: str, models_=None) -> list[tables.Cell]:
  out = [
    c
    for c in tables.cells([tables.get_table(table)])
    if c.row == row and (models_ is None or c.column.model in models_)
  ]
  assert out, (table, row, models_)
  return out


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _check(cell_list, expected: dict, reference: str):
  for cell in cell_list:
    config = cells.build_cell_config(cell)
    for key, want in expected.items():
      got = _get(config, key)
      assert got == pytest.approx(want) if isinstance(want, float) else got == want, (
        f"{cell.config_string}: {key} = {got!r}, reference {reference} has {want!r}"
      )


VIT = ("deit_tiny", "deit_small", "deit_base", "pvt_tiny", "pvt_small", "swin_tiny", "convnext_tiny", "moganet_tiny")


@pytest.mark.parametrize("row", ["automix", "samix"])
def test_vit_family_learned_mask_rows_follow_the_automix_vit_configs(row):
  hp = f"mixing.args.{row}"
  _check(
    _cells("deit", row),
    {
      f"{hp}.mixblock_update_prob": 0.8,  # switch_off=0.8
      f"{hp}.mixblock_min_lr": 1e-4,  # addtional_scheduler min_lr=1e-4
      f"{hp}.mixblock_warmup_epochs": 0.0,  # addtional_scheduler without a warmup= key (spec review note 3)
      f"{hp}.mixblock_lr_by_epoch": False,  # by_epoch=False
      f"{hp}.momentum_scope_start": 0.25,  # CosineScheduleHook adjust_scope=[0.25, 1.0]
      f"{hp}.mask_loss_schedule": "compounding",  # CustomCosineAnnealingHook restarting from the current value
      f"{hp}.mixblock_loss_eta": 0.0,  # no η term (head_mix_k neg_weight 1, spec 2.15)
    },
    DEIT_S_AUTOMIX,
  )
  _check(
    [c for c in _cells("deit", row) if c.column.model != "convnext_tiny"],
    {f"{hp}.momentum_end": 0.99999},
    DEIT_S_AUTOMIX,
  )  # end_momentum=0.99999
  # DeiT: block 6 of 12 (out_indices=(5, 11)); Swin: the stride-16 map like the AutoMix row (the config's 7×7×768
  # map cannot be upsampled ×16 to 224 px, spec 2.14 PITFALL); the others their stride-16 stage.
  for model in ("deit_tiny", "deit_small", "deit_base"):
    _check(_cells("deit", row, [model]), {f"{hp}.feature": "stage2"}, DEIT_S_AUTOMIX)
  _check(_cells("deit", row, ["swin_tiny"]), {f"{hp}.feature": "stage2"}, SWIN_T_AUTOMIX)
  for model in ("pvt_tiny", "pvt_small", "convnext_tiny", "moganet_tiny"):
    _check(_cells("deit", row, [model]), {f"{hp}.feature": "stage3"}, "automix/{pvt,convnext}/ (stride 16)")
  _check(
    _cells("deit", row, ["convnext_tiny"]),
    {f"{hp}.momentum_end": 0.99996},
    "automix/convnext/convnext_t_l2_a2_near_lam_cat_switch0_8_8x128_accu4_ep300.py",
  )
  # DeiT-S trains with drop path 0.1 in the AutoMix config (the mixup rows keep 0).
  _check(_cells("deit", row, ["deit_small"]), {"model.drop_path_rate": 0.1}, DEIT_S_AUTOMIX)
  assert "drop_path_rate" not in cells.build_cell_config(_cells("deit", "mixup", ["deit_small"])[0]).model
  # SAMix keeps its own MixBlock design (mul / pair-concat / ConvNeck / bilinear).
  if row == "samix":
    _check(
      _cells("deit", row),
      {
        f"{hp}.lam_embedding": "mul",
        f"{hp}.qk_input": "pair_concat",
        f"{hp}.value_net": "conv_neck",
        f"{hp}.upsample": "bilinear",
      },
      "samix/basic/r50_l2_a2_bili_val_dp01_mul_mb_mlr1e_3_bb_mlr0_4xb64.py",
    )


def test_deit_stage2_is_the_output_of_block_6():
  """The "stage2" feature the DeiT rows tap is the token map after block 6 of 12 (the reference's index 5)."""
  model = models.build_model(
    "deit_tiny", num_classes=10, rngs=nnx.Rngs(0), embed_dim=32, depth=12, num_heads=2, img_size=32, patch_size=8
  )
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  _, base = model(x, train=False, return_features=True)
  for block, changed, unchanged in ((6, "stage3", "stage2"), (5, "stage2", "stage1")):  # 0-indexed blocks 7, 6
    m = models.build_model(
      "deit_tiny", num_classes=10, rngs=nnx.Rngs(0), embed_dim=32, depth=12, num_heads=2, img_size=32, patch_size=8
    )
    nnx.update(m.blocks[block], jax.tree.map(lambda p: p + 0.5, nnx.state(m.blocks[block], nnx.Param)))
    _, feats = m(x, train=False, return_features=True)
    np.testing.assert_array_equal(np.asarray(feats[unchanged]), np.asarray(base[unchanged]))
    assert float(jnp.max(jnp.abs(feats[changed] - base[changed]))) > 1e-3


def test_attentivemix_extractors():
  _check(_cells("deit", "attentivemix"), {"mixing.args.attentivemix.extractor": "resnet50"}, DEIT_ATTENTIVEMIX)
  for table in ("pytorch_style_100ep", "rsb"):
    _check(_cells(table, "attentivemix"), {"mixing.args.attentivemix.extractor": "resnet18"}, R50_ATTENTIVEMIX)


def test_tiny_imagenet_automix_and_samix_follow_the_tiny_configs():
  common = {
    "momentum_end": 0.999999,  # CosineScheduleHook end_momentum=0.999999
    "momentum_scope_start": 0.1,  # adjust_scope=[0.1, 1.0]
    "mixblock_lr": 0.1,  # paramwise_options mix_block lr=0.1
    "mixblock_min_lr": 1e-3,  # addtional_scheduler min_lr=1e-3
    "mask_loss_weight": 0.1,  # mask_loss=0.1 ...
    "mask_loss_schedule": "constant",  # ... and no CustomCosineAnnealingHook
    "mixblock_loss_eta": 0.0,
  }  # soft-CE head_mix_k: neg_weight touches zero-target classes only
  for row, reference, extra in (
    ("automix", TINY_AUTOMIX, {"lam_embedding": "none"}),  # lam_concat=False, lam_mul=False
    (
      "samix",
      TINY_SAMIX,
      {
        "value_dropout": 0.0,
        "lam_embedding": "mul",  # with_last_dropout=0
        "lam_mul_k": -1.0,
      },
    ),
  ):  # lam_mul_k=-1
    hp = {f"mixing.args.{row}.{k}": v for k, v in {**common, **extra}.items()}
    _check(
      _cells("tiny_imagenet", row, ["resnet18"]),
      {
        **hp,
        "optimizer.min_lr": 5e-2,  # lr_config min_lr=5e-2
        "optimizer.lr": 0.2,
        "batch_size": 100,  # SGD lr=0.2, 1×100
        "model.zero_init_residual": True,
      },
      reference,
    )  # AutoMixup init_weights
  _check(_cells("tiny_imagenet", "samix", ["resnext50_32x4d"]), {"mixing.args.samix.lam_mul_k": 0.25}, TINY_SAMIX_RX50)


def test_fmix_cells_use_the_reference_spectrum():
  fmix_cells = [c for c in tables.cells() if c.row == "fmix"]
  assert len(fmix_cells) == 5 + 4 + 6 + 8 + 2
  _check(fmix_cells, {"mixing.args.fmix.spectrum": "reference"}, "openmixup/models/augments/fmix.py (FMix*)")


def test_automix_samix_resnet_cells_zero_init_the_residual_bn():
  """AutoMixup always runs mmcv's init_weights (zero_init_residual=True); mixup rows keep the default init."""
  learned = [
    c for c in tables.cells() if c.row in ("automix", "samix") and c.column.model.startswith(("resnet", "resnext"))
  ]
  assert len(learned) > 20
  _check(learned, {"model.zero_init_residual": True}, "openmixup/models/classifiers/automix.py init_weights")
  config = cells.build_cell_config(_cells("pytorch_style_100ep", "automix", ["resnet18"])[0])
  assert (
    "zero_init_residual" not in cells.build_cell_config(_cells("pytorch_style_100ep", "mixup", ["resnet18"])[0]).model
  )
  # The option really zeroes the last BN scale of every residual block (and nothing else).
  config.model.width = 8
  model = train_state.build_model(config, 10, nnx.Rngs(0))
  for stage in model.stages:
    for block in stage:
      np.testing.assert_array_equal(np.asarray(block.bn2.scale[...]), 0.0)
      np.testing.assert_array_equal(np.asarray(block.bn1.scale[...]), 1.0)


def test_tiny_imagenet_smoothmix_uses_the_reference_label_weights():
  _check(
    _cells("tiny_imagenet", "smoothmix"),
    {"mixing.args.smoothmix.label_weights": "reference"},
    "openmixup/models/augments/smoothmix.py (λ = mean(G) returned as the weight of y_a, spec 2.6)",
  )


def test_automix_samix_cells_train_the_mixed_loss_through_their_own_head():
  """AutoMixup's classifier has head_one (clean CE, evaluated) and head_mix (mixed CE, and the MixBlock loss
  through k's copy): every AutoMix/SAMix cell builds the second head and routes the mixed losses through it."""
  learned = [c for c in tables.cells() if c.row in ("automix", "samix")]
  assert len(learned) > 30
  for cell in learned:
    config = cells.build_cell_config(cell)
    assert config.model.mix_head is True, cell
    assert config.mixing.args[cell.row].separate_heads is True, cell
  # Reference: openmixup/models/classifiers/automix.py (head_one, head_mix; spec 2.14), as configured by
  # DEIT_S_AUTOMIX, SWIN_T_AUTOMIX, TINY_AUTOMIX and the mixups/basic AutoMix configs.


def test_gridmix_cells_use_the_reference_grid():
  grid_cells = [c for c in tables.cells() if c.row == "gridmix"]
  assert grid_cells
  _check(grid_cells, {"mixing.args.gridmix.crop": "reference"}, "openmixup/models/augments/gridmix.py rand_grid")
