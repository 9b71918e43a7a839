"""Classification metrics from a confusion matrix, and a writer for JSON lines + TensorBoard.

Conventions: ``confusion[i, j]`` counts samples of true class ``i`` predicted as ``j``.
For class ``c``: precision ``P_c = C[c,c] / sum_i C[i,c]``, recall
``R_c = C[c,c] / sum_j C[c,j]``, ``F1_c = 2 P_c R_c / (P_c + R_c)`` (0 where undefined,
as scikit-learn's ``zero_division=0``). Macro scores average over classes; overall
accuracy is ``trace(C) / sum(C)``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ClassificationMetrics(NamedTuple):
  oa: float
  macro_precision: float
  macro_recall: float
  macro_f1: float
  confusion: np.ndarray  # (K, K) int64, rows = true class

  def as_dict(self, prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}oa": self.oa,
        f"{prefix}macro_precision": self.macro_precision,
        f"{prefix}macro_recall": self.macro_recall,
        f"{prefix}macro_f1": self.macro_f1,
    }


def confusion_matrix(labels: jax.Array, predictions: jax.Array, mask: jax.Array,
                     num_classes: int) -> jax.Array:
  """(K, K) counts of (true, predicted) pairs; rows with ``mask == False`` ignored.

  Written as a scatter-add so it runs inside a jitted, sharded eval step and comes
  back replicated (readable on every host).
  """
  weights = mask.astype(jnp.int32)
  return jnp.zeros((num_classes, num_classes), jnp.int32).at[labels, predictions].add(weights)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  out = np.zeros_like(numerator, dtype=np.float64)
  np.divide(numerator, denominator, out=out, where=denominator > 0)
  return out


def metrics_from_confusion(confusion: np.ndarray) -> ClassificationMetrics:
  confusion = np.asarray(confusion, dtype=np.int64)
  if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
    raise ValueError(f"confusion must be a square matrix, got shape {confusion.shape}")
  total = confusion.sum()
  true_positives = np.diag(confusion).astype(np.float64)
  precision = _safe_divide(true_positives, confusion.sum(axis=0))
  recall = _safe_divide(true_positives, confusion.sum(axis=1))
  f1 = _safe_divide(2 * precision * recall, precision + recall)
  return ClassificationMetrics(
      oa=float(true_positives.sum() / total) if total else 0.0,
      macro_precision=float(precision.mean()),
      macro_recall=float(recall.mean()),
      macro_f1=float(f1.mean()),
      confusion=confusion,
  )


class MetricWriter:
  """Appends scalars to ``<workdir>/<name>.jsonl`` and TensorBoard event files.

  Only process 0 writes, so several hosts do not race on the same files.
  """

  def __init__(self, logdir: str | pathlib.Path, name: str):
    self._enabled = jax.process_index() == 0
    self._jsonl = pathlib.Path(logdir) / f"{name}.jsonl"
    self._tb = None
    if self._enabled:
      self._jsonl.parent.mkdir(parents=True, exist_ok=True)
      from tensorboardX import SummaryWriter  # Local: keeps import of this module light.
      self._tb = SummaryWriter(str(pathlib.Path(logdir) / "tensorboard" / name))

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step)}
    for key, value in scalars.items():
      value = np.asarray(value)
      if value.ndim == 0:
        record[key] = value.item()
        self._tb.add_scalar(key, float(value), int(step))
    with self._jsonl.open("a") as f:
      f.write(json.dumps(record) + "\n")

  def truncate_after(self, step: int) -> None:
    """Drops the JSON lines of steps after ``step`` (a resumed run rewrites them).

    TensorBoard readers keep the newest event of a step, so only the JSON lines need
    this."""
    if not self._enabled or not self._jsonl.exists():
      return
    lines = self._jsonl.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) != len(lines):
      self._jsonl.write_text("".join(kept))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()



def _step_of(line: str) -> int | None:
  """The step of a JSON line; None for a blank or torn one (a write cut by a kill)."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class EpochAccuracy:
  """The training accuracy of the current epoch: the mean of the steps' ``accuracy``
  (each step's batch in training mode: augmented, BatchNorm on batch statistics), summed
  on the device so that no step waits for it. After a resume mid-epoch it covers the
  steps since the resume."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self._sum, self._steps = None, 0

  def add(self, step_metrics: dict[str, jax.Array], count: int = 1) -> None:
    """One step's metrics, or ``count`` steps' stacked along a leading axis."""
    if "accuracy" in step_metrics:
      accuracy = step_metrics["accuracy"] if count == 1 else step_metrics["accuracy"].sum()
      self._sum = accuracy if self._sum is None else self._sum + accuracy
      self._steps += count

  def mean(self) -> dict[str, float]:
    """``{"train_oa": ...}``, or nothing for a task whose loss reports no accuracy."""
    return {} if not self._steps else {"train_oa": float(self._sum) / self._steps}
