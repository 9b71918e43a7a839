"""Checks on the arrays a figure is drawn from, with errors that name the argument.

A figure drawn from a malformed array is worse than no figure: a transposed plan or a
label vector of the wrong length still renders, just wrongly. Every plotting function
of `sembridge_jax.viz` therefore converts its inputs through these helpers, which
return NumPy arrays and raise ``ValueError`` naming the argument, what was expected
and what was given.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def finite_array(name: str, value: Any, *, ndim: int | tuple[int, ...],
                 allow_nan: bool = False) -> np.ndarray:
  """``value`` as a float64 array of ``ndim`` dimensions with no NaN or infinity."""
  array = np.asarray(value)
  if array.dtype.kind not in "biuf":
    raise ValueError(f"`{name}` must be a numeric array; got dtype {array.dtype}.")
  array = array.astype(np.float64)
  allowed = (ndim,) if isinstance(ndim, int) else ndim
  if array.ndim not in allowed:
    raise ValueError(f"`{name}` must have {' or '.join(map(str, allowed))} dimension(s); "
                     f"got shape {array.shape}.")
  if array.size == 0:
    raise ValueError(f"`{name}` is empty (shape {array.shape}); nothing to draw.")
  bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
  if bad.any():
    raise ValueError(f"`{name}` holds {int(bad.sum())} non-finite value(s) (NaN or inf), "
                     f"first at index {tuple(int(i) for i in np.argwhere(bad)[0])}.")
  return array


def class_labels(name: str, value: Any, length: int, *, length_of: str) -> np.ndarray:
  """Integer class ids ``(length,)``; ``length_of`` names what sets the length."""
  labels = np.asarray(value)
  if labels.ndim != 1:
    raise ValueError(f"`{name}` must be a 1-D vector of integer class ids; got shape "
                     f"{labels.shape}.")
  if labels.shape[0] != length:
    raise ValueError(f"`{name}` has {labels.shape[0]} entries but {length_of} has {length}.")
  if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
    labels = labels.astype(np.int64)
  if labels.dtype.kind not in "iu":
    raise ValueError(f"`{name}` must hold integer class ids; got dtype {labels.dtype}.")
  if labels.size and labels.min() < 0:
    raise ValueError(f"`{name}` holds negative class ids (min {labels.min()}); padding rows "
                     "(label -1) must be dropped before plotting.")
  return labels.astype(np.int64)


def class_name_list(class_names: Sequence[str] | None, labels: Sequence[np.ndarray]
                    ) -> list[str]:
  """Names for every class id in ``labels``: ``class_names`` or ``"class k"``."""
  num_classes = max(int(np.max(y)) for y in labels if len(y)) + 1
  if class_names is None:
    return [f"class {k}" for k in range(num_classes)]
  names = [str(n) for n in class_names]
  if len(names) < num_classes:
    raise ValueError(f"`class_names` has {len(names)} names but the labels use class ids up "
                     f"to {num_classes - 1}.")
  return names
