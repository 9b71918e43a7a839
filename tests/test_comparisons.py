"""Paired comparisons: exact zero for identical runs, coverage of a known difference,
verdicts, image alignment, and the comparisons a workdir's runs produce."""

import json

import numpy as np
import pytest

from sembridge_jax import comparisons, results as results_lib
from sembridge_jax.analysis import simulated_predictions as sim
from sembridge_jax.runs import Run
from sembridge_jax.workdir import Workdir


def test_identical_runs_give_exactly_zero():
  rng = np.random.default_rng(0)
  correct = (rng.random((3, 500)) < 0.6).astype(float)
  interval = comparisons.paired_difference(correct, correct.copy())
  assert (interval.diff, interval.low, interval.high) == (0.0, 0.0, 0.0)
  c = comparisons.compare("a", "b", dict(enumerate(correct)), dict(enumerate(correct)))
  assert c.diff == 0.0 and c.ci95 == (0.0, 0.0)
  assert c.verdict == comparisons.NO_DIFFERENCE


@pytest.mark.parametrize("design, num_seeds, num_images", [
    (sim.Design(seed_sd=0.06), 3, 240),      # the old default's size; seeds matter a little
    (sim.Design(seed_sd=0.12), 3, 2000),     # the seed effect dominates the interval
    (sim.Design(seed_sd=0.0), 1, 500),       # one seed: images only
])
def test_interval_covers_a_known_difference_95_percent_of_the_time(design, num_seeds, num_images):
  rng = np.random.default_rng(12345)
  truth = design.true_difference()
  replications = 400
  covered = 0
  for _ in range(replications):
    a, b = sim.simulate(design, num_seeds, num_images, rng)
    interval = comparisons.paired_difference(a, b)
    covered += interval.low <= truth <= interval.high
  assert 92.0 <= 100.0 * covered / replications <= 98.0, (covered, truth)


def test_simulated_truth_matches_a_large_sample():
  design = sim.Design(ability_a=0.4, ability_b=0.0, seed_sd=0.1)
  a, b = sim.simulate(design, 400, 4000, np.random.default_rng(1))
  assert 100 * (a.mean() - b.mean()) == pytest.approx(design.true_difference(), abs=0.5)


def test_verdicts_follow_the_interval():
  rng = np.random.default_rng(3)
  design = sim.Design(ability_a=0.8, ability_b=0.0, seed_sd=0.02)
  a, b = sim.simulate(design, 3, 2000, rng)
  better = comparisons.compare("a", "b", dict(enumerate(a)), dict(enumerate(b)))
  worse = comparisons.compare("b", "a", dict(enumerate(b)), dict(enumerate(a)))
  assert better.verdict == comparisons.BETTER and better.ci95[0] > 0
  assert worse.verdict == comparisons.WORSE and worse.ci95[1] < 0
  assert worse.diff == pytest.approx(-better.diff)
  assert comparisons.verdict(-1.0, 2.0) == comparisons.NO_DIFFERENCE


def test_correctness_is_aligned_by_image_id():
  ids = np.array([5, 1, 9, 3])
  labels = np.array([0, 1, 0, 1])
  logits = np.array([[1.0, 0], [0, 1.0], [0, 1.0], [1.0, 0]])     # right, right, wrong, wrong
  got = comparisons.correctness(ids, labels, logits, reference_ids=np.array([1, 3, 5, 9]))
  np.testing.assert_array_equal(got, [1, 0, 1, 0])
  with pytest.raises(ValueError, match="different images"):
    comparisons.correctness(ids, labels, logits, reference_ids=np.array([1, 3, 5, 7]))


def test_rejects_arrays_of_different_shapes():
  with pytest.raises(ValueError, match="one shape"):
    comparisons.paired_difference(np.zeros((3, 10)), np.zeros((3, 11)))
  with pytest.raises(ValueError, match="share no seed"):
    comparisons.compare("a", "b", {0: np.zeros(3)}, {1: np.zeros(3)})


def _write_run(folder, ids, labels, predicted):
  folder.mkdir(parents=True)
  logits = np.eye(3)[predicted]
  np.savez(folder / "predictions.npz", ids=ids, labels=labels, logits=logits)
  (folder / "test_metrics.json").write_text(json.dumps(
      {"oa": float((predicted == labels).mean()), "macro_precision": 0.0, "macro_recall": 0.0,
       "macro_f1": 0.0, "finite": True}))


def test_a_workdirs_runs_give_the_three_comparisons(tmp_path):
  workdir = Workdir(tmp_path)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  ids = np.arange(300)
  accuracy = {"student_only": 0.5, "kd": 0.5, "kd+sembridge": 0.9}
  for name, p in accuracy.items():
    for seed in (0, 1, 2):
      predicted = np.where(rng.random(300) < p, labels, (labels + 1) % 3)
      order = rng.permutation(300)                      # saved in any order: aligned by id
      _write_run(workdir.run(Run.parse(name, seed)), ids[order], labels[order], predicted[order])
  results = results_lib.collect_results(workdir)
  found = {(c.a, c.b): c for c in results_lib.collect_comparisons(workdir, results)}
  assert set(found) == {("kd", "student_only"), ("kd+sembridge", "student_only"),
                        ("kd+sembridge", "kd")}
  assert found[("kd+sembridge", "student_only")].verdict == comparisons.BETTER
  assert found[("kd+sembridge", "kd")].seeds == (0, 1, 2)
  assert found[("kd+sembridge", "kd")].images == 300
  results["comparisons"] = [c.as_dict() for c in found.values()]
  text = results_lib.comparisons_text(json.loads(json.dumps(results)))
  assert "| SemBridge vs student alone (RGB) |" in text
  assert "| SemBridge vs KD, random same-class pairs |" in text
  assert "better" in text


def test_a_run_compared_with_its_namesake_in_another_workdir(tmp_path):
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 200)
  folders = {}
  for name, p in (("short", 0.4), ("long", 0.9)):
    folders[name] = {}
    for seed in (0, 1, 2):
      folder = tmp_path / name / f"seed_{seed}"
      _write_run(folder, np.arange(200), labels,
                 np.where(rng.random(200) < p, labels, (labels + 1) % 3))
      folders[name][seed] = folder
  c = results_lib.compare_runs("student_only", folders["long"], "student_only", folders["short"])
  assert c.diff > 30 and c.verdict == comparisons.BETTER


def test_compare_workdirs_pairs_each_run_with_its_namesake(tmp_path):
  import importlib.util

  from conftest import REPO
  spec = importlib.util.spec_from_file_location("compare_workdirs",
                                                REPO / "bench" / "compare_workdirs.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, 400)
  accuracy = {"base": {"student_only": 0.5, "kd": 0.6}, "other": {"student_only": 0.9, "kd": 0.6}}
  for side, runs in accuracy.items():
    for name, p in runs.items():
      for seed in (0, 1):
        predicted = np.where(rng.random(400) < p, labels, (labels + 1) % 3)
        order = rng.permutation(400)
        _write_run(Workdir(tmp_path / side).run(Run.parse(name, seed)), np.arange(400)[order],
                   labels[order], predicted[order])
  # A run only one side has is left out.
  _write_run(Workdir(tmp_path / "other").run(Run.parse("kd+sembridge", 0)), np.arange(400),
             labels, labels)
  found = {c.a: c for c in module.compare_workdirs(tmp_path / "base", tmp_path / "other")}
  assert set(found) == {"student alone (RGB)", "KD, random same-class pairs"}
  assert found["student alone (RGB)"].verdict == comparisons.BETTER
  assert found["student alone (RGB)"].diff == pytest.approx(40, abs=6)
  assert found["KD, random same-class pairs"].seeds == (0, 1)
  assert abs(found["KD, random same-class pairs"].diff) < 8
  table = module.markdown(list(found.values()), tmp_path / "base", tmp_path / "other")
  assert "| student alone (RGB) | 0,1 | 400 |" in table


def test_regime_maps_compact_table_marks_intervals_that_exclude_zero():
  import importlib.util

  from conftest import REPO
  spec = importlib.util.spec_from_file_location("regimes", REPO / "bench" / "regimes.py")
  regimes = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(regimes)
  cell = {"cell": "visible_scenes0_n10", "per_class": 10, "pair_evidence": "visible",
          "scene_variation": 0.0}
  summary = [
      {**cell, "arm": "alone", "oa": 80.0},
      {**cell, "arm": "kd_random", "oa": 82.0, "diff": 2.0, "ci_low": 0.5, "ci_high": 3.5},
      {**cell, "arm": "sembridge", "oa": 79.0, "diff": -1.0, "ci_low": -2.0, "ci_high": 0.1,
       "diff_vs_kd": -3.0, "ci_vs_kd": [-4.0, -2.0]},
  ]
  rows = regimes.compact_table(summary).splitlines()
  assert len(rows) == 3
  assert rows[2] == ("| 10 | visible | 0 | 80.00 | +2.00 [+0.50, +3.50] ✓ | "
                     "-1.00 [-2.00, +0.10] | -3.00 [-4.00, -2.00] ✓ |")
