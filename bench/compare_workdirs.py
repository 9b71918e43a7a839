r"""The same runs in two workdirs, compared image by image: what did a setting change?

  python bench/compare_workdirs.py BASE OTHER            # a Markdown table
  python bench/compare_workdirs.py BASE OTHER --json     # one JSON object per run

For every run that both workdirs finished (student alone, each distillation run; same
name, the seeds both have), the OA difference OTHER - BASE with its paired 95% interval
over the same test images and seeds (`sembridge_jax.comparisons`) and its verdict. Both
workdirs must hold the same test split (the same dataset): e.g. a pipeline and its
re-run with ``--config.model.dtype=bfloat16``, or a short and a long schedule.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sembridge_jax import comparisons, results as results_lib  # noqa: E402
from sembridge_jax.workdir import Workdir  # noqa: E402


def _runs_by_label(workdir: Workdir) -> dict[str, dict[int, pathlib.Path]]:
  """``run label -> {seed: run folder}`` of the workdir's finished runs."""
  by_label: dict[str, dict[int, pathlib.Path]] = {}
  for run in workdir.finished_runs():
    by_label.setdefault(run.label, {})[run.seed] = workdir.run(run)
  return by_label


def compare_workdirs(base: pathlib.Path, other: pathlib.Path) -> list[comparisons.Comparison]:
  """One comparison (``other`` minus ``base``) per run both finished, over the seeds
  both have predictions for; ``a`` and ``b`` are the run's label."""
  base_runs, other_runs = _runs_by_label(Workdir(base)), _runs_by_label(Workdir(other))
  found = (results_lib.compare_runs(label, other_runs[label], label, folders)
           for label, folders in base_runs.items() if label in other_runs)
  return [c for c in found if c is not None]


def markdown(found: list[comparisons.Comparison], base: pathlib.Path, other: pathlib.Path) -> str:
  lines = [f"ΔOA = {other} - {base}, paired over the same test images and seeds, 95% interval",
           "", "| run | seeds | test images | ΔOA (points) | 95% CI | verdict |",
           "|---|---|---|---|---|---|"]
  for c in found:
    lines.append(f"| {c.a} | {','.join(map(str, c.seeds))} | {c.images} | {c.diff:+.2f} | "
                 f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}] | {c.verdict} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("base", type=pathlib.Path)
  parser.add_argument("other", type=pathlib.Path)
  parser.add_argument("--json", action="store_true", help="one JSON object per run")
  args = parser.parse_args()
  for folder in (args.base, args.other):
    if not folder.is_dir():
      parser.error(f"{folder} is not a folder")
  found = compare_workdirs(args.base, args.other)
  if not found:
    parser.error(f"{args.base} and {args.other} share no finished run with predictions")
  if args.json:
    for c in found:   # a, b: the workdirs (the run is the same on both sides)
      print(json.dumps({**c.as_dict(), "run": c.a, "a": str(args.other), "b": str(args.base)}))
  else:
    print(markdown(found, args.base, args.other))


if __name__ == "__main__":
  main()
