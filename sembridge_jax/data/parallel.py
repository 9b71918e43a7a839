"""An ordered map over worker processes, for the per-file work of building a benchmark.

Building a dataset reads every source file twice in one process (`layout.inspect`, then
the records) and renders the synthetic classes; on a machine with many cores those are
the parts that parallelise (TFDS compresses and writes the records in its own, single
thread). `ordered_map` yields ``function(item)`` for every item *in order*, so a build
gives byte-identical records and statistics whatever the number of workers.

Workers are fresh interpreters ("spawn": forking a process that runs JAX's threads can
deadlock), each importing the package (2-3 s, concurrently), so a parallel map pays
only for large inputs: callers ask `workers_for` with their item count.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this many files a build reads them in its own process: the workers' start-up
# (2-3 s) costs more than reading ~2 ms per file in parallel saves.
PARALLEL_MIN_FILES = 5_000
# Each worker is an interpreter with the package imported (~0.3 GB); a container's CPU
# quota may be far below the CPUs it sees.
MAX_WORKERS = 16
WORKERS_ENV = "SEMBRIDGE_JAX_BUILD_WORKERS"
CHUNK_SIZE = 64          # items per task: amortises the inter-process round trip
CHUNKS_PER_WORKER = 4    # tasks in flight per worker: bounds the results held in memory


def available_cpus() -> int:
  """CPUs this process may run on (the affinity mask where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS, Windows
    return os.cpu_count() or 1


def workers_for(items: int, minimum: int | None = None) -> int:
  """Worker processes for ``items`` items: from ``minimum`` items on (default
  `PARALLEL_MIN_FILES`) one per CPU, at most `MAX_WORKERS`, or ``$SEMBRIDGE_JAX_BUILD_WORKERS``
  (1: none); below, 1."""
  if items < (PARALLEL_MIN_FILES if minimum is None else minimum):
    return 1
  setting = os.environ.get(WORKERS_ENV, "").strip()
  if setting:
    if not setting.isdigit() or int(setting) < 1:
      raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {setting!r}")
    return int(setting)
  return min(available_cpus(), MAX_WORKERS)


def _apply(function: Callable[[Item], Result], chunk: list[Item]) -> list[Result]:
  return [function(item) for item in chunk]


def ordered_map(function: Callable[[Item], Result], items: Iterable[Item], *, workers: int,
                chunk_size: int = CHUNK_SIZE) -> Iterator[Result]:
  """``function(item)`` for each item, in the items' order.

  With ``workers > 1`` the calls run in that many spawned processes (``function`` and
  the items must pickle: a module-level function or a ``functools.partial`` of one),
  ``chunk_size`` items per task and at most ``CHUNKS_PER_WORKER`` tasks per worker in
  flight, so a slow consumer holds a bounded number of results. A worker's exception is
  raised here, at its item. ``workers <= 1``: the calls run lazily in this process.
  """
  if workers <= 1:
    yield from map(function, items)
    return
  chunks = iter(lambda iterator=iter(items): list(itertools.islice(iterator, chunk_size)), [])
  pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"))
  try:
    pending = collections.deque(pool.submit(_apply, function, chunk)
                                for chunk in itertools.islice(chunks, workers * CHUNKS_PER_WORKER))
    while pending:
      results = pending.popleft().result()
      for chunk in itertools.islice(chunks, 1):
        pending.append(pool.submit(_apply, function, chunk))
      yield from results
  finally:  # Also when the consumer stops early: drop the queued tasks, end the workers.
    pool.shutdown(wait=True, cancel_futures=True)
