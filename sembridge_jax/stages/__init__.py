"""The stages of the SemBridge pipeline, by name: the registry the command line runs.

Each stage is ``stage(config, workdir, benchmark=None)`` in a module of its own
(`matcher`, `teacher`, `students`, `evaluate`, `pipeline`, `benchmark`), reads and
writes the paths `sembridge_jax.workdir.Workdir` names, and resumes from what is
already there.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

from sembridge_jax import compilation_cache
from sembridge_jax.stages import benchmark, matcher, students, teacher
from sembridge_jax.stages import evaluate as evaluate_stage, pipeline as pipeline_stage
from sembridge_jax.stages.benchmark import run_benchmark
from sembridge_jax.stages.common import Stage, StageError, as_workdir, load_benchmark
from sembridge_jax.stages.evaluate import evaluate, report_results
from sembridge_jax.stages.matcher import match, train_matcher
from sembridge_jax.stages.pipeline import pipeline
from sembridge_jax.stages.students import distill, distill_runs, train_student
from sembridge_jax.stages.teacher import teacher_gallery, train_teacher

STAGES: dict[str, Stage] = {stage.name: stage for module in (
    pipeline_stage, matcher, teacher, students, evaluate_stage, benchmark)
    for stage in module.STAGES}

__all__ = ["STAGES", "Stage", "StageError", "as_workdir", "distill", "distill_runs", "evaluate",
           "load_benchmark", "match", "pipeline", "report_results", "run_benchmark", "run_stage",
           "teacher_gallery", "train_matcher", "train_student", "train_teacher"]


def run_stage(name: str, config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Any:
  workdir = as_workdir(workdir).prepare()
  compilation_cache.enable(config.get("compilation_cache_dir", compilation_cache.AUTO))
  return STAGES[name].run(config, workdir)
