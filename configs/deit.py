"""DeiT-style ImageNet recipe for Transformers and modern ConvNets, 300 epochs (OpenMixup benchmark table 4;
spec §3.3).

    python -m mixjax.main --config=configs/deit.py:cutmix,model=swin_tiny --workdir=runs/x

Argument: ``<method>[,model=NAME][,epochs=N]``; model defaults to deit_small, epochs to 300. Shared settings:
RandomResizedCrop 224 + flip + RandAugment (timm ``rand-m{M}-mstd0.5-inc1``) + random erasing p 0.25; AdamW
(0.9, 0.999), lr 5e-4 per 512 images (1e-3 at 1024, 4e-3 at 4096), cosine stepped per iteration with linear
warmup; label smoothing 0.1; no decay on 1-D parameters (norms, biases, layer scales) nor on the per-backbone
regexes below. Per-backbone batch / warmup / min lr / clipping / drop path / EMA are in ``BACKBONES``. Reported
metric: best top-1 (the README averages the best of 3 trials).

MogaNet-T, the one BatchNorm network here, normalises per group of 256 images (the reference's per-GPU BN) and
re-estimates its BN statistics on 8192 training samples after every epoch (the reference's PreciseBN hook). Not
reproduced: fp16 (we use bfloat16).

Initialisation: every backbone here uses its timm/mmcls-style init (trunc-normal 0.02 Linear layers, LayerNorm
1/0, …; ``init=`` on the model). The reference's mixup configs for DeiT-S/B, Swin-T and ConvNeXt-T never run
their initialiser (no model-level ``init_cfg``, and ``tools/train.py`` never calls ``init_weights``; spec §4), so
those reference runs trained from PyTorch's layer defaults with zero ``cls_token``/``pos_embed``; DeiT-T, PVT-T
and MogaNet-T (model-level ``init_cfg``) and every AutoMix/SAMix run (``AutoMixup`` calls ``init_weights``) do
initialise. ``--config.model.init=torch_default`` is the reference's uninitialised variant where a model offers it.
"""

from mixjax.recipes import base

# SaliencyMix cells: the reference hands OpenCV the normalised float tensor (docs/deviations.md, SaliencyMix).
_SALIENCYMIX_CELL = {"saliencymix": {"saliency": "reference"}}

RECIPE = "deit"
DEFAULT_MODEL = "deit_small"
DEFAULT_EPOCHS = 300

_DEIT_EMA = {"ema.decay": 0.99996, "ema.warmup_epochs": 20.0, "optimizer.min_lr": 1e-4}

# Rows of the DeiT-family table (README α column).
# AutoMix in the ViT-family configs (spec 2.14 + review notes 3-4; automix/deit/deit_s_l6_a2_near_lam_cat_
# switch0_8_8x128_ep300.py, automix/swin/swin_t_l2_a2_near_lam_cat_switch0_8_8x128_ep300.py, …/pvt/, …/convnext/):
# MixBlock lr = the classifier's, per-iteration cosine to 1e-4 without warmup (addtional_scheduler, no warmup=
# key), updated on 80% of the steps (switch_off=0.8), momentum ramp from 25% of training (adjust_scope
# [0.25, 1]), the reference's compounding mask-loss schedule (CustomCosineAnnealingHook). The MixBlock reads a
# stride-16 feature map: DeiT's block-6 output ("stage2" = blocks 4-6 done; the config's out_indices=(5, 11),
# "use 6-layer for MixBlock"), Swin's stage after the second patch merging ("stage2", 14×14×384: the config's
# 7×7×768 map with ×16 upsampling cannot reach 224 px, spec 2.14 PITFALL), ConvNeXt/PVT/MogaNet "stage3".
# The mixed CE trains its own head (head_mix), the clean CE the evaluated head_one (AutoMixup's four heads).
# DeiT-S AutoMix trains with drop path 0.1 (the AutoMix config; the recipe's mixup rows use 0).
_AUTOMIX_VIT = {
  "mixblock_min_lr": 1e-4,
  "mixblock_warmup_epochs": 0.0,
  "mixblock_lr_by_epoch": False,
  "mixblock_update_prob": 0.8,
  "momentum_scope_start": 0.25,
  "mask_loss_schedule": "compounding",
  "separate_heads": True,
}
# SAMix: the snapshot has no ViT-family SAMix config; the same AutoMixup training loop as the AutoMix rows above
# (same feature tap, schedules, switch-off, drop path), with SAMix's MixBlock design (registered defaults) and,
# as in every reference SAMix config, no η-balanced MixBlock loss (head_mix_k neg_weight 1: spec 2.15).
_SAMIX_VIT = {**_AUTOMIX_VIT, "mixblock_loss_eta": 0.0}


def _learned_mask_per_model(name: str, hp: dict) -> dict:
  return {
    **{m: {"args": {name: {**hp, "feature": "stage2"}}} for m in ("deit_tiny", "deit_base", "swin_tiny")},
    "deit_small": {"args": {name: {**hp, "feature": "stage2"}}, "model": {"drop_path_rate": 0.1}},
    "convnext_tiny": {"args": {name: {**hp, "momentum_end": 0.99996}}},
  }


METHODS = {
  "vanilla": dict(method="vanilla", alpha=1.0),
  # The recipe's own Mixup 0.8 / CutMix 1.0 50/50 switch; MogaNet-T's "DeiT" row uses Mixup α 0.1.
  "deit": dict(method=("mixup", "cutmix"), alpha=(0.8, 1.0), per_model={"moganet_tiny": {"alpha": (0.1, 1.0)}}),
  "mixup": dict(method="mixup", alpha=0.2),
  "cutmix": dict(method="cutmix", alpha=0.2),
  "manifoldmix": dict(method="manifoldmix", alpha=0.2),
  # AttentiveMix+ with a pretrained torchvision ResNet-50 extractor (deit_small_smooth_attentivemix_a2_4xb256_
  # ep300.py: backbone_k torchvision://resnet50); give its weights with args.attentivemix.extractor_checkpoint.
  "attentivemix": dict(
    method="attentivemix", alpha=2.0, args={"attentivemix": {"extractor": "resnet50", "extractor_bn": "train"}}
  ),
  "saliencymix": dict(method="saliencymix", alpha=0.2, args=_SALIENCYMIX_CELL),
  "puzzlemix": dict(method="puzzlemix", alpha=1.0),
  # FMix*: the reference (official FMix) spectrum produced the published numbers; the paper's is one flag away.
  "fmix": dict(method="fmix", alpha=0.2, args={"fmix": {"spectrum": "reference"}}),
  "resizemix": dict(method="resizemix", alpha=1.0),
  # TransMix: Mixup 0.8 (p 0.2) / TransMix-on-CutMix 1.0 (p 0.8); the DeiT configs add EMA and min lr 1e-4.
  "transmix": dict(
    method=("mixup", "transmix"),
    alpha=(0.8, 1.0),
    prob=(0.2, 0.8),
    per_model={m: {"overrides": _DEIT_EMA} for m in ("deit_tiny", "deit_small", "deit_base")},
  ),
  # TokenMix is 📖 (the authors' code, timm's soft-target CE): per-sample λ, no batch-mean collapse.
  "tokenmix": dict(method=("mixup", "tokenmix"), alpha=(0.8, 1.0), loss={"lam_batch_mean": False}),
  "smmix": dict(method=("mixup", "smmix"), alpha=(0.8, 1.0)),
  "automix": dict(
    method="automix",
    alpha=2.0,
    args={"automix": _AUTOMIX_VIT},
    model={"mix_head": True},
    per_model=_learned_mask_per_model("automix", _AUTOMIX_VIT),
  ),
  "samix": dict(
    method="samix",
    alpha=2.0,
    args={"samix": _SAMIX_VIT},
    model={"mix_head": True},
    per_model=_learned_mask_per_model("samix", _SAMIX_VIT),
  ),
}

# Settings every backbone starts from; BACKBONES lists only what differs.
DEFAULTS = dict(
  batch_size=1024,
  weight_decay=0.05,
  warmup_epochs=5.0,
  warmup_start_ratio=1e-5,
  min_lr=1e-5,
  grad_clip_norm=0.0,
  drop_path_rate=0.0,
  randaugment_m=9,
  repeated_aug=0,
  ema_decay=0.0,
  ema_warmup_epochs=0.0,
  eval_crop_ratio=0.875,
  wd_exclude=(),
  bn_group_size=None,  # BatchNorm backbones: statistics per group of this many images (per GPU); None: global
  precise_bn_samples=0,
)

_VIT_NO_WD = ("cls_token", "pos_embed")
BACKBONES = {
  "deit_tiny": dict(grad_clip_norm=5.0, wd_exclude=_VIT_NO_WD),
  "deit_small": dict(grad_clip_norm=5.0, wd_exclude=_VIT_NO_WD),  # drop path 0 as in OpenMixup's config
  "deit_base": dict(
    grad_clip_norm=5.0,
    wd_exclude=_VIT_NO_WD,
    drop_path_rate=0.1,
    repeated_aug=3,
    ema_decay=0.99996,
    ema_warmup_epochs=20.0,
  ),
  "pvt_tiny": dict(warmup_start_ratio=1e-6, drop_path_rate=0.1, repeated_aug=3, wd_exclude=_VIT_NO_WD),
  "pvt_small": dict(warmup_start_ratio=1e-6, drop_path_rate=0.1, repeated_aug=3, wd_exclude=_VIT_NO_WD),
  "swin_tiny": dict(
    warmup_epochs=20.0,
    warmup_start_ratio=1e-6,
    grad_clip_norm=5.0,
    drop_path_rate=0.2,
    wd_exclude=("absolute_pos_embed", "relative_position_bias_table"),
  ),
  "convnext_tiny": dict(
    batch_size=4096,
    warmup_epochs=20.0,
    warmup_start_ratio=1e-6,
    min_lr=1e-6,
    drop_path_rate=0.1,
    ema_decay=0.9999,
    ema_warmup_epochs=20.0,
  ),
  "moganet_tiny": dict(
    weight_decay=0.04,
    warmup_start_ratio=1e-6,
    min_lr=1e-6,
    drop_path_rate=0.1,
    randaugment_m=7,
    eval_crop_ratio=0.9032,  # resize 248 → crop 224
    bn_group_size=256,  # plain BN on each of 4 GPUs x 256
    precise_bn_samples=8192,  # PreciseBNHook(num_samples=8192) after every epoch
  ),
}


def build_config(arg=None):
  """The resolved config, even for cells that cannot run yet (sweeps and docs list those too)."""
  args = base.recipe_args(arg, recipe=RECIPE, rows=METHODS, default_model=DEFAULT_MODEL, default_epochs=DEFAULT_EPOCHS)
  model, epochs = args["model"], args["epochs"]
  s = {**DEFAULTS, **BACKBONES.get(model, {})}
  c = base.skeleton(recipe=RECIPE, method=args["method"], model=model, epochs=epochs, report_metric="best")
  c.batch_size = s["batch_size"]
  c.compute_dtype = "bfloat16"
  base.set_data(
    c,
    name="imagenet2012",
    num_classes=1000,
    pp_train=(
      f"{base.random_resized_crop(224)}|flip_lr|"
      f"randaugment_timm('rand-m{s['randaugment_m']}-mstd0.5-inc1')|"
      "random_erasing(0.25, mode='pixel')"
    ),
    pp_eval=base.center_crop_eval(224, s["eval_crop_ratio"]),
    repeated_aug=s["repeated_aug"],
  )
  if s["drop_path_rate"]:
    base.model_kwargs(c, {"drop_path_rate": s["drop_path_rate"]})
  if s["bn_group_size"]:
    base.model_kwargs(c, {"bn_group_size": s["bn_group_size"]})
  c.precise_bn_samples = s["precise_bn_samples"]
  base.set_optimizer(
    c,
    name="adamw",
    lr=5e-4,
    base_batch_size=512,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=s["weight_decay"],
    wd_exclude_1d=True,
    wd_exclude=tuple(s["wd_exclude"]),
    warmup_epochs=s["warmup_epochs"],
    warmup_start_ratio=s["warmup_start_ratio"],
    min_lr=s["min_lr"],
    schedule_by_epoch=False,
    grad_clip_norm=s["grad_clip_norm"],
  )
  c.loss.label_smoothing = 0.1
  # OpenMixup's label-smoothing head is not multi-label: per-sample λ (PuzzleMix, TransMix) collapses to the batch
  # mean (spec §1.2). The cells reproduce it; --config.loss.lam_batch_mean=False weights each sample by its λ.
  c.loss.lam_batch_mean = True
  c.ema.decay, c.ema.warmup_epochs = s["ema_decay"], s["ema_warmup_epochs"]
  base.apply_row(c, base.resolve_row(METHODS, args["method"], model))
  return c


def get_config(arg=None):
  return build_config(arg)
