"""How much can the choice of teacher change a student's KD target?

SFM only matters for the KD term if same-class teachers disagree: the KD target of
student ``i`` paired with teacher ``j`` is ``p_j = softmax(t_j / T)`` (METHOD section 3),
so a better same-class teacher can only help if ``p_j`` varies within a class. This
module measures that variation on the teacher gallery, as the mean total-variation
distance between the softened outputs of two teachers::

    TV(p, q) = 1/2 sum_c |p_c - q_c|            (0: identical targets, 1: disjoint)
    within  = mean over pairs (i, j), i != j, y_i == y_j of TV(p_i, p_j)
    between = mean over pairs (i, j), y_i != y_j of TV(p_i, p_j)

``within`` close to 0 while ``between`` is large means the teacher gives every image of
a class (nearly) the same soft label: any same-class pairing, SFM's or a random one,
hands the student the same KD target, and only the alignment terms can tell pairings
apart.

Exact and O(N log N) per class: for each class column the sum of absolute differences
over all pairs of ``n`` values is ``sum_k x_(k) (2k - n - 1)`` (``x_(k)`` sorted, k = 1..n).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class KDTargetSpread(NamedTuple):
  """Mean total-variation distance between the KD targets of two gallery teachers.

  Attributes:
    within_class: over all pairs of distinct teachers of the same class.
    between_class: over all pairs of teachers of different classes (nan with one class).
    per_class: (K,) the within-class value of each label in ``labels``
      (nan for a class with fewer than two teachers).
    labels: (K,) the labels ``per_class`` refers to, ascending.
    temperature: the softmax temperature of the targets.
  """

  within_class: float
  between_class: float
  per_class: np.ndarray
  labels: np.ndarray
  temperature: float

  def as_dict(self) -> dict:
    return {"within_class": self.within_class, "between_class": self.between_class,
            "per_class": {str(k): float(v) for k, v in zip(self.labels.tolist(), self.per_class)},
            "temperature": self.temperature}

  @classmethod
  def from_dict(cls, saved: dict) -> "KDTargetSpread":
    """The inverse of `as_dict` (e.g. read back from results.json)."""
    labels = np.asarray([int(k) for k in saved["per_class"]])
    return cls(within_class=float(saved["within_class"]),
               between_class=float(saved["between_class"]),
               per_class=np.asarray(list(saved["per_class"].values()), np.float64),
               labels=labels, temperature=float(saved["temperature"]))


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  z = logits / temperature
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _pairwise_abs_difference_sum(values: np.ndarray) -> float:
  """``sum_{i<j} sum_c |values[i, c] - values[j, c]|`` for (n, C) values."""
  n = values.shape[0]
  ranks = np.arange(1, n + 1, dtype=np.float64)[:, None]
  return float(np.sum(np.sort(values, axis=0) * (2.0 * ranks - n - 1.0)))


def kd_target_spread(teacher_logits, teacher_labels, *, temperature: float = 3.0
                     ) -> KDTargetSpread:
  """`KDTargetSpread` of a gallery's logits (N, C) and labels (N,) (see module docstring)."""
  logits = np.asarray(teacher_logits, np.float64)
  labels = np.asarray(teacher_labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"teacher_logits must be (N, C) and teacher_labels (N,), got "
                     f"{logits.shape} and {labels.shape}")
  if temperature <= 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  targets = _softmax(logits, temperature)
  classes, counts = np.unique(labels, return_counts=True)
  if counts.max() < 2:
    raise ValueError("every class has a single teacher: there is no same-class pair")
  per_class = np.full(len(classes), np.nan)
  within_sum, within_pairs = 0.0, 0
  for k, label in enumerate(classes):
    members = targets[labels == label]
    pairs = len(members) * (len(members) - 1) // 2
    if pairs:
      class_sum = 0.5 * _pairwise_abs_difference_sum(members)
      per_class[k] = class_sum / pairs
      within_sum, within_pairs = within_sum + class_sum, within_pairs + pairs
  all_pairs = len(targets) * (len(targets) - 1) // 2
  between_pairs = all_pairs - within_pairs
  between = ((0.5 * _pairwise_abs_difference_sum(targets) - within_sum) / between_pairs
             if between_pairs else float("nan"))
  return KDTargetSpread(within_class=within_sum / within_pairs, between_class=float(between),
                        per_class=per_class, labels=classes, temperature=float(temperature))


def format_kd_target_spread(spread: KDTargetSpread) -> str:
  """One log line."""
  return (f"KD targets (softmax(t/{spread.temperature:g})) of two same-class teachers differ "
          f"by a total variation of {spread.within_class:.3f} on average "
          f"(different classes: {spread.between_class:.3f})")
