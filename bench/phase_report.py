r"""Where each run's wall time went: the per-phase times every run writes (issue #18).

  python bench/phase_report.py WORKDIR            # a Markdown table, one column per run
  python bench/phase_report.py WORKDIR --json     # one JSON object per run

Reads the last ``time/...`` record of every ``metrics.jsonl`` under WORKDIR (see
`sembridge_jax.train.timing`): compilation, steps, input, evaluation, checkpoints, hooks
and the rest, in total and after the first epoch, and the share of the wall time after
the first epoch spent in steps (issue #18's GPU target: at least 80%). A resumed run's
last record covers the process that finished it, not the ones before.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sembridge_jax.train.timing import PHASES  # noqa: E402

ROWS = (*PHASES, "other", "wall")


def run_times(metrics: pathlib.Path) -> dict[str, float] | None:
  """The last record of ``metrics`` that holds the run's phase times, or None."""
  last = None
  with metrics.open() as lines:
    for line in lines:
      if '"time/wall_s"' in line:
        last = line
  if last is None:
    return None
  record = json.loads(last)
  return {key: value for key, value in record.items() if key.startswith("time/")}


def collect(workdir: pathlib.Path) -> dict[str, dict[str, float]]:
  """``run folder (relative to workdir) -> its phase times``, for every finished run."""
  found = {}
  for metrics in sorted(workdir.rglob("metrics.jsonl")):
    times = run_times(metrics)
    if times is not None:
      found[str(metrics.parent.relative_to(workdir))] = times
  return found


def markdown(runs: dict[str, dict[str, float]]) -> str:
  names = list(runs)
  lines = ["| phase, s: all (after epoch 1) | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
  for phase in ROWS:
    cells = []
    for times in runs.values():
      total, after = times.get(f"time/{phase}_s"), times.get(f"time/after_first_epoch/{phase}_s")
      cells.append("" if total is None else f"{total:.1f}" + ("" if after is None else f" ({after:.1f})"))
    lines.append(f"| {phase} | " + " | ".join(cells) + " |")
  shares = [times.get("time/steps_share_after_first_epoch") for times in runs.values()]
  lines.append("| **steps' share after epoch 1** | " + " | ".join(
      "n/a (one epoch)" if share is None else f"**{100 * share:.0f}%**" for share in shares) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", type=pathlib.Path)
  parser.add_argument("--json", action="store_true", help="one JSON object per run")
  args = parser.parse_args()
  if not args.workdir.is_dir():
    parser.error(f"{args.workdir} is not a folder")
  runs = collect(args.workdir)
  if not runs:
    parser.error(f"no run under {args.workdir} has recorded its phase times yet")
  if args.json:
    for name, times in runs.items():
      print(json.dumps({"run": name, **times}))
  else:
    print(markdown(runs))


if __name__ == "__main__":
  main()
