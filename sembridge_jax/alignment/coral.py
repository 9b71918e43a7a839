"""CORAL: matching the second-order statistics of two feature batches.

For two batches ``X, Y`` of shape ``(n, d)`` (trailing dimensions are flattened)
SemBridge uses the un-normalised covariance of the centred batches

    Xc = X - mean_rows(X),   C_X = Xc^T Xc          (no 1/(n-1): METHOD section 3)

and the loss

    CORAL(X, Y) = mean_{k,l} (C_X - C_Y)_{kl}^2 / (4 d)
                = ||Xc^T Xc - Yc^T Yc||_F^2 / (4 d^3).

The ``d x d`` covariance is expensive when ``d`` is large: the attention branch
flattens ``N`` tokens of width 512, so ``d = 512 N`` reaches 8192 for a 4x4 grid
(a 256 MiB matrix per side). With ``A = Xc`` and ``B = Yc`` the cyclic property
of the trace gives the exact identity

    ||A^T A - B^T B||_F^2 = ||A A^T||_F^2 - 2 ||A B^T||_F^2 + ||B B^T||_F^2,

which only needs ``n x n`` Gram matrices, ``O(n^2 d)`` work instead of
``O(n d^2)``. :func:`coral` picks the cheaper form from the (static) shapes.
The Gram form subtracts large numbers; it loses relative precision only when the
two covariances nearly coincide, i.e. when the loss itself is near zero. All
products run in float32 at ``Precision.HIGHEST`` so that TF32/bf16 matmul
defaults on accelerators do not widen that cancellation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["coral", "centred_covariance"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _as_float32_batch(x: jax.Array, name: str) -> jax.Array:
  """(B, ...) -> (B, prod(...)) in at least float32 (float64 stays float64)."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(
        f"`{name}` must be a batch of features with shape (B, ...) and at least "
        f"2 dimensions; got shape {x.shape}.")
  return x.reshape(x.shape[0], -1).astype(jnp.promote_types(x.dtype, jnp.float32))


def centred_covariance(x: jax.Array) -> jax.Array:
  """``Xc^T Xc`` of the row-centred ``(n, d)`` matrix, without 1/(n-1)."""
  x = _as_float32_batch(x, "x")
  xc = x - x.mean(axis=0, keepdims=True)
  return jnp.matmul(xc.T, xc, precision=_HIGHEST)


def _squared_frobenius(m: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(m))


def coral(x: jax.Array, y: jax.Array) -> jax.Array:
  """CORAL loss ``mean((C_X - C_Y)**2) / (4 d)`` between two feature batches.

  Args:
    x: features of shape ``(B, ...)``; trailing dimensions are flattened to ``d``.
    y: features of the same shape as ``x``.

  Returns:
    A scalar, float32 (float64 for float64 inputs).
  """
  x = _as_float32_batch(x, "x")
  y = _as_float32_batch(y, "y")
  if x.shape != y.shape:
    raise ValueError(
        "`x` and `y` must have the same (B, d) shape after flattening the "
        f"trailing dimensions; got {x.shape} and {y.shape}.")
  n, d = x.shape
  xc = x - x.mean(axis=0, keepdims=True)
  yc = y - y.mean(axis=0, keepdims=True)
  if d <= n:
    difference = (jnp.matmul(xc.T, xc, precision=_HIGHEST)
                  - jnp.matmul(yc.T, yc, precision=_HIGHEST))
    squared_norm = _squared_frobenius(difference)
  else:
    squared_norm = (
        _squared_frobenius(jnp.matmul(xc, xc.T, precision=_HIGHEST))
        - 2.0 * _squared_frobenius(jnp.matmul(xc, yc.T, precision=_HIGHEST))
        + _squared_frobenius(jnp.matmul(yc, yc.T, precision=_HIGHEST)))
    # The exact value is >= 0; rounding in the subtraction may not be.
    squared_norm = jnp.maximum(squared_norm, 0.0)
  return squared_norm / (d * d) / (4.0 * d)
