"""timm RSB A3 recipe, 100 epochs at 160 px (OpenMixup benchmark table 3, A3 columns; spec §3.2).

    python -m mixjax.main --config=configs/rsb_a3.py:cutmix,model=efficientnet_b0 --workdir=runs/x

Argument: ``<method>[,model=NAME][,epochs=N]``; model defaults to resnet50, epochs to 100. Settings: train
RandomResizedCrop 160 + flip + RandAugment rand-m6-mstd0.5-inc1; eval resize 236 → centre crop 224 (ratio
0.95); batch 2048; LAMB lr 8e-3 per 2048, wd 0.02 except BN/bias (the ResNet downsample BN scale decayed, as
the reference's regex does), 5 warmup epochs, cosine per epoch to 1e-6; BCE loss; no EMA, smoothing, erasing or
drop path; BN per 512 images for EfficientNet-B0/MobileNetV2 (per GPU), global for ResNet-50 (SyncBN). Reported
metric: median top-1 of the last 5 epochs.
"""

from mixjax.recipes import rsb

RECIPE = "rsb_a3"

# SaliencyMix cells: the reference hands OpenCV the normalised float tensor (docs/deviations.md, SaliencyMix).
_SALIENCYMIX_CELL = {"saliencymix": {"saliency": "reference"}}

# Rows of the RSB table (the document's α column): one table for its A2 and A3 columns; configs/rsb_a2.py
# reads it from this file.
# "rsb" is the recipe's own Mixup 0.1 / CutMix 1.0 50/50 switch.
METHODS = {
  "rsb": dict(method=("mixup", "cutmix"), alpha=(0.1, 1.0)),
  "vanilla": dict(method="vanilla", alpha=1.0),
  "mixup": dict(method="mixup", alpha=0.2),
  "cutmix": dict(method="cutmix", alpha=0.2),
  "manifoldmix": dict(method="manifoldmix", alpha=0.2),
  # The RSB configs list attentivemix args but define no backbone_k (spec 2.5): like the PyTorch-style rows, a
  # pretrained torchvision ResNet-18 (args.attentivemix.extractor_checkpoint).
  "attentivemix": dict(
    method="attentivemix", alpha=2.0, args={"attentivemix": {"extractor": "resnet18", "extractor_bn": "train"}}
  ),
  "saliencymix": dict(method="saliencymix", alpha=0.2, args=_SALIENCYMIX_CELL),
  # FMix*: the reference (official FMix) spectrum produced the published numbers; the paper's is one flag away.
  "fmix": dict(method="fmix", alpha=0.2, args={"fmix": {"spectrum": "reference"}}),
  "puzzlemix": dict(method="puzzlemix", alpha=1.0),
  "resizemix": dict(method="resizemix", alpha=1.0),
  # No reference AutoMix/SAMix config exists for RSB: the registered (paper) defaults; ResNet-50 with its last
  # residual BN zero-initialised, as every AutoMixup run initialises (mmcv zero_init_residual=True), and the
  # AutoMixup loop's two heads (the mixed CE through head_mix, the clean CE through the evaluated head_one).
  "automix": dict(
    method="automix",
    alpha=2.0,
    args={"automix": {"separate_heads": True}},
    model={"mix_head": True},
    per_model={"resnet50": {"model": {"zero_init_residual": True}}},
  ),
  "samix": dict(
    method="samix",
    alpha=2.0,
    args={"samix": {"separate_heads": True}},
    model={"mix_head": True},
    per_model={"resnet50": {"model": {"zero_init_residual": True}}},
  ),
}


# Per-backbone model arguments: no drop path in A3 (EfficientNet-B0's BN eps 1e-3 is built into the model).
# BatchNorm: ResNet-50 uses SyncBN (the global batch, bn_group_size None); EfficientNet-B0 and MobileNetV2 plain
# per-GPU BN over the 512 images of each of the 4 GPUs (spec §3.2).
BACKBONES = {
  "resnet50": {"bn_group_size": None},
  "efficientnet_b0": {"bn_group_size": 512},
  "mobilenet_v2": {"bn_group_size": 512},
}

SETTINGS = dict(epochs=100, batch_size=2048, lr=8e-3, train_size=160, randaugment="rand-m6-mstd0.5-inc1")


def build_config(arg=None):
  return rsb.build(arg, recipe=RECIPE, methods=METHODS, backbones=BACKBONES, settings=SETTINGS)


def get_config(arg=None):
  return build_config(arg)
