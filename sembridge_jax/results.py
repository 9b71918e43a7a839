"""Collecting, summarising and printing the results of a workdir's finished runs.

``results.json`` maps ``"teacher"`` and every finished student run's `Run.name`
(``"student_only"``, ``"kd"``, ``"kd+sembridge"``, ``"dkd+sembridge"``, ...) to its
mean and standard deviation over seeds of OA and macro precision / recall / F1, with
the per-seed values under ``per_seed``; the config and the stage timings ride along.
Under ``"comparisons"`` it lists the paired comparisons (`sembridge_jax.comparisons`) of
each distillation method alone and under SemBridge with the student alone and with each
other: ``{"a", "b", "diff", "ci95", "verdict", "seeds", "images"}``, OA points.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from sembridge_jax import comparisons as comparisons_lib, workdir as workdir_lib
from sembridge_jax.runs import STUDENT_ALONE, Run
from sembridge_jax.workdir import Workdir

METRICS = ("oa", "macro_precision", "macro_recall", "macro_f1")
TEACHER = "teacher"


def say(message: str) -> None:
  """Prints on process 0 only (every process runs the same stages)."""
  if jax.process_index() == 0:
    print(message, flush=True)


def format_metrics(name: str, metrics: Mapping[str, Any]) -> str:
  return (f"{name:<28} OA {100 * metrics['oa']:6.2f}  macro-P {100 * metrics['macro_precision']:6.2f}"
          f"  macro-R {100 * metrics['macro_recall']:6.2f}  macro-F1 {100 * metrics['macro_f1']:6.2f}")


def summarize_seeds(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
  """Mean and std over seeds of every metric, plus the per-seed values."""
  keys = [k for k in next(iter(per_seed.values())) if k != "seconds"]
  summary: dict[str, Any] = {}
  for key in keys:
    values = np.array([m[key] for m in per_seed.values()])
    summary[key] = float(values.mean())
    summary[f"{key}_std"] = float(values.std())
  summary["per_seed"] = {str(s): dict(m) for s, m in per_seed.items()}
  return summary


class NonFiniteRun(ValueError):
  """A finished run whose saved parameters are not finite (written by an old version)."""


def read_test_metrics(folder: pathlib.Path, *, with_seconds: bool = False) -> dict[str, float]:
  """The scalar metrics of a finished run's ``test_metrics.json`` (and its training time).

  Raises NonFiniteRun for a run whose parameters were not finite: its metrics are the
  argmax of NaN, not a result."""
  metrics = json.loads(workdir_lib.test_metrics(folder).read_text())
  if metrics.get("finite") is False:
    raise NonFiniteRun(f"{folder}: the run's parameters are not finite; its metrics are "
                       "not a result (delete the folder and train it again)")
  scalars = {k: metrics[k] for k in METRICS}
  if with_seconds:
    scalars["seconds"] = metrics.get("seconds")
  return scalars


def collect_results(workdir: Workdir) -> dict[str, Any]:
  """``{"teacher": ..., "<run name>": ...}`` from the workdir's ``test_metrics.json``
  files, in `Workdir.finished_runs` order."""
  results: dict[str, Any] = {}
  if workdir_lib.test_metrics(workdir.teacher).exists():
    results[TEACHER] = summarize_seeds({0: read_test_metrics(workdir.teacher)})
  by_name: dict[str, dict[int, dict[str, float]]] = {}
  for run in workdir.finished_runs():
    try:
      by_name.setdefault(run.name, {})[run.seed] = read_test_metrics(workdir.run(run))
    except NonFiniteRun as error:
      say(f"left out of the results: {error}")
  for name, per_seed in by_name.items():
    if per_seed:
      results[name] = summarize_seeds(per_seed)
  return results


def read_correctness(folder: pathlib.Path, reference_ids: np.ndarray | None = None
                     ) -> np.ndarray | None:
  """0/1 correctness per test image of a finished run's ``predictions.npz`` (in the
  order of ``reference_ids`` when given); None for a run saved without predictions."""
  path = workdir_lib.predictions(folder)
  if not path.exists():
    return None
  with np.load(path) as saved:
    return comparisons_lib.correctness(saved["ids"], saved["labels"], saved["logits"],
                                       reference_ids)


def compare_runs(a: str, a_folders: Mapping[int, pathlib.Path], b: str,
                 b_folders: Mapping[int, pathlib.Path]) -> comparisons_lib.Comparison | None:
  """Run ``a`` against run ``b`` (``{seed: run folder}`` each) over the seeds both have
  predictions for, image by image; None when they share no such seed."""
  # Two dicts, not one keyed by name: a run may be compared with a namesake (the same
  # run name in another workdir, e.g. 30 epochs against 15).
  correct_a: dict[int, np.ndarray] = {}
  correct_b: dict[int, np.ndarray] = {}
  reference_ids = None   # The first run read fixes the image order for all the others.
  for seed in sorted(set(a_folders) & set(b_folders)):
    paths = [workdir_lib.predictions(f[seed]) for f in (a_folders, b_folders)]
    if not all(p.exists() for p in paths):
      continue
    if reference_ids is None:
      with np.load(paths[1]) as saved:
        reference_ids = saved["ids"]
    correct_a[seed] = read_correctness(a_folders[seed], reference_ids)
    correct_b[seed] = read_correctness(b_folders[seed], reference_ids)
  if not correct_a:
    return None
  return comparisons_lib.compare(a, b, correct_a, correct_b)


def collect_comparisons(workdir: Workdir, results: Mapping[str, Any]
                        ) -> list[comparisons_lib.Comparison]:
  """For every distillation method among the workdir's runs: the method alone vs the
  student alone, the method + SemBridge vs the student alone, and the two against each
  other (those whose runs exist)."""
  folders: dict[str, dict[int, pathlib.Path]] = {}
  for run in workdir.finished_runs():
    if run.name in results:  # Left out of the results (not finite): left out here too.
      folders.setdefault(run.name, {})[run.seed] = workdir.run(run)
  wanted: list[tuple[str, str]] = []
  for method in dict.fromkeys(Run.parse(n).method for n in folders if Run.parse(n).is_distillation):
    alone, with_sembridge = Run(method).name, Run(method, True).name
    wanted += [(alone, STUDENT_ALONE), (with_sembridge, STUDENT_ALONE), (with_sembridge, alone)]
  found = [compare_runs(a, folders[a], b, folders[b]) for a, b in wanted
           if a in folders and b in folders]
  return [c for c in found if c is not None]


def comparisons_text(results: Mapping[str, Any]) -> str:
  """The paired comparisons of ``results["comparisons"]`` as a Markdown table."""
  found = [comparisons_lib.Comparison(c["a"], c["b"], c["diff"], tuple(c["ci95"]), c["verdict"],
                                      tuple(c["seeds"]), c["images"])
           for c in results.get("comparisons", ())]
  if not found:
    return ""
  labels = {name: Run.parse(name).label for c in found for name in (c.a, c.b)}
  return comparisons_lib.comparisons_table(found, labels)


def run_names(results: Mapping[str, Any]) -> list[str]:
  """The student runs in ``results`` (every key that parses as a run with metrics)."""
  names = []
  for key, value in results.items():
    if key == TEACHER or not isinstance(value, Mapping) or "oa" not in value:
      continue
    try:
      Run.parse(key)
    except ValueError:
      continue
    names.append(key)
  return names


def results_table(results: Mapping[str, Any]) -> str:
  """The Markdown comparison table: teacher, then every student run, mean ± std."""
  rows = [("teacher (MS)", TEACHER)] if TEACHER in results else []
  rows += [(Run.parse(name).label, name) for name in run_names(results)]
  lines = ["", "| run | OA (%) | macro-F1 (%) |", "|---|---|---|"]
  for label, key in rows:
    r = results[key]
    lines.append(f"| {label} | {100 * r['oa']:.2f} ± {100 * r.get('oa_std', 0):.2f} "
                 f"| {100 * r['macro_f1']:.2f} ± {100 * r.get('macro_f1_std', 0):.2f} |")
  return "\n".join(lines)


def write_results(workdir: Workdir, results: Mapping[str, Any]) -> None:
  if jax.process_index() == 0:
    workdir.root.mkdir(parents=True, exist_ok=True)
    workdir.results.write_text(json.dumps(results, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, (tuple, set)):
    return list(value)
  return str(value)
