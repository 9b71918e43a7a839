"""kd_target_spread against a brute-force loop over all teacher pairs."""

import numpy as np
import pytest

from sembridge_jax import matching


def brute_force(logits, labels, temperature):
  p = np.exp(logits / temperature)
  p /= p.sum(-1, keepdims=True)
  within, between = [], []
  for i in range(len(p)):
    for j in range(i + 1, len(p)):
      tv = 0.5 * np.abs(p[i] - p[j]).sum()
      (within if labels[i] == labels[j] else between).append(tv)
  mean = lambda values: np.mean(values) if values else np.nan
  return mean(within), mean(between)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_target_spread_equals_brute_force(temperature):
  rng = np.random.default_rng(0)
  logits = 3 * rng.standard_normal((47, 6))
  labels = rng.integers(0, 6, 47)
  labels[0] = 9  # a class with a single teacher: no pair, nan in per_class
  spread = matching.kd_target_spread(logits, labels, temperature=temperature)
  within, between = brute_force(logits, labels, temperature)
  np.testing.assert_allclose(spread.within_class, within, rtol=1e-10)
  np.testing.assert_allclose(spread.between_class, between, rtol=1e-10)
  assert np.isnan(spread.per_class[list(spread.labels).index(9)])
  for label, value in zip(spread.labels, spread.per_class):
    members = labels == label
    if members.sum() > 1:
      np.testing.assert_allclose(value, brute_force(logits[members], labels[members],
                                                    temperature)[0], rtol=1e-10)


def test_identical_targets_within_a_class_have_zero_spread():
  logits = np.repeat(np.eye(3) * 5, 4, axis=0)
  labels = np.repeat(np.arange(3), 4)
  spread = matching.kd_target_spread(logits, labels)
  assert spread.within_class == pytest.approx(0.0, abs=1e-12)
  assert spread.between_class > 0.5
  assert "0.000" in matching.format_kd_target_spread(spread)


def test_kd_target_spread_rejects_bad_inputs():
  with pytest.raises(ValueError, match="single teacher"):
    matching.kd_target_spread(np.zeros((3, 2)), np.arange(3))
  with pytest.raises(ValueError, match=r"\(N, C\)"):
    matching.kd_target_spread(np.zeros((3, 2)), np.zeros(4))
  with pytest.raises(ValueError, match="temperature"):
    matching.kd_target_spread(np.zeros((3, 2)), np.zeros(3), temperature=0.0)
