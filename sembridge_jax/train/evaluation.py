"""Classification evaluation on a whole split: test loss, OA, macro P/R/F1, confusion.

The trainer asks a task for ``make_evaluate(modeldef, mesh)``; a `ClassificationEvaluator`
is that for every classifier the project trains (the teacher, a student alone, a
distilled student inside its `Distiller`), given how to pick the logits out of the
merged module.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from sembridge_jax import data as data_lib
from sembridge_jax import sharding, viz, workdir as workdir_lib
from sembridge_jax.train import divergence, metrics as metrics_lib
from sembridge_jax.train.state import ModelDef, TrainState

LogitsFn = Callable[[nnx.Module, jax.Array], jax.Array]


def classifier_logits(model: nnx.Module, images: jax.Array) -> jax.Array:
  return model(images)[0]


def make_eval_step(modeldef: ModelDef, num_classes: int, mesh: Mesh,
                   logits_fn: LogitsFn = classifier_logits):
  """A jitted step returning the summed loss, the count, the confusion matrix and the
  batch's rows (ids, labels, mask, logits; replicated, so every host sees them all)."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    model = modeldef.merge(state.params, state.model_state, training=False)
    logits = logits_fn(model, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    mask = batch["mask"]
    confusion = metrics_lib.confusion_matrix(batch["label"], logits.argmax(-1), mask, num_classes)
    rows = {"id": batch["id"], "label": batch["label"], "mask": mask, "logits": logits}
    return (losses * mask).sum(), mask.sum(), confusion, rows

  return jax.jit(eval_step, out_shardings=sharding.replicated(mesh))


class Predictions(NamedTuple):
  """A split's ids, labels and logits, rows in ascending id order."""
  ids: np.ndarray
  labels: np.ndarray
  logits: np.ndarray


def evaluate_split(eval_step, state: TrainState, benchmark: data_lib.Benchmark, split: str,
                   config: ml_collections.ConfigDict, mesh: Mesh, *,
                   keep_predictions: bool = False
                   ) -> tuple[metrics_lib.ClassificationMetrics, float, Predictions | None]:
  """Metrics of ``state`` on a whole split (padded last batch masked out), its loss, and
  (``keep_predictions``) every image's logits."""
  loader = data_lib.make_loader(
      benchmark, split, batch_size=sharding.check_batch_size(config.eval_batch_size, mesh),
      seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
      normalization=config.data.normalization)
  loss_sum, count = 0.0, 0
  confusion = np.zeros((benchmark.num_classes,) * 2, np.int64)
  kept: list[dict[str, np.ndarray]] = []
  for batch in loader:
    batch_loss, batch_count, batch_confusion, rows = eval_step(
        state, sharding.put_batch(batch, mesh))
    loss_sum += float(batch_loss)
    count += int(batch_count)
    confusion += np.asarray(batch_confusion)
    if keep_predictions:
      rows = jax.device_get(rows)
      valid = np.asarray(rows["mask"], bool)
      kept.append({k: np.asarray(v)[valid] for k, v in rows.items()})
  predictions = None
  if keep_predictions:
    ids = np.concatenate([r["id"] for r in kept])
    order = np.argsort(ids, kind="stable")
    predictions = Predictions(ids[order], np.concatenate([r["label"] for r in kept])[order],
                              np.concatenate([r["logits"] for r in kept]).astype(np.float32)[order])
  return metrics_lib.metrics_from_confusion(confusion), loss_sum / max(count, 1), predictions


class ClassificationEvaluator:
  """A task's ``make_evaluate``: ``evaluator(modeldef, mesh)`` returns the per-epoch
  ``evaluate(state) -> {"loss", "oa", ...}``; `final` then gives the full metrics and
  every test image's logits with the same compiled step."""

  def __init__(self, benchmark: data_lib.Benchmark, split: str,
               config: ml_collections.ConfigDict, logits_fn: LogitsFn = classifier_logits):
    self.benchmark, self.split, self.config, self.logits_fn = benchmark, split, config, logits_fn
    self._compiled: tuple[Any, Mesh] | None = None

  def __call__(self, modeldef: ModelDef, mesh: Mesh) -> Callable[[TrainState], dict[str, float]]:
    self._compiled = (make_eval_step(modeldef, self.benchmark.num_classes, mesh, self.logits_fn),
                      mesh)

    def evaluate(state: TrainState) -> dict[str, float]:
      metrics, loss, _ = self._evaluate(state)
      return {"loss": loss, **metrics.as_dict()}

    return evaluate

  def final(self, state: TrainState) -> tuple[metrics_lib.ClassificationMetrics, Predictions]:
    """The metrics of a trained state and its predictions (one pass over the split)."""
    metrics, _, predictions = self._evaluate(state, keep_predictions=True)
    return metrics, predictions

  def finish(self, state: TrainState, rundir: pathlib.Path, *, seconds: float,
             history: Sequence[dict[str, float]] = (), label: str = ""
             ) -> metrics_lib.ClassificationMetrics:
    """A finished run's last evaluation: ``test_metrics.json`` (with whether its
    parameters are finite), ``predictions.npz`` and, from the per-epoch ``history``,
    ``learning_curve.png`` in ``rundir``; returns the metrics."""
    metrics, predictions = self.final(state)
    write_test_metrics(workdir_lib.test_metrics(rundir), metrics, self.benchmark.class_names,
                       seconds=seconds, finite=bool(divergence.all_finite(state.params)))
    write_predictions(workdir_lib.predictions(rundir), predictions)
    write_learning_curve(workdir_lib.learning_curve(rundir), history, label or rundir.name)
    return metrics

  def _evaluate(self, state: TrainState, keep_predictions: bool = False):
    if self._compiled is None:
      raise RuntimeError("the evaluator has not been given a model yet")
    eval_step, mesh = self._compiled
    return evaluate_split(eval_step, state, self.benchmark, self.split, self.config, mesh,
                          keep_predictions=keep_predictions)


def write_learning_curve(path: pathlib.Path, history: Sequence[dict[str, float]],
                         label: str) -> None:
  """The run's train and test OA per epoch as a PNG (nothing without evaluated epochs)."""
  if jax.process_index() != 0 or not any("oa" in row for row in history):
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  viz.plot_learning_curves({label: history}, title=f"{label}: {path.parent}").savefig(path, dpi=110)


def write_predictions(path: pathlib.Path, predictions: Predictions) -> None:
  """``predictions.npz``: ``ids``, ``labels`` and ``logits`` of the test split, so that
  runs can be compared image by image."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **predictions._asdict())


def write_test_metrics(path: pathlib.Path, metrics: metrics_lib.ClassificationMetrics,
                       class_names: list[str], **extra: Any) -> None:
  """``test_metrics.json``: the scalar metrics, class names, confusion matrix, extras."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({**metrics.as_dict(), "class_names": list(class_names),
                              "confusion": metrics.confusion.tolist(), **extra}, indent=2))
