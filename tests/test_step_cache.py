"""The step cache: a repeated compile of the same step loads the executable without tracing, computes the same,
and any change to what the program is made from misses (mixjax/step_cache.py)."""

import json
import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mixjax import step_cache
from tests.helpers import FAST_OVERRIDES, REPO, demo_config, main_cmd, run_cli

CONTEXT = {"config": {"model": "resnet18", "lr": 0.1}, "dataset": ["digits", 10], "schedule": [11, 22]}


def _args(batch=8, dtype=jnp.float32, spec=PartitionSpec("data")):
  mesh = jax.make_mesh((4,), ("data",))
  x = jax.device_put(jnp.arange(batch * 3, dtype=dtype).reshape(batch, 3), NamedSharding(mesh, spec))
  state = {"w": jnp.ones((3, 3), dtype), "step": jnp.zeros((), jnp.int32)}
  return state, x


def _step_and_trace_counter():
  traces = []

  def step(state, x):
    traces.append(1)  # runs only while jax traces the function
    y = jnp.tanh(x @ state["w"])
    return {"w": 0.9 * state["w"] + y.mean(), "step": state["step"] + 1}, y.sum()

  return jax.jit(step, donate_argnums=0), traces


def test_a_second_compile_loads_without_tracing_and_computes_the_same(tmp_path):
  step, traces = _step_and_trace_counter()
  compiled, timing = step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "compiled" and len(traces) == 1
  assert len(list((tmp_path / step_cache.SUBDIR).glob("*.pkl"))) == 1
  expected = jax.device_get(compiled(*_args()))

  fresh_step, fresh_traces = _step_and_trace_counter()  # a new process would start from a new jit object
  loaded, timing = step_cache.compile_step(fresh_step, _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "step cache" and timing["trace_s"] == 0.0
  assert fresh_traces == []  # the step was never traced
  state, x = _args()
  got = jax.device_get(loaded(state, x))
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  assert state["w"].is_deleted()  # the donation of the train state is part of the loaded executable


@pytest.mark.parametrize(
  "change",
  ["context", "batch", "dtype", "sharding"],
)
def test_a_change_to_what_the_program_is_made_from_misses(change):
  base = step_cache.cache_key(_args(), CONTEXT)
  assert step_cache.cache_key(_args(), json.loads(json.dumps(CONTEXT))) == base
  changed = {
    "context": lambda: step_cache.cache_key(_args(), {**CONTEXT, "config": {"model": "resnet18", "lr": 0.2}}),
    "batch": lambda: step_cache.cache_key(_args(batch=12), CONTEXT),
    "dtype": lambda: step_cache.cache_key(_args(dtype=jnp.bfloat16), CONTEXT),
    "sharding": lambda: step_cache.cache_key(_args(spec=PartitionSpec()), CONTEXT),
  }[change]()
  assert changed != base


def test_a_corrupt_entry_is_compiled_again_and_replaced(tmp_path):
  step, traces = _step_and_trace_counter()
  step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  (entry,) = (tmp_path / step_cache.SUBDIR).glob("*.pkl")
  entry.write_bytes(entry.read_bytes()[:1000])  # a run killed while another wrote it, a full disk, ...
  step, traces = _step_and_trace_counter()
  compiled, timing = step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "compiled" and len(traces) == 1
  _, timing = step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "step cache"


def test_the_key_does_not_depend_on_the_process(tmp_path):
  """The key has no addresses, times or paths of this process in it, or a new run would never find its entry."""
  code = (
    "import json, sys; from tests import test_step_cache as t; from mixjax import step_cache;"
    "print(step_cache.cache_key(t._args(), t.CONTEXT))"
  )
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == step_cache.cache_key(_args(), CONTEXT)


def test_a_repeated_run_in_a_new_workdir_loads_its_train_step(tmp_path):
  """Two runs of the same cell sharing a compilation cache: the second skips tracing and trains the same."""
  cache = str(tmp_path / "cache")
  overrides = (*FAST_OVERRIDES, "--config.max_steps=3", f"--compilation_cache_dir={cache}")
  first = run_cli(main_cmd("configs/demo.py:cutmix", str(tmp_path / "a"), *overrides))
  second = run_cli(main_cmd("configs/demo.py:cutmix", str(tmp_path / "b"), *overrides))
  for proc in (first, second):
    assert proc.returncode == 0, proc.stderr[-5000:]
  assert "Train step compiled in" in first.stderr
  assert "Train step loaded from the step cache" in second.stderr
  a, b = (json.load(open(tmp_path / run / "results.json")) for run in ("a", "b"))
  assert a["timing"]["step_source"] == "compiled" and b["timing"]["step_source"] == "step cache"
  assert b["timing"]["trace_s"] == 0.0
  # compiled or loaded while tf.data made the first batches: the loop waited at most the whole compile for it
  assert 0.0 <= b["timing"]["step_wait_s"] <= b["timing"]["compile_s"] + 0.05
  assert a["history"] == b["history"]


def test_a_step_that_came_from_jax_compilation_cache_is_not_stored(tmp_path):
  """XLA:CPU re-serializes an executable it loaded without some kernels, so only a fresh compile is kept."""
  import time

  salt = time.time()  # a program no earlier run put in JAX's cache

  def step(state, x):
    return {"w": state["w"] * salt + x.mean(), "step": state["step"] + 1}, x.sum()

  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    jax.jit(step).lower(*_args()).compile()  # stored in JAX's cache (on in the tests, conftest.py)
    jax.clear_caches()
    compiled, timing = step_cache.compile_step(jax.jit(step), _args(), directory=str(tmp_path), context=CONTEXT)
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)
  assert timing["source"] == "compiled" and timing["jax_cache_hit"]
  assert not list((tmp_path / step_cache.SUBDIR).glob("*.pkl"))
  _, timing = step_cache.compile_step(jax.jit(step), _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "compiled"  # still no entry: the next fresh compile stores it


def test_a_step_compiled_in_the_background_from_the_batch_spec_runs_the_first_batch(tmp_path):
  """mixjax.main compiles the step from the train iterator's element spec while tf.data makes the first batches.
  The spec's global arrays must be exactly the batch's (shapes, dtypes, shardings): then the step accepts the
  batch and the key is the one a run compiling for the real batch would use."""
  from mixjax import data, sharding

  config = demo_config()
  batches = data.make_train_iterator(config.data, global_batch_size=8, seed=0)
  mesh = sharding.make_mesh()
  spec = sharding.global_batch_spec(batches.element_spec, mesh)
  state = {"w": jnp.ones((3,), jnp.float32)}

  def step(state, batch):
    return {"w": state["w"] + batch["image"].astype(jnp.float32).mean()}, batch["label"].sum()

  pending = step_cache.compile_step_in_background(
    jax.jit(step), (state, spec), directory=str(tmp_path), context=CONTEXT
  )
  batch = sharding.host_batch_to_global(next(batches), mesh)
  assert step_cache.same_signature((state, spec), (state, batch))
  assert not step_cache.same_signature((state, spec), (state, {**batch, "label": batch["label"][:4]}))
  compiled, timing = pending.result()
  assert timing["source"] == "compiled"
  jax.tree.map(np.testing.assert_array_equal, compiled(state, batch), jax.jit(step)(state, batch))
  _, timing = step_cache.compile_step(jax.jit(step), (state, batch), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "step cache"  # the same key as the spec's


def test_an_error_in_the_background_compile_reaches_the_caller(tmp_path):
  def step(state, x):
    raise ValueError("a mistake found while tracing")

  pending = step_cache.compile_step_in_background(jax.jit(step), _args(), directory=str(tmp_path), context=CONTEXT)
  with pytest.raises(ValueError, match="a mistake found while tracing"):
    pending.result()


def test_a_jax_cache_hit_in_another_thread_is_not_the_steps():
  """While the step compiles on its thread, the main thread may load other programs from JAX's cache."""
  from jax import monitoring

  with step_cache._jax_cache_hits() as hits:
    other = threading.Thread(target=monitoring.record_event, args=("/jax/compilation_cache/cache_hits",))
    other.start()
    other.join()
    assert hits == []
    monitoring.record_event("/jax/compilation_cache/cache_hits")
  assert len(hits) == 1


def test_mixjax_step_cache_0_turns_it_off_without_changing_keys(tmp_path, monkeypatch):
  key = step_cache.cache_key(_args(), CONTEXT)
  monkeypatch.setenv("MIXJAX_STEP_CACHE", "0")
  assert step_cache.cache_key(_args(), CONTEXT) == key  # the switch is no part of what the program is made of
  step, _ = _step_and_trace_counter()
  _, timing = step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  assert timing["source"] == "compiled" and not (tmp_path / step_cache.SUBDIR).exists()


def test_the_least_recently_used_entries_go_when_the_cache_is_over_its_bound(tmp_path):
  entries = tmp_path / step_cache.SUBDIR
  entries.mkdir()
  for i, name in enumerate(["old", "used", "new"]):
    (entries / f"{name}.pkl").write_bytes(b"x" * 1000)
    (entries / f"{name}.json").write_text("{}")
    os.utime(entries / f"{name}.pkl", (1000 + i, 1000 + i))
  os.utime(entries / "used.pkl", (5000, 5000))  # loaded lately
  assert step_cache.evict(str(entries), limit=2000) == ["old.pkl"]
  assert sorted(p.name for p in entries.iterdir()) == ["new.json", "new.pkl", "used.json", "used.pkl"]
  assert step_cache.evict(str(entries), limit=2000) == []


def test_storing_and_loading_keep_the_cache_within_its_bound(tmp_path, monkeypatch):
  """A stored entry evicts older ones past MIXJAX_STEP_CACHE_MAX_GB; a loaded one counts as just used."""
  step, _ = _step_and_trace_counter()
  step_cache.compile_step(step, _args(), directory=str(tmp_path), context=CONTEXT)
  (first,) = (tmp_path / step_cache.SUBDIR).glob("*.pkl")
  os.utime(first, (1000, 1000))
  step_cache.compile_step(_step_and_trace_counter()[0], _args(), directory=str(tmp_path), context=CONTEXT)  # a hit
  assert first.stat().st_mtime > 1000
  monkeypatch.setenv("MIXJAX_STEP_CACHE_MAX_GB", str(first.stat().st_size * 1.5 / 1e9))  # room for one entry
  step_cache.compile_step(step, _args(batch=12), directory=str(tmp_path), context=CONTEXT)
  (kept,) = (tmp_path / step_cache.SUBDIR).glob("*.pkl")
  assert kept != first and not first.with_suffix(".json").exists()
