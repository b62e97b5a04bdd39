"""TensorFlow's intra-op pool: one thread once the input pipeline is built, unless the user chose (fresh processes)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Builds the digits train and eval iterators the way mixjax.train does (a TensorBoard writer first), then prints
# TensorFlow's intra-op pool size (0 = TensorFlow's default: one thread per core).
_PROGRAM = """
import json, sys
import tensorflow as tf
from mixjax import data
if sys.argv[1] == "writer_first":
  from clu import metric_writers
  metric_writers.create_default_writer(sys.argv[3]).write_scalars(0, {"x": 1.0})
elif sys.argv[1] == "entry_point":
  data.limit_intra_op_threads()
  from clu import metric_writers
  metric_writers.create_default_writer(sys.argv[3]).write_scalars(0, {"x": 1.0})
cfg = data.default_data_config()
cfg.data_dir = sys.argv[2]
cfg.pp_train = "decode_jpeg_and_random_resized_crop(16)|flip_lr"
cfg.pp_eval = "decode|central_crop(32)"
batch = next(data.make_train_iterator(cfg, global_batch_size=8, seed=0, process_index=0, process_count=1))
factory, _ = data.make_eval_iterator(cfg, global_batch_size=8, process_index=0, process_count=1)
next(factory())
print(json.dumps({"intra_op": tf.config.threading.get_intra_op_parallelism_threads(), "shape": list(batch["image"].shape)}))
"""


def _run(mode, digits_dir, tmp_path, **env):
  result = subprocess.run(
    [sys.executable, "-c", _PROGRAM, mode, digits_dir, str(tmp_path)],
    cwd=REPO,
    env={**{k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}, **env},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_iterators_use_one_intra_op_thread(digits_dir, tmp_path):
  assert _run("iterators_only", digits_dir, tmp_path) == {"intra_op": 1, "shape": [8, 16, 16, 3]}


def test_entry_point_sets_it_before_tensorboard_starts_tensorflow(digits_dir, tmp_path):
  # The writer starts TensorFlow's runtime; after that the pool cannot change, so the entry point goes first.
  assert _run("entry_point", digits_dir, tmp_path)["intra_op"] == 1
  assert _run("writer_first", digits_dir, tmp_path)["intra_op"] == 0  # too late: left as it was, no error


def test_users_environment_variable_wins(digits_dir, tmp_path):
  assert _run("iterators_only", digits_dir, tmp_path, TF_NUM_INTRAOP_THREADS="2")["intra_op"] == 0
