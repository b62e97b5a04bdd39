"""timm RSB A2 recipe, 300 epochs at 224 px (OpenMixup benchmark table 3, A2 columns; spec §3.2).

    python -m mixjax.main --config=configs/rsb_a2.py:mixup,model=mobilenet_v2 --workdir=runs/x

Argument: ``<method>[,model=NAME][,epochs=N]``; model defaults to resnet50, epochs to 300. Settings: train
RandomResizedCrop 224 + flip + RandAugment rand-m7-mstd0.5-inc1 with repeated augmentation (3 repeats); eval
resize 236 → centre crop 224; batch 2048 (4×256×2 accumulation in the reference); LAMB lr 5e-3 per 2048, wd 0.02
except BN/bias (the ResNet downsample BN scale decayed, as the reference's regex does), 5 warmup epochs, cosine per
epoch to 1e-6; BCE loss; ResNet-50 drop path 0.05; BN per 256 images for EfficientNet-B0/MobileNetV2 (per GPU and
micro-batch), global for ResNet-50 (SyncBN). Reported metric: median top-1 of the last 10 epochs.
"""

import os

from mixjax.recipes import cells, rsb

RECIPE = "rsb_a2"

# Rows of the RSB table: the benchmark gives A2 and A3 one α column, so A2 runs the rows of rsb_a3.py beside it.
METHODS = cells.load_recipe("rsb_a3", os.path.dirname(os.path.abspath(__file__))).METHODS

# Per-backbone model arguments: only ResNet-50 uses drop path in A2. BatchNorm: ResNet-50 uses SyncBN (the global
# batch), EfficientNet-B0 and MobileNetV2 plain per-GPU BN over 256 images (4 GPUs x 256, 2 accumulation steps).
BACKBONES = {
  "resnet50": {"drop_path_rate": 0.05, "bn_group_size": None},
  "efficientnet_b0": {"bn_group_size": 256},
  "mobilenet_v2": {"bn_group_size": 256},
}

SETTINGS = dict(
  epochs=300, batch_size=2048, lr=5e-3, train_size=224, randaugment="rand-m7-mstd0.5-inc1", repeated_aug=3
)


def build_config(arg=None):
  return rsb.build(arg, recipe=RECIPE, methods=METHODS, backbones=BACKBONES, settings=SETTINGS)


def get_config(arg=None):
  return build_config(arg)
