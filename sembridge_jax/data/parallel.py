"""An ordered map over worker processes, for the per-file work of building a benchmark.

Building a dataset reads every source file twice (`layout.inspect`, then the records)
and renders the synthetic classes; on a machine with many cores those are the parts that
parallelise (TFDS compresses and writes the records in the main process, serially).
`ordered_map` yields ``function(item)`` for every item *in order*, so a build gives
byte-identical records and statistics whatever the number of workers.

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
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
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
CHUNK_SIZE = 32          # items per task: amortises the inter-process round trip
# Tasks in flight per worker: bounds the results held in memory (2 x 16 x 32 images).
CHUNKS_PER_WORKER = 2


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


def _apply(function: Callable[[Item], Result], chunk: list[Item]
           ) -> tuple[list[Result], BaseException | None]:
  """``function`` over a chunk, up to its first exception (returned, not raised, so that
  the items before it still reach the consumer)."""
  results = []
  for item in chunk:
    try:
      results.append(function(item))
    except Exception as error:  # noqa: BLE001 -- re-raised by ordered_map at its item
      return results, error
  return results, None


def ordered_map(function: Callable[[Item], Result], items: Iterable[Item], *, workers: int,
                chunk_size: int = CHUNK_SIZE) -> Iterator[Result]:
  """``function(item)`` for each item, in the items' order, like ``map``.

  With ``workers > 1`` the calls run in that many spawned processes (``function`` and
  the items must pickle: a module-level function or a ``functools.partial`` of one),
  ``chunk_size`` items per task and at most ``CHUNKS_PER_WORKER`` tasks per worker in
  flight, so a slow consumer holds a bounded number of results. An exception is raised
  here after the results of the items before it, as ``map`` would. If the workers cannot
  start (a script without ``if __name__ == "__main__":`` re-runs itself in each spawned
  worker), the calls run in this process after a warning. ``workers <= 1``: the calls
  run lazily in this process.
  """
  if workers <= 1:
    yield from map(function, items)
    return
  chunks = iter(lambda iterator=iter(items): list(itertools.islice(iterator, chunk_size)), [])
  pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"))
  try:
    pending = collections.deque(
        (chunk, pool.submit(_apply, function, chunk))
        for chunk in itertools.islice(chunks, workers * CHUNKS_PER_WORKER))
    yielded = False
    while pending:
      chunk, future = pending.popleft()
      try:
        results, error = future.result()
      except BrokenProcessPool:
        if yielded:
          raise
        warnings.warn(f"worker processes could not start (a script that builds a dataset "
                      f"needs `if __name__ == \"__main__\":`; {WORKERS_ENV}=1 avoids them): "
                      "reading in this process", RuntimeWarning, stacklevel=2)
        unread = itertools.chain(chunk, *(chunk for chunk, _ in pending), *chunks)
        pending.clear()
        yield from map(function, unread)
        return
      for chunk in itertools.islice(chunks, 1):
        pending.append((chunk, pool.submit(_apply, function, chunk)))
      yield from results
      yielded = True
      if error is not None:
        raise error
  finally:  # Also when the consumer stops early: drop the queued tasks, end the workers.
    pool.shutdown(wait=True, cancel_futures=True)
