"""match_report numbers on a hand-made matching, and the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sembridge_jax.matching import format_match_report, match_report, write_match_report

# Three students, k = 2; student 1 has a single teacher (-1 padding).
SCORES = np.array([[0.0, 1.0], [0.2, -np.inf], [0.7, 0.5]])
INDICES = np.array([[2, 2], [0, -1], [2, 3]])


def test_match_report_on_a_hand_made_matching():
  report = match_report(SCORES, INDICES, num_teachers=5, bins=4)
  assert report.num_pairs == 5
  assert report.mean_score == pytest.approx((0.0 + 1.0 + 0.2 + 0.7 + 0.5) / 5)
  # Teacher loads: [1, 0, 3, 1, 0] -> three teachers used, the busiest by 3 students.
  assert report.distinct_teachers == 3
  assert report.max_students_per_teacher == 3
  np.testing.assert_array_equal(report.students_per_teacher, [2, 2, 0, 1])
  np.testing.assert_allclose(report.score_histogram.edges, [0.0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_array_equal(report.score_histogram.counts, [2, 0, 2, 1])
  line = format_match_report(report)
  assert "mean cosine similarity 0.4800" in line and "3/5 teachers" in line


def test_match_report_rejects_bad_inputs():
  with pytest.raises(ValueError, match="same shape"):
    match_report(SCORES[:, 0], INDICES, num_teachers=5)
  with pytest.raises(ValueError, match="num_teachers=3"):
    match_report(SCORES, INDICES, num_teachers=3)


def test_write_match_report(tmp_path):
  report = match_report(SCORES, INDICES, num_teachers=5, bins=4, score_name="KL divergence")
  files = write_match_report(report, tmp_path / "reports", "rematch_epoch_030")
  assert files.json == tmp_path / "reports" / "rematch_epoch_030.json"
  saved = json.loads(files.json.read_text())
  assert saved == report.as_dict()
  assert saved["score_name"] == "KL divergence" and saved["distinct_teachers"] == 3
  assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
