"""`Workdir`: every path of a pipeline run, named in one place.

::

  DIR/tfds/                         built TFDS dataset (unless config.data.data_dir is set)
  DIR/matcher/                      the self-supervised MS/RGB matcher (train-matcher)
  DIR/matching/pairs.npz            SFM pair table student id -> teacher id (match)
  DIR/matching/summary.json         the match report's summary
  DIR/teacher/                      the MS teacher (train-teacher)
  DIR/gallery/gallery.npz           the frozen teacher's outputs for every MS train image
  DIR/student_only/seed_S/          the RGB student alone (train-student)
  DIR/distill/<run name>/seed_S/    distilled students (distill), e.g. distill/kd+sembridge/seed_0
  DIR/results.json                  the comparison (pipeline, evaluate)
  DIR/benchmark/                    the benchmark's teachers and cells; benchmark.csv/.md

Every training folder (matcher, teacher, a run) holds ``checkpoints/``,
``metrics.jsonl`` and TensorBoard events; a finished classifier or student also
``test_metrics.json``; a SemBridge run ``figures/`` and ``matching/`` (re-match reports).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tempfile

from sembridge_jax.runs import STUDENT_ALONE, Run

TEST_METRICS = "test_metrics.json"
CHECKPOINTS = "checkpoints"


def _under_root(*parts: str, doc: str) -> property:
  """A `Workdir` path ``root/<parts>``: each path below is spelled once, here."""
  return property(lambda self: self.root.joinpath(*parts), doc=doc)


@dataclasses.dataclass(frozen=True)
class Workdir:
  """The folder of one pipeline (see the module docstring for the layout)."""
  root: pathlib.Path

  def __post_init__(self):
    object.__setattr__(self, "root", pathlib.Path(self.root).absolute())

  tfds = _under_root("tfds", doc="the built TFDS dataset (unless data.data_dir is set)")
  matcher = _under_root("matcher", doc="the matcher's training folder")
  matching = _under_root("matching", doc="the match stage's outputs")
  pairs = _under_root("matching", "pairs.npz", doc="SFM pairs: student id -> teacher id")
  match_summary = _under_root("matching", "summary.json", doc="the match report's summary")
  teacher = _under_root("teacher", doc="the MS teacher's training folder")
  gallery = _under_root("gallery", "gallery.npz", doc="the frozen teacher's outputs")
  results = _under_root("results.json", doc="the comparison of every finished run")
  benchmark = _under_root("benchmark", doc="the benchmark stage's teachers and cells")
  benchmark_csv = _under_root("benchmark.csv", doc="one row per benchmark cell and seed")
  benchmark_md = _under_root("benchmark.md", doc="the benchmark's tables")

  def prepare(self) -> "Workdir":
    """Creates the folder and proves it writable (a probe file), before any work.

    Raises NotADirectoryError or PermissionError/OSError with a one-line message."""
    if self.root.exists() and not self.root.is_dir():
      raise NotADirectoryError(f"workdir {self.root} is a file, not a folder")
    try:
      self.root.mkdir(parents=True, exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-"):
        pass
    except OSError as error:
      raise type(error)(f"workdir {self.root} is not writable: [Errno {error.errno}] "
                        f"{error.strerror}") from None
    return self

  # -- students --------------------------------------------------------------------------
  def run(self, run: Run) -> pathlib.Path:
    """The folder of one student run."""
    if not run.is_distillation:
      return self.root / STUDENT_ALONE / f"seed_{run.seed}"
    return self.root / "distill" / run.name / f"seed_{run.seed}"

  def finished_runs(self) -> list[Run]:
    """Every student run with a ``test_metrics.json``, student alone first, then by name
    and seed. Folders that are not a run's (``seed_old``, a name `Run.parse` refuses) are
    passed over: the layout only ever writes runs."""
    found = [Run(STUDENT_ALONE, seed=seed)
             for seed in _seeds(self.root / STUDENT_ALONE)]
    for folder in sorted((self.root / "distill").glob("*")):
      try:
        run = Run.parse(folder.name)
      except ValueError:
        continue
      if run.is_distillation:
        found += [run.with_seed(seed) for seed in _seeds(folder)]
    return sorted(found, key=lambda r: (r.is_distillation, r.method, r.sembridge, r.seed))

  # -- the benchmark stage -------------------------------------------------------------
  def benchmark_teacher(self, teacher: str) -> pathlib.Path:
    return self.benchmark / "teachers" / teacher

  def benchmark_gallery(self, teacher: str) -> pathlib.Path:
    return self.benchmark_teacher(teacher) / "gallery.npz"

  def benchmark_run(self, teacher: str, student: str, run: Run) -> pathlib.Path:
    return self.benchmark / "cells" / f"{teacher}-{student}" / run.name / f"seed_{run.seed}"


# -- inside a training folder ------------------------------------------------------------
def checkpoints(folder: pathlib.Path) -> pathlib.Path:
  return folder / CHECKPOINTS


def test_metrics(folder: pathlib.Path) -> pathlib.Path:
  return folder / TEST_METRICS


def predictions(folder: pathlib.Path) -> pathlib.Path:
  """A finished run's test predictions (ids, labels, logits)."""
  return folder / "predictions.npz"


def learning_curve(folder: pathlib.Path) -> pathlib.Path:
  """A finished run's train and test OA per epoch (PNG)."""
  return folder / "learning_curve.png"


def figures(folder: pathlib.Path) -> pathlib.Path:
  return folder / "figures"


def rematch_reports(folder: pathlib.Path) -> pathlib.Path:
  return folder / "matching"


def _seeds(folder: pathlib.Path) -> list[int]:
  """The seeds of the finished runs in ``folder`` (``seed_<n>/test_metrics.json``)."""
  seeds = []
  for path in folder.glob(f"seed_*/{TEST_METRICS}"):
    match = re.fullmatch(r"seed_(0|[1-9]\d*)", path.parent.name)
    if match:
      seeds.append(int(match.group(1)))
  return sorted(seeds)
