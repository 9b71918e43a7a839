"""ShuffleNetV2 x0.5 (torchvision's ``shufflenet_v2_x0_5``) plus a 1024 -> 512 projection.

Stem: 3x3/2 ConvBN-ReLU to 24 channels, 3x3/2 max-pool. Three stages of
``[4, 8, 4]`` units with widths ``[48, 96, 192]``, then a 1x1 ConvBN-ReLU
``conv5`` to 1024 channels (its output are the ``tokens``), global average
pool, Linear(1024, 512) ``projection`` (with bias, no activation: its output
is ``pooled``) and Linear(512, K). A 64x64 input leaves a 2x2 map.

A unit with output width ``2b``:

* stride 1: split the channels in halves ``(x1, x2)``; out =
  ``concat(x1, branch2(x2))``;
* stride 2 (first unit of each stage): out = ``concat(branch1(x), branch2(x))``
  with ``branch1 = 3x3/2 depthwise ConvBN -> 1x1 ConvBN-ReLU (b)``;

``branch2 = 1x1 ConvBN-ReLU (b) -> 3x3 depthwise ConvBN (stride) -> 1x1
ConvBN-ReLU (b)``; then a channel shuffle with 2 groups interleaves the halves.

Initialisation: torchvision leaves ShuffleNetV2 at PyTorch's defaults
(``U(+-1/sqrt(fan_in))`` weights and biases, BN 1/0); so do we.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models import initializers
from sembridge_jax.models.blocks import ConvBN, layer_options, stem_with_max_pool
from sembridge_jax.models.conv import ConvImpl
from sembridge_jax.models.outputs import ModelOutput, global_average_pool, model_output
from sembridge_jax.models.registry import register_model

EMBED_DIM = 512  # Output width of the projection.
STAGE_REPEATS = (4, 8, 4)
STAGE_WIDTHS = (24, 48, 96, 192, 1024)  # stem, stages 2-4, conv5 (x0.5 multiplier).


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """NHWC channel shuffle: channel ``g * (C/groups) + i`` moves to ``i * groups + g``."""
  batch, height, width, channels = x.shape
  x = x.reshape(batch, height, width, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(batch, height, width, channels)


class ShuffleUnit(nnx.Module):
  """torchvision's ShuffleNetV2 ``InvertedResidual`` unit (see the module docstring)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    strides: int,
    conv_impl: ConvImpl,
    dtype: jnp.dtype | None,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    if out_features % 2:
      raise ValueError(f"out_features must be even, got {out_features}.")
    branch_features = out_features // 2
    if strides == 1 and in_features != out_features:
      raise ValueError(
        "a stride-1 ShuffleNet unit keeps its width: in_features "
        f"({in_features}) must equal out_features ({out_features})."
      )
    common = layer_options(
      kernel_init=initializers.torch_default_kernel, conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype,
      rngs=rngs)
    self.strides = strides
    if strides > 1:
      self.branch1 = nnx.Sequential(
        ConvBN(
          in_features, in_features, 3, strides=strides, groups=in_features,
          activation=None, **common,
        ),
        ConvBN(in_features, branch_features, 1, activation=nnx.relu, **common),
      )
    else:
      self.branch1 = nnx.data(None)
    branch2_in = in_features if strides > 1 else branch_features
    self.branch2 = nnx.Sequential(
      ConvBN(branch2_in, branch_features, 1, activation=nnx.relu, **common),
      ConvBN(
        branch_features, branch_features, 3, strides=strides, groups=branch_features,
        activation=None, **common,
      ),
      ConvBN(branch_features, branch_features, 1, activation=nnx.relu, **common),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.branch1 is None:
      kept, transformed = jnp.split(x, 2, axis=-1)
      out = jnp.concatenate([kept, self.branch2(transformed)], axis=-1)
    else:
      out = jnp.concatenate([self.branch1(x), self.branch2(x)], axis=-1)
    return channel_shuffle(out, 2)


class ShuffleNetV2(nnx.Module):
  """ShuffleNetV2 x0.5 + projection, returning ``(logits, {"tokens", "pooled"})``."""

  def __init__(
    self,
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    dtype: jnp.dtype | None = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    conv_impl: ConvImpl = "auto",
  ):
    common = layer_options(conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem, self.pool = stem_with_max_pool(in_channels, STAGE_WIDTHS[0], 3,
                                              kernel_init=initializers.torch_default_kernel, **common)
    units = []
    in_features = STAGE_WIDTHS[0]
    for repeats, width in zip(STAGE_REPEATS, STAGE_WIDTHS[1:-1]):
      for index in range(repeats):
        units.append(ShuffleUnit(in_features, width, strides=2 if index == 0 else 1, **common))
        in_features = width
    self.units = nnx.List(units)
    self.conv5 = ConvBN(
      in_features,
      STAGE_WIDTHS[-1],
      1,
      activation=nnx.relu,
      kernel_init=initializers.torch_default_kernel,
      **common,
    )
    dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.projection = nnx.Linear(
      STAGE_WIDTHS[-1],
      EMBED_DIM,
      kernel_init=initializers.torch_default_kernel,
      bias_init=initializers.torch_default_bias(STAGE_WIDTHS[-1]),
      **dense,
    )
    self.classifier = nnx.Linear(
      EMBED_DIM,
      num_classes,
      kernel_init=initializers.torch_default_kernel,
      bias_init=initializers.torch_default_bias(EMBED_DIM),
      **dense,
    )
    self.token_dim = STAGE_WIDTHS[-1]
    self.embed_dim = EMBED_DIM

  def __call__(self, images: jax.Array) -> ModelOutput:
    x = self.pool(self.stem(images))
    for unit in self.units:
      x = unit(x)
    x = self.conv5(x)
    pooled = self.projection(global_average_pool(x))
    return model_output(self.classifier(pooled), x, pooled)


@register_model("shufflenet_v2_x0_5")
def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
  """torchvision ShuffleNetV2 x0.5 with a Linear(1024, 512) projection before the classifier."""
  return ShuffleNetV2(**kwargs)
