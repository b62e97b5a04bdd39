"""Render mixed samples of real photographs, one row per mixing method.

    python -m mixjax.visualize --method=cutmix --out=cutmix.png
    python -m mixjax.visualize --method=all --out=all_methods.png

The photographs ship with scikit-image (``skimage.data``), so this runs offline. Each tile is one sample of the
method's own output (``MixResult``) for a batch of the four photos, captioned with what that sample is trained
with: its λ (the weight of the tile's own photo, per sample for methods with per-sample weights) and the label
weights of its target, e.g. ``λ=0.62`` / ``astronaut 0.62 / coffee 0.38`` — ``MixResult.targets`` of that row,
never a recomputation.

Which draw is shown: each method is run with ``jax.random.key(s)`` for s = seed, seed+1, … (``--tries``
keys, one compile per method) and the first draw in which every tile mixes two different photos (the mixed
image differs visibly from both, the partner is another photo) with λ in [0.3, 0.7] is shown; if none qualifies,
the draw with the most such tiles. The methods' λ distributions and code are untouched — only the choice of
draw is made for the picture (λ near 0 or 1, or a photo paired with itself, would show no mix). The key used is
printed in the row title.

Honesty notes in the row titles: methods that mix hidden features (ManifoldMix, AlignMix) say so and what the
picture shows instead; model-aware methods say which untrained stand-in network decided their regions or λ
(``mixjax.visualize.stand_ins``); ``vanilla`` says it does not mix.

Speed: ``--method=all`` takes about 45 s of CPU time on a first run (measured on a 2-core machine: 43 s
user+sys; the 224-px version before took 126 s), almost all of it XLA compiling one program per method, and
about 18 s once the compiled programs are cached. The command compiles with LLVM optimisation off (``--xla_backend_optimization_level=0``: the
programs run on four small photos, so compiling them well costs more than it saves) and keeps compiled programs
in the persistent compilation cache (``--compilation_cache_dir``), so a second run takes seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
from typing import Callable, Sequence

import numpy as np

from mixjax import constants

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# The ImageNet normalisation on the 0..1 scale of the photos.
IMAGENET_MEAN = (np.asarray(constants.IMAGENET_MEAN) / 255).astype(np.float32)
IMAGENET_STD = (np.asarray(constants.IMAGENET_STD) / 255).astype(np.float32)

DEFAULT_SIZE = 96  # a multiple of 32 (PuzzleMix's label grids need it)
DEFAULT_TRIES = 32
LAM_RANGE = (0.3, 0.7)  # λ of a shown draw, where the method lets some draw have it
# A tile "differs" from a photo where at least this share of its pixels differ by more than 4/255.
CHANGED_SHARE = 0.03
CHANGED_LEVEL = 4 / 255

# Input-level methods whose tiles are not pixel mixes.
NOT_MIXING = {"vanilla": "no mixing: the baseline, each photo trained with its own label"}

# Figure geometry (inches, at DPI): one row of tiles plus its title line, and a header with the legend.
TILE_W_IN = 2.4
ROW_H_IN = 2.9
HEADER_H_IN = 0.5
DPI = 80


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
    square = photo[top : top + side, left : left + side]
    out.append(skimage.transform.resize(square, (size, size), order=1, anti_aliasing=True))
  return np.stack(out).astype(np.float32)


def to_display(images) -> np.ndarray:
  """Undoes the ImageNet normalisation: [..., 3] → float32 in [0, 1].

  Also what a train loop needs to log mixed samples as TensorBoard images.
  """
  images = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
  return np.clip(images, 0.0, 1.0)


def drawer(method: str, photos: np.ndarray, alpha: float = 1.0, **picture_kwargs) -> Callable[[int], object]:
  """``seed → MixResult`` (host arrays) of ``method`` on the photos (one-hot labels ``eye(N)``), compiled once.

  Every method runs its registered picture (``visualize/pictures.py``) with its default hyper-parameters
  (input-level ones mix the photos as one shard; model-aware ones build whatever small network they need once).
  ``picture_kwargs`` go to the picture builder where it accepts them (e.g. ``steps`` for AutoMix/SAMix).
  """
  import jax
  from mixjax import mixing
  from mixjax.visualize import pictures

  labels = jax.numpy.asarray(np.eye(len(photos), dtype=np.float32))
  normalised = jax.numpy.asarray((photos - IMAGENET_MEAN) / IMAGENET_STD)
  step = mixing.get_method(method).step
  build = pictures.picture_for(method).build
  accepted = inspect.signature(build).parameters
  kwargs = {k: v for k, v in picture_kwargs.items() if k in accepted}
  draw = build(step, normalised, labels, alpha=alpha, hp=step.hyper_parameters(), **kwargs)
  return lambda seed: jax.device_get(draw(jax.random.key(seed)))


def mix_photos(method: str, photos: np.ndarray, seed: int, alpha: float = 1.0):
  """Mixes normalised photos with ``method`` using ``jax.random.key(seed)``; returns (images in [0, 1],
  MixResult). ``alpha = 1`` makes the mixing clearly visible."""
  result = drawer(method, photos, alpha)(seed)
  return to_display(result.images), result


def _differs(image: np.ndarray, photo: np.ndarray) -> bool:
  changed = np.max(np.abs(image - photo), axis=-1) > CHANGED_LEVEL
  return float(np.mean(changed)) >= CHANGED_SHARE


def tile_mixes(images: np.ndarray, photos: np.ndarray, result) -> np.ndarray:
  """[N] bool: tile i mixes two different photos — its partner is another photo and the displayed image
  differs visibly from both its own photo and the partner's."""
  own = np.argmax(np.asarray(result.labels_a), axis=1)
  partner = np.argmax(np.asarray(result.labels_b), axis=1)
  h, w = images.shape[1:3]
  photos = photos[:, :h, :w]  # ViT pictures may crop to whole patches
  return np.array(
    [
      own[i] != partner[i] and _differs(images[i], photos[own[i]]) and _differs(images[i], photos[partner[i]])
      for i in range(len(images))
    ]
  )


def lam_in_range(result) -> np.ndarray:
  lam = np.asarray(result.lam)
  return (lam >= LAM_RANGE[0]) & (lam <= LAM_RANGE[1])


def choose_draw(draw: Callable[[int], object], photos: np.ndarray, seed: int, tries: int):
  """(seed, display images, MixResult, mixed [N] bool) of the first draw among seed … seed+tries−1 whose
  every tile mixes two photos with λ in ``LAM_RANGE``; else the draw with the most such tiles (ties: more
  mixed tiles, then the earlier seed)."""
  best, best_score = None, None
  for s in range(seed, seed + max(tries, 1)):
    result = draw(s)
    images = to_display(result.images)
    mixed = tile_mixes(images, photos, result)
    score = (int(np.sum(mixed & lam_in_range(result))), int(np.sum(mixed)))
    if best_score is None or score > best_score:
      best, best_score = (s, images, result, mixed), score
    if score[0] == len(photos):
      break
  return best


def tile_caption(result, i: int, names: Sequence[str] = PHOTOS) -> str:
  """``λ=…`` and the label weights of sample i's target (``MixResult.targets[i]``), own photo first."""
  targets = np.asarray(result.targets)[i]
  own = int(np.argmax(np.asarray(result.labels_a)[i]))
  order = [own] + [int(k) for k in np.argsort(-targets) if k != own]
  parts = [f"{names[k]} {targets[k]:.2f}" for k in order if k == own or targets[k] >= 5e-3]
  return f"λ={float(np.asarray(result.lam)[i]):.2f}\n" + " / ".join(parts)


@dataclasses.dataclass
class Row:
  """One method's row, exactly as drawn."""

  method: str
  title: str  # the row title (method, key used, and what the picture shows when not obvious)
  seed: int  # the draw shown was made with jax.random.key(seed)
  images: np.ndarray  # [N, H, W, 3] in [0, 1]
  result: object  # the method's MixResult for the row (host arrays)
  captions: tuple[str, ...]  # one per tile, from tile_caption(result, i)
  mixed: np.ndarray  # [N] bool, tile_mixes
  mixes_pixels: bool  # False: the tiles are a stand-in (feature-level method) or no mix (vanilla)


def picture_row(method: str, photos: np.ndarray, *, seed: int = 0, tries: int = DEFAULT_TRIES, **picture_kwargs) -> Row:
  from mixjax.visualize import pictures

  picture = pictures.picture_for(method)
  note = NOT_MIXING.get(method, picture.note)
  mixes_features = picture.mixes_features
  draw = drawer(method, photos, **picture_kwargs)
  if method in NOT_MIXING:
    result = draw(seed)
    chosen = (seed, to_display(result.images), result, tile_mixes(to_display(result.images), photos, result))
  else:
    chosen = choose_draw(draw, photos, seed, tries)
  s, images, result, mixed = chosen
  steps = picture_kwargs.get("steps")
  if steps and "steps" in inspect.signature(picture.build).parameters:
    note += f" (here trained {steps} steps on these photos)"
  title = f"{method} (key {s})" + (f" — {note}" if note else "")
  captions = tuple(tile_caption(result, i) for i in range(len(images)))
  return Row(
    method=method,
    title=title,
    seed=s,
    images=images,
    result=result,
    captions=captions,
    mixed=mixed,
    mixes_pixels=not (mixes_features or method in NOT_MIXING),
  )


def build_rows(
  methods: Sequence[str], *, size: int = DEFAULT_SIZE, seed: int = 0, tries: int = DEFAULT_TRIES, **picture_kwargs
) -> list[Row]:
  photos = load_photos(size)
  return [picture_row(m, photos, seed=seed, tries=tries, **picture_kwargs) for m in methods]


def figure(rows: Sequence[Row]):
  """The matplotlib figure of ``rows`` (rows: methods, columns: photos)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cols = max(len(r.captions) for r in rows)
  height = HEADER_H_IN + ROW_H_IN * len(rows)
  fig = plt.figure(figsize=(TILE_W_IN * cols, height), dpi=DPI)
  fig.text(
    0.5,
    1 - 0.12 / height,
    "λ: weight of the tile's own photo.  Label weights: the target the sample is trained with.",
    ha="center",
    va="top",
    fontsize=8,
  )
  fig.text(
    0.5,
    1 - 0.3 / height,
    f"Each row: the first of --tries keys whose tiles all mix two photos with λ in "
    f"[{LAM_RANGE[0]}, {LAM_RANGE[1]}] (else the best).",
    ha="center",
    va="top",
    fontsize=7,
  )
  top = 1 - HEADER_H_IN / height
  row_h = ROW_H_IN / height
  for r, row in enumerate(rows):
    y0 = top - (r + 1) * row_h
    fig.text(0.01, y0 + row_h - 0.05 / height, row.title, ha="left", va="top", fontsize=7.5, fontweight="bold")
    for c, caption in enumerate(row.captions):
      ax = fig.add_axes([c / cols + 0.06 / cols, y0 + 0.02 / height, 0.88 / cols, row_h - 0.75 / height])
      ax.imshow(row.images[c])
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(caption, fontsize=7)
  return fig


def render(
  methods: Sequence[str],
  out: str,
  *,
  size: int = DEFAULT_SIZE,
  seed: int = 0,
  tries: int = DEFAULT_TRIES,
  **picture_kwargs,
) -> list[Row]:
  """Writes a PNG grid (rows: methods, columns: photos) to ``out``; returns the rows drawn."""
  import matplotlib.pyplot as plt

  rows = build_rows(methods, size=size, seed=seed, tries=tries, **picture_kwargs)
  fig = figure(rows)
  fig.savefig(out, dpi=DPI)
  plt.close(fig)
  return rows


def _fast_compiles() -> None:
  """LLVM optimisation off for this process's XLA programs, if jax is not imported yet (four small photos:
  compiling well costs more than it saves; measured 40 → 26 s of CPU for four methods). A user's own
  ``--xla_backend_optimization_level`` in XLA_FLAGS wins."""
  if "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()


def main(argv: Sequence[str] | None = None) -> int:
  from mixjax import compilation_cache, mixing

  parser = argparse.ArgumentParser(
    prog="python -m mixjax.visualize", description="Render mixed samples of scikit-image photographs."
  )
  parser.add_argument(
    "--method", required=True, help="a method name or 'all'; valid: " + ", ".join(mixing.list_methods())
  )
  parser.add_argument("--out", default=None, help="PNG path (default: mix_<method>.png)")
  parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of each photo in pixels, a multiple of 32")
  parser.add_argument("--seed", type=int, default=0, help="first key tried for each row")
  parser.add_argument(
    "--tries", type=int, default=DEFAULT_TRIES, help="keys tried per row to find a draw whose tiles all show a mix"
  )
  parser.add_argument(
    "--automix_steps",
    type=int,
    default=None,
    help="train steps of the AutoMix/SAMix picture's networks on the photos before mixing "
    "(default 0: an untrained MixBlock; training adds about half a minute per method)",
  )
  parser.add_argument(
    "--compilation_cache_dir",
    default=os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join("~", ".cache", "mixjax", "jax_cache"),
    help="persistent compilation cache; empty turns it off",
  )
  args = parser.parse_args(argv)
  if args.size < 32 or args.size % 32:
    parser.error(f"--size must be a positive multiple of 32 (PuzzleMix's label grids), got {args.size}")
  if args.method == "all":
    methods = mixing.list_methods()
  else:
    methods = [mixing.get_method(args.method).name]  # unknown → lists names
  compilation_cache.enable(args.compilation_cache_dir)
  out = args.out or f"mix_{args.method}.png"
  render(methods, out, size=args.size, seed=args.seed, tries=args.tries, steps=args.automix_steps)
  print(f"wrote {out}")
  return 0
