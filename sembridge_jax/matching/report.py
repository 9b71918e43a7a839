"""Statistics of a matching (student -> teacher pairs): how good, how concentrated.

Written after every (re-)matching so that one can see whether a few teachers absorb
most students (a sign of hub embeddings) and how the similarity is distributed.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np


class Histogram(NamedTuple):
  counts: np.ndarray  # (bins,) int64
  edges: np.ndarray  # (bins + 1,) float64


class MatchReport(NamedTuple):
  """Summary of one matching.

  Attributes:
    score_name: what the scores are ("cosine similarity", "KL divergence", ...).
    num_pairs: number of (student, teacher) pairs counted (index -1 entries excluded).
    num_teachers: size of the teacher set.
    mean_score: mean score over the pairs.
    distinct_teachers: number of teachers chosen at least once.
    max_students_per_teacher: the largest number of pairs sharing one teacher.
    score_histogram: histogram of the pair scores.
    students_per_teacher: ``students_per_teacher[n]`` = number of teachers chosen by
      exactly ``n`` students, for ``n = 0 .. max_students_per_teacher`` (entry 0 counts
      the unused teachers).
  """

  score_name: str
  num_pairs: int
  num_teachers: int
  mean_score: float
  distinct_teachers: int
  max_students_per_teacher: int
  score_histogram: Histogram
  students_per_teacher: np.ndarray

  def as_dict(self) -> dict:
    return {
        "score_name": self.score_name,
        "num_pairs": self.num_pairs,
        "num_teachers": self.num_teachers,
        "mean_score": self.mean_score,
        "distinct_teachers": self.distinct_teachers,
        "max_students_per_teacher": self.max_students_per_teacher,
        "score_histogram": {"counts": self.score_histogram.counts.tolist(),
                            "edges": self.score_histogram.edges.tolist()},
        "students_per_teacher": self.students_per_teacher.tolist(),
    }


class MatchReportFiles(NamedTuple):
  json: pathlib.Path
  png: pathlib.Path


def match_report(scores, teacher_indices, num_teachers: int, *, bins: int = 20,
                 score_name: str = "cosine similarity") -> MatchReport:
  """Summarises a matching.

  Args:
    scores: (Ns,) or (Ns, k) score of each selected pair.
    teacher_indices: same shape, teacher index of each pair; -1 entries (no teacher)
      are ignored.
    num_teachers: size of the teacher set (indices must lie in [0, num_teachers)).
    bins: number of score-histogram bins.
    score_name: label for the scores, used in logs and plots.
  """
  scores = np.asarray(scores, np.float64)
  teacher_indices = np.asarray(teacher_indices)
  if scores.shape != teacher_indices.shape:
    raise ValueError(f"scores and teacher_indices must have the same shape, got "
                     f"{scores.shape} and {teacher_indices.shape}.")
  valid = teacher_indices >= 0
  scores, teacher_indices = scores[valid], teacher_indices[valid].astype(np.int64)
  if teacher_indices.size and teacher_indices.max() >= num_teachers:
    raise ValueError(f"teacher_indices must be < num_teachers={num_teachers}, got "
                     f"{teacher_indices.max()}.")
  if not scores.size:
    raise ValueError("the matching holds no pair (every teacher index is -1).")
  load = np.bincount(teacher_indices, minlength=num_teachers)
  counts, edges = np.histogram(scores, bins=bins)
  return MatchReport(
      score_name=score_name,
      num_pairs=int(scores.size),
      num_teachers=int(num_teachers),
      mean_score=float(scores.mean()),
      distinct_teachers=int(np.count_nonzero(load)),
      max_students_per_teacher=int(load.max()),
      score_histogram=Histogram(counts, edges),
      students_per_teacher=np.bincount(load),
  )


def format_match_report(report: MatchReport) -> str:
  """One log line."""
  return (f"{report.num_pairs} pairs: mean {report.score_name} {report.mean_score:.4f}, "
          f"{report.distinct_teachers}/{report.num_teachers} teachers used "
          f"({report.distinct_teachers / report.num_teachers:.1%}), "
          f"at most {report.max_students_per_teacher} students per teacher")


def write_match_report(report: MatchReport, workdir, name: str) -> MatchReportFiles:
  """Writes ``workdir/<name>.json`` and ``workdir/<name>.png`` (two histograms)."""
  import matplotlib
  matplotlib.use("Agg")  # Headless: no display on training machines.
  import matplotlib.pyplot as plt

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  files = MatchReportFiles(workdir / f"{name}.json", workdir / f"{name}.png")
  files.json.write_text(json.dumps(report.as_dict(), indent=2))

  figure, (score_axes, load_axes) = plt.subplots(1, 2, figsize=(10, 4))
  counts, edges = report.score_histogram
  score_axes.stairs(counts, edges, fill=True)
  score_axes.set(title=f"Matched pairs: {report.score_name}",
                 xlabel=report.score_name, ylabel="pairs")
  load_axes.bar(np.arange(report.students_per_teacher.size), report.students_per_teacher)
  load_axes.set(title="Teacher usage", xlabel="students sharing one teacher",
                ylabel="teachers", yscale="log")
  figure.suptitle(f"{name}: {format_match_report(report)}", fontsize=8)
  figure.tight_layout()
  figure.savefig(files.png, dpi=100)
  plt.close(figure)
  return files
