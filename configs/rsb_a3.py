"""timm RSB A3 recipe, 100 epochs at 160 px (OpenMixup benchmark table 3, A3 columns; spec §3.2).

    python -m mixjax.main --config=configs/rsb_a3.py:cutmix,model=efficientnet_b0 --workdir=runs/x

Argument: ``<method>[,model=NAME][,epochs=N]``; model defaults to resnet50, epochs to 100. Settings: train
RandomResizedCrop 160 + flip + RandAugment rand-m6-mstd0.5-inc1; eval resize 236 → centre crop 224 (ratio
0.95); batch 2048; LAMB lr 8e-3 per 2048, wd 0.02 except BN/bias, 5 warmup epochs, cosine per epoch to 1e-6;
BCE loss; no EMA, smoothing, erasing or drop path. Reported metric: median top-1 of the last 5 epochs.
"""

from mixjax.recipes import rsb

RECIPE = "rsb_a3"

# Rows of the RSB table (α per method): one table for the A2 and A3 columns, in mixjax/recipes/rsb.py.
METHODS = rsb.METHODS

# Per-backbone model arguments: no drop path in A3 (EfficientNet-B0's BN eps 1e-3 is built into the model).
BACKBONES = {"resnet50": {}, "efficientnet_b0": {}, "mobilenet_v2": {}}

SETTINGS = dict(epochs=100, batch_size=2048, lr=8e-3, train_size=160, randaugment="rand-m6-mstd0.5-inc1")


def build_config(arg=None):
  return rsb.build(arg, recipe=RECIPE, methods=METHODS, backbones=BACKBONES, settings=SETTINGS)


def get_config(arg=None):
  return build_config(arg)
