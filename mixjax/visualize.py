"""Render mixed samples of real photographs, one row per mixing method.

    python -m mixjax.visualize --method=cutmix --out=cutmix.png
    python -m mixjax.visualize --method=all --out=all_methods.png

The photographs ship with scikit-image (``skimage.data``), so this runs
offline. Each tile shows one mixed image with the label weights it is trained
with, e.g. ``astronaut 0.62 / coffee 0.38``; this is the picture to look at
when checking a method by eye (like the figure on OpenMixup's benchmark page).
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Sequence

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_photos(size: int, names: Sequence[str] = PHOTOS) -> np.ndarray:
  """[N, size, size, 3] float32 in [0, 1]: centre-cropped, resized photos."""
  import skimage.data
  import skimage.transform
  out = []
  for name in names:
    photo = getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
    h, w = photo.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = photo[top:top + side, left:left + side]
    out.append(skimage.transform.resize(square, (size, size), order=1,
                                        anti_aliasing=True))
  return np.stack(out).astype(np.float32)


def to_display(images) -> np.ndarray:
  """Undoes the ImageNet normalisation: [..., 3] → float32 in [0, 1].

  Also what a train loop needs to log mixed samples as TensorBoard images.
  """
  images = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
  return np.clip(images, 0.0, 1.0)


def mix_photos(method: str, photos: np.ndarray, seed: int,
               alpha: float = 1.0):
  """Mixes normalised photos with ``method``; returns (images in [0, 1],
  MixResult). ``alpha = 1`` makes the mixing clearly visible.

  Model-aware methods draw their own picture (``ModelAwareMethod.picture``), with whatever small network they
  need built on the spot; their default hyper-parameters are used.
  """
  import jax
  from mixjax import mixing
  labels = np.eye(len(photos), dtype=np.float32)
  normalised = (photos - IMAGENET_MEAN) / IMAGENET_STD
  entry = mixing.get_method(method)
  if entry.model_aware:
    result = entry.fn.picture(jax.random.key(seed), jax.numpy.asarray(normalised), jax.numpy.asarray(labels),
                              alpha=alpha, hp=dict(entry.defaults))
    result = jax.device_get(result)
    return to_display(result.images), result
  cfg = mixing.default_mixing_config()
  cfg.method, cfg.alpha = method, alpha
  mix = jax.jit(functools.partial(mixing.mix_batch, cfg))
  result = mix(jax.random.key(seed), normalised, labels)
  return to_display(result.images), result


def _tile_caption(targets: np.ndarray, names: Sequence[str]) -> str:
  order = np.argsort(-targets)
  parts = [f"{names[i]} {targets[i]:.2f}" for i in order[:2]
           if targets[i] > 5e-3]
  return " / ".join(parts)


def render(methods: Sequence[str], out: str, *, size: int = 224,
           seed: int = 0) -> str:
  """Writes a PNG grid (rows: methods, columns: photos) to ``out``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  photos = load_photos(size)
  cols = len(photos)
  fig, axes = plt.subplots(len(methods), cols, squeeze=False,
                           figsize=(2.4 * cols, 2.6 * len(methods)))
  for row, method in enumerate(methods):
    images, result = mix_photos(method, photos, seed + row)
    targets = np.asarray(result.targets)
    for col in range(cols):
      ax = axes[row, col]
      ax.imshow(images[col])
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"λ={float(result.lam[col]):.2f}\n"
                   f"{_tile_caption(targets[col], PHOTOS)}", fontsize=7)
      if col == 0:
        ax.set_ylabel(method, fontsize=9)
  fig.tight_layout()
  fig.savefig(out, dpi=80)
  plt.close(fig)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  from mixjax import mixing
  parser = argparse.ArgumentParser(
      prog="python -m mixjax.visualize",
      description="Render mixed samples of scikit-image photographs.")
  parser.add_argument("--method", required=True,
                      help="a method name or 'all'; valid: "
                      + ", ".join(mixing.list_methods()))
  parser.add_argument("--out", default=None,
                      help="PNG path (default: mix_<method>.png)")
  parser.add_argument("--size", type=int, default=224,
                      help="side of each photo in pixels")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.method == "all":
    methods = mixing.list_methods()
  else:
    methods = [mixing.get_method(args.method).name]  # unknown → lists names
  out = args.out or f"mix_{args.method}.png"
  render(methods, out, size=args.size, seed=args.seed)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
