"""CORAL against a direct NumPy evaluation, in both the covariance and Gram forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sembridge_jax.alignment import centred_covariance, coral


def _numpy_coral(x: np.ndarray, y: np.ndarray) -> float:
  x = x.reshape(len(x), -1).astype(np.float64)
  y = y.reshape(len(y), -1).astype(np.float64)
  d = x.shape[1]
  xc, yc = x - x.mean(0), y - y.mean(0)
  return float(np.mean((xc.T @ xc - yc.T @ yc) ** 2) / (4 * d))


def _numpy_coral_gradient(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """d/dX of ||Xc^T Xc - Yc^T Yc||^2 / (4 d^3) = Xc (C_X - C_Y) / d^3."""
  x, y = x.astype(np.float64), y.astype(np.float64)
  d = x.shape[1]
  xc, yc = x - x.mean(0), y - y.mean(0)
  return xc @ (xc.T @ xc - yc.T @ yc) / d**3


@pytest.mark.parametrize("batch, width", [(16, 5), (6, 40)], ids=["covariance", "gram"])
def test_coral_value_and_gradient_match_numpy(batch, width):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, width)).astype(np.float32)
  y = (0.5 * rng.normal(size=(batch, width)) + 1.0).astype(np.float32)
  value, gradient = jax.jit(jax.value_and_grad(coral))(x, y)
  np.testing.assert_allclose(value, _numpy_coral(x, y), rtol=1e-5)
  np.testing.assert_allclose(gradient, _numpy_coral_gradient(x, y), rtol=1e-4, atol=1e-9)


def test_trailing_dimensions_are_flattened():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, 3, 4)).astype(np.float32)
  y = rng.normal(size=(5, 3, 4)).astype(np.float32)
  np.testing.assert_allclose(coral(x, y), _numpy_coral(x, y), rtol=1e-5)
  np.testing.assert_allclose(coral(x, y), coral(x.reshape(5, 12), y.reshape(5, 12)), rtol=1e-6)


def test_bfloat16_inputs_accumulate_in_float32():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(8, 6)), jnp.bfloat16)
  y = jnp.asarray(rng.normal(size=(8, 6)), jnp.bfloat16)
  value = coral(x, y)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, _numpy_coral(np.asarray(x, np.float32),
                                                 np.asarray(y, np.float32)), rtol=1e-5)


def test_identical_batches_and_shifts_cost_nothing():
  x = np.random.default_rng(3).normal(size=(7, 9)).astype(np.float32)
  assert float(coral(x, x)) == 0.0
  np.testing.assert_allclose(coral(x, x + 3.0), 0.0, atol=1e-6)  # centring removes shifts


def test_centred_covariance_has_no_sample_normalisation():
  x = np.random.default_rng(4).normal(size=(10, 3))
  xc = x - x.mean(0)
  np.testing.assert_allclose(centred_covariance(x), xc.T @ xc, rtol=1e-5)


def test_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same"):
    coral(np.zeros((4, 3)), np.zeros((4, 5)))
  with pytest.raises(ValueError, match="at least"):
    coral(np.zeros(4), np.zeros(4))
