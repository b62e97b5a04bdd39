"""The timm "ResNet strikes back" recipes A2 / A3 as OpenMixup runs them (spec §3.2); shared by
``configs/rsb_a2.py`` and ``configs/rsb_a3.py``, which hold the per-variant tables.

Wightman, Touvron, Jégou. ResNet strikes back: An improved training procedure in timm. 2021.
"""

from __future__ import annotations

from typing import Any, Mapping

from mixjax.recipes import base

# SaliencyMix cells: the reference hands OpenCV the normalised float tensor (docs/deviations.md, SaliencyMix).
_SALIENCYMIX_CELL = {"saliencymix": {"saliency": "reference"}}

# wd 0 on BN and biases (`(bn|gn)(\d+)?.(weight|bias)` or "bias"): all of them are 1-D parameters here.
# Deviation: the reference regex misses the downsample BN's scale (spec §3.2 PITFALL); we exclude it too.

# Rows of the RSB table (README α column), shared by its A2 and A3 columns (configs/rsb_a2.py, rsb_a3.py).
# "rsb" is the recipe's own Mixup 0.1 / CutMix 1.0 50/50 switch.
METHODS = {
  "rsb": dict(method=("mixup", "cutmix"), alpha=(0.1, 1.0)),
  "vanilla": dict(method="vanilla", alpha=1.0),
  "mixup": dict(method="mixup", alpha=0.2),
  "cutmix": dict(method="cutmix", alpha=0.2),
  "manifoldmix": dict(method="manifoldmix", alpha=0.2),
  # The RSB configs list attentivemix args but define no backbone_k (spec 2.5): like the PyTorch-style rows, a
  # pretrained torchvision ResNet-18 (args.attentivemix.extractor_checkpoint).
  "attentivemix": dict(method="attentivemix", alpha=2.0, args={"attentivemix": {"extractor": "resnet18"}}),
  "saliencymix": dict(method="saliencymix", alpha=0.2, args=_SALIENCYMIX_CELL),
  # FMix*: the reference (official FMix) spectrum produced the published numbers; the paper's is one flag away.
  "fmix": dict(method="fmix", alpha=0.2, args={"fmix": {"spectrum": "reference"}}),
  "puzzlemix": dict(method="puzzlemix", alpha=1.0),
  "resizemix": dict(method="resizemix", alpha=1.0),
  # No reference AutoMix/SAMix config exists for RSB: the registered (paper) defaults; ResNet-50 with its last
  # residual BN zero-initialised, as every AutoMixup run initialises (mmcv zero_init_residual=True).
  "automix": dict(method="automix", alpha=2.0, per_model={"resnet50": {"model": {"zero_init_residual": True}}}),
  "samix": dict(method="samix", alpha=2.0, per_model={"resnet50": {"model": {"zero_init_residual": True}}}),
}

LAMB = dict(
  name="lamb",
  b1=0.9,
  b2=0.999,
  eps=1e-6,
  weight_decay=0.02,
  wd_exclude_1d=True,
  wd_exclude=(),
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
