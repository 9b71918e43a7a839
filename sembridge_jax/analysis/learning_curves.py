"""Have the students plateaued? A report of ``config.reports`` on every run's per-epoch
train and test OA (``metrics.jsonl``).

For each run: the seed-mean test OA per evaluated epoch, and how much it moved over the
last quarter of the epochs, ``|OA(last) - OA(first evaluated epoch >= 3/4 of the last)|``
in points (issue #16 calls a run plateaued when that is under 0.5). Writes
``DIR/figures/learning_curves.png`` (seed-mean train and test OA of every run).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from sembridge_jax import viz
from sembridge_jax.runs import Run
from sembridge_jax.workdir import Workdir, figures

PLATEAU_POINTS = 0.5


def read_history(rundir: pathlib.Path) -> list[dict[str, float]]:
  """The evaluated epochs of a run's ``metrics.jsonl`` (``epoch``, ``oa``, ``train_oa``)."""
  rows = [json.loads(line) for line in (rundir / "metrics.jsonl").read_text().splitlines()
          if line.strip()]
  by_epoch = {}
  for row in rows:
    if "eval/oa" in row:   # A resumed run may repeat an epoch: the last line wins.
      by_epoch[int(row["eval/epoch"])] = {k.split("/", 1)[1]: v for k, v in row.items()
                                          if k.startswith("eval/")}
  return [by_epoch[e] for e in sorted(by_epoch)]


def seed_mean(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
  """Per epoch evaluated in every history: the mean of ``oa`` and ``train_oa``."""
  common = sorted(set.intersection(*({int(r["epoch"]) for r in h} for h in histories)))
  out = []
  for epoch in common:
    rows = [next(r for r in h if int(r["epoch"]) == epoch) for h in histories]
    mean = {"epoch": epoch, "oa": float(np.mean([r["oa"] for r in rows]))}
    if all("train_oa" in r for r in rows):
      mean["train_oa"] = float(np.mean([r["train_oa"] for r in rows]))
    out.append(mean)
  return out


def last_quarter_movement(history: list[dict[str, float]]) -> float:
  """How far the test OA moved over the last quarter of the epochs, in points."""
  last = history[-1]["epoch"]
  start = next(r for r in history if r["epoch"] >= last - last / 4)
  return 100.0 * abs(history[-1]["oa"] - start["oa"])


def on_results(config: ml_collections.ConfigDict, workdir: Workdir, results: dict[str, Any]
               ) -> dict[str, Any]:
  del config
  curves: dict[str, list[dict[str, float]]] = {}
  by_name: dict[str, list] = {}
  for run in workdir.finished_runs():
    if (workdir.run(run) / "metrics.jsonl").exists():
      by_name.setdefault(run.name, []).append(read_history(workdir.run(run)))
  summary = {}
  for name, histories in by_name.items():
    histories = [h for h in histories if h]
    if not histories:
      continue
    curves[Run.parse(name).label] = mean = seed_mean(histories)
    summary[name] = {"epochs": int(mean[-1]["epoch"]), "final_test_oa": mean[-1]["oa"],
                     "last_quarter_movement": last_quarter_movement(mean),
                     "plateaued": last_quarter_movement(mean) < PLATEAU_POINTS}
  if curves and jax.process_index() == 0:
    path = figures(workdir.root) / "learning_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.plot_learning_curves(curves, title="seed-mean OA per epoch").savefig(path, dpi=110)
  return {"learning_curves": summary} if summary else {}


def describe_results(results: dict[str, Any]) -> str | None:
  summary = results.get("learning_curves")
  if not summary:
    return None
  lines = [f"learning curves (seed-mean test OA; plateaued: moved < {PLATEAU_POINTS} point over "
           "the last quarter of the epochs):"]
  for name, s in summary.items():
    lines.append(f"  {Run.parse(name).label}: {100 * s['final_test_oa']:.2f} after {s['epochs']} "
                 f"epochs, moved {s['last_quarter_movement']:.2f} -> "
                 f"{'plateaued' if s['plateaued'] else 'still moving'}")
  return "\n".join(lines)
