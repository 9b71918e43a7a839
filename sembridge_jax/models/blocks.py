"""Conv -> BatchNorm -> activation, the unit all three architectures are built from.

BatchNorm follows PyTorch's defaults (``momentum=0.1`` on the new statistics,
i.e. Flax ``momentum=0.9``; ``eps=1e-5``); the convolution has no bias since
BatchNorm's shift makes it redundant (as in torchvision). Padding is
``kernel_size // 2`` on every side, as in torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models.conv import Conv, ConvImpl

Activation = Callable[[jax.Array], jax.Array]

BATCH_NORM_MOMENTUM = 0.9  # Flax convention: running = 0.9 * running + 0.1 * batch.
BATCH_NORM_EPSILON = 1e-5


def batch_norm(
  num_features: int, *, dtype: jnp.dtype | None, param_dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.BatchNorm:
  """A BatchNorm with PyTorch's momentum and epsilon (scale 1, shift 0)."""
  return nnx.BatchNorm(
    num_features,
    momentum=BATCH_NORM_MOMENTUM,
    epsilon=BATCH_NORM_EPSILON,
    dtype=dtype,
    param_dtype=param_dtype,
    rngs=rngs,
  )


class ConvBN(nnx.Module):
  """``activation(BN(conv(x)))``; ``activation=None`` leaves the BN output linear."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    groups: int = 1,
    activation: Activation | None,
    kernel_init: nnx.Initializer,
    conv_impl: ConvImpl,
    dtype: jnp.dtype | None,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    self.conv = Conv(
      in_features,
      out_features,
      kernel_size,
      strides=strides,
      padding=kernel_size // 2,
      groups=groups,
      use_bias=False,
      kernel_init=kernel_init,
      conv_impl=conv_impl,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    self.bn = batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.activation = activation

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return x if self.activation is None else self.activation(x)


def max_pool_3x3_stride_2(x: jax.Array) -> jax.Array:
  """``nn.MaxPool2d(3, stride=2, padding=1)``: padding never wins the max."""
  return nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
