"""Orbax checkpoints: a rolling "latest" set for resuming and a single "best" one.

Layout under ``<workdir>/<stage>/checkpoints``::

  latest/<step>/   full TrainState + input-iterator state + loop metadata (resume)
  best/<step>/     TrainState of the best evaluation so far (used by later stages)

The TrainState is stored as its flat list of leaves and restored into the tree
structure of a freshly built template state. That keeps Orbax away from NNX/Optax
container types and turns any architecture/config mismatch into a clear shape error.
Typed PRNG keys (NNX dropout streams) are stored as raw key data.
"""

from __future__ import annotations

import json
import pathlib
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


class Checkpointer:
  """Periodic + best checkpoints of one training stage.

  Saves are asynchronous: ``save_latest``/``save_best`` copy the state to host memory and
  return while Orbax writes it (a save waits for the previous one of its kind). Restores
  and ``close`` wait for pending saves, so a finished stage's checkpoints are complete.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._latest = ocp.CheckpointManager(
        self.directory / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
    self._best = ocp.CheckpointManager(
        self.directory / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def save_latest(self, step: int, state: Any, *, iterator_state: Any = None,
                  meta: dict[str, Any] | None = None) -> None:
    items = {"state": ocp.args.StandardSave(_to_savable(state)),
             "meta": ocp.args.JsonSave(meta or {})}
    if iterator_state is not None:
      items["iterator"] = ocp.args.JsonSave(_jsonable_iterator_state(iterator_state))
    self._latest.save(step, args=ocp.args.Composite(**items), force=True)

  def save_best(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self._best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_savable(state)),
                                                   meta=ocp.args.JsonSave(meta)), force=True)

  def wait_until_finished(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def latest_step(self) -> int | None:
    self._latest.wait_until_finished()
    return self._latest.latest_step()

  def restore_latest(self, template: Any) -> Restored | None:
    step = self.latest_step()
    if step is None:
      return None
    # Which items the step holds, read from its folder (asking Orbax for item metadata
    # without handlers logs a warning per item).
    names = {p.name for p in (self.directory / "latest" / str(step)).iterdir() if p.is_dir()}
    items = {"state": ocp.args.StandardRestore(), "meta": ocp.args.JsonRestore()}
    if "iterator" in names:
      items["iterator"] = ocp.args.JsonRestore()
    restored = self._latest.restore(step, args=ocp.args.Composite(**items))
    iterator_state = restored["iterator"] if "iterator" in names else None
    return Restored(step, _from_savable(template, restored["state"]),
                    _decode_iterator_state(iterator_state), dict(restored["meta"]))

  def restore_best(self, template: Any) -> Restored:
    self._best.wait_until_finished()
    step = self._best.latest_step()
    if step is None:
      raise FileNotFoundError(f"no best checkpoint under {self.directory / 'best'}: "
                              "run the stage that trains it first")
    restored = self._best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return Restored(step, _from_savable(template, restored["state"]), None,
                    dict(restored["meta"]))

  def has_best(self) -> bool:
    self._best.wait_until_finished()
    return self._best.latest_step() is not None

  def close(self) -> None:
    self.wait_until_finished()
    self._latest.close()
    self._best.close()


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
