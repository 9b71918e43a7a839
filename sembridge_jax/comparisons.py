r"""Paired comparisons of two runs over the same test images and seeds.

For runs ``a`` and ``b`` trained with the same seeds ``s = 1..S`` and tested on the same
images ``i = 1..N``, let ``d[s, i] = correct_a[s, i] - correct_b[s, i]`` (in {-1, 0, 1}).
The difference in overall accuracy is ``ΔOA = 100 * mean(d)`` points. Both arms are
scored on the same images and the seed ``s`` of ``a`` is paired with the seed ``s`` of
``b`` (same initialisation and data order), so what the two arms share cancels.

Two sources of uncertainty remain: which test images were drawn and which seeds. In the
crossed random-effects model ``d[s, i] = mu + alpha_s + beta_i + e[s, i]`` the mean has
variance ``sigma2_seed / S + sigma2_image / N + sigma2_resid / (S N)``: exactly what a
paired bootstrap that resamples seeds and images (the same draw for both arms) tries to
estimate. The resampling itself gets it wrong in a small design, which is ours (3 seeds):

* resampling both margins counts the residual twice (Owen's "pigeonhole" bootstrap);
* resampling ``S`` seeds with replacement shrinks the seed term by ``(S - 1) / S``
  (a third for 3 seeds);
* its percentiles are normal quantiles, while with 3 seeds the seed term has 2 degrees
  of freedom.

Measured on simulated predictions with a known difference (`bench/interval_coverage.py`,
docs/statistics.md), the bootstrap interval covered it in 81-88% of replications with a
seed effect of 1-2 points. So `paired_difference` computes the same variance without the
resampling error, from the two-way table's mean squares (unbiased for each term)

    MS_seed = N * sum_s (dbar_s. - dbar)^2 / (S - 1)
    MS_image = S * sum_i (dbar_.i - dbar)^2 / (N - 1)
    MS_resid = sum_si (d_si - dbar_s. - dbar_.i + dbar)^2 / ((S - 1)(N - 1))
    Var(mean d) = (MS_seed + MS_image - MS_resid) / (S N)

and takes the interval ``ΔOA ± t_{0.975, df} * 100 * sqrt(Var)`` with Satterthwaite's
degrees of freedom. With one seed the seed term cannot be estimated: the interval then
covers the test images only (``df = N - 1``) and says so (``seed_variation=False``).
Two identical runs give ``d = 0``: a difference and an interval of exactly zero.

The verdict is "better" or "worse" when the 95% interval excludes zero, else "no
detectable difference".
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
LEVEL = 0.95


class Interval(NamedTuple):
  """A paired difference in OA points with its 95% interval."""
  diff: float                # 100 * mean(d)
  low: float
  high: float
  std_error: float           # 100 * sqrt(Var(mean d))
  dof: float                 # degrees of freedom of the t quantile
  seed_variation: bool       # whether seed-to-seed variation is in the interval

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2


class Comparison(NamedTuple):
  """Run ``a`` against run ``b``: ``diff = OA(a) - OA(b)`` in points, its 95% interval
  over test images and seeds, and the verdict for ``a``."""
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


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> Interval:
  """The OA difference of two (S seeds, N images) correctness arrays of the same seeds
  and images, with its 95% interval (see the module docstring)."""
  a, b = np.asarray(correct_a, np.float64), np.asarray(correct_b, np.float64)
  if a.shape != b.shape or a.ndim != 2 or 0 in a.shape:
    raise ValueError(f"correct_a and correct_b must be (seeds, images) arrays of one shape; "
                     f"got {a.shape} and {b.shape}")
  d = a - b
  num_seeds, num_images = d.shape
  diff = 100.0 * float(d.mean())
  if not d.any() or num_images < 2:
    # Identical runs (or a single image): nothing to estimate a spread from.
    return Interval(diff, diff, diff, 0.0, float("inf"), num_seeds > 1)
  if num_seeds == 1:
    variance = float(d[0].var(ddof=1)) / num_images
    dof = num_images - 1.0
  else:
    variance, dof = _two_way_variance(d)
  std_error = 100.0 * float(np.sqrt(variance))
  margin = float(stats.t.ppf(0.5 + LEVEL / 2, dof)) * std_error if std_error > 0 else 0.0
  return Interval(diff, diff - margin, diff + margin, std_error, float(dof), num_seeds > 1)


def _two_way_variance(d: np.ndarray) -> tuple[float, float]:
  """(Var(mean d), Satterthwaite degrees of freedom) from the crossed two-way table.

  A component whose mean square falls below the residual's is taken as zero (its
  estimate ``(MS - MS_resid) / n`` would be negative): with 3 seeds ``MS_seed`` has two
  degrees of freedom, and letting a low draw of it subtract from the image term made
  the interval too narrow exactly when the seeds happened to agree."""
  num_seeds, num_images = d.shape
  seed_means, image_means, mean = d.mean(1), d.mean(0), d.mean()
  df_seed, df_image = num_seeds - 1, num_images - 1
  df_resid = df_seed * df_image
  ms_seed = num_images * float(((seed_means - mean) ** 2).sum()) / df_seed
  ms_image = num_seeds * float(((image_means - mean) ** 2).sum()) / df_image
  resid = d - seed_means[:, None] - image_means[None, :] + mean
  ms_resid = float((resid ** 2).sum()) / df_resid
  # S N Var(mean d) = sum_k c_k MS_k: each kept component adds (MS_k - MS_resid).
  keep_seed, keep_image = ms_seed > ms_resid, ms_image > ms_resid
  terms = ((float(keep_seed), ms_seed, df_seed), (float(keep_image), ms_image, df_image),
           (1.0 - keep_seed - keep_image, ms_resid, df_resid))
  total = sum(c * ms for c, ms, _ in terms)
  dof = total ** 2 / sum((c * ms) ** 2 / df for c, ms, df in terms if c)
  return total / (num_seeds * num_images), float(dof)


def compare(a: str, b: str, correct_a: Mapping[int, np.ndarray],
            correct_b: Mapping[int, np.ndarray]) -> Comparison:
  """`paired_difference` over the seeds both runs have (``{seed: (N,) correctness}``,
  rows aligned on the same test images)."""
  seeds = tuple(sorted(set(correct_a) & set(correct_b)))
  if not seeds:
    raise ValueError(f"runs {a!r} and {b!r} share no seed")
  interval = paired_difference(np.stack([correct_a[s] for s in seeds]),
                               np.stack([correct_b[s] for s in seeds]))
  return Comparison(a, b, interval.diff, (interval.low, interval.high),
                    verdict(interval.low, interval.high), seeds,
                    int(np.asarray(correct_a[seeds[0]]).size))


def correctness(ids: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                reference_ids: np.ndarray | None = None) -> np.ndarray:
  """``argmax(logits) == label`` per image, in the order of ``reference_ids`` when given
  (so that runs are compared image by image whatever order they were saved in)."""
  correct = (np.asarray(logits).argmax(-1) == np.asarray(labels)).astype(np.float64)
  if reference_ids is None:
    return correct
  ids, reference_ids = np.asarray(ids), np.asarray(reference_ids)
  if ids.shape != reference_ids.shape or not np.array_equal(np.sort(ids), np.sort(reference_ids)):
    raise ValueError("the two runs were tested on different images; compare runs of one "
                     "test split")
  return correct[np.argsort(ids, kind="stable")][np.argsort(np.argsort(reference_ids))]


def comparisons_table(comparisons: Sequence[Comparison],
                      labels: Mapping[str, str] | None = None) -> str:
  """Markdown: one row per comparison, its difference, interval and verdict."""
  labels = labels or {}
  lines = ["", "| comparison (paired over test images and seeds) | ΔOA (points) | 95% CI | "
               "verdict |", "|---|---|---|---|"]
  for c in comparisons:
    lines.append(f"| {labels.get(c.a, c.a)} vs {labels.get(c.b, c.b)} | {c.diff:+.2f} | "
                 f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}] | {c.verdict} |")
  if comparisons:
    c = comparisons[0]
    lines.append(f"\n({len(c.seeds)} seed(s), {c.images} test images; "
                 + ("one seed: the intervals leave out seed-to-seed variation"
                    if len(c.seeds) == 1 else "the intervals include seed-to-seed variation")
                 + ")")
  return "\n".join(lines)
