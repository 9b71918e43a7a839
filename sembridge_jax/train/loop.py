"""The epoch loop every stage shares: resume, step, evaluate, log, checkpoint.

Resuming is exact: the checkpoint holds the TrainState (parameters, optimizer, BatchNorm
statistics, dropout RNG counters), the input iterator's position and the loop's own
metadata (best score so far, anything a stage adds through ``extras``). A run killed at
any point and restarted with the same command continues from the last checkpoint and
ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Protocol

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from sembridge_jax.train import checkpointing, metrics as metrics_lib, sharding


class CheckpointableIterator(Protocol):
  def __next__(self) -> dict[str, np.ndarray]: ...
  def get_state(self) -> Any: ...
  def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass
class LoopHooks:
  """Stage-specific behaviour plugged into `fit`.

  Attributes:
    prepare_batch: host-side transform of a numpy batch before it goes on device
      (e.g. attaching each student's matched teacher rows).
    on_epoch_start: called as ``state = on_epoch_start(epoch, state)`` (e.g. re-matching).
    on_epoch_end: called as ``state = on_epoch_end(epoch, state, eval_metrics)``
      (e.g. halving the learning rate on a plateau).
    get_extras / set_extras: JSON-able stage state saved with each checkpoint.
  """
  prepare_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
  on_epoch_start: Callable[[int, Any], Any] | None = None
  on_epoch_end: Callable[[int, Any, dict[str, float]], Any] | None = None
  get_extras: Callable[[], dict[str, Any]] | None = None
  set_extras: Callable[[dict[str, Any]], None] | None = None


@dataclasses.dataclass
class FitResult:
  state: Any
  history: list[dict[str, float]]
  best: dict[str, Any]
  resumed_from_step: int | None
  seconds: float


def fit(*, state: Any, train_step: Callable[[Any, dict[str, jax.Array]], tuple[Any, dict]],
        iterator: CheckpointableIterator, evaluate: Callable[[Any], dict[str, float]],
        mesh: Mesh, num_epochs: int, steps_per_epoch: int, global_batch_size: int,
        checkpointer: checkpointing.Checkpointer, writer: metrics_lib.MetricWriter,
        best_metric: str = "oa", best_mode: str = "max", checkpoint_every_steps: int = 0,
        eval_every_epochs: int = 1, hooks: LoopHooks | None = None, desc: str = "train",
        progress: bool = True, stop_after_steps: int | None = None) -> FitResult:
  """Trains for ``num_epochs * steps_per_epoch`` steps.

  Args:
    stop_after_steps: stop (after checkpointing) once this many steps are done, as if
      the job had been killed there. Used by the resume tests and for debugging.
  """
  if best_mode not in ("max", "min"):
    raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
  hooks = hooks or LoopHooks()
  total_steps = num_epochs * steps_per_epoch
  start = time.perf_counter()
  best: dict[str, Any] = {"value": None, "epoch": None}
  history: list[dict[str, float]] = []
  step, resumed_from = 0, None

  restored = checkpointer.restore_latest(state)
  if restored is not None:
    state = sharding.put_replicated(restored.state, mesh)
    step = resumed_from = restored.step
    if restored.iterator_state is not None:
      iterator.set_state(restored.iterator_state)
    best = restored.meta.get("best", best)
    history = restored.meta.get("history", history)
    if hooks.set_extras and "extras" in restored.meta:
      hooks.set_extras(restored.meta["extras"])

  def save(at_step: int) -> None:
    meta = {"best": best, "history": history}
    if hooks.get_extras:
      meta["extras"] = hooks.get_extras()
    checkpointer.save_latest(at_step, state, iterator_state=iterator.get_state(), meta=meta)

  def is_better(value: float) -> bool:
    if best["value"] is None:
      return True
    return value > best["value"] if best_mode == "max" else value < best["value"]

  show = progress and jax.process_index() == 0
  bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not show, dynamic_ncols=True,
             unit="step", leave=True)
  last_time, last_step = time.perf_counter(), step
  while step < total_steps:
    epoch = step // steps_per_epoch
    if step % steps_per_epoch == 0 and hooks.on_epoch_start:
      state = hooks.on_epoch_start(epoch, state)
    batch = next(iterator)
    if hooks.prepare_batch:
      batch = hooks.prepare_batch(batch)
    state, step_metrics = train_step(state, sharding.put_batch(batch, mesh))
    step += 1

    if step % max(1, min(steps_per_epoch, 10)) == 0 or step == total_steps:
      scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
      now = time.perf_counter()
      scalars["images_per_second"] = (step - last_step) * global_batch_size / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      writer.write(step, {f"train/{k}": v for k, v in scalars.items()})
      bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}",
                      img_s=f"{scalars['images_per_second']:.0f}", epoch=epoch + 1)
    bar.update(1)

    epoch_done = step % steps_per_epoch == 0
    saved = epoch_done or bool(checkpoint_every_steps and step % checkpoint_every_steps == 0)
    if epoch_done:
      finished_epoch = step // steps_per_epoch
      eval_metrics: dict[str, float] = {}
      if finished_epoch % eval_every_epochs == 0 or step == total_steps:
        eval_metrics = evaluate(state)
        eval_metrics["epoch"] = finished_epoch
        history.append(eval_metrics)
        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        if best_metric in eval_metrics and is_better(eval_metrics[best_metric]):
          best = {"value": float(eval_metrics[best_metric]), "epoch": finished_epoch}
          checkpointer.save_best(step, state, meta={"metrics": eval_metrics})
        bar.write(f"[{desc}] epoch {finished_epoch}/{num_epochs} " + " ".join(
            f"{k}={v:.4f}" for k, v in eval_metrics.items() if k != "epoch"))
      if hooks.on_epoch_end:
        state = hooks.on_epoch_end(finished_epoch - 1, state, eval_metrics)
      save(step)
    elif checkpoint_every_steps and step % checkpoint_every_steps == 0:
      save(step)

    if stop_after_steps is not None and step >= stop_after_steps and step < total_steps:
      if not saved:
        save(step)
      break
  bar.close()
  return FitResult(state=state, history=history, best=best, resumed_from_step=resumed_from,
                   seconds=time.perf_counter() - start)
