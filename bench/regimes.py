r"""Where does asymmetric distillation help? A map over the synthetic generator (issue #16).

  python bench/regimes.py --out workdirs/regimes            # resumes where it stopped
  python bench/regimes.py --out workdirs/regimes --report   # tables and figure only
  python bench/regimes.py --out DIR --cells 30/nonvisible/0 --epochs-scale 4   # some cells

Two invocations side by side on a 2-core CPU: ``OMP_NUM_THREADS=1`` for each (oneDNN's
OpenMP threads, two per process by default, would oversubscribe the cores; that ran the
training about 6x slower).

The grid (decided before any of it ran):

* labelled RGB training images per class: 10, 30, 100, 300;
* where the class evidence lives (`data.synthetic.pair_evidence`): ``nonvisible`` (the
  default: confusable pairs separable only outside the visible bands) or ``visible``
  (the same pairs, the contrasts swapped: everything an RGB camera needs is visible);
* shared within-class variation `data.synthetic.scene_variation`: 0 and 0.5;

and four arms per cell, each at seeds 0, 1, 2:

* ``alone``: the RGB student alone (cross-entropy);
* ``kd_random``: KD with random same-class teachers (KD's own weights 0.3 CE + 0.7 KD);
* ``kd_sfm``: the same KD loss and weights with SFM's matched teachers (matcher, initial
  matching and re-matching as in SemBridge), no ALIGN;
* ``sembridge``: full SemBridge (SFM + KD + ALIGN, METHOD's weights 0.3 / 0.4 / 0.3).

Every cell reports each arm's OA (mean over seeds) and its paired difference from the
student alone with the 95% interval of `sembridge_jax.comparisons` (same test images,
same seeds), plus whether the student alone had plateaued (seed-mean test OA moving
< 0.5 point over the last quarter of its evaluated epochs).

Sized for a 2-core CPU (see ``SIZING``): 32 px images, ShuffleNetV2 x0.5 student,
matcher and teacher, batch 32, the epochs per training-set size in ``EPOCHS`` (fewer
images, more epochs), 100 test-only RGB images per class on top of the stratified test
split, evaluation every ``EVAL_EVERY`` epochs. One MS teacher per generator variant is
shared by its four training-set sizes (the MS images do not depend on them). Runs go
seed by seed over the whole grid, so an interrupted map has complete seeds. Compiled
programs are kept in a persistent cache under ``--out``.

Writes ``--out/regimes.csv`` (one row per cell, arm and seed), ``regimes.md`` (one row
per cell and arm: OA, ΔOA vs alone with its interval and verdict, convergence) and
``regimes.png`` (heatmaps of ΔOA vs alone, one panel per arm, verdicts marked).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PER_CLASS = (10, 30, 100, 300)
EVIDENCE = ("nonvisible", "visible")
SCENE_VARIATION = (0.0, 0.5)
ARMS = ("alone", "kd_random", "kd_sfm", "sembridge")
SEEDS = (0, 1, 2)
EPOCHS = {10: 60, 30: 40, 100: 20, 300: 12}
EVAL_EVERY = {10: 5, 30: 4, 100: 2, 300: 1}
BATCH = 32
TEST_FRACTION = 0.2   # the builder's default stratified test fraction (DEFAULT_TEST_FRACTION)
EXTRA_TEST_PER_CLASS = 100
SIZING = ("32 px, ShuffleNetV2 x0.5 student/teacher/matcher, batch 32, epochs "
          + ", ".join(f"{n}/class: {e}" for n, e in EPOCHS.items())
          + f", {EXTRA_TEST_PER_CLASS} test-only RGB images per class")


def rgb_per_class(train_per_class: int, test_fraction: float) -> int:
  """The generator's count per class whose stratified split leaves ``train_per_class``
  training images (the split rounds ``test_fraction * count``)."""
  total = train_per_class + 1
  while total - max(1, round(test_fraction * total)) != train_per_class:
    total += 1
  return total


def cell_name(per_class: int, evidence: str, scene_variation: float) -> str:
  return f"{evidence}_scenes{scene_variation:g}_n{per_class}"


def cell_config(per_class: int, evidence: str, scene_variation: float, arm: str,
                epochs_scale: int = 1):
  from configs import synthetic as synthetic_config
  config = synthetic_config.get_config()
  config.progress = False
  config.reports = ()
  s = config.data.synthetic
  s.rgb_per_class = rgb_per_class(per_class, TEST_FRACTION)
  s.extra_rgb_test_per_class = EXTRA_TEST_PER_CLASS
  s.pair_evidence = evidence
  s.scene_variation = float(scene_variation)
  config.model.teacher = "shufflenet_v2_x0_5"
  config.matcher.epochs = 6
  epochs = EPOCHS[per_class] * epochs_scale
  for section in (config.student, config.distill):
    section.epochs = epochs
    section.batch_size = BATCH
  config.matcher.batch_size = BATCH
  config.eval_every_epochs = EVAL_EVERY[per_class] * epochs_scale
  # Save only the best evaluation and the last epoch: a 3-step epoch takes less time than
  # a checkpoint write. (Training is unaffected; a killed run replays from its last save.)
  config.checkpoint.every_epochs = epochs
  config.matching.rematch_epochs = (epochs // 3, 2 * epochs // 3)
  config.distill.method = "kd"
  config.distill.sembridge = arm in ("kd_sfm", "sembridge")
  if arm == "kd_sfm":
    # SFM's teachers, KD's own loss and weights, no ALIGN.
    config.distill.use_attention = False
    config.distill.use_ot = False
    config.distill.ce_weight, config.distill.kd_weight = 0.3, 0.7
  return config


def _link(target: pathlib.Path, link: pathlib.Path) -> None:
  if not link.exists() and not link.is_symlink():
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


class Cell:
  """One grid cell's workdirs: the main one (dataset, matcher, teacher, the alone, KD
  random and SemBridge runs) and ``kd_sfm/`` (sharing its pairs and gallery)."""

  def __init__(self, out: pathlib.Path, per_class: int, evidence: str, scene_variation: float):
    from sembridge_jax.workdir import Workdir
    self.key = (per_class, evidence, scene_variation)
    self.name = cell_name(*self.key)
    self.main = Workdir(out / "cells" / self.name)
    self.kd_sfm = Workdir(out / "cells" / self.name / "kd_sfm")
    # The MS teacher of a generator variant is trained in its first cell and shared.
    self.teacher_home = Workdir(out / "cells" / cell_name(PER_CLASS[0], evidence, scene_variation))

  def run_dir(self, arm: str, seed: int) -> pathlib.Path:
    from sembridge_jax.runs import Run
    run = {"alone": Run("student_only"), "kd_random": Run("kd"), "kd_sfm": Run("kd", True),
           "sembridge": Run("kd", True)}[arm].with_seed(seed)
    return (self.kd_sfm if arm == "kd_sfm" else self.main).run(run)


def train_cell_seed(cell: Cell, seed: int, epochs_scale: int = 1,
                    arms: tuple[str, ...] = ARMS) -> None:
  """Everything of one cell at one seed (of ``arms``) that is not finished yet."""
  from sembridge_jax import workdir as workdir_lib
  from sembridge_jax.config_base import load_benchmark
  from sembridge_jax.runs import Run
  from sembridge_jax.stages import matcher, students, teacher

  config = cell_config(*cell.key, arm="alone", epochs_scale=epochs_scale)
  config.pipeline.seeds = (seed,)
  benchmark = load_benchmark(config, cell.main)
  if cell.teacher_home.root != cell.main.root:
    _link(cell.teacher_home.teacher, cell.main.teacher)
    _link(cell.teacher_home.gallery.parent, cell.main.gallery.parent)
  if not workdir_lib.test_metrics(cell.main.teacher).exists():
    teacher.train_teacher(config, cell.main, benchmark)
  teacher.teacher_gallery(config, cell.main, benchmark)
  if not cell.main.pairs.exists():
    matcher.train_matcher(config, cell.main, benchmark)
    matcher.match(config, cell.main, benchmark)
  for name in ("matching", "teacher", "gallery"):
    _link(cell.main.root / name, cell.kd_sfm.root / name)
  for arm in arms:
    if workdir_lib.test_metrics(cell.run_dir(arm, seed)).exists():
      continue
    arm_config = cell_config(*cell.key, arm=arm, epochs_scale=epochs_scale)
    arm_config.data.data_dir = config.data.data_dir
    workdir = cell.kd_sfm if arm == "kd_sfm" else cell.main
    start = time.perf_counter()
    if arm == "alone":
      arm_config.pipeline.seeds = (seed,)
      students.train_student(arm_config, workdir, benchmark)
    else:
      run = Run("kd", arm != "kd_random")
      students.distill_runs(arm_config, workdir, benchmark, [run], (seed,))
    print(f"[regimes] {cell.name} {arm} seed {seed}: {time.perf_counter() - start:.0f} s",
          flush=True)


# -- reading the finished runs ------------------------------------------------------------
def collect(out: pathlib.Path) -> tuple[list[dict], list[dict]]:
  """(per-run rows, per-cell-and-arm summary rows) of every finished run."""
  from sembridge_jax import comparisons, results as results_lib, workdir as workdir_lib
  from sembridge_jax.analysis import learning_curves
  runs, summary = [], []
  for key in itertools.product(PER_CLASS, EVIDENCE, SCENE_VARIATION):
    cell = Cell(out, *key)
    correct: dict[str, dict[int, np.ndarray]] = {}
    histories: dict[str, list] = {}
    for arm, seed in itertools.product(ARMS, SEEDS):
      rundir = cell.run_dir(arm, seed)
      if not workdir_lib.predictions(rundir).exists():
        continue
      correct.setdefault(arm, {})[seed] = results_lib.read_correctness(rundir)
      histories.setdefault(arm, []).append(learning_curves.read_history(rundir))
      runs.append({"cell": cell.name, "per_class": key[0], "pair_evidence": key[1],
                   "scene_variation": key[2], "arm": arm, "seed": seed,
                   "oa": 100.0 * correct[arm][seed].mean(), "test_images": correct[arm][seed].size})
    for arm in ARMS:
      if arm not in correct:
        continue
      row = {"cell": cell.name, "per_class": key[0], "pair_evidence": key[1],
             "scene_variation": key[2], "arm": arm, "seeds": len(correct[arm]),
             "oa": float(np.mean([100 * c.mean() for c in correct[arm].values()])),
             "plateau_movement": learning_curves.last_quarter_movement(
                 learning_curves.seed_mean(histories[arm]))}
      if arm != "alone" and "alone" in correct and len(correct["alone"]) > 0:
        c = comparisons.compare(arm, "alone", correct[arm], correct["alone"])
        row.update(diff=c.diff, ci_low=c.ci95[0], ci_high=c.ci95[1], verdict=c.verdict)
      if arm == "sembridge" and "kd_random" in correct:
        # The method's claim: SemBridge above KD (above the student alone).
        c = comparisons.compare(arm, "kd_random", correct[arm], correct["kd_random"])
        row.update(diff_vs_kd=c.diff, ci_vs_kd=list(c.ci95), verdict_vs_kd=c.verdict)
      summary.append(row)
  return runs, summary


def write_reports(out: pathlib.Path, runs: list[dict], summary: list[dict],
                  seconds: float | None, epochs_scale: int = 1) -> None:
  with (out / "regimes.csv").open("w", newline="") as f:
    if runs:
      writer = csv.DictWriter(f, fieldnames=list(runs[0]))
      writer.writeheader()
      writer.writerows(runs)
  scaled = "" if epochs_scale == 1 else f"; every epoch count x{epochs_scale}"
  lines = [f"# Regime map ({SIZING}{scaled})", "",
           "| RGB train / class | evidence | scene variation | arm | seeds | OA (%) | "
           "ΔOA vs alone | 95% CI | verdict | alone plateaued (Δ last quarter) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  plateau = {(r["cell"]): r["plateau_movement"] for r in summary if r["arm"] == "alone"}
  for r in summary:
    interval = (f"{r['diff']:+.2f} | [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {r['verdict']}"
                if "diff" in r else "— | — | —")
    movement = plateau.get(r["cell"])
    converged = "—" if movement is None else f"{'yes' if movement < 0.5 else 'no'} ({movement:.2f})"
    lines.append(f"| {r['per_class']} | {r['pair_evidence']} | {r['scene_variation']:g} | "
                 f"{r['arm']} | {r['seeds']} | {r['oa']:.2f} | {interval} | {converged} |")
  lines += ["", "SemBridge vs KD (random same-class pairs), paired, per cell:", "",
            "| RGB train / class | evidence | scene variation | ΔOA | 95% CI | verdict |",
            "|---|---|---|---|---|---|"]
  lines += [f"| {r['per_class']} | {r['pair_evidence']} | {r['scene_variation']:g} | "
            f"{r['diff_vs_kd']:+.2f} | [{r['ci_vs_kd'][0]:+.2f}, {r['ci_vs_kd'][1]:+.2f}] | "
            f"{r['verdict_vs_kd']} |" for r in summary if "diff_vs_kd" in r]
  lines += ["", "Mean ΔOA vs alone over the cells (each cell one unit; 95% t-interval over "
            "cells; a description of the map, not a test of any one cell):", "",
            "| arm | cells | all | nonvisible | visible |", "|---|---|---|---|---|"]
  for arm in ARMS[1:]:
    cells = [r for r in summary if r["arm"] == arm and "diff" in r]
    groups = [cells] + [[r for r in cells if r["pair_evidence"] == e] for e in EVIDENCE]
    lines.append(f"| {arm} | {len(cells)} | " + " | ".join(
        _mean_interval([r["diff"] for r in g]) for g in groups) + " |")
  if seconds is not None:
    lines += ["", f"Training time of this invocation: {seconds / 60:.1f} min."]
  (out / "regimes.md").write_text("\n".join(lines) + "\n")
  (out / "regimes_compact.md").write_text(compact_table(summary) + "\n")
  plot_heatmaps(summary).savefig(out / "regimes.png", dpi=120)


def compact_table(summary: list[dict]) -> str:
  """One row per cell (README's table): alone OA, KD and SemBridge vs alone, SemBridge vs
  KD, each ΔOA with its interval; ✓ where the interval excludes zero."""
  def cell(diff, low, high):
    return f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]" + (" ✓" if low > 0 or high < 0 else "")
  by_cell: dict[str, dict[str, dict]] = {}
  for r in summary:
    by_cell.setdefault(r["cell"], {})[r["arm"]] = r
  lines = ["| RGB train / class | evidence | scene variation | alone OA (%) | KD − alone | "
           "SemBridge − alone | SemBridge − KD |", "|---|---|---|---|---|---|---|"]
  for arms in by_cell.values():
    alone, kd, sb = arms.get("alone"), arms.get("kd_random", {}), arms.get("sembridge", {})
    if alone is None:
      continue
    lines.append(" | ".join([
        f"| {alone['per_class']}", alone["pair_evidence"], f"{alone['scene_variation']:g}",
        f"{alone['oa']:.2f}",
        cell(kd["diff"], kd["ci_low"], kd["ci_high"]) if "diff" in kd else "—",
        cell(sb["diff"], sb["ci_low"], sb["ci_high"]) if "diff" in sb else "—",
        cell(sb["diff_vs_kd"], *sb["ci_vs_kd"]) if "diff_vs_kd" in sb else "—"]) + " |")
  return "\n".join(lines)


def _mean_interval(values: list[float]) -> str:
  """``mean [low, high]`` with a 95% t-interval, or the mean alone for fewer than 2."""
  from scipy import stats
  if len(values) < 2:
    return f"{values[0]:+.2f}" if values else "—"
  mean, sem = float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))
  half = float(stats.t.ppf(0.975, len(values) - 1)) * sem
  return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def plot_heatmaps(summary: list[dict]):
  from matplotlib.figure import Figure
  arms = [a for a in ARMS if a != "alone"]
  columns = [(e, v) for e in EVIDENCE for v in SCENE_VARIATION]
  figure = Figure(figsize=(4.2 * len(arms), 3.8), constrained_layout=True)
  axes = figure.subplots(1, len(arms))
  by_key = {(r["arm"], r["per_class"], r["pair_evidence"], r["scene_variation"]): r
            for r in summary}
  limit = max([abs(r.get("diff", 0.0)) for r in summary] + [1.0])
  for ax, arm in zip(axes, arms):
    grid = np.full((len(PER_CLASS), len(columns)), np.nan)
    for i, n in enumerate(PER_CLASS):
      for j, (e, v) in enumerate(columns):
        r = by_key.get((arm, n, e, v))
        if r and "diff" in r:
          grid[i, j] = r["diff"]
          mark = {"better": "+", "worse": "−"}.get(r["verdict"], "")
          ax.text(j, i, f"{r['diff']:+.1f}{mark}", ha="center", va="center", fontsize=8)
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{e}\nscenes {v:g}" for e, v in columns], fontsize=7)
    ax.set_yticks(range(len(PER_CLASS)), [str(n) for n in PER_CLASS])
    ax.set_ylabel("labelled RGB images per class")
    ax.set_title(f"{arm} − alone (OA points)", fontsize=9)
  figure.colorbar(image, ax=axes, shrink=0.8, label="ΔOA vs student alone (+/−: 95% CI excludes 0)")
  return figure


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--report", action="store_true", help="only write the reports")
  parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
  parser.add_argument("--epochs-scale", type=int, default=1,
                      help="train every student this many times EPOCHS (and evaluate as "
                           "many times less often): the convergence re-run of the map")
  parser.add_argument("--evidence", default=",".join(EVIDENCE),
                      help="the evidence variants this invocation trains; two invocations "
                           "with disjoint variants share nothing but the compilation cache "
                           "and can run side by side, one per core (give each "
                           "OMP_NUM_THREADS=1: oneDNN's threads would oversubscribe)")
  parser.add_argument("--cells", default="",
                      help="only these cells, as PER_CLASS/EVIDENCE/SCENE_VARIATION items "
                           "(e.g. 30/nonvisible/0,10/visible/0.5); default: the whole grid")
  parser.add_argument("--arms", default=",".join(ARMS),
                      help="the arms this invocation trains (e.g. 'alone' first, to see "
                           "whether the students alone plateau before the rest runs)")
  args = parser.parse_args()
  for flag, chosen, known in (("--evidence", args.evidence, EVIDENCE), ("--arms", args.arms, ARMS)):
    unknown = set(chosen.split(",")) - set(known)
    if unknown:
      parser.error(f"{flag}: unknown value(s) {sorted(unknown)}; choose from {known}")
  arms = tuple(arm for arm in ARMS if arm in args.arms.split(","))
  grid = list(itertools.product(PER_CLASS, args.evidence.split(","), SCENE_VARIATION))
  if args.cells:
    try:
      chosen = {(int(n), e, float(v)) for n, e, v in
                (item.split("/") for item in args.cells.split(","))}
    except ValueError:
      parser.error("--cells: items are PER_CLASS/EVIDENCE/SCENE_VARIATION, e.g. 30/visible/0.5")
    unknown = chosen - set(itertools.product(PER_CLASS, EVIDENCE, SCENE_VARIATION))
    if unknown:
      parser.error(f"--cells: not in the grid: {sorted(unknown)}")
    grid = [key for key in grid if key in chosen]
  args.out.mkdir(parents=True, exist_ok=True)
  import jax
  jax.config.update("jax_compilation_cache_dir", str(args.out / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  start = time.perf_counter()
  if not args.report:
    for seed in map(int, args.seeds.split(",")):
      for key in grid:
        train_cell_seed(Cell(args.out, *key), seed, args.epochs_scale, arms)
      write_reports(args.out, *collect(args.out), None, args.epochs_scale)   # A complete map after each seed.
  runs, summary = collect(args.out)
  write_reports(args.out, runs, summary, None if args.report else time.perf_counter() - start,
                args.epochs_scale)
  print((args.out / "regimes.md").read_text())


if __name__ == "__main__":
  main()
