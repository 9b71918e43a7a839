"""Orbax checkpoints: a rolling "latest" set for resuming and a single "best" one.

Layout under a run's ``checkpoints/``::

  latest/<step>/   full TrainState + input-iterator state + loop metadata (resume)
  best/<step>/     the latest checkpoint of the best evaluation so far (used by later
                   stages), published once that save has committed

The TrainState is stored as its flat list of leaves and restored into the tree
structure of a freshly built template state. That keeps Orbax away from NNX/Optax
container types and turns any architecture/config mismatch into a clear shape error.
Typed PRNG keys (NNX dropout streams) are stored as raw key data.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(tree: Any) -> dict[str, np.ndarray]:
  # Copies (np.array, not np.asarray): saves finish in the background while the next
  # train steps run, and on CPU np.asarray would alias a buffer that the step donates.
  leaves = jax.tree.leaves(tree)
  return {f"leaf_{i:05d}": np.array(jax.random.key_data(x) if _is_key(x) else x)
          for i, x in enumerate(leaves)}


def _from_savable(template: Any, saved: dict[str, Any]) -> Any:
  leaves, treedef = jax.tree.flatten(template)
  if len(saved) != len(leaves):
    raise ValueError(f"checkpoint holds {len(saved)} arrays but the model/optimizer built "
                     f"from the config has {len(leaves)}: was it written with another config?")
  restored = []
  for i, like in enumerate(leaves):
    value = np.asarray(saved[f"leaf_{i:05d}"])
    if _is_key(like):
      restored.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(like)))
      continue
    if value.shape != like.shape:
      raise ValueError(f"checkpoint array {i} has shape {value.shape}, expected {like.shape}: "
                       "was it written with another config?")
    restored.append(value.astype(like.dtype))
  return jax.tree.unflatten(treedef, restored)


class Restored(NamedTuple):
  step: int
  state: Any
  iterator_state: dict[str, Any] | None
  meta: dict[str, Any]


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, no permission, ...); the message
  names the folder and the operating system's error."""


def _os_error(error: BaseException) -> str:
  """The operating system's error behind ``error``, as "[Errno 28] No space left on
  device": the first OSError in its chain, or the code TensorStore reports in its text."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return f"[Errno {seen.errno}] {seen.strerror}"
    code = re.search(r"os_error_code='?(\d+)", str(seen))
    if code:
      return f"[Errno {code.group(1)}] {os.strerror(int(code.group(1)))}"
    seen = seen.__cause__ or seen.__context__
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class Checkpointer:
  """Periodic checkpoints of one training run, and the best one.

  Layout: ``latest/<step>/`` (the newest ``max_to_keep``) and ``best/<step>/``. Saves are
  asynchronous: ``save`` copies the state to host memory and returns while Orbax writes
  it. The best checkpoint is never written by a second writer racing the first: it is
  the committed ``latest/<step>`` folder, hard-linked (or copied) into ``best/`` by
  process 0 once that save has finished (at the next save, or at `wait_until_finished`).
  Any failed write raises `CheckpointWriteError` and leaves no temporary folder behind.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._latest = ocp.CheckpointManager(
        self.directory / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
    self._pending_best: int | None = None
    self._failed = False

  def save(self, step: int, state: Any, *, iterator_state: Any = None,
           meta: dict[str, Any] | None = None, best: bool = False) -> None:
    """Saves ``state`` as ``latest/<step>``; ``best=True`` also makes it the best one."""
    items = {"state": ocp.args.StandardSave(_to_savable(state)),
             "meta": ocp.args.JsonSave(meta or {})}
    if iterator_state is not None:
      items["iterator"] = ocp.args.JsonSave(_jsonable_iterator_state(iterator_state))
    self._guarded(step, self._finish_pending_best)  # Before older steps are deleted.
    self._guarded(step, lambda: self._latest.save(step, args=ocp.args.Composite(**items),
                                                  force=True))
    if best:
      self._pending_best = step

  def check(self) -> None:
    """Raises `CheckpointWriteError` if an asynchronous save has failed (cheap)."""
    self._guarded(None, self._latest.check_for_errors)

  def wait_until_finished(self) -> None:
    self._guarded(None, self._finish_pending_best)

  def latest_step(self) -> int | None:
    self.wait_until_finished()
    return self._latest.latest_step()

  def restore(self, template: Any, which: str = "latest") -> Restored | None:
    """The newest ``which`` ("latest" or "best") checkpoint, in the structure of
    ``template``; None if there is none. Waits for pending saves first."""
    if which not in ("latest", "best"):
      raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    self.wait_until_finished()
    if which == "latest":
      return _restore_newest(self._latest, self.directory / which, template)
    return _read_only_restore(self.directory / which, template)

  def ensure_best(self, step: int | None) -> None:
    """Publishes ``latest/<step>`` as the best checkpoint if a killed run recorded it as
    best but never published it (called on resume)."""
    if step is None or (self.directory / "best" / str(step)).is_dir():
      return
    if (self.directory / "latest" / str(step)).is_dir():
      self._pending_best = step
      self._guarded(step, self._finish_pending_best)

  def close(self) -> None:
    try:
      if not self._failed:  # After a failed write there is nothing left to finish.
        self.wait_until_finished()
    finally:
      self._latest.close()
      if self._failed:  # Orbax's writer threads may have created more since the error.
        self._remove_temporary_folders()

  def _finish_pending_best(self) -> None:
    self._latest.wait_until_finished()
    self._latest.check_for_errors()
    step, self._pending_best = self._pending_best, None
    if step is None:
      return
    failure = None
    if jax.process_index() == 0:
      try:
        _publish_best(self.directory / "latest" / str(step), self.directory / "best")
      except OSError as error:  # Every process must still reach the barrier below.
        failure = error
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      failed = multihost_utils.broadcast_one_to_all(np.int32(failure is not None))
      if failed and failure is None:
        failure = OSError(f"process 0 could not publish the best checkpoint {step}")
    if failure is not None:
      raise failure

  def _guarded(self, step: int | None, action) -> None:
    try:
      action()
    except Exception as error:  # Orbax wraps OS errors in its own types.
      self._failed = True
      self._remove_temporary_folders()
      what = f"checkpoint step {step}" if step is not None else "a checkpoint"
      raise CheckpointWriteError(
          f"could not write {what} under {self.directory}: {_os_error(error)}") from error

  def _remove_temporary_folders(self) -> None:
    if jax.process_index() != 0:
      return
    for folder in ("latest", "best"):
      for path in (self.directory / folder).glob("*tmp*"):
        shutil.rmtree(path, ignore_errors=True)


def _publish_best(source: pathlib.Path, best_dir: pathlib.Path) -> None:
  """``best_dir/<step>`` <- the committed ``source`` (hard links: no second copy of the
  data on disk; a plain copy where links are impossible), older best steps removed."""
  best_dir.mkdir(parents=True, exist_ok=True)
  tmp, final = best_dir / f"{source.name}.tmp", best_dir / source.name
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    shutil.copytree(source, tmp, copy_function=os.link)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
  shutil.rmtree(final, ignore_errors=True)
  tmp.rename(final)  # The new best exists before any older one goes.
  for old in best_dir.iterdir():
    if old != final:
      shutil.rmtree(old) if old.is_dir() else old.unlink()


def restore(directory: str | pathlib.Path, template: Any, *, which: str = "latest",
            what: str = "a checkpoint") -> Restored:
  """Reads the newest ``which`` checkpoint under ``directory`` (a run's ``checkpoints/``
  folder) into the structure of ``template``, without writing anything. The one restore
  used outside training: later stages, the analysis code and the notebook. Raises
  FileNotFoundError naming ``what`` when there is none."""
  folder = pathlib.Path(directory) / which
  restored = _read_only_restore(folder, template) if folder.is_dir() else None
  if restored is None:
    raise FileNotFoundError(f"no {which} checkpoint of {what} under {directory}")
  return restored


def _read_only_restore(folder: pathlib.Path, template: Any) -> Restored | None:
  if not folder.is_dir():
    return None
  manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return _restore_newest(manager, folder, template)
  finally:
    manager.close()


def _restore_newest(manager: ocp.CheckpointManager, folder: pathlib.Path, template: Any
                    ) -> Restored | None:
  step = manager.latest_step()
  if step is None:
    return None
  # Which items the step holds, read from its folder (asking Orbax for item metadata
  # without handlers logs a warning per item).
  names = {p.name for p in (folder / str(step)).iterdir() if p.is_dir()}
  items = {"state": ocp.args.StandardRestore(), "meta": ocp.args.JsonRestore()}
  if "iterator" in names:
    items["iterator"] = ocp.args.JsonRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  iterator_state = restored["iterator"] if "iterator" in names else None
  return Restored(step, _from_savable(template, restored["state"]),
                  _decode_iterator_state(iterator_state), dict(restored["meta"]))


def _jsonable_iterator_state(state: Any) -> dict[str, Any]:
  # Grain's DataLoader iterators return their state as JSON bytes, dataset iterators as dicts.
  if isinstance(state, (bytes, bytearray)):
    return {"encoded": state.decode("utf-8")}
  return {"dict": json.loads(json.dumps(state))}


def _decode_iterator_state(saved: dict[str, Any] | None) -> Any:
  if saved is None:
    return None
  if "encoded" in saved:
    return saved["encoded"].encode("utf-8")
  return saved["dict"]
