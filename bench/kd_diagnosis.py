r"""Why does KD lower the synthetic default? Diagnosis, not tuning (issue #16, item 4).

  python bench/kd_diagnosis.py --workdir workdirs/synthetic    # a finished default pipeline

Four read-outs, decided before they were run (docs/kd_diagnosis.md holds one run):

1. **What the teacher hands over.** The KD targets ``softmax(t / 3)`` of the gallery,
   by class kind: the mass on the true class, on the confusable partner (the class an
   RGB camera cannot tell apart) and on the rest. An MS teacher that separates the pair
   perfectly tells the student "not the partner" where the student cannot see why.
2. **Where KD's errors are.** KD vs the student alone, paired, on the test images of
   pair classes and of the other classes separately.
3. **Loss weights.** KD with random same-class pairs, KD's term at its weight 0.7 but
   cross-entropy at 1.0 instead of 0.3 (so KD adds to CE rather than displacing it);
   ``DIR_diagnosis/kd_ce1``. Run through the SemBridge code path with SFM, CORAL and OT
   off, which is KD with random same-class pairs and the weights of ``distill.*``.
4. **Schedule length.** The student alone, KD and SemBridge with twice the epochs
   (`configs/synthetic_long.py`, 30); ``DIR_diagnosis/long``, with its own
   ``results.json`` (comparisons, plateau check).

Runs 3 and 4 share the workdir's teacher, gallery and dataset (symbolic links) and resume.
The KD temperature is not varied: it is fixed at 3.0 in `sembridge_jax.distill.methods`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sembridge_jax import comparisons, results as results_lib  # noqa: E402
from sembridge_jax.data import synthetic  # noqa: E402
from sembridge_jax.data.benchmark import synthetic_parameters  # noqa: E402
from sembridge_jax.runs import Run  # noqa: E402
from sembridge_jax.workdir import Workdir  # noqa: E402

KD_TEMPERATURE = 3.0
SEEDS = (0, 1, 2)


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.progress = False
  config.reports = ()
  config.pipeline.seeds = SEEDS
  return config


def confusable_partner(config) -> dict[int, int]:
  pairs = synthetic.make_prototypes(synthetic_parameters(config.data))[0].pairs
  return {**{a: b for a, b in pairs}, **{b: a for a, b in pairs}}


def teacher_targets(workdir: Workdir, partner: dict[int, int]) -> str:
  with np.load(workdir.gallery) as gallery:
    logits, labels = gallery["logits"], gallery["labels"]
  z = logits / KD_TEMPERATURE
  targets = np.exp(z - z.max(1, keepdims=True))
  targets /= targets.sum(1, keepdims=True)
  rows = ["| teacher images of | target on the true class | on the confusable partner | "
          "on each other class (mean) |", "|---|---|---|---|"]
  for kind, members in (("pair classes", [c for c in partner]),
                        ("other classes", sorted(set(range(logits.shape[1])) - set(partner)))):
    true, part, rest = [], [], []
    for c in members:
      t = targets[labels == c]
      true.append(t[:, c])
      others = [k for k in range(t.shape[1]) if k != c and k != partner.get(c)]
      rest.append(t[:, others].mean(1))
      if c in partner:
        part.append(t[:, partner[c]])
    rows.append(f"| {kind} | {np.concatenate(true).mean():.3f} | "
                f"{np.concatenate(part).mean() if part else float('nan'):.3f} | "
                f"{np.concatenate(rest).mean():.4f} |")
  return "\n".join(rows)


def folders(workdir: Workdir, run: Run) -> dict[int, pathlib.Path]:
  found = {s: workdir.run(run.with_seed(s)) for s in SEEDS}
  return {s: f for s, f in found.items() if (f / "predictions.npz").exists()}


def by_class_kind(workdir: Workdir, partner: dict[int, int]) -> str:
  alone, kd = folders(workdir, Run("student_only")), folders(workdir, Run("kd"))
  with np.load(alone[SEEDS[0]] / "predictions.npz") as p:
    ids, labels = p["ids"], p["labels"]
  in_pair = np.isin(labels, list(partner))
  correct = {name: {s: results_lib.read_correctness(f, ids) for s, f in runs.items()}
             for name, runs in (("kd", kd), ("alone", alone))}
  rows = ["| test images | ΔOA KD − alone | 95% CI | verdict |", "|---|---|---|---|"]
  for kind, mask in (("pair classes", in_pair), ("other classes", ~in_pair),
                     ("all", np.ones_like(in_pair))):
    c = comparisons.compare("kd", "alone", {s: v[mask] for s, v in correct["kd"].items()},
                            {s: v[mask] for s, v in correct["alone"].items()})
    rows.append(f"| {kind} ({mask.sum()}) | {c.diff:+.2f} | [{c.ci95[0]:+.2f}, "
                f"{c.ci95[1]:+.2f}] | {c.verdict} |")
  return "\n".join(rows)


def shared_workdir(base: Workdir, path: pathlib.Path) -> Workdir:
  """A workdir beside ``base`` that links its dataset, teacher, gallery and pairs."""
  workdir = Workdir(path)
  path.mkdir(parents=True, exist_ok=True)
  for name in ("tfds", "teacher", "gallery", "matching"):
    link = path / name
    if not link.exists():
      link.symlink_to(os.path.relpath(base.root / name, path), target_is_directory=True)
  return workdir


def train_variants(base: Workdir) -> dict[str, Workdir]:
  from sembridge_jax.config_base import load_benchmark
  from sembridge_jax.stages import students
  from sembridge_jax.stages.evaluate import evaluate
  out = pathlib.Path(str(base.root) + "_diagnosis")
  # 3. Loss weights: CE 1.0 + KD 0.7, random same-class pairs.
  ce1 = shared_workdir(base, out / "kd_ce1")
  config = load_config("synthetic")
  d = config.distill
  d.sembridge, d.use_sfm, d.use_attention, d.use_ot = True, False, False, False
  d.ce_weight, d.kd_weight = 1.0, 0.7
  benchmark = load_benchmark(config, ce1)
  students.distill_runs(config, ce1, benchmark, [Run("kd", True)], SEEDS)
  # 4. Schedule length: configs/synthetic_long.py (30 epochs) for all three students;
  # its evaluate writes results.json with the comparisons and the plateau check.
  long = shared_workdir(base, out / "long")
  config = load_config("synthetic_long")
  benchmark = load_benchmark(config, long)
  students.train_student(config, long, benchmark)
  students.distill_runs(config, long, benchmark, [Run("kd"), Run("kd", True)], SEEDS)
  config.reports = ("learning_curves",)
  evaluate(config, long)
  return {"kd_ce1": ce1, "long": long}


def compare_table(rows: list[tuple[str, Workdir, Run, Workdir, Run]]) -> str:
  lines = ["| comparison | ΔOA (points) | 95% CI | verdict |", "|---|---|---|---|"]
  for label, wa, ra, wb, rb in rows:
    c = results_lib.compare_runs(ra.name, folders(wa, ra), rb.name, folders(wb, rb))
    lines.append(f"| {label} | {c.diff:+.2f} | [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}] | "
                 f"{c.verdict} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, type=pathlib.Path)
  parser.add_argument("--no-train", action="store_true", help="read-outs 1 and 2 only")
  args = parser.parse_args()
  base = Workdir(args.workdir)
  config = load_config("synthetic")
  partner = confusable_partner(config)
  print("## 1. KD targets softmax(t/3) of the teacher gallery\n")
  print(teacher_targets(base, partner))
  print("\n## 2. KD vs the student alone, by class kind (paired)\n")
  print(by_class_kind(base, partner))
  if args.no_train:
    return
  variants = train_variants(base)
  alone, kd, sembridge = Run("student_only"), Run("kd"), Run("kd", True)
  print("\n## 3-4. Loss weights and schedule length (paired, same test images and seeds)\n")
  print(compare_table([
      ("KD (CE 0.3, KD 0.7) − alone", base, kd, base, alone),
      ("KD (CE 1.0, KD 0.7) − alone", variants["kd_ce1"], sembridge, base, alone),
      ("KD (CE 1.0, KD 0.7) − KD (CE 0.3, KD 0.7)", variants["kd_ce1"], sembridge, base, kd),
      ("alone, 30 epochs − alone, 15", variants["long"], alone, base, alone),
      ("KD, 30 epochs − KD, 15", variants["long"], kd, base, kd),
      ("SemBridge, 30 epochs − SemBridge, 15", variants["long"], sembridge, base, sembridge),
      ("KD, 30 epochs − alone, 30", variants["long"], kd, variants["long"], alone),
      ("SemBridge, 30 epochs − alone, 30", variants["long"], sembridge, variants["long"], alone),
  ]))


if __name__ == "__main__":
  main()
