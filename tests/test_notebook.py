"""notebooks/transport_plans.ipynb runs top to bottom, headless, from a fresh workdir.

The notebook is executed in a fresh ``python3`` kernel (jupyter_client resolves it to the
interpreter running the tests, so no kernelspec needs installing) with ``workdir=None``:
it runs the tiny synthetic pipeline itself, then every analysis cell. Any cell error
fails the test. The outputs are then checked: each figure cell displays a PNG and the
transport-cost table has a finite number for every (setting, student) cell.
"""

from __future__ import annotations

import math
import re

import pytest

from conftest import REPO
from sembridge_jax.analysis import example_workdir

NOTEBOOK = REPO / "notebooks" / "transport_plans.ipynb"

# The smallest run that still exercises everything (incl. one SFM re-matching).
FAST_PARAMETERS = {
    "config_overrides": {"matcher.epochs": 1, "teacher.epochs": 2, "student.epochs": 1,
                         "distill.epochs": 2, "matching.rematch_epochs": (1,)},
    "epsilons": (0.05, 0.5),
    "num_pairs": 4,
}


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")


def _has_png(cell) -> bool:
  return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_and_shows_the_three_settings(tiny_benchmark_dir):
  notebook = example_workdir.execute_notebook(
      NOTEBOOK, {**FAST_PARAMETERS, "data_dir": str(tiny_benchmark_dir)}, timeout=900)
  code_cells = [c for c in notebook.cells if c.cell_type == "code"]
  errors = [o for c in code_cells for o in c.get("outputs", []) if o["output_type"] == "error"]
  assert not errors

  figure_cells = [c for c in code_cells if re.search(r'^figures\["\w+"\]$', c.source, re.M)]
  assert len(figure_cells) == 7
  assert all(_has_png(c) for c in figure_cells), "a figure cell displayed no PNG"

  (costs_cell,) = [c for c in code_cells if "measure_transport_costs" in c.source]
  rows = [line for line in _text(costs_cell).splitlines() if line.startswith("| ")][1:]
  cells = {tuple(part.strip() for part in row.strip("|").split("|")[:2]):
           float(row.strip("|").split("|")[2]) for row in rows}
  settings = {"paired (SCKD)", "unpaired, random (ACKD)", "unpaired, SFM (SemBridge)"}
  students = {"before distillation", "after kd alone", "after kd + SemBridge"}
  assert set(cells) == {(s, t) for s in settings for t in students}
  assert all(math.isfinite(v) and v > -1e-3 for v in cells.values())
