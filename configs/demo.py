"""Demo: a narrow ResNet-18 (CIFAR stem) on the scikit-learn handwritten digits, through the ImageNet code path.

The digits (1797 real 8×8 scans bundled with scikit-learn) are stored as a local TFDS dataset of 32×32 JPEGs
(`mixjax_digits`, prepared automatically on first use), then read with exactly the ImageNet pipeline: fused JPEG
decode + RandomResizedCrop, on-device normalisation, sharded jit step, Orbax checkpoints, CLU metrics.

    python -m mixjax.main --config=configs/demo.py --workdir=runs/demo
    python -m mixjax.main --config=configs/demo.py:cutmix --workdir=runs/demo_cutmix
    python -m mixjax.main --config=configs/demo.py:mixup,epochs=5 --workdir=/tmp/x --config.batch_size=64

Expected: ≥ 97% top-1 on the 360 held-out digits after 30 epochs (about 2-3 minutes on 2 CPU cores).
Argument: ``<method>[,model=NAME][,epochs=N]``; method defaults to vanilla. A method is a registered mixing method
or a row of ``ROWS`` (``deit``: the DeiT recipe's per-step Mixup/CutMix switch, a two-mode plan).
"""

from mixjax.config_args import parse_arg
from mixjax.recipes import base

# Per-method α for the demo, as in the benchmark's PyTorch-style table (blending methods 0.2, cutting methods 1).
ALPHA = {
  "vanilla": 1.0,
  "mixup": 0.2,
  "cutmix": 1.0,
  "fmix": 1.0,
  "gridmix": 0.2,
  "resizemix": 1.0,
  "saliencymix": 1.0,
  "smoothmix": 1.0,
}

# Multi-mode rows: one mode drawn per step (mixjax/mixing/core/plan.py). "deit" is timm's switch as the DeiT
# recipe sets it, Mixup α 0.8 or CutMix α 1.0 with probability 1/2 each, mixing every step; timm's mix_prob p and
# switch_prob s in general are method=("vanilla", "mixup", "cutmix") with prob=(1 − p, p·(1 − s), p·s).
ROWS = {
  "deit": dict(method=("mixup", "cutmix"), alpha=(0.8, 1.0)),
}


def get_config(arg=None):
  args = parse_arg(arg, allowed=dict(method="vanilla", model="resnet18", epochs=30))
  # The layout every recipe shares (mixjax/recipes/base.py), with the demo's values.
  c = base.skeleton(
    recipe="demo", method=args["method"], model=args["model"], epochs=args["epochs"], report_metric="median"
  )
  c.batch_size = 128  # global batch, split over all devices of all processes
  base.set_data(
    c,
    name="mixjax_digits",
    num_classes=10,
    train_split="train",
    eval_split="test",
    pp_train="decode_jpeg_and_random_resized_crop(32, scale=(0.35, 1.0))",
    pp_eval="decode|resize_center_crop(32, crop_ratio=1.0)",
    mean=(127.5, 127.5, 127.5),
    std=(127.5, 127.5, 127.5),
    shuffle_buffer=2048,
  )
  c.data.cache = True
  c.data.prefetch = 4
  base.model_kwargs(c, dict(stem="cifar", width=16))
  base.apply_row(c, ROWS.get(args["method"]) or dict(method=args["method"], alpha=ALPHA.get(args["method"], 1.0)))
  base.set_optimizer(
    c,
    name="sgd",
    lr=0.2,
    base_batch_size=256,
    min_lr=0.0,
    warmup_epochs=1.0,
    warmup_start_ratio=0.01,
    schedule_by_epoch=False,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    wd_exclude_1d=True,
  )
  c.log_every_steps = 20
  return c
