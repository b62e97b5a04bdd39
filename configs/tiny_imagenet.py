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

RECIPE = "tiny_imagenet"
DEFAULT_MODEL = "resnet18"
DEFAULT_EPOCHS = 400

# Rows of the Tiny-ImageNet table (README α column).
METHODS = {
    "vanilla":      dict(method="vanilla", alpha=1.0),
    "mixup":        dict(method="mixup", alpha=1.0),
    "cutmix":       dict(method="cutmix", alpha=1.0),
    "manifoldmix":  dict(method="manifoldmix", alpha=0.2),
    "smoothmix":    dict(method="smoothmix", alpha=0.2),
    "saliencymix":  dict(method="saliencymix", alpha=1.0),
    "attentivemix": dict(method="attentivemix", alpha=2.0),
    "fmix":         dict(method="fmix", alpha=1.0),
    "puzzlemix":    dict(method="puzzlemix", alpha=1.0),
    "comixup":      dict(method="comixup", alpha=2.0),
    "resizemix":    dict(method="resizemix", alpha=1.0),
    "gridmix":      dict(method="gridmix", alpha=0.2),
    "grafting":     dict(method="grafting", alpha=1.0),
    "alignmix":     dict(method=("manifoldmix", "alignmix"), alpha=(2.0, 2.0)),
    "automix":      dict(method="automix", alpha=2.0),
    "samix":        dict(method="samix", alpha=2.0),
}

# Per-backbone model arguments: the CIFAR stem (3×3 stride-1 conv, no max-pool) keeps 64 px inputs large enough.
BACKBONES = {"resnet18": {"stem": "cifar"}, "resnext50_32x4d": {"stem": "cifar"}}


def build_config(arg=None):
  """The resolved config, even for cells that cannot run yet (sweeps and docs list those too)."""
  args = base.recipe_args(arg, recipe=RECIPE, rows=METHODS, default_model=DEFAULT_MODEL,
                          default_epochs=DEFAULT_EPOCHS)
  model, epochs = args["model"], args["epochs"]
  c = base.skeleton(recipe=RECIPE, method=args["method"], model=model, epochs=epochs, report_metric="median")
  c.batch_size = 100
  base.set_data(c, name="image_folder", num_classes=200, train_split="train", eval_split="val",
                pp_train=f"{base.random_resized_crop(64)}|flip_lr", pp_eval="decode|resize(64)",
                shuffle_buffer=100_000)
  base.model_kwargs(c, BACKBONES.get(model, {"stem": "cifar"}))
  base.set_pytorch_sgd(c, lr=0.2, base_batch_size=100)
  base.apply_row(c, base.resolve_row(METHODS, args["method"], model))
  return c


def get_config(arg=None):
  return build_config(arg)
