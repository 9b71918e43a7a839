"""Stage 3: the MS teacher, and its gallery (the frozen teacher's outputs for every MS
train image, which distillation reads instead of running the teacher)."""

from __future__ import annotations

from typing import Any

import ml_collections

from sembridge_jax import workdir as workdir_lib
from sembridge_jax.distill.gallery import Gallery, build_gallery
from sembridge_jax.results import format_metrics, say
from sembridge_jax.stages.common import Stage, StageError, as_workdir, load_benchmark
from sembridge_jax.train import classifier


def train_teacher(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """Trains the MS teacher on ``ms_train``; test metrics on ``ms_test``."""
  workdir = as_workdir(workdir)
  benchmark = benchmark or load_benchmark(config, workdir)
  result = classifier.train_and_evaluate(config, workdir.teacher, "teacher", benchmark=benchmark)
  say(format_metrics(f"teacher ({config.model.teacher}, MS)", result.metrics.as_dict()))
  return {**result.metrics.as_dict(), "seconds": result.seconds}


def teacher_gallery(config: ml_collections.ConfigDict, workdir, benchmark) -> Gallery:
  """The workdir's teacher gallery, computed on first use."""
  workdir = as_workdir(workdir)
  if not workdir_lib.test_metrics(workdir.teacher).exists():
    raise StageError("no finished teacher in the workdir: run `sembridge-jax train-teacher` "
                     "(to the end) first")
  return build_gallery(config, workdir.teacher, benchmark, workdir.gallery)


STAGES = (
    Stage("train-teacher", train_teacher, "train the MS teacher (cross-entropy)",
          reads="the benchmark's ms_train and ms_test",
          writes="DIR/teacher/ (checkpoints, metrics.jsonl, test_metrics.json)",
          config_keys=("model.teacher", "teacher.*", "data.normalization", "checkpoint.*")),
)
