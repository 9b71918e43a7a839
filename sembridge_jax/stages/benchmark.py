"""The ``benchmark`` stage: every method x architecture pair x seed, as in the paper.

Each distillation method of `sembridge_jax.distill.losses` runs twice per cell: alone
(its own loss weights, random same-class pairs) and "+ SemBridge" (SFM pairs and ALIGN,
its term in KD's place). Teachers are trained once per teacher architecture and the
matcher once, then shared by all cells. Finished cells (a ``test_metrics.json``) are
skipped, so a re-run resumes where it stopped. Writes ``DIR/benchmark.csv`` (one row
per cell and seed) and ``DIR/benchmark.md`` (mean +- std over seeds, best per column
in bold; OA and macro-F1 tables; each method + SemBridge vs the same method alone with
its paired 95% interval and verdict, also under ``"comparisons"`` in ``DIR/results.json``).
"""

from __future__ import annotations

import csv
import itertools
import json
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from sembridge_jax import comparisons as comparisons_lib, workdir as workdir_lib
from sembridge_jax.distill import distiller, gallery as gallery_lib
from sembridge_jax.distill.methods import parse_methods
from sembridge_jax.models.pairs import pair_name, parse_pairs
from sembridge_jax.results import (NonFiniteRun, compare_runs, format_metrics, read_test_metrics,
                                   say, write_results)
from sembridge_jax.runs import Run
from sembridge_jax.stages.common import Stage, as_workdir, load_benchmark
from sembridge_jax.stages.matcher import match, train_matcher
from sembridge_jax.train import classifier
from sembridge_jax.train.divergence import TrainingDiverged
from sembridge_jax.workdir import Workdir

def run_benchmark(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """Every method alone and + SemBridge x architecture pair x seed; finished cells skipped."""
  workdir = as_workdir(workdir)
  pairs = parse_pairs(config.benchmark.pairs)
  methods = parse_methods(config.benchmark.methods)
  seeds = tuple(range(int(config.benchmark.seeds)))
  benchmark = benchmark or load_benchmark(config, workdir)

  # Shared by every cell: one matcher and its pair table.
  if not workdir.pairs.exists():
    train_matcher(config, workdir, benchmark)
    match(config, workdir, benchmark)

  galleries = {}
  for teacher in sorted({t for t, _ in pairs}):
    cfg = _with_models(config, teacher=teacher)
    teacher_dir = workdir.benchmark_teacher(teacher)
    if not workdir_lib.test_metrics(teacher_dir).exists():
      result = classifier.train_and_evaluate(cfg, teacher_dir, "teacher", benchmark=benchmark)
      say(format_metrics(f"teacher {teacher}", result.metrics.as_dict()))
    galleries[teacher] = gallery_lib.build_gallery(cfg, teacher_dir, benchmark,
                                                   workdir.benchmark_gallery(teacher))

  cells = list(itertools.product(pairs, methods, (False, True), seeds))
  diverged: list[str] = []
  bar = tqdm(cells, desc="benchmark", unit="cell", disable=not config.progress)
  for (teacher, student), method, sembridge, seed in bar:
    run = Run(method, sembridge, seed)
    rundir = workdir.benchmark_run(teacher, student, run)
    bar.set_postfix_str(f"{pair_name((teacher, student))} {run.name} seed {seed}")
    if workdir_lib.test_metrics(rundir).exists():
      continue
    cfg = _with_models(config, teacher=teacher, student=student)
    try:
      distiller.distill(cfg, benchmark, galleries[teacher], run, rundir=rundir,
                        pairs_path=workdir.pairs)
    except TrainingDiverged as error:  # One cell's divergence is its result, not the end.
      diverged.append(f"{pair_name((teacher, student))} {run.name} seed {seed}")
      say(f"benchmark: left out: {error}")
  bar.close()

  rows = collect_cells(workdir, pairs, methods, seeds)
  comparisons = cell_comparisons(workdir, pairs, methods, seeds)
  if jax.process_index() == 0:
    write_tables(workdir, rows, pairs, methods, comparisons)
    merge_comparisons(workdir, comparisons)
  say(comparisons_lib.comparisons_table(comparisons))
  if diverged:
    say(f"benchmark: {len(diverged)} cell(s) diverged and are not in the tables: "
        + "; ".join(diverged))
  return {"cells": len(rows), "diverged": diverged}


def _with_models(config: ml_collections.ConfigDict, **models: str) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  for role, name in models.items():
    cfg.model[role] = name
  return cfg


def collect_cells(workdir: Workdir, pairs, methods, seeds) -> list[dict[str, Any]]:
  rows = []
  for (teacher, student), method, sembridge, seed in itertools.product(
      pairs, methods, (False, True), seeds):
    rundir = workdir.benchmark_run(teacher, student, Run(method, sembridge, seed))
    path = workdir_lib.test_metrics(rundir)
    if path.exists():
      try:
        metrics = read_test_metrics(rundir, with_seconds=True)
      except NonFiniteRun as error:
        say(f"benchmark: left out: {error}")
        continue
      rows.append({"pair": pair_name((teacher, student)), "teacher": teacher, "student": student,
                   "method": method, "sembridge": sembridge, "seed": seed, "oa": metrics["oa"],
                   "macro_f1": metrics["macro_f1"], "seconds": metrics.get("seconds")})
  return rows


def cell_comparisons(workdir: Workdir, pairs, methods, seeds
                     ) -> list[comparisons_lib.Comparison]:
  """Per architecture pair and method: the method + SemBridge vs the method alone, paired
  over test images and seeds. Runs are named ``<pair>/<run name>``."""
  def finished(teacher: str, student: str, run: Run) -> dict[int, Any]:
    folders = {seed: workdir.benchmark_run(teacher, student, run.with_seed(seed)) for seed in seeds}
    return {s: f for s, f in folders.items() if workdir_lib.test_metrics(f).exists()}

  found = []
  for (teacher, student), method in itertools.product(pairs, methods):
    folders = {sembridge: finished(teacher, student, Run(method, sembridge))
               for sembridge in (True, False)}
    prefix = pair_name((teacher, student))
    comparison = compare_runs(f"{prefix}/{Run(method, True).name}", folders[True],
                              f"{prefix}/{Run(method).name}", folders[False])
    if comparison is not None:
      found.append(comparison)
  return found


def merge_comparisons(workdir: Workdir, comparisons: list[comparisons_lib.Comparison]) -> None:
  """Adds the benchmark's comparisons to ``results.json``'s ``"comparisons"`` (replacing
  those of the same two runs), keeping whatever else the file holds."""
  results = json.loads(workdir.results.read_text()) if workdir.results.exists() else {}
  new = {(c.a, c.b): c.as_dict() for c in comparisons}
  kept = [c for c in results.get("comparisons", []) if (c["a"], c["b"]) not in new]
  results["comparisons"] = kept + list(new.values())
  write_results(workdir, results)


def write_tables(workdir: Workdir, rows: list[dict[str, Any]], pairs, methods,
                 comparisons: list[comparisons_lib.Comparison] = ()) -> None:
  with workdir.benchmark_csv.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["pair", "teacher", "student", "method", "sembridge",
                                           "seed", "oa", "macro_f1", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
  sections = [markdown_table(rows, pairs, methods, metric, title)
              for metric, title in (("oa", "Overall accuracy (%)"), ("macro_f1", "Macro F1 (%)"))]
  if comparisons:
    sections.append("**+ SemBridge vs the same method alone** (paired over test images and "
                    "seeds)\n" + comparisons_lib.comparisons_table(comparisons))
  workdir.benchmark_md.write_text("\n\n".join(sections) + "\n")


def markdown_table(rows, pairs, methods, metric: str, title: str) -> str:
  """Rows: methods alone and "+ SemBridge"; columns: pairs; mean +- std; best in bold."""
  columns = [pair_name(p) for p in pairs]
  labels = [(m, s) for m in methods for s in (False, True)]
  cells: dict[tuple[str, bool, str], tuple[float, float]] = {}
  for method, sembridge in labels:
    for column in columns:
      values = [100 * r[metric] for r in rows
                if r["method"] == method and r["sembridge"] == sembridge and r["pair"] == column]
      if values:
        cells[(method, sembridge, column)] = (float(np.mean(values)), float(np.std(values)))
  best = {c: max((v[0] for (m, s, col), v in cells.items() if col == c), default=None)
          for c in columns}
  lines = [f"**{title}**", "", "| method | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
  for method, sembridge in labels:
    entries = []
    for column in columns:
      if (method, sembridge, column) not in cells:
        entries.append("–")
        continue
      mean, std = cells[(method, sembridge, column)]
      text = f"{mean:.2f} ± {std:.2f}"
      entries.append(f"**{text}**" if best[column] is not None and mean == best[column] else text)
    label = Run(method, sembridge).short_label
    lines.append(f"| {label} | " + " | ".join(entries) + " |")
  return "\n".join(lines)


STAGES = (
    Stage("benchmark", run_benchmark,
          "every distillation method alone and + SemBridge x architecture pair x seed",
          reads="the benchmark; DIR/matching/pairs.npz (trains the matcher first if absent)",
          writes="DIR/benchmark/ (teachers, galleries, cells), DIR/benchmark.csv, "
                 "DIR/benchmark.md",
          config_keys=("benchmark.methods", "benchmark.pairs", "benchmark.seeds", "distill.*",
                       "matching.*", "teacher.*")),
)
