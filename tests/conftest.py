"""Test-wide setup: 4 fake CPU devices and a persistent compilation cache.

Both must be set before jax is imported anywhere, which is why they live here.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
from mixjax import cpu_backend  # noqa: E402  (imports no jax)

cpu_backend.configure_xla_flags()  # the CPU-only XLA settings the commands use (subprocesses inherit them)
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "mixjax_test_jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "mixjax_test_tfds"))
