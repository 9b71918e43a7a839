r"""How often the paired 95% intervals cover a known difference (research script).

  python bench/interval_coverage.py [--replications 2000] [--images 240,3240] [--seeds 3,5]

Simulated predictions of two runs with a known population difference in OA
(`sembridge_jax.analysis.simulated_predictions`), for a few seed and image variations;
for each, the share of replications whose interval covers the truth, for

* ``two-way ANOVA + t``: `sembridge_jax.comparisons.paired_difference`, what the
  project reports;
* ``bootstrap``: the paired bootstrap that resamples seeds and images (the same draw for
  both arms), percentile interval, with the residual counted once (the first version
  of the comparisons, kept here as the contrast).

Prints a Markdown table; docs/statistics.md holds one run of it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sembridge_jax import comparisons  # noqa: E402
from sembridge_jax.analysis import simulated_predictions as sim  # noqa: E402


def bootstrap_interval(d: np.ndarray, rng: np.random.Generator, resamples: int = 2000
                       ) -> tuple[float, float]:
  """Percentile interval of the two-way (seeds x images) resampled mean of ``d``, with
  the seed x image residual counted once."""
  num_seeds, num_images = d.shape
  observed = 100.0 * d.mean()
  if not d.any():
    return observed, observed
  w = rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=resamples)
  v = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=resamples)
  draws = 100.0 * np.einsum("rs,sn,rn->r", w, d, v) / (num_seeds * num_images)
  if num_seeds > 1:
    resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
    resid_var = 1e4 * (resid ** 2).sum() / ((num_seeds - 1) * (num_images - 1))
    spread = draws.var()
    if spread > 0:
      scale = np.sqrt(max(spread - resid_var / (num_seeds * num_images), 0.0) / spread)
      draws = observed + (draws - draws.mean()) * scale
  low, high = np.percentile(draws, [2.5, 97.5])
  return float(low), float(high)


def coverage(design: sim.Design, num_seeds: int, num_images: int, replications: int,
             seed: int = 0) -> dict[str, float]:
  rng = np.random.default_rng(seed)
  truth = design.true_difference()
  hits = {"anova_t": 0, "bootstrap": 0}
  widths = {"anova_t": [], "bootstrap": []}
  for _ in range(replications):
    a, b = sim.simulate(design, num_seeds, num_images, rng)
    interval = comparisons.paired_difference(a, b)
    low, high = bootstrap_interval(a - b, rng)
    for name, (lo, hi) in (("anova_t", (interval.low, interval.high)), ("bootstrap", (low, high))):
      hits[name] += lo <= truth <= hi
      widths[name].append((hi - lo) / 2)
  return {**{f"{k}_coverage": 100.0 * v / replications for k, v in hits.items()},
          **{f"{k}_half_width": float(np.median(v)) for k, v in widths.items()}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--replications", type=int, default=2000)
  parser.add_argument("--images", default="240,3240")
  parser.add_argument("--seeds", default="3,5")
  parser.add_argument("--seed-sds", default="0,0.03,0.06")
  args = parser.parse_args()
  print("| seeds | test images | seed sd (probit) | ANOVA + t: coverage % | half-width | "
        "bootstrap: coverage % | half-width |")
  print("|---|---|---|---|---|---|---|")
  for num_seeds in map(int, args.seeds.split(",")):
    for num_images in map(int, args.images.split(",")):
      for seed_sd in map(float, args.seed_sds.split(",")):
        result = coverage(sim.Design(seed_sd=seed_sd), num_seeds, num_images, args.replications)
        print(f"| {num_seeds} | {num_images} | {seed_sd:g} | {result['anova_t_coverage']:.1f} | "
              f"{result['anova_t_half_width']:.2f} | {result['bootstrap_coverage']:.1f} | "
              f"{result['bootstrap_half_width']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
