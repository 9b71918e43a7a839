r"""Paired OA differences between a workdir's runs, with a 95% interval (research script).

  python bench/paired_comparison.py --workdir workdirs/synthetic

Reads every run's ``predictions.npz`` (ids, labels, logits of the test split) and compares,
for ``--method`` (default kd): the method alone vs the student alone, the method under
SemBridge vs the student alone, and the two methods against each other, over the seeds
both runs have. A first step of issue #16; not yet wired into ``evaluate``. Caveat: in
400 simulated replications the interval covered the true difference 96.5% of the time
without seed-level variation, but 81-88% with 3 seeds and a seed effect of 1-2 points.

Paired comparisons of two runs on the same test images and seeds, with a 95% interval.

For runs ``a`` and ``b`` trained with the same seeds ``s = 1..S`` and tested on the same
images ``i = 1..N``, let ``d[s, i] = correct_a[s, i] - correct_b[s, i]`` (in {-1, 0, 1}).
The difference in overall accuracy is ``100 * mean(d)`` points. Its uncertainty has two
sources: which test images were drawn, and which seeds. The paired bootstrap resamples
both, the same draw for both arms: a resample takes ``S`` seeds and ``N`` images with
replacement, with multiplicities ``w_s`` and ``v_i``, and its difference is

    100 * sum_s sum_i w_s d[s, i] v_i / (S N),

computed for all resamples at once as one contraction. Resampling both margins counts
the seed x image residual twice (`_without_double_counting` removes it once), and the
95% interval is the 2.5th and 97.5th percentile of the resampled differences; the
verdict is "better" or "worse" when the interval excludes zero, else "no detectable difference". Two identical runs give
``d = 0``: a difference and an interval of exactly zero.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"


class Comparison(NamedTuple):
  """``a`` against ``b``: the mean OA difference ``a - b`` in points and its interval."""
  a: str
  b: str
  diff: float
  ci95: tuple[float, float]
  verdict: str
  seeds: tuple[int, ...]
  images: int

  def as_dict(self) -> dict:
    return {"a": self.a, "b": self.b, "diff": self.diff, "ci95": list(self.ci95),
            "verdict": self.verdict, "seeds": list(self.seeds), "images": self.images}


def verdict(low: float, high: float) -> str:
  return BETTER if low > 0 else WORSE if high < 0 else NO_DIFFERENCE


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 10_000,
                     seed: int = 0, chunk: int = 1_000) -> tuple[float, tuple[float, float]]:
  """(difference in OA points, 95% interval) of two (S seeds, N images) correctness
  arrays of the same seeds and images (see the module docstring)."""
  a, b = np.asarray(correct_a, np.float64), np.asarray(correct_b, np.float64)
  if a.shape != b.shape or a.ndim != 2 or 0 in a.shape:
    raise ValueError(f"correct_a and correct_b must be (seeds, images) arrays of one shape; "
                     f"got {a.shape} and {b.shape}")
  d = a - b
  num_seeds, num_images = d.shape
  observed = 100.0 * float(d.mean())
  if not d.any():
    return observed, (0.0, 0.0)
  rng = np.random.default_rng(seed)
  draws = []
  for start in range(0, resamples, chunk):
    size = min(chunk, resamples - start)
    w = rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=size)
    v = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=size)
    draws.append(np.einsum("rs,sn,rn->r", w, d, v) / (num_seeds * num_images))
  draws = 100.0 * np.concatenate(draws)
  if num_seeds > 1 and num_images > 1:
    draws = _without_double_counting(draws, d, observed)
  low, high = np.percentile(draws, [2.5, 97.5])
  return observed, (float(low), float(high))


def _without_double_counting(draws: np.ndarray, d: np.ndarray, observed: float) -> np.ndarray:
  """Shrinks the resampled differences around the observed one by the variance the
  two-way resampling counts twice.

  Resampling seeds and images independently (Owen's "pigeonhole" bootstrap of a crossed
  design) has variance ``s2_seed / S + s2_image / N + 2 s2_resid / (S N)``: the seed x
  image residual enters through both margins, while the mean's variance holds it once.
  ``s2_resid`` is estimated by the residual mean square of the two-way table."""
  num_seeds, num_images = d.shape
  resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
  resid_var = 1e4 * float((resid ** 2).sum()) / ((num_seeds - 1) * (num_images - 1))
  spread = float(draws.var())
  if spread <= 0:
    return draws
  scale = np.sqrt(max(spread - resid_var / (num_seeds * num_images), 0.0) / spread)
  return observed + (draws - draws.mean()) * scale


def compare(a: str, b: str, correct_a: dict[int, np.ndarray], correct_b: dict[int, np.ndarray],
            **kwargs) -> Comparison:
  """`paired_bootstrap` over the seeds both runs have (``{seed: (N,) correctness}``, rows
  aligned on the same test images)."""
  seeds = tuple(sorted(set(correct_a) & set(correct_b)))
  if not seeds:
    raise ValueError(f"runs {a!r} and {b!r} share no seed")
  diff, (low, high) = paired_bootstrap(np.stack([correct_a[s] for s in seeds]),
                                       np.stack([correct_b[s] for s in seeds]), **kwargs)
  return Comparison(a, b, diff, (low, high), verdict(low, high), seeds,
                    int(np.asarray(correct_a[seeds[0]]).size))


def comparisons_table(comparisons: list[Comparison], labels: dict[str, str] | None = None) -> str:
  """Markdown: one row per comparison, its difference, interval and verdict."""
  labels = labels or {}
  lines = ["", "| comparison (paired over test images and seeds) | ΔOA (points) | 95% CI | verdict |",
           "|---|---|---|---|"]
  for c in comparisons:
    lines.append(f"| {labels.get(c.a, c.a)} vs {labels.get(c.b, c.b)} | {c.diff:+.2f} | "
                 f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}] | {c.verdict} |")
  return "\n".join(lines)


def _correctness(workdir, run) -> dict[int, np.ndarray]:
  from sembridge_jax import workdir as workdir_lib
  out = {}
  for seed_run in workdir.finished_runs():
    if seed_run.name == run.name and workdir_lib.predictions(workdir.run(seed_run)).exists():
      with np.load(workdir_lib.predictions(workdir.run(seed_run))) as p:
        out[seed_run.seed] = (p["logits"].argmax(-1) == p["labels"]).astype(np.float64)
  return out


def main() -> None:
  import argparse
  from sembridge_jax.runs import Run, comparison_runs
  from sembridge_jax.workdir import Workdir
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--method", default="kd")
  parser.add_argument("--resamples", type=int, default=10_000)
  args = parser.parse_args()
  workdir = Workdir(args.workdir)
  alone, method, sembridge = comparison_runs(args.method)
  pairs = ((method, alone), (sembridge, alone), (sembridge, method))
  found = {run: _correctness(workdir, run) for run in (alone, method, sembridge)}
  results = [compare(a.name, b.name, found[a], found[b], resamples=args.resamples)
             for a, b in pairs if found[a] and found[b]]
  print(comparisons_table(results, {r.name: r.label for r in (alone, method, sembridge)}))


if __name__ == "__main__":
  main()
