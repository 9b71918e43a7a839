r"""Simulated test predictions of two runs with a known difference in accuracy.

What the comparisons' intervals are checked against (`tests/test_comparisons.py`,
`bench/interval_coverage.py`). Image ``i`` has a difficulty ``u_i ~ N(0, 1)``, and each
arm sees it with its own twist ``v_{arm,i} ~ N(0, image_interaction^2)`` (an image can be
easy for one method and hard for the other). Seed ``s`` of an arm has an ability
``mu_arm + tau_{arm,s}``, ``tau ~ N(0, seed_sd^2)``, correlated ``seed_correlation``
between the two arms' same seed (same initialisation and data order). The model is right
on the image with probability ``Phi(ability - u_i - v_{arm,i})``:

    P(correct) over random seeds and images = Phi(mu / sqrt(1 + 1 + image_interaction^2
                                                              + seed_sd^2))

so the population difference in OA between the arms is known exactly (`true_difference`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats


class Design(NamedTuple):
  """Two arms' abilities and the variation of seeds and images (probit scale)."""
  ability_a: float = 0.25
  ability_b: float = 0.15
  seed_sd: float = 0.05
  seed_correlation: float = 0.5
  image_interaction: float = 0.5

  def true_difference(self) -> float:
    """OA(a) - OA(b) in points over the populations of seeds and test images."""
    scale = np.sqrt(2.0 + self.image_interaction ** 2 + self.seed_sd ** 2)
    return 100.0 * float(stats.norm.cdf(self.ability_a / scale)
                         - stats.norm.cdf(self.ability_b / scale))


def simulate(design: Design, num_seeds: int, num_images: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
  """Correctness arrays ``(correct_a, correct_b)``, each (num_seeds, num_images)."""
  difficulty = rng.normal(size=num_images)
  cov = design.seed_sd ** 2 * np.array([[1.0, design.seed_correlation],
                                         [design.seed_correlation, 1.0]])
  seed_effects = rng.multivariate_normal(np.zeros(2), cov, size=num_seeds)   # (S, 2)
  arms = []
  for arm, ability in enumerate((design.ability_a, design.ability_b)):
    twist = design.image_interaction * rng.normal(size=num_images)
    logit = ability + seed_effects[:, arm:arm + 1] - difficulty[None] - twist[None]
    arms.append(rng.random((num_seeds, num_images)) < stats.norm.cdf(logit))
  return arms[0].astype(np.float64), arms[1].astype(np.float64)
