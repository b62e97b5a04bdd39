"""TensorFlow's thread pools in a process where TensorFlow only feeds tf.data.

tf.data already spreads the work over the cores one example per thread (``data.num_parallel_calls``). Left at
its default, TensorFlow also splits the work of single ops inside a map function over its intra-op pool, and on
a busy machine the two kinds of parallelism fight for the same cores: on this project's 2-core machine, decode +
RandomResizedCrop + flip to 224 ran at 253-269 img/s/core with both cores (350 with one), and at 304-311 with one
intra-op thread (``benchmarks/input_pipeline.py``). So the input pipeline asks TensorFlow for one intra-op
thread before TensorFlow starts its runtime.

TensorFlow's pools are fixed once its runtime has started (the first op, or a TensorBoard writer), so the
training and evaluation entry points call :func:`limit_intra_op_threads` first; the iterators call it too, for
programs that use them directly. A user's ``TF_NUM_INTRAOP_THREADS`` wins.
"""

from __future__ import annotations

import os

from absl import logging

_ENV = "TF_NUM_INTRAOP_THREADS"


def limit_intra_op_threads(threads: int = 1) -> bool:
  """Gives TensorFlow ``threads`` intra-op threads; False if the user chose or the runtime already started."""
  if os.environ.get(_ENV):
    return False
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if tf.config.threading.get_intra_op_parallelism_threads() == threads:
    return True
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:  # the runtime has started: its pools stay as they are
    logging.log_first_n(
      logging.INFO, "TensorFlow already started; its intra-op thread pool keeps its size (input may be slower).", 1
    )
    return False
  return True
