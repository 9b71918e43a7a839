"""Batch normalisation with PyTorch's ``nn.BatchNorm2d`` semantics, over the last axis.

Training mode (``use_running_average=False``), with batch statistics over all
axes but the last (n values per channel)::

    mu = mean(x),  s2 = mean((x - mu)^2)                     (biased)
    y = (x - mu) / sqrt(s2 + eps) * scale + bias
    running_mean <- (1 - m) running_mean + m mu
    running_var  <- (1 - m) running_var  + m s2 * n / (n - 1)  (unbiased, as PyTorch)

with PyTorch's ``m = 0.1`` and ``eps = 1e-5``. Evaluation mode normalises with
the running statistics. Statistics and the normalisation (one fused
``x * a + b``) are computed in float32 whatever the compute dtype; the result
is cast back to it.

Parameters and statistics use ``nnx.BatchNorm``'s names and kinds (``scale``,
``bias``: ``nnx.Param``; ``mean``, ``var``: ``nnx.BatchStat``), and
``model.train()`` / ``model.eval()`` toggle ``use_running_average``.

Why not ``nnx.BatchNorm``: in Flax 0.12 its running-statistics update
(``variable[...] = tracer``) queries ``tracer.sharding``, whose error path
walks the whole jaxpr traced so far; with ~50 BatchNorms that made tracing a
train step quadratic (seconds per trace). Replacing the value with
``set_value`` avoids it. (PyTorch's unbiased running variance comes for free.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

PYTORCH_MOMENTUM = 0.1
PYTORCH_EPSILON = 1e-5


class BatchNorm(nnx.Module):
  """``nn.BatchNorm2d(num_features)`` for channels-last inputs (see the module docstring)."""

  def __init__(
    self,
    num_features: int,
    *,
    momentum: float = PYTORCH_MOMENTUM,
    epsilon: float = PYTORCH_EPSILON,
    use_running_average: bool = False,
    dtype: jnp.dtype | None = None,
    param_dtype: jnp.dtype = jnp.float32,
  ):
    if not 0.0 <= momentum <= 1.0:
      raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
    # NumPy constants: no per-shape XLA compilation when built eagerly.
    ones, zeros = np.ones(num_features, np.float32), np.zeros(num_features, np.float32)
    self.scale = nnx.Param(jnp.asarray(ones, param_dtype))
    self.bias = nnx.Param(jnp.asarray(zeros, param_dtype))
    self.mean = nnx.BatchStat(jnp.asarray(zeros))
    self.var = nnx.BatchStat(jnp.asarray(ones))
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.use_running_average = use_running_average
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.num_features:
      raise ValueError(
        f"x must have {self.num_features} channels in its last axis, got shape {x.shape}."
      )
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      count = x.size // x.shape[-1]
      unbiased = var * (count / max(count - 1, 1))
      m = self.momentum
      self.mean.set_value((1 - m) * self.mean[...] + m * lax.stop_gradient(mean))
      self.var.set_value((1 - m) * self.var[...] + m * lax.stop_gradient(unbiased))
    multiplier = self.scale[...].astype(jnp.float32) * lax.rsqrt(var + self.epsilon)
    shift = self.bias[...].astype(jnp.float32) - mean * multiplier
    # In float32 even for bfloat16 compute: after a conv the mean can dwarf the
    # spread, and x * a + b then cancels catastrophically in 8-bit mantissas.
    y = x.astype(jnp.float32) * multiplier + shift
    return y.astype(self.dtype or x.dtype)
