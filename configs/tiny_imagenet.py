"""Tiny-ImageNet recipe: 64 px, CIFAR-style stem, 400 epochs (OpenMixup Tiny-ImageNet table; spec §5).

    python -m mixjax.main --config=configs/tiny_imagenet.py:cutmix --workdir=runs/x \
        --config.data.folder_root=/data/tiny-imagenet-200

Argument: ``<method>[,model=NAME][,epochs=N]``; model defaults to resnet18, epochs to 400. Data: an image folder
``<folder_root>/{train,val}/<class>/<image>`` (200 classes; reorganise Tiny-ImageNet's val annotations into class
folders once). Train RandomResizedCrop 64 + flip, test at 64 px without centre crop. SGD lr 0.2 per 100 images,
momentum 0.9, wd 1e-4, cosine per epoch to 0, batch 100, soft CE. Reported metric: median top-1 of the last 10
epochs. α values: the Tiny-ImageNet README column (searched per method there).
"""

from mixjax.recipes import base

# SaliencyMix cells: the reference hands OpenCV the normalised float tensor (docs/deviations.md, SaliencyMix).
_SALIENCYMIX_CELL = {"saliencymix": {"saliency": "reference"}}

RECIPE = "tiny_imagenet"
DEFAULT_MODEL = "resnet18"
DEFAULT_EPOCHS = 400

# AutoMix / SAMix as the reference's Tiny-ImageNet configs run them (tiny_imagenet/automix/basic/
# r18_l2_a2_near_mb_mlr1e_3_bb_mlr5e_2.py, tiny_imagenet/samix/basic/r18_l2_a2_bili_val_dp0_mul_mb_mlr1e_3_bb_mlr5e_2.py
# and the rx50_ twins): MixBlock lr 0.1 (SGD momentum 0.9 like the backbone) cosine to 1e-3; backbone cosine to
# 5e-2 (not 0); encoder momentum 0.999 → 0.999999 from 10% of training; the mask-loss weight a constant 0.1 (no
# annealing hook in these configs); the mixed CE through its own head (head_mix); ResNet with zero-initialised residual BN (AutoMixup init). AutoMix: no λ
# encoding at all (lam_concat=False, "no lam cat for small-scale datasets"). SAMix: value-net dropout 0
# (with_last_dropout=0); ResNeXt-50 re-maps λ with lam_mul_k 0.25. SAMix's head_mix_k sets neg_weight=0.5 ("try
# neg (eta in SAMix)"), but with its soft-CE loss that weight multiplies only zero-target classes
# (cross_entropy_loss.soft_cross_entropy), so it changes nothing: no η term here either.
_TINY_COMMON = {
  "momentum_end": 0.999999,
  "mixblock_lr": 0.1,
  "mixblock_min_lr": 1e-3,
  "mask_loss_schedule": "constant",
  "mask_loss_weight": 0.1,
  "separate_heads": True,
}
_TINY_AUTOMIX = {**_TINY_COMMON, "lam_embedding": "none"}
_TINY_SAMIX = {**_TINY_COMMON, "value_dropout": 0.0, "mixblock_loss_eta": 0.0}

# Rows of the Tiny-ImageNet table (README α column).
METHODS = {
  "vanilla": dict(method="vanilla", alpha=1.0),
  "mixup": dict(method="mixup", alpha=1.0),
  "cutmix": dict(method="cutmix", alpha=1.0),
  "manifoldmix": dict(method="manifoldmix", alpha=0.2),
  # SmoothMix's published number comes from the reference's inverted label weights (λ = mean(G) for y_a).
  "smoothmix": dict(method="smoothmix", alpha=0.2, args={"smoothmix": {"label_weights": "reference"}}),
  "saliencymix": dict(method="saliencymix", alpha=1.0, args=_SALIENCYMIX_CELL),
  "attentivemix": dict(method="attentivemix", alpha=2.0, args={"attentivemix": {"extractor_bn": "train"}}),
  "fmix": dict(method="fmix", alpha=1.0, args={"fmix": {"spectrum": "reference"}}),  # reference spectrum
  "puzzlemix": dict(method="puzzlemix", alpha=1.0),
  # Co-Mixup's Tiny-ImageNet settings (the authors' README / main.py): groups of 20 (batch 100), 4 passes, the
  # Dirichlet(α) prior of their CIFAR/Tiny code.
  "comixup": dict(method="comixup", alpha=2.0, args={"comixup": {"m_part": 20, "m_niter": 4, "prior_alpha": "alpha"}}),
  "resizemix": dict(method="resizemix", alpha=1.0),
  # GridMix (a docs-page row): OpenMixup's rand_grid placement and slicing, wrap-around holes included.
  "gridmix": dict(method="gridmix", alpha=0.2, args={"gridmix": {"crop": "reference"}}),
  "grafting": dict(method="grafting", alpha=1.0),
  "alignmix": dict(method=("manifoldmix", "alignmix"), alpha=(2.0, 2.0)),
  "automix": dict(
    method="automix",
    alpha=2.0,
    args={"automix": _TINY_AUTOMIX},
    overrides={"optimizer.min_lr": 5e-2},
    model={"zero_init_residual": True, "mix_head": True},
  ),
  "samix": dict(
    method="samix",
    alpha=2.0,
    args={"samix": _TINY_SAMIX},
    overrides={"optimizer.min_lr": 5e-2},
    model={"zero_init_residual": True, "mix_head": True},
    per_model={"resnext50_32x4d": {"args": {"samix": {**_TINY_SAMIX, "lam_mul_k": 0.25}}}},
  ),
}

# Per-backbone model arguments: the CIFAR stem (3×3 stride-1 conv, no max-pool) keeps 64 px inputs large enough.
BACKBONES = {"resnet18": {"stem": "cifar"}, "resnext50_32x4d": {"stem": "cifar"}}


def build_config(arg=None):
  """The resolved config, even for cells that cannot run yet (sweeps and docs list those too)."""
  args = base.recipe_args(arg, recipe=RECIPE, rows=METHODS, default_model=DEFAULT_MODEL, default_epochs=DEFAULT_EPOCHS)
  model, epochs = args["model"], args["epochs"]
  c = base.skeleton(recipe=RECIPE, method=args["method"], model=model, epochs=epochs, report_metric="median")
  c.batch_size = 100
  base.set_data(
    c,
    name="image_folder",
    num_classes=200,
    train_split="train",
    eval_split="val",
    pp_train=f"{base.random_resized_crop(64)}|flip_lr",
    pp_eval="decode|resize(64)",
    shuffle_buffer=100_000,
  )
  base.model_kwargs(c, BACKBONES.get(model, {"stem": "cifar"}))
  base.set_pytorch_sgd(c, lr=0.2, base_batch_size=100)
  base.apply_row(c, base.resolve_row(METHODS, args["method"], model))
  return c


def get_config(arg=None):
  return build_config(arg)
