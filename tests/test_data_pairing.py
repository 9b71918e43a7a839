"""PairTable: vectorised lookup, updates between epochs, persistence."""

import numpy as np
import pytest

from sembridge_jax.data import PairTable


def test_lookup_matches_a_dict():
  rng = np.random.default_rng(0)
  students = rng.permutation(1000)[:300] * 3
  teachers = rng.integers(0, 50, 300)
  table = PairTable(students, teachers)
  reference = dict(zip(students.tolist(), teachers.tolist()))
  query = rng.choice(students, (4, 25))
  np.testing.assert_array_equal(table.lookup(query), np.vectorize(reference.get)(query))
  assert table.lookup(query).shape == (4, 25) and len(table) == 300


def test_unknown_ids_and_bad_tables_are_named():
  table = PairTable([1, 2, 3], [7, 8, 9])
  with pytest.raises(KeyError, match=r"\[4, 5\]"):
    table.lookup([1, 4, 5])
  with pytest.raises(ValueError, match="must be unique; repeated: \\[2\\]"):
    PairTable([1, 2, 2], [0, 0, 0])
  with pytest.raises(ValueError, match="same length; got 2 and 3"):
    PairTable([1, 2], [0, 0, 0])
  with pytest.raises(ValueError, match="1-D integer array"):
    PairTable([0.5], [1])


def test_update_replaces_and_adds():
  table = PairTable([1, 2, 3], [7, 8, 9])
  table.update([3, 1, 10], [30, 10, 100])
  np.testing.assert_array_equal(table.lookup([1, 2, 3, 10]), [10, 8, 30, 100])
  assert table.version == 1 and len(table) == 4


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_and_load_round_trip(tmp_path, suffix):
  table = PairTable([5, 1, 3], [50, 10, 30])
  table.save(tmp_path / f"pairs{suffix}")
  loaded = PairTable.load(tmp_path / f"pairs{suffix}")
  assert loaded == table
  np.testing.assert_array_equal(loaded.as_arrays()[0], [1, 3, 5])
  with pytest.raises(ValueError, match="must end in .json or .npz"):
    table.save(tmp_path / "pairs.txt")
