"""The one trainer: train a model with a loss, evaluate it, checkpoint it, resume it.

Every stage that trains (the matcher, the MS teacher, the RGB student alone, the
distilled students) is a `Task`: a freshly built model, a pure loss function, its data
and its hooks. `train` does the rest, the same way for all of them:

* the model is split into a static `ModelDef` and a `TrainState` of pytrees,
  replicated over a 1-D device mesh (`sembridge_jax.sharding`);
* `make_train_step` jits ``loss_fn(model, batch, context) -> (loss, metrics)`` into
  one data-parallel optimizer step: parameters and state replicated, the batch sharded,
  the state buffers donated. Inside the step the trainer merges the parameters and the
  non-parameter state (BatchNorm statistics, dropout RNG counters) into the module the
  loss sees, and takes the updated state back out; ``context`` carries the step number
  and the task's device-resident constants (the teacher gallery);
* `fit` is the epoch loop: resume, step, log, evaluate, keep the best checkpoint,
  checkpoint, progress bar. Every step reports whether its loss and gradients are
  finite (one reduction inside the jitted step); the loop reads those flags before it
  logs, evaluates or saves anything, and stops at the first non-finite step with
  `TrainingDiverged`, so nothing computed from a non-finite state is ever written.
  Resuming is exact: a checkpoint holds the TrainState, the
  input iterator's position and the loop's metadata (best score, history, anything a
  task adds through its hooks), so a run killed at any point and restarted ends with
  the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from sembridge_jax import data as data_lib
from sembridge_jax import sharding, workdir as workdir_lib
from sembridge_jax.train import checkpointing, metrics as metrics_lib, optimizers, timing
from sembridge_jax.train.divergence import FiniteCheck, all_finite, divergence_suspects
from sembridge_jax.train.state import ModelDef, TrainState, model_state_after, split_model


class StepContext(NamedTuple):
  """What a loss sees besides the model and the batch."""
  step: jax.Array      # optimizer steps done before this one (int32 scalar)
  constants: Any       # the task's device-resident inputs of every step (None if none)


LossFn = Callable[[nnx.Module, dict[str, jax.Array], StepContext],
                  tuple[jax.Array, dict[str, jax.Array]]]
EvaluateFn = Callable[[TrainState], dict[str, float]]


class CheckpointableIterator(Protocol):
  def __next__(self) -> dict[str, np.ndarray]: ...
  def get_state(self) -> Any: ...
  def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass
class Hooks:
  """Task-specific behaviour plugged into the epoch loop.

  Attributes:
    prepare_batch: host-side transform of a numpy batch before it goes on device
      (e.g. attaching each student's matched teacher rows).
    on_epoch_start: ``state = on_epoch_start(epoch, state, modeldef)`` (e.g. re-matching,
      which runs the model over the whole student set).
    on_epoch_end: ``state = on_epoch_end(epoch, state, eval_metrics)`` (e.g. halving the
      learning rate on a validation plateau).
    get_extras / set_extras: JSON-able task state saved with each checkpoint.
  """
  prepare_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
  on_epoch_start: Callable[[int, TrainState, ModelDef], TrainState] | None = None
  on_epoch_end: Callable[[int, TrainState, dict[str, float]], TrainState] | None = None
  get_extras: Callable[[], dict[str, Any]] | None = None
  set_extras: Callable[[dict[str, Any]], None] | None = None


class BestRule(NamedTuple):
  """Which evaluation metric makes a checkpoint the best one, and in which direction."""
  metric: str = "oa"
  mode: str = "max"    # "max" or "min"

  def is_better(self, value: float, best: float | None) -> bool:
    if best is None:
      return True
    return value > best if self.mode == "max" else value < best


@dataclasses.dataclass
class Task:
  """What differs between the trainers: the model, its loss, its data, its hooks.

  Attributes:
    name: progress-bar label, e.g. ``"teacher (seed 0)"``.
    model: the freshly initialised module (split into parameters and state by `train`).
    loss_fn: ``loss_fn(model, batch, context) -> (loss, metrics)``, pure and traceable.
    hparams: the config section with ``epochs``, ``batch_size`` and ``optimizer``.
    split: the training split; ``loader_options`` go to `sembridge_jax.data.make_loader`.
    make_evaluate: ``make_evaluate(modeldef, mesh) -> evaluate(state) -> metrics``.
    constants: device-resident inputs of every step, replicated (the teacher gallery).
    hooks, best: see `Hooks` and `BestRule`.
    config_key: the config section of ``hparams`` (named in error messages).
    suspects: further config keys a divergence message should point at.
    scheduled: whether the optimizer's schedule spans the run's total steps (False for
      the matcher, whose learning rate is set by its plateau hook).
  """
  name: str
  model: nnx.Module
  loss_fn: LossFn
  hparams: ml_collections.ConfigDict
  split: str
  make_evaluate: Callable[[ModelDef, Mesh], EvaluateFn]
  loader_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  constants: Any = None
  hooks: Hooks = dataclasses.field(default_factory=Hooks)
  best: BestRule = BestRule()
  scheduled: bool = True
  config_key: str = ""
  suspects: tuple[str, ...] = ()


class Trained(NamedTuple):
  """The outcome of `train` (or `fit`)."""
  modeldef: ModelDef
  state: TrainState
  history: list[dict[str, float]]     # evaluation metrics per evaluated epoch
  best: dict[str, Any]                # {"value": best metric, "epoch": its epoch}
  resumed_from_step: int | None
  seconds: float
  times: dict[str, float] | None = None   # wall time per phase (`timing.PhaseClock.summary`)


def create_train_state(model: nnx.Module, optimizer: ml_collections.ConfigDict, mesh: Mesh,
                       total_steps: int = 0
                       ) -> tuple[ModelDef, TrainState, optax.GradientTransformation]:
  """Splits ``model`` and builds its optimizer and replicated TrainState."""
  modeldef, params, model_state = split_model(model)
  tx = optimizers.make_optimizer(optimizer, total_steps)
  return modeldef, sharding.put_replicated(TrainState.create(params, model_state, tx), mesh), tx


def make_train_step(modeldef: ModelDef, tx: optax.GradientTransformation, mesh: Mesh,
                    loss_fn: LossFn, *, steps_per_dispatch: int = 1):
  """``step(state, batch, constants) -> (state, metrics)``, jitted and data-parallel.

  With ``steps_per_dispatch`` k > 1, returns ``(step, steps)``: ``steps`` runs one step
  per leading index of its batches in one `lax.scan` dispatch, metrics stacked.

  XLA inserts the cross-device reductions (the batch mean, BatchNorm statistics, a
  Sinkhorn problem over the global batch), so N devices compute what one device would
  on the whole batch. ``metrics`` holds ``loss``, whatever the loss reports, and
  ``finite``: whether the loss, every gradient, the new parameters and the new
  BatchNorm statistics are finite (``finite_gradients``, ``finite_state``: which).
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array], constants: Any):
    context = StepContext(step=state.step, constants=constants)

    def objective(params):
      model = modeldef.merge(params, state.model_state, training=True)
      loss, metrics = loss_fn(model, batch, context)
      return loss, (metrics, model_state_after(model))

    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    new_state = state.apply_gradients(grads, tx, model_state)
    # Finite loss and gradients can still overflow the parameters or the BatchNorm
    # running statistics (a huge learning rate): check what the step produced too.
    checks = {"finite_gradients": all_finite(grads),
              "finite_state": all_finite((new_state.params, new_state.model_state))}
    finite = jnp.isfinite(loss) & checks["finite_gradients"] & checks["finite_state"]
    return new_state, {**metrics, "loss": loss, "finite": finite, **checks}

  replicated = sharding.replicated(mesh)
  single = jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=0)
  if steps_per_dispatch == 1:
    return single

  def train_steps(state: TrainState, batches: dict[str, jax.Array], constants: Any):
    return jax.lax.scan(lambda current, batch: train_step(current, batch, constants),
                        state, batches)

  return single, jax.jit(train_steps, out_shardings=(replicated, replicated), donate_argnums=0)


def steps_per_epoch(benchmark: data_lib.Benchmark, split: str, global_batch_size: int) -> int:
  num_records = len(benchmark.sources[split])
  if num_records < global_batch_size:
    raise ValueError(f"split {split!r} has {num_records} records, fewer than batch_size="
                     f"{global_batch_size}; lower the batch size")
  return num_records // global_batch_size


def train(task: Task, config: ml_collections.ConfigDict, rundir: pathlib.Path,
          benchmark: data_lib.Benchmark, *, seed: int,
          stop_after_steps: int | None = None) -> Trained:
  """Trains ``task`` in ``rundir`` (``checkpoints/``, ``metrics.jsonl``, TensorBoard
  events), resuming from its latest checkpoint if there is one."""
  hparams = task.hparams
  mesh = sharding.make_mesh()
  per_host_batch = sharding.check_batch_size(hparams.batch_size, mesh)
  steps = steps_per_epoch(benchmark, task.split, hparams.batch_size)
  modeldef, state, tx = create_train_state(
      task.model, hparams.optimizer, mesh, steps * hparams.epochs if task.scheduled else 0)
  dispatch = config.get("steps_per_dispatch", 1)
  jitted = make_train_step(modeldef, tx, mesh, task.loss_fn, steps_per_dispatch=dispatch)
  jitted, jitted_steps = jitted if dispatch > 1 else (jitted, None)
  constants = None if task.constants is None else sharding.put_replicated(task.constants, mesh)
  iterator = iter(data_lib.make_loader(
      benchmark, task.split, batch_size=per_host_batch, seed=seed, shuffle=True,
      num_epochs=hparams.epochs, drop_remainder=True, normalization=config.data.normalization,
      **task.loader_options))
  checkpointer = checkpointing.Checkpointer(workdir_lib.checkpoints(rundir),
                                            max_to_keep=config.checkpoint.max_to_keep)
  writer = metrics_lib.MetricWriter(rundir, "metrics")
  try:
    trained = fit(
        modeldef=modeldef, state=state,
        train_step=lambda current, batch: jitted(current, batch, constants),
        train_steps=jitted_steps and (lambda current, batches: jitted_steps(current, batches,
                                                                            constants)),
        steps_per_dispatch=dispatch,
        iterator=iterator, evaluate=task.make_evaluate(modeldef, mesh), mesh=mesh,
        num_epochs=hparams.epochs, steps_per_epoch=steps, global_batch_size=hparams.batch_size,
        checkpointer=checkpointer, writer=writer, best_rule=task.best,
        checkpoint_every_steps=config.checkpoint.every_steps,
        checkpoint_every_epochs=config.checkpoint.get("every_epochs", 1),
        eval_every_epochs=config.get("eval_every_epochs", 1), hooks=task.hooks,
        desc=task.name, progress=config.progress, stop_after_steps=stop_after_steps,
        suspects=divergence_suspects(task, config))
  except BaseException:
    # Finish what can be finished, but let the error that stopped the run be the one
    # the user sees.
    for close in (checkpointer.close, writer.close):
      try:
        close()
      except Exception:  # noqa: BLE001
        pass
    raise
  writer.close()
  checkpointer.close()
  return trained


def fit(*, modeldef: ModelDef, state: TrainState,
        train_step: Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict]],
        iterator: CheckpointableIterator, evaluate: EvaluateFn, mesh: Mesh, num_epochs: int,
        steps_per_epoch: int, global_batch_size: int, checkpointer: checkpointing.Checkpointer,
        writer: metrics_lib.MetricWriter, best_rule: BestRule = BestRule(),
        train_steps: Callable | None = None, steps_per_dispatch: int = 1,
        checkpoint_every_steps: int = 0, checkpoint_every_epochs: int = 1,
        eval_every_epochs: int = 1, hooks: Hooks | None = None,
        desc: str = "train", progress: bool = True, stop_after_steps: int | None = None,
        suspects: tuple[str, ...] = ()) -> Trained:
  """The epoch loop: ``num_epochs * steps_per_epoch`` steps of ``train_step``.

  Args:
    checkpoint_every_epochs: save after every N-th, the last and any best epoch; a
      larger N trades redone epochs after a kill for less time writing checkpoints.
    train_steps, steps_per_dispatch: `make_train_step`'s k-step function and k; a
      dispatch never crosses an epoch end, a checkpoint or ``stop_after_steps``.
    stop_after_steps: stop (after checkpointing) once this many steps are done, as if
      the job had been killed there. Used by the resume tests and for debugging.
    suspects: config keys named when a step's loss or gradients are not finite.

  Raises:
    TrainingDiverged: at the first step whose loss or gradients are not finite, before
      anything computed from it is logged, evaluated or saved.
  """
  if best_rule.mode not in ("max", "min"):
    raise ValueError(f"best mode must be 'max' or 'min', got {best_rule.mode!r}")
  hooks = hooks or Hooks()
  total_steps = num_epochs * steps_per_epoch
  start = time.perf_counter()
  best: dict[str, Any] = {"value": None, "epoch": None}
  history: list[dict[str, float]] = []
  step, resumed_from = 0, None
  finite = FiniteCheck(desc, steps_per_epoch, suspects)
  best_step: list[int | None] = [None]  # The step whose checkpoint is the best one.

  restored = checkpointer.restore(state, "latest")
  if restored is not None:
    state = sharding.put_replicated(restored.state, mesh)
    step = resumed_from = finite.last_saved = restored.step
    writer.truncate_after(step)  # Lines a killed run wrote after its last checkpoint.
    if restored.iterator_state is not None:
      iterator.set_state(restored.iterator_state)
    best = restored.meta.get("best", best)
    history = restored.meta.get("history", history)
    # A run killed between its best save and the publication of that save.
    best_step[0] = restored.meta.get("best_step")
    checkpointer.ensure_best(best_step[0])
    if hooks.set_extras and "extras" in restored.meta:
      hooks.set_extras(restored.meta["extras"])

  def save(at_step: int, *, is_best: bool = False) -> None:
    finite.check()
    finite.last_saved = at_step
    if is_best:
      best_step[0] = at_step
    meta = {"best": best, "history": history, "best_step": best_step[0]}
    if hooks.get_extras:
      meta["extras"] = hooks.get_extras()
    checkpointer.save(at_step, state, iterator_state=iterator.get_state(), meta=meta,
                      best=is_best)

  train_oa = metrics_lib.EpochAccuracy()
  show = progress and jax.process_index() == 0
  bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not show, dynamic_ncols=True,
             unit="step", leave=True)
  last_time, last_step = time.perf_counter(), step
  clock = timing.PhaseClock()
  compiled: set[int] = set()   # dispatch sizes whose program has run (compiled) once
  # Logging waits for the device: with k steps per dispatch, not after every dispatch.
  log_every = max(1, min(steps_per_epoch, max(10, 2 * steps_per_dispatch)))

  def dispatch_size(at: int) -> int:
    bounds = [steps_per_dispatch, steps_per_epoch - at % steps_per_epoch]
    if checkpoint_every_steps:
      bounds.append(checkpoint_every_steps - at % checkpoint_every_steps)
    if stop_after_steps is not None and stop_after_steps > at:
      bounds.append(stop_after_steps - at)
    return 1 if train_steps is None else min(bounds)

  while step < total_steps:
    epoch = step // steps_per_epoch
    if step % steps_per_epoch == 0 and hooks.on_epoch_start:
      with clock.phase("hooks"):
        state = hooks.on_epoch_start(epoch, state, modeldef)
    count = dispatch_size(step)
    with clock.phase("input"):
      batches = [next(iterator) for _ in range(count)]
      if hooks.prepare_batch:
        batches = [hooks.prepare_batch(batch) for batch in batches]
      batch = sharding.put_batches(batches, mesh)
    with clock.phase("steps" if count in compiled else "compile"):
      state, step_metrics = (train_step if count == 1 else train_steps)(state, batch)
      if count not in compiled:
        jax.block_until_ready(step_metrics)
        compiled.add(count)
    step += count
    finite.add(step, step_metrics, count)
    train_oa.add(step_metrics, count)

    if step // log_every != (step - count) // log_every or step == total_steps:
      with clock.phase("steps"):   # Waits for the steps so far.
        finite.check()
      checkpointer.check()
      scalars = {k: float(np.reshape(v, (-1,))[-1])
                 for k, v in jax.device_get(step_metrics).items() if not k.startswith("finite")}
      now = time.perf_counter()
      scalars["images_per_second"] = (step - last_step) * global_batch_size / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      writer.write(step, {f"train/{k}": v for k, v in scalars.items()})
      bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}",
                      img_s=f"{scalars['images_per_second']:.0f}", epoch=epoch + 1)
    bar.update(count)

    epoch_done = step % steps_per_epoch == 0
    saved = bool(checkpoint_every_steps and step % checkpoint_every_steps == 0)
    if epoch_done:
      with clock.phase("steps"):
        finite.check()
        jax.block_until_ready(state)
      finished_epoch = step // steps_per_epoch
      eval_metrics: dict[str, float] = {}
      if finished_epoch % eval_every_epochs == 0 or step == total_steps:
        with clock.phase("evaluation"):
          eval_metrics = evaluate(state)
        finite.check_evaluation(step, eval_metrics)
        eval_metrics.update(train_oa.mean())
        eval_metrics["epoch"] = finished_epoch
        history.append(eval_metrics)
        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        value = eval_metrics.get(best_rule.metric)
        is_best = value is not None and best_rule.is_better(value, best["value"])
        if is_best:
          best = {"value": float(value), "epoch": finished_epoch}
        if jax.process_index() == 0:
          bar.write(f"[{desc}] epoch {finished_epoch}/{num_epochs} " + " ".join(
              f"{k}={v:.4f}" for k, v in eval_metrics.items() if k != "epoch"))
      else:
        is_best = False
      train_oa.reset()
      if hooks.on_epoch_end:
        with clock.phase("hooks"):
          state = hooks.on_epoch_end(finished_epoch - 1, state, eval_metrics)
      if (saved or is_best or step == total_steps
          or finished_epoch % checkpoint_every_epochs == 0):
        with clock.phase("checkpoint"):
          save(step, is_best=is_best)
        saved = True
      clock.end_epoch()
    elif saved:
      with clock.phase("steps"):
        jax.block_until_ready(state)
      with clock.phase("checkpoint"):
        save(step)

    if stop_after_steps is not None and step >= stop_after_steps and step < total_steps:
      if not saved:
        with clock.phase("checkpoint"):
          save(step)
      break
  bar.close()
  with clock.phase("steps"):
    jax.block_until_ready(state)
  times = clock.summary()
  if compiled:   # Not for a run that was already finished.
    writer.write(step, times)
  return Trained(modeldef=modeldef, state=state, history=history, best=best,
                 resumed_from_step=resumed_from, seconds=time.perf_counter() - start, times=times)
