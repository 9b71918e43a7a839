"""Regenerates docs/figures/*.png by running notebooks/transport_plans.ipynb headless.

  python bench/make_figures.py                      # tiny synthetic run made on the spot
  python bench/make_figures.py --workdir DIR        # a finished `sembridge-jax pipeline` run

Prints the notebook's transport-cost table (markdown). The figures are the notebook's own:
the transport plan of one batch, the epsilon sweep, Sinkhorn convergence, the dual
potentials, the transport costs in the three settings and the matched pairs.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from sembridge_jax.analysis import example_workdir

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="a finished pipeline workdir")
  parser.add_argument("--out", default=str(REPO / "docs" / "figures"), help="PNG folder")
  args = parser.parse_args()
  start = time.perf_counter()
  notebook = example_workdir.execute_notebook(
      REPO / "notebooks" / "transport_plans.ipynb",
      {"workdir": args.workdir, "figures_dir": str(pathlib.Path(args.out).absolute())})
  for cell in notebook.cells:
    if cell.cell_type == "code" and "measure_transport_costs" in cell.source:
      print("".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream"))
  print(f"figures written to {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
