"""Conv -> BatchNorm -> activation, the unit all three architectures are built from.

BatchNorm follows PyTorch (``normalization.py``); the convolution has no bias
since BatchNorm's shift makes it redundant (as in torchvision). Padding is
``kernel_size // 2`` on every side, as in torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models.conv import Conv, ConvImpl
from sembridge_jax.models.normalization import BatchNorm
from sembridge_jax.models.pooling import MaxPool

Activation = Callable[[jax.Array], jax.Array]


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
    self.bn = BatchNorm(out_features, dtype=dtype, param_dtype=param_dtype)
    self.activation = activation

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return x if self.activation is None else self.activation(x)



def layer_options(*, conv_impl: ConvImpl, dtype: jnp.dtype | None, param_dtype: jnp.dtype,
                  rngs: nnx.Rngs, **extra) -> dict:
  """The keyword arguments every `ConvBN` of a network shares (plus ``extra``, e.g. its
  ``kernel_init``): one place instead of one dict per block class."""
  return dict(extra, conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def stem_with_max_pool(in_channels: int, out_channels: int, kernel_size: int, *,
                       kernel_init: nnx.Initializer, **common) -> tuple[ConvBN, MaxPool]:
  """The ResNet / ShuffleNet stem: a stride-2 ConvBN-ReLU, then a 3x3 stride-2 max pool."""
  stem = ConvBN(in_channels, out_channels, kernel_size, strides=2, activation=nnx.relu,
                kernel_init=kernel_init, **common)
  return stem, MaxPool(3, strides=2, padding=1, conv_impl=common["conv_impl"])
