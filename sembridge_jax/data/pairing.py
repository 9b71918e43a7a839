"""`PairTable`: each student (RGB) record's matched teacher (MS) record, by stable id.

SFM produces the table (initial matching) and rewrites it at the re-matching epochs.
The input pipeline looks teacher ids up when it hands a batch out, so an `update` between
epochs takes effect from the next batch on, with no pipeline to rebuild.
"""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Iterable

import numpy as np


def _as_ids(values: Iterable[int] | np.ndarray, name: str) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
    raise ValueError(f"{name} must be a 1-D integer array; got dtype {array.dtype}, "
                     f"shape {array.shape}")
  return array.astype(np.int64)


class PairTable:
  """A mutable map student id -> teacher id, stored as sorted arrays.

  ``lookup`` is vectorised (one ``searchsorted``). Updates swap in new arrays atomically,
  so a concurrent ``lookup`` sees either the old or the new table, never a mix.
  """

  def __init__(self, student_ids: Iterable[int] | np.ndarray,
               teacher_ids: Iterable[int] | np.ndarray):
    self._lock = threading.Lock()
    self._students, self._teachers = self._sorted(student_ids, teacher_ids)
    self.version = 0

  @staticmethod
  def _sorted(student_ids, teacher_ids) -> tuple[np.ndarray, np.ndarray]:
    students = _as_ids(student_ids, "student_ids")
    teachers = _as_ids(teacher_ids, "teacher_ids")
    if students.shape != teachers.shape:
      raise ValueError(f"student_ids and teacher_ids must have the same length; got "
                       f"{len(students)} and {len(teachers)}")
    order = np.argsort(students, kind="stable")
    students, teachers = students[order], teachers[order]
    duplicated = students[1:][students[1:] == students[:-1]]
    if duplicated.size:
      raise ValueError(f"student_ids must be unique; repeated: {np.unique(duplicated)[:10]}")
    return students, teachers

  def __len__(self) -> int:
    return len(self._students)

  def __repr__(self) -> str:
    return f"PairTable({len(self)} pairs, version {self.version})"

  def _positions(self, student_ids: np.ndarray, students: np.ndarray) -> np.ndarray:
    positions = np.searchsorted(students, student_ids)
    found = positions < len(students)
    found[found] = students[positions[found]] == student_ids[found]
    if not found.all():
      missing = np.unique(student_ids[~found])
      raise KeyError(f"student ids without a teacher in the PairTable: {missing[:10].tolist()}"
                     + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    return positions

  def lookup(self, student_ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """Teacher ids (int64, same shape) of ``student_ids``; KeyError names unknown ids."""
    query = np.asarray(student_ids).astype(np.int64)
    students, teachers = self._students, self._teachers  # One consistent snapshot.
    return teachers[self._positions(query.ravel(), students)].reshape(query.shape)

  def update(self, student_ids: Iterable[int] | np.ndarray,
             teacher_ids: Iterable[int] | np.ndarray) -> None:
    """Sets the teachers of ``student_ids`` (existing entries are replaced, new ones added)."""
    new_students, new_teachers = self._sorted(student_ids, teacher_ids)
    with self._lock:
      students, teachers = self._students, self._teachers.copy()
      known = np.isin(new_students, students)
      teachers[self._positions(new_students[known], students)] = new_teachers[known]
      merged_students = np.concatenate([students, new_students[~known]])
      merged_teachers = np.concatenate([teachers, new_teachers[~known]])
      self._students, self._teachers = self._sorted(merged_students, merged_teachers)
      self.version += 1

  def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """(student ids ascending, their teacher ids), copies."""
    return self._students.copy(), self._teachers.copy()

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, PairTable):
      return NotImplemented
    return (np.array_equal(self._students, other._students)
            and np.array_equal(self._teachers, other._teachers))

  def save(self, path: str | pathlib.Path) -> None:
    """Writes ``.json`` ({"student_ids": [...], "teacher_ids": [...]}) or ``.npz``."""
    path = pathlib.Path(path)
    if path.suffix == ".json":
      path.write_text(json.dumps({"student_ids": self._students.tolist(),
                                  "teacher_ids": self._teachers.tolist()}))
    elif path.suffix == ".npz":
      np.savez(path, student_ids=self._students, teacher_ids=self._teachers)
    else:
      raise ValueError(f"path={str(path)!r} must end in .json or .npz")

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "PairTable":
    path = pathlib.Path(path)
    if path.suffix == ".json":
      contents = json.loads(path.read_text())
    elif path.suffix == ".npz":
      with np.load(path) as contents_npz:
        contents = {k: contents_npz[k] for k in contents_npz.files}
    else:
      raise ValueError(f"path={str(path)!r} must end in .json or .npz")
    if set(contents) != {"student_ids", "teacher_ids"}:
      raise ValueError(f"{path}: expected keys student_ids and teacher_ids; found "
                       f"{sorted(contents)}")
    return cls(contents["student_ids"], contents["teacher_ids"])
