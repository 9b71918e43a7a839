"""The ``benchmark`` stage: every method x architecture pair x seed, as in the paper.

Each distillation method of `sembridge_jax.distill.losses` runs twice per cell: alone
(its own loss weights, random same-class pairs) and "+ SemBridge" (SFM pairs and ALIGN,
its term in KD's place). Teachers are trained once per teacher architecture and the
matcher once, then shared by all cells. Finished cells (a ``test_metrics.json``) are
skipped, so a re-run resumes where it stopped. Writes ``DIR/benchmark.csv`` (one row
per cell and seed) and ``DIR/benchmark.md`` (mean +- std over seeds, best per column
in bold; OA and macro-F1 tables).
"""

from __future__ import annotations

import csv
import itertools
import json
import pathlib
from typing import Any

import ml_collections
import numpy as np
from tqdm.auto import tqdm

# The six teacher -> student pairs of the paper (METHOD section 4).
ALL_PAIRS = (("resnet34", "resnet34"), ("mobilenet_v2", "mobilenet_v2"),
             ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5"), ("resnet34", "mobilenet_v2"),
             ("resnet34", "shufflenet_v2_x0_5"), ("mobilenet_v2", "shufflenet_v2_x0_5"))
SHORT = {"resnet34": "ResNet", "mobilenet_v2": "MobileNet", "shufflenet_v2_x0_5": "ShuffleNet"}
PAIR_SELECTIONS = {"all": ALL_PAIRS, "same": ALL_PAIRS[:3], "cross": ALL_PAIRS[3:]}


def pair_name(pair: tuple[str, str]) -> str:
  return f"{SHORT[pair[0]]}->{SHORT[pair[1]]}"


def parse_pairs(spec: str) -> tuple[tuple[str, str], ...]:
  """``all`` | ``same`` | ``cross`` | ``resnet34:mobilenet_v2,mobilenet_v2:...``."""
  if spec in PAIR_SELECTIONS:
    return PAIR_SELECTIONS[spec]
  pairs = []
  for item in str(spec).split(","):
    teacher, sep, student = item.strip().partition(":")
    if not sep or (teacher, student) not in ALL_PAIRS:
      raise ValueError(f"config.benchmark.pairs={spec!r}: {item!r} is not one of the paper's pairs; "
                       f"use all, same, cross or teacher:student from "
                       f"{[f'{t}:{s}' for t, s in ALL_PAIRS]}")
    pairs.append((teacher, student))
  return tuple(pairs)


def parse_methods(spec: str) -> tuple[str, ...]:
  from sembridge_jax.distill import losses
  if spec == "all":
    return tuple(losses.DISTILL_METHODS)
  methods = tuple(m.strip() for m in str(spec).split(","))
  for method in methods:
    losses.get_method(method)  # Raises with the list of known methods.
  return methods


def run_benchmark(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  from sembridge_jax import stages
  from sembridge_jax.distill import gallery as gallery_lib, trainer
  from sembridge_jax.train import classifier

  workdir = pathlib.Path(workdir)
  pairs = parse_pairs(config.benchmark.pairs)
  methods = parse_methods(config.benchmark.methods)
  seeds = tuple(range(int(config.benchmark.seeds)))
  root = workdir / "benchmark"
  benchmark = stages.load_benchmark(config, workdir)

  # Shared by every cell: one matcher and its pair table.
  if not trainer.pairs_path(workdir).exists():
    stages.train_matcher(config, workdir, benchmark)
    stages.match(config, workdir, benchmark)

  galleries = {}
  for teacher in sorted({t for t, _ in pairs}):
    cfg = _with_models(config, teacher=teacher)
    teacher_dir = root / "teachers" / teacher
    if not (teacher_dir / "test_metrics.json").exists():
      result = classifier.train_and_evaluate(cfg, teacher_dir, "teacher", benchmark=benchmark)
      stages._print(stages.format_metrics(f"teacher {teacher}", result.metrics.as_dict()))
    galleries[teacher] = gallery_lib.build_gallery(cfg, teacher_dir, benchmark,
                                                   teacher_dir / "gallery.npz")

  cells = list(itertools.product(pairs, methods, (False, True), seeds))
  bar = tqdm(cells, desc="benchmark", unit="cell", disable=not config.progress)
  for (teacher, student), method, sembridge, seed in bar:
    run = trainer.DistillRun(method, sembridge)
    rundir = root / "cells" / f"{teacher}-{student}" / run.name / f"seed_{seed}"
    bar.set_postfix_str(f"{pair_name((teacher, student))} {run.name} seed {seed}")
    if (rundir / "test_metrics.json").exists():
      continue
    cfg = _with_models(config, teacher=teacher, student=student)
    trainer.distill(cfg, workdir, benchmark, galleries[teacher], run, seed=seed, rundir=rundir)
  bar.close()

  rows = collect_cells(root, pairs, methods, seeds)
  write_tables(workdir, rows, pairs, methods)
  return {"cells": len(rows)}


def _with_models(config: ml_collections.ConfigDict, **models: str) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  for role, name in models.items():
    cfg.model[role] = name
  return cfg


def collect_cells(root: pathlib.Path, pairs, methods, seeds) -> list[dict[str, Any]]:
  rows = []
  for (teacher, student), method, sembridge, seed in itertools.product(
      pairs, methods, (False, True), seeds):
    run = f"{method}+sembridge" if sembridge else method
    path = root / "cells" / f"{teacher}-{student}" / run / f"seed_{seed}" / "test_metrics.json"
    if path.exists():
      metrics = json.loads(path.read_text())
      rows.append({"pair": pair_name((teacher, student)), "teacher": teacher, "student": student,
                   "method": method, "sembridge": sembridge, "seed": seed, "oa": metrics["oa"],
                   "macro_f1": metrics["macro_f1"], "seconds": metrics.get("seconds")})
  return rows


def write_tables(workdir: pathlib.Path, rows: list[dict[str, Any]], pairs, methods) -> None:
  with (workdir / "benchmark.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["pair", "teacher", "student", "method", "sembridge",
                                           "seed", "oa", "macro_f1", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
  sections = [markdown_table(rows, pairs, methods, metric, title)
              for metric, title in (("oa", "Overall accuracy (%)"), ("macro_f1", "Macro F1 (%)"))]
  (workdir / "benchmark.md").write_text("\n\n".join(sections) + "\n")


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
    label = f"{method} + SemBridge" if sembridge else method
    lines.append(f"| {label} | " + " | ".join(entries) + " |")
  return "\n".join(lines)
