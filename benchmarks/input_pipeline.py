"""Input throughput: images/s per CPU core of each recipe's train pp and of the eval pp, tf.data vs torchvision.

The tf.data side is mixjax's real pipeline (``mixjax.data.make_train_iterator`` / ``make_eval_iterator`` on the
locally made ImageNet-shaped JPEGs, ``mixjax_photos``: TFRecords of ≈500×375 JPEGs, quality 90) with the pp spec
of each recipe config, ``data.num_parallel_calls`` = the core count. The torchvision side is a
``torch.utils.data.DataLoader`` over the same JPEGs written out as files (PIL decode, the same transforms: timm's
RandAugment / RandomErasing where the recipe uses them), with ``num_workers`` = the core count. Each measurement
runs in its own process pinned to that many cores (``os.sched_setaffinity``), torch in a separate process
(torchvision crashes beside TensorFlow in one process). Prints a markdown table; nothing is asserted.

    python benchmarks/input_pipeline.py                       # 1 core and all cores, every recipe, torch if installed
    python benchmarks/input_pipeline.py --cores=1 --recipes=pytorch_style --breakdown

Goals (issue 14): ≥ 350 img/s/core for decode + RandomResizedCrop + flip to 224 (the pytorch_style train pp),
RandAugment recipes at least as fast as torchvision's, eval ≥ 400 img/s/core. ``--breakdown`` adds the
cumulative cost of each op of the train specs (prefixes of the spec) and full-image decode alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# recipe → how torchvision/timm does the same train transform: (size, timm RandAugment string or None, erasing p)
TORCH_TRAIN = {
  "pytorch_style": (224, None, 0.0),
  "rsb_a3": (160, "rand-m6-mstd0.5-inc1", 0.0),
  "rsb_a2": (224, "rand-m7-mstd0.5-inc1", 0.0),
  "deit": (224, "rand-m9-mstd0.5-inc1", 0.25),
  "tiny_imagenet": (64, None, 0.0),
}
# eval pp name → torchvision: (resize short side, centre crop) ; (size, None): resize to size×size
TORCH_EVAL = {"eval_224_0.875": (256, 224), "eval_224_0.95": (236, 224), "eval_64_resize": (64, None)}
RECIPE_ARG = {"pytorch_style": "vanilla", "rsb_a3": "rsb", "rsb_a2": "rsb", "deit": "deit", "tiny_imagenet": "vanilla"}
EVAL_OF = {
  "pytorch_style": "eval_224_0.875",
  "rsb_a3": "eval_224_0.95",
  "deit": "eval_224_0.875",
  "tiny_imagenet": "eval_64_resize",
}
DATASET = "mixjax_photos"
GOALS = {"pytorch_style": 350, "eval_224_0.875": 400, "eval_224_0.95": 400}


def recipe_specs(recipes) -> list[dict]:
  """Rows to measure: every recipe's train pp and the distinct eval pps, from the recipe configs themselves."""
  from mixjax.recipes import cells

  rows, evals = [], {}
  for recipe in recipes:
    c = cells.load_recipe(recipe).build_config(RECIPE_ARG[recipe])
    rows.append(
      {
        "name": f"{recipe} train",
        "key": recipe,
        "spec": c.data.pp_train,
        "split": "train",
        "torch": ["train", *TORCH_TRAIN[recipe]],
      }
    )
    if recipe in EVAL_OF:
      evals.setdefault(EVAL_OF[recipe], c.data.pp_eval)
  for key, spec in evals.items():
    rows.append(
      {"name": key.replace("_", " "), "key": key, "spec": spec, "split": "eval", "torch": ["eval", *TORCH_EVAL[key]]}
    )
  return rows


# ------------------------------------------------------------------------------------------- workers ---


def _pin(cores: int) -> None:
  available = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, set(available[:cores]))


def tf_worker(spec: str, split: str, cores: int, batch: int, seconds: float, data_dir: str) -> dict:
  """images/s of mixjax's real pipeline with `spec` (run in a process pinned to `cores`)."""
  _pin(cores)
  from mixjax import data

  cfg = data.default_data_config()
  cfg.name, cfg.data_dir = DATASET, data_dir
  cfg.train_split, cfg.eval_split = "train", "train"  # eval pp over the 768 train JPEGs (more than validation)
  cfg.num_parallel_calls = cores
  cfg.shuffle_buffer = 256
  cfg.prefetch = 2
  if split == "train":
    cfg.pp_train = spec
    it = data.make_train_iterator(cfg, global_batch_size=batch, seed=0, process_index=0, process_count=1)
    next_batch = lambda: next(it)  # noqa: E731
  else:
    cfg.pp_eval = spec
    factory, _ = data.make_eval_iterator(cfg, global_batch_size=batch, process_index=0, process_count=1)
    state = {"it": factory()}

    def next_batch():
      try:
        return next(state["it"])
      except StopIteration:
        state["it"] = factory()
        return next(state["it"])

  return _time_batches(next_batch, batch, seconds)


def tf_decode_worker(cores: int, seconds: float, data_dir: str) -> dict:
  """Full-image JPEG decode alone (tf.io.decode_jpeg in a parallel tf.data map over the same records)."""
  _pin(cores)
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from mixjax.data import photos

  builder = photos.prepared_builder(data_dir)
  raw = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()}).map(lambda ex: ex["image"])
  raw = raw.cache().repeat()
  ds = (
    raw.map(lambda b: tf.reduce_max(tf.io.decode_jpeg(b, channels=3)), num_parallel_calls=cores).batch(64).prefetch(2)
  )
  it = iter(ds)
  return _time_batches(lambda: next(it), 64, seconds)


def _time_batches(next_batch, batch: int, seconds: float) -> dict:
  for _ in range(3):  # warm-up: graph building, thread start, file cache
    next_batch()
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds or n < 5:
    next_batch()
    n += 1
  elapsed = time.perf_counter() - t0
  return {"images_per_s": n * batch / elapsed, "batches": n}


def export_jpegs(data_dir: str) -> str:
  """The train JPEGs of mixjax_photos as files (<dir>/<label>/<i>.jpg) for the torchvision side (once)."""
  import tensorflow_datasets as tfds
  from mixjax.data import photos

  out = os.path.join(data_dir, "mixjax_photos_files", "train")
  done = os.path.join(out, ".complete")
  if os.path.exists(done):
    return out
  builder = photos.prepared_builder(data_dir)
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  for i, ex in enumerate(tfds.as_numpy(ds)):
    folder = os.path.join(out, str(int(ex["label"])))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
      f.write(ex["image"])
  open(done, "w").close()
  return out


def torch_worker(kind: list, cores: int, batch: int, seconds: float, folder: str) -> dict:
  """images/s of a torchvision DataLoader (num_workers = cores) with the same transform over the same JPEGs."""
  _pin(cores)
  import torch
  from PIL import Image
  from torchvision import transforms as T

  bicubic = T.InterpolationMode.BICUBIC
  if kind[0] == "train":
    _, size, ra, erase = kind
    ops = [T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=bicubic), T.RandomHorizontalFlip()]
    if ra:
      from timm.data import auto_augment
      from timm.data.auto_augment import rand_augment_transform

      # timm's PosterizeIncreasing reaches 0 bits at high magnitudes, which Pillow >= 12 refuses; older Pillow
      # returned a black image for 0 bits, which is what this keeps (same cost, same semantics).
      _posterize = auto_augment.posterize
      safe = lambda img, bits, **kw: (
        Image.new(img.mode, img.size)
        if bits <= 0  # noqa: E731
        else _posterize(img, bits, **kw)
      )
      for op_name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[op_name] = safe
      ops.append(
        rand_augment_transform(
          ra, dict(translate_const=int(size * 0.45), img_mean=(124, 116, 104), interpolation=Image.BICUBIC)
        )
      )
    ops.append(T.PILToTensor())
    if erase:  # timm erases the normalised float tensor
      from timm.data.random_erasing import RandomErasing

      ops += [
        T.ConvertImageDtype(torch.float32),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        RandomErasing(erase, mode="pixel", device="cpu"),
      ]
  elif kind[0] == "eval":
    _, short, crop = kind
    ops = (
      [T.Resize(short, interpolation=bicubic), T.CenterCrop(crop)]
      if crop
      else [T.Resize((short, short), interpolation=T.InterpolationMode.BILINEAR)]
    )
    ops.append(T.PILToTensor())
  else:  # decode only
    ops = [T.PILToTensor()]
  transform = T.Compose(ops)
  files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".jpg"))

  class Files(torch.utils.data.Dataset):
    def __len__(self):
      return len(files)

    def __getitem__(self, i):
      with open(files[i], "rb") as f:
        image = Image.open(f).convert("RGB")
      out = transform(image)
      return out if kind[0] != "decode" else torch.zeros(()), 0

  loader = torch.utils.data.DataLoader(
    Files(),
    batch_size=batch,
    shuffle=True,
    num_workers=cores,
    drop_last=True,
    persistent_workers=True,
    prefetch_factor=2,
  )
  state = {"it": iter(loader)}

  def next_batch():
    try:
      return next(state["it"])
    except StopIteration:
      state["it"] = iter(loader)
      return next(state["it"])

  return _time_batches(next_batch, batch, seconds)


# ------------------------------------------------------------------------------------------- parent ---


def _run_worker(argv: list[str], timeout: float) -> dict:
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__), *argv],
    capture_output=True,
    text=True,
    env=env,
    timeout=timeout,
    check=False,
  )
  for line in reversed(proc.stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
  return {"error": tail[:200]}


def _torch_available() -> bool:
  probe = "import torch, torchvision, timm"
  return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode == 0


def spec_prefixes(spec: str) -> list[str]:
  """Cumulative prefixes of a train spec that end in a fixed-size image (for --breakdown)."""
  ops = spec.split("|")
  return ["|".join(ops[:i]) for i in range(1, len(ops) + 1)]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--recipes", default=",".join(TORCH_TRAIN))
  p.add_argument("--cores", default="1,all", help="comma-separated core counts; 'all' = every core of this process")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seconds", type=float, default=8.0, help="measured time per row (after 3 warm-up batches)")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--breakdown", action="store_true", help="cumulative cost of each op of the train specs")
  p.add_argument("--json", default="")
  # worker mode (internal)
  p.add_argument("--worker", choices=["tf", "tf_decode", "torch"])
  p.add_argument("--spec", default="")
  p.add_argument("--split", default="train")
  p.add_argument("--torch_kind", default="")
  p.add_argument("--folder", default="")
  p.add_argument("--ncores", type=int, default=1)
  args = p.parse_args(argv)
  data_dir = os.path.expanduser(
    args.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
  )

  if args.worker:
    if args.worker == "tf":
      out = tf_worker(args.spec, args.split, args.ncores, args.batch, args.seconds, data_dir)
    elif args.worker == "tf_decode":
      out = tf_decode_worker(args.ncores, args.seconds, data_dir)
    else:
      out = torch_worker(json.loads(args.torch_kind), args.ncores, args.batch, args.seconds, args.folder)
    print(json.dumps(out), flush=True)
    return 0

  from mixjax.data import photos

  photos.prepared_builder(data_dir)
  all_cores = len(os.sched_getaffinity(0))
  core_counts = sorted({all_cores if c == "all" else min(int(c), all_cores) for c in args.cores.split(",")})
  use_torch = not args.no_torch and _torch_available()
  folder = export_jpegs(data_dir) if use_torch else ""
  rows = recipe_specs(args.recipes.split(","))
  if args.breakdown:
    extra = []
    for row in rows:
      if row["split"] == "train":
        for prefix in spec_prefixes(row["spec"])[:-1]:
          extra.append(
            {"name": f"  ↳ {prefix.split('|')[-1][:40]}", "key": "", "spec": prefix, "split": "train", "torch": None}
          )
    rows += extra
    rows.append(
      {"name": "decode only (full image)", "key": "decode", "spec": None, "split": "train", "torch": ["decode"]}
    )
  timeout = 120 + 10 * args.seconds
  common = [f"--batch={args.batch}", f"--seconds={args.seconds}", f"--data_dir={data_dir}"]
  print(f"# input pipeline on {DATASET} ({all_cores} cores available, batch {args.batch}; img/s/core = img/s ÷ cores)")
  header = "| pipeline | pp spec (tf.data) | " + " | ".join(
    f"tf.data {n}c img/s/core" + (f" | torchvision {n}c img/s/core" if use_torch else "") for n in core_counts
  )
  print(header + " | goal |")
  print("|" + "---|" * (3 + len(core_counts) * (2 if use_torch else 1)), flush=True)
  results = []
  for row in rows:
    cells = []
    entry = {**row, "results": {}}
    for n in core_counts:
      if row["spec"] is None:
        tf_out = _run_worker(["--worker=tf_decode", f"--ncores={n}", *common], timeout)
      else:
        tf_out = _run_worker(
          ["--worker=tf", f"--spec={row['spec']}", f"--split={row['split']}", f"--ncores={n}", *common], timeout
        )
      entry["results"][f"tf_{n}"] = tf_out
      cells.append(f"{tf_out['images_per_s'] / n:.0f}" if "images_per_s" in tf_out else f"error: {tf_out['error']}")
      if use_torch:
        if row["torch"] is None:
          cells.append("")
          continue
        th_out = _run_worker(
          [
            "--worker=torch",
            f"--torch_kind={json.dumps(row['torch'])}",
            f"--folder={folder}",
            f"--ncores={n}",
            *common,
          ],
          timeout,
        )
        entry["results"][f"torch_{n}"] = th_out
        cells.append(f"{th_out['images_per_s'] / n:.0f}" if "images_per_s" in th_out else f"error: {th_out['error']}")
    goal = GOALS.get(row["key"])
    print(
      f"| {row['name']} | `{row['spec'] or 'tf.io.decode_jpeg / PIL'}` | "
      + " | ".join(cells)
      + f" | {f'≥ {goal}' if goal else ''} |",
      flush=True,
    )
    results.append(entry)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
