"""`sembridge_jax.data.parallel.ordered_map`: the per-file work of a build in worker processes."""

from __future__ import annotations

import functools
import multiprocessing
import os

import pytest

from sembridge_jax.data import errors, parallel


def test_results_come_in_the_items_order_across_chunks_and_workers():
  items = list(range(-500, 0))
  assert list(parallel.ordered_map(abs, items, workers=2, chunk_size=7)) == [-i for i in items]
  assert list(parallel.ordered_map(abs, iter(items), workers=1)) == [-i for i in items]
  assert list(parallel.ordered_map(abs, [], workers=2)) == []


@pytest.fixture
def no_new_children():
  """Fails a test that leaves worker processes of its own alive."""
  before = set(multiprocessing.active_children())
  yield lambda: not set(multiprocessing.active_children()) - before


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_a_workers_exception_comes_after_the_items_before_it_as_with_map(chunk_size,
                                                                       no_new_children):
  items = ["1", "2", "three", "4"]
  results = parallel.ordered_map(int, items, workers=2, chunk_size=chunk_size)
  assert next(results) == 1 and next(results) == 2
  with pytest.raises(ValueError, match="three"):
    next(results)
  assert no_new_children()


def test_the_workers_end_when_the_map_is_read_to_its_end_or_closed(no_new_children):
  results = parallel.ordered_map(abs, range(-10_000, 0), workers=2, chunk_size=10)
  assert next(results) == 10_000
  assert not no_new_children()
  results.close()   # Cancels the queued chunks and joins the workers.
  assert no_new_children()
  for _ in zip(range(3), parallel.ordered_map(abs, range(3), workers=2), strict=True):
    pass
  assert no_new_children()


def exits_in_a_worker(item: int) -> int:
  """Kills the worker process running it (as a script without a main guard would)."""
  if multiprocessing.parent_process() is not None:
    os._exit(1)
  return item


def test_workers_that_cannot_run_fall_back_to_this_process_with_a_warning(no_new_children):
  with pytest.warns(RuntimeWarning, match="worker processes could not start.*"
                                          "SEMBRIDGE_JAX_BUILD_WORKERS=1"):
    assert list(parallel.ordered_map(exits_in_a_worker, range(50), workers=2,
                                     chunk_size=4)) == list(range(50))
  assert no_new_children()


def test_workers_only_for_large_inputs_and_at_most_the_cap(monkeypatch):
  monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)
  monkeypatch.setattr(parallel, "available_cpus", lambda: 64)
  assert parallel.workers_for(parallel.PARALLEL_MIN_FILES - 1) == 1
  assert parallel.workers_for(parallel.PARALLEL_MIN_FILES) == parallel.MAX_WORKERS
  monkeypatch.setattr(parallel, "available_cpus", lambda: 3)
  assert parallel.workers_for(parallel.PARALLEL_MIN_FILES) == 3
  monkeypatch.setattr(parallel, "PARALLEL_MIN_FILES", 0)
  assert parallel.workers_for(1) == 3


def test_the_environment_sets_the_worker_count(monkeypatch):
  monkeypatch.setenv(parallel.WORKERS_ENV, "1")
  assert parallel.workers_for(10**6) == 1
  monkeypatch.setenv(parallel.WORKERS_ENV, "40")
  assert parallel.workers_for(10**6) == 40
  assert parallel.workers_for(1) == 1           # small inputs stay in this process
  monkeypatch.setenv(parallel.WORKERS_ENV, "many")
  with pytest.raises(ValueError, match="SEMBRIDGE_JAX_BUILD_WORKERS must be a positive integer"):
    parallel.workers_for(10**6)


def test_a_benchmark_error_raised_in_a_worker_keeps_its_problems(tmp_path):
  from sembridge_jax.data import readers, specs
  bad = tmp_path / "bad.tif"
  bad.write_bytes(b"not a tiff")
  read = functools.partial(readers.read_stored, spec=specs.get_spec("s2s_eu"), is_ms=True)
  with pytest.raises(errors.InvalidBenchmarkError) as raised:
    list(parallel.ordered_map(read, [bad], workers=2))
  (problem,) = raised.value.problems
  assert problem.path == str(bad) and "13-band GeoTIFF" in problem.expected
  assert str(raised.value) == str(errors.single(bad, problem.expected, problem.found))
