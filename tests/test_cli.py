"""The command line as a user meets it: help, stage help, one-line errors, and `evaluate`
naming every run correctly. Also the typed runs and the workdir layout behind it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from sembridge_jax import main
from sembridge_jax.runs import STUDENT_ALONE, Run, comparison_runs
from sembridge_jax.stages import STAGES
from sembridge_jax.workdir import Workdir


def cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "sembridge_jax.main", *args], capture_output=True,
                        text=True, cwd=str(REPO), timeout=600)


@pytest.mark.parametrize("args", [(), ("--help",)])
def test_help_lists_every_stage_and_exits_0(args):
  result = cli(*args)
  assert result.returncode == 0, result.stderr
  for name, stage in STAGES.items():
    assert f"  {name}  " in result.stdout, name
  assert "STAGE --help" in result.stdout


def test_every_stage_has_its_own_help():
  for name, stage in STAGES.items():
    text = main.stage_help(stage)
    assert text.startswith(f"sembridge-jax {name}: {stage.summary}")
    for part in ("reads:", "writes:", "config: config."):
      assert part in text, (name, part)
  result = cli("--config", "configs/tiny.py", "distill", "--help")
  assert result.returncode == 0 and result.stdout == main.stage_help(STAGES["distill"])


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path):
  args = ("evaluate", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "empty"))
  quiet = cli(*args)
  assert quiet.returncode == 1
  lines = quiet.stderr.strip().splitlines()
  assert len(lines) == 1 and "no finished runs" in lines[0], quiet.stderr
  assert "Traceback" not in quiet.stderr and "--verbose" in lines[0]
  verbose = cli(*args, "--verbose")
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_missing_arguments_and_unknown_stages_are_one_line(tmp_path):
  for args in (("evaluate", "--workdir", str(tmp_path)), ("fly",)):
    result = cli(*args)
    assert result.returncode == 2, args
    assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


# -- runs and the workdir ---------------------------------------------------------------------

@pytest.mark.parametrize("run", [Run(STUDENT_ALONE), Run("kd"), Run("kd", True, 2),
                                 Run("dkd", True), Run("lskd", False, 7)])
def test_run_names_parse_back(run):
  assert Run.parse(run.name, run.seed) == run


@pytest.mark.parametrize("name", ["", "kd+sembridge+sembridge", "student_only+sembridge", "a/b"])
def test_run_parser_rejects_what_is_not_a_run(name):
  with pytest.raises(ValueError):
    Run.parse(name)


def test_run_labels_name_the_method():
  assert [r.label for r in comparison_runs("kd")] == [
      "student alone (RGB)", "KD, random same-class pairs", "SemBridge"]
  assert [r.label for r in comparison_runs("dkd")][1:] == [
      "DKD, random same-class pairs", "DKD + SemBridge"]


def test_workdir_keeps_the_layout(tmp_path):
  workdir = Workdir(tmp_path)
  assert workdir.run(Run(STUDENT_ALONE, seed=1)) == tmp_path / "student_only" / "seed_1"
  assert workdir.run(Run("dkd", True, 2)) == tmp_path / "distill" / "dkd+sembridge" / "seed_2"
  assert workdir.pairs == tmp_path / "matching" / "pairs.npz"
  assert workdir.gallery == tmp_path / "gallery" / "gallery.npz"


# -- evaluate on runs of several methods ------------------------------------------------------

RUNS = {  # run -> OA per seed (3 classes, 10 test images each)
    Run(STUDENT_ALONE): (0.5, 0.6),
    Run("kd"): (0.4, 0.4), Run("kd", True): (0.7, 0.8),
    Run("dkd"): (0.3, 0.5), Run("dkd", True): (0.9, 0.9),
    Run("lskd"): (0.2, 0.2), Run("lskd", True): (0.6, 0.4),
}


def write_finished_run(folder: pathlib.Path, oa: float) -> None:
  correct = int(round(30 * oa))
  confusion = np.zeros((3, 3), int)
  for i in range(30):
    truth = i % 3
    confusion[truth, truth if i < correct else (truth + 1) % 3] += 1
  folder.mkdir(parents=True)
  (folder / "test_metrics.json").write_text(json.dumps({
      "oa": oa, "macro_precision": oa, "macro_recall": oa, "macro_f1": oa,
      "class_names": ["a", "b", "c"], "confusion": confusion.tolist()}))


def test_evaluate_names_every_method_with_and_without_sembridge(tmp_path):
  workdir = Workdir(tmp_path)
  write_finished_run(workdir.teacher, 1.0)
  for run, per_seed in RUNS.items():
    for seed, oa in enumerate(per_seed):
      write_finished_run(workdir.run(run.with_seed(seed)), oa)
  result = cli("evaluate", "--config", "configs/tiny.py", "--workdir", str(tmp_path))
  assert result.returncode == 0, result.stderr

  rows = {line.split(" | ")[0].lstrip("| "): line for line in result.stdout.splitlines()
          if line.startswith("| ") and "±" in line}
  expected = {"teacher (MS)": 100.0}
  expected.update({run.label: 100 * np.mean(oa) for run, oa in RUNS.items()})
  assert set(rows) == set(expected), rows
  for label, oa in expected.items():
    assert f"| {oa:.2f} ± " in rows[label], (label, rows[label])
  assert "DKD + SemBridge" in rows and "LSKD, random same-class pairs" in rows

  results = json.loads(workdir.results.read_text())
  for run, per_seed in RUNS.items():
    assert results[run.name]["oa"] == pytest.approx(np.mean(per_seed)), run.name
    assert set(results[run.name]["per_seed"]) == {"0", "1"}
  assert set(results["synthetic_pairs"]) == {"teacher", *(run.name for run in RUNS)}
