"""The whole method, as in the paper: matcher, matching, teacher, then the students."""

from __future__ import annotations

import time
from typing import Any

import ml_collections

from sembridge_jax import results as results_lib
from sembridge_jax.runs import comparison_runs
from sembridge_jax.stages.common import Stage, as_workdir, load_benchmark
from sembridge_jax.stages.evaluate import report_results
from sembridge_jax.stages.matcher import match, train_matcher
from sembridge_jax.stages.students import distill_runs, train_student
from sembridge_jax.stages.teacher import teacher_gallery, train_teacher


def pipeline(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """train-matcher, match, train-teacher, the student alone, ``distill.method`` with
  random same-class pairs and under SemBridge (each over ``config.pipeline.seeds``);
  writes ``DIR/results.json`` and prints the comparison table."""
  workdir = as_workdir(workdir)
  timings: dict[str, float] = {}

  def timed(name: str, fn, *args):
    start = time.perf_counter()
    output = fn(*args)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return output

  benchmark = benchmark or timed("build-dataset", load_benchmark, config, workdir)
  if config.distill.use_sfm:
    timed("train-matcher", train_matcher, config, workdir, benchmark)
    timed("match", match, config, workdir, benchmark)
  timed("train-teacher", train_teacher, config, workdir, benchmark)
  timed("teacher-gallery", teacher_gallery, config, workdir, benchmark)
  timed("train-student", train_student, config, workdir, benchmark)
  _, alone, sembridge = comparison_runs(config.distill.method)
  seeds = config.pipeline.seeds
  timed("distill-baseline", distill_runs, config, workdir, benchmark, [alone], seeds)
  timed("distill-sembridge", distill_runs, config, workdir, benchmark, [sembridge], seeds)

  results = results_lib.collect_results(workdir)
  results["config"] = config.to_dict()
  results["timings"] = timings
  report_results(config, workdir, results)
  return results


STAGES = (
    Stage("pipeline", pipeline,
          "run all four stages: matcher, match, teacher, the student alone, "
          "distill.method alone and under SemBridge; print the comparison",
          reads="the benchmark (built into DIR/tfds on first use)",
          writes="everything the single stages write, and DIR/results.json",
          config_keys=("data.*", "model.*", "matcher.*", "matching.*", "teacher.*",
                       "student.*", "distill.*", "pipeline.seeds", "reports")),
)
