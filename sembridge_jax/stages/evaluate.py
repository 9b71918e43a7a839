"""Collect every finished run of a workdir into ``results.json`` and print the table."""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from sembridge_jax import results as results_lib
from sembridge_jax.stages import reports
from sembridge_jax.stages.common import Stage, StageError, as_workdir
from sembridge_jax.workdir import Workdir


def evaluate(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """Collects the test metrics of every finished run in the workdir into results.json."""
  del benchmark  # Reads only what the runs wrote.
  workdir = as_workdir(workdir)
  results = results_lib.collect_results(workdir)
  if not results:
    raise StageError(f"no finished runs under {workdir.root}")
  results["config"] = config.to_dict()
  if workdir.results.exists():
    results["timings"] = json.loads(workdir.results.read_text()).get("timings", {})
  report_results(config, workdir, results)
  return results


def report_results(config: ml_collections.ConfigDict, workdir: Workdir,
                   results: dict[str, Any]) -> None:
  """Adds the paired comparisons and the configured reports' read-outs, writes
  results.json, prints the tables."""
  results["comparisons"] = [c.as_dict() for c in results_lib.collect_comparisons(workdir, results)]
  results.update(reports.call(config, "results", workdir=workdir, results=results))
  results_lib.write_results(workdir, results)
  results_lib.say(results_lib.results_table(results))
  if results["comparisons"]:
    results_lib.say(results_lib.comparisons_text(results))
  for text in reports.describe(config, results):
    results_lib.say(text)


STAGES = (
    Stage("evaluate", evaluate,
          "collect every finished run's test metrics into results.json and print the table",
          reads="DIR/teacher/test_metrics.json, DIR/student_only/seed_S/ and "
                "DIR/distill/<run>/seed_S/ test_metrics.json",
          writes="DIR/results.json",
          config_keys=("reports",)),
)
