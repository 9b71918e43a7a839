"""Stage 4: RGB students, trained alone or distilled from their matched teachers."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import ml_collections

from sembridge_jax.distill import distiller
from sembridge_jax.results import format_metrics, say, summarize_seeds
from sembridge_jax.runs import STUDENT_ALONE, Run
from sembridge_jax.stages import reports
from sembridge_jax.stages.common import Stage, StageError, as_workdir, load_benchmark
from sembridge_jax.stages.teacher import teacher_gallery
from sembridge_jax.train import classifier


def train_student(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """Trains the RGB student alone, once per seed of ``config.pipeline.seeds``."""
  workdir = as_workdir(workdir)
  benchmark = benchmark or load_benchmark(config, workdir)
  per_seed = {}
  for seed in config.pipeline.seeds:
    run = Run(STUDENT_ALONE, seed=seed)
    result = classifier.train_and_evaluate(config, workdir.run(run), "student", seed=seed,
                                           benchmark=benchmark)
    per_seed[seed] = {**result.metrics.as_dict(), "seconds": result.seconds}
    say(format_metrics(f"student alone (seed {seed})", per_seed[seed]))
  return summarize_seeds(per_seed)


def distill_runs(config: ml_collections.ConfigDict, workdir, benchmark, runs: Iterable[Run],
                 seeds: Sequence[int]) -> dict[str, Any]:
  """Trains every run at every seed; returns per-run summaries over seeds."""
  workdir = as_workdir(workdir)
  gallery = teacher_gallery(config, workdir, benchmark)
  out = {}
  for run in runs:
    if run.sembridge and config.distill.use_sfm and not workdir.pairs.exists():
      raise StageError("SemBridge needs the SFM pair table: run `sembridge-jax train-matcher` and "
                       "`sembridge-jax match` first (or set --config.distill.use_sfm=False)")
    per_seed = {}
    for seed in seeds:
      seeded = run.with_seed(seed)
      result = distiller.distill(config, benchmark, gallery, seeded, rundir=workdir.run(seeded),
                                 pairs_path=workdir.pairs)
      per_seed[seed] = {k: v for k, v in result.items() if k not in ("state", "modeldef")}
      say(format_metrics(f"{run.name} (seed {seed})", per_seed[seed]))
    out[run.name] = summarize_seeds(per_seed)
    reports.call(config, "run", workdir=workdir, run=run.with_seed(seeds[0]))
  return out


def distill(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """Distils students with ``config.distill.method`` (under SemBridge unless
  ``config.distill.sembridge`` is False), once per seed of ``config.pipeline.seeds``."""
  workdir = as_workdir(workdir)
  benchmark = benchmark or load_benchmark(config, workdir)
  run = Run(config.distill.method, bool(config.distill.sembridge))
  return distill_runs(config, workdir, benchmark, [run], config.pipeline.seeds)


STAGES = (
    Stage("train-student", train_student, "train the RGB student alone, once per seed",
          reads="the benchmark's rgb_train and rgb_test",
          writes="DIR/student_only/seed_S/ (checkpoints, metrics.jsonl, test_metrics.json)",
          config_keys=("model.student", "student.*", "pipeline.seeds", "checkpoint.*")),
    Stage("distill", distill,
          "distil RGB students from the MS teacher with distill.method, under SemBridge "
          "or alone, once per seed",
          reads="DIR/teacher/ (builds DIR/gallery/ on first use), DIR/matching/pairs.npz "
                "(under SemBridge with SFM), the benchmark's rgb_train and rgb_test",
          writes="DIR/gallery/gallery.npz, DIR/distill/<run>/seed_S/ (checkpoints, "
                 "metrics.jsonl, test_metrics.json; SemBridge runs: matching/ re-match "
                 "reports and figures/)",
          config_keys=("distill.*", "matching.*", "model.student", "pipeline.seeds",
                       "checkpoint.*", "reports")),
)
