"""The timm "ResNet strikes back" recipes A2 / A3 as OpenMixup runs them (spec §3.2): the settings both share
(LAMB, BCE, RandAugment, evaluation); ``configs/rsb_a3.py`` holds the method rows (one α column for both
variants in the benchmark table) and each of ``configs/rsb_a2.py`` / ``rsb_a3.py`` its backbones and settings.

Wightman, Touvron, Jégou. ResNet strikes back: An improved training procedure in timm. 2021.
"""

from __future__ import annotations

from typing import Any, Mapping

from mixjax.recipes import base

# wd 0 on BN and biases (`(bn|gn)(\d+)?.(weight|bias)` or "bias"): all of them are 1-D parameters here, except
# that the regex misses the ResNet downsample BN, named by its index in mmcv ("downsample.1.weight"): its scale is
# still decayed, its bias not (spec §3.2 PITFALL). The cells reproduce that; EfficientNet-B0 and MobileNetV2 have
# no such parameter. --config.optimizer.wd_include=() excludes every 1-D parameter (the regex's evident intent).
REFERENCE_WD_MISS = r"(^|/)downsample/1/scale$"

LAMB = dict(
  name="lamb",
  b1=0.9,
  b2=0.999,
  eps=1e-6,
  weight_decay=0.02,
  wd_exclude_1d=True,
  wd_exclude=(),
  wd_include=(REFERENCE_WD_MISS,),
  warmup_epochs=5.0,
  warmup_start_ratio=1e-5,
  min_lr=1e-6,
  schedule_by_epoch=True,
  grad_clip_norm=0.0,
)


def build(
  arg: str | None,
  *,
  recipe: str,
  methods: Mapping[str, Mapping[str, Any]],
  backbones: Mapping[str, Mapping[str, Any]],
  settings: Mapping[str, Any],
):
  args = base.recipe_args(arg, recipe=recipe, rows=methods, default_model="resnet50", default_epochs=settings["epochs"])
  model, epochs = args["model"], args["epochs"]
  c = base.skeleton(recipe=recipe, method=args["method"], model=model, epochs=epochs, report_metric="median")
  c.batch_size = settings["batch_size"]
  c.compute_dtype = "bfloat16"  # the reference trains in fp16 (apex O1); params stay float32
  base.set_data(
    c,
    name="imagenet2012",
    num_classes=1000,
    pp_train=(
      f"{base.random_resized_crop(settings['train_size'])}|flip_lr|randaugment_timm('{settings['randaugment']}')"
    ),
    pp_eval=base.center_crop_eval(224, 0.95),  # resize 236 → crop 224
    repeated_aug=settings.get("repeated_aug", 0),
  )
  base.model_kwargs(c, backbones.get(model, {}))
  base.set_optimizer(c, lr=settings["lr"], base_batch_size=settings["batch_size"], **LAMB)
  # BCE on the mixed one-hot targets, OpenMixup's reduction (sum over classes, mean over the batch; spec §1.2).
  c.loss.name = "bce"
  c.loss.bce_reduction = "sum_classes"
  base.apply_row(c, base.resolve_row(methods, args["method"], model))
  return c
