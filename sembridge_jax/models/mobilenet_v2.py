"""MobileNetV2 (torchvision's ``mobilenet_v2``, width 1.0, last conv 512 wide).

Stem: 3x3/2 ConvBN-ReLU6 to 32 channels. Then inverted residual blocks with
the standard settings (expansion t, width c, repeats n, first stride s)::

    t  c    n  s
    1  16   1  1
    6  24   2  2
    6  32   3  2
    6  64   4  2
    6  96   3  1
    6  160  3  2
    6  320  1  1

A block expands to ``round(t * in)`` channels with a 1x1 ConvBN-ReLU6 (skipped
for t = 1), filters them with a 3x3 depthwise ConvBN-ReLU6 (stride s), and
projects linearly with a 1x1 ConvBN; with stride 1 and equal widths the input
is added back. Then a 1x1 ConvBN-ReLU6 to 512 channels (torchvision: 1280;
its output are the ``tokens``), global average pool (``pooled``),
Dropout(0.2) and Linear(512, K). A 64x64 input leaves a 2x2 map.

Initialisation as torchvision: convs ``N(0, 2 / fan_out)``, BN 1/0,
classifier ``N(0, 0.01^2)`` with zero bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models import initializers
from sembridge_jax.models.blocks import ConvBN, layer_options
from sembridge_jax.models.conv import ConvImpl
from sembridge_jax.models.outputs import ModelOutput, global_average_pool, model_output
from sembridge_jax.models.registry import register_model

EMBED_DIM = 512  # Width of the last 1x1 conv, hence of tokens and pooled.
STEM_WIDTH = 32
DROPOUT_RATE = 0.2
# (expansion t, output width c, repeats n, stride of the first repeat s).
INVERTED_RESIDUAL_SETTINGS = (
  (1, 16, 1, 1),
  (6, 24, 2, 2),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)


class InvertedResidual(nnx.Module):
  """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection (+ x)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    strides: int,
    expansion: int,
    conv_impl: ConvImpl,
    dtype: jnp.dtype | None,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    common = layer_options(
      kernel_init=initializers.kaiming_normal_fan_out, conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype,
      rngs=rngs)
    hidden = int(round(in_features * expansion))
    self.expand = (
      ConvBN(in_features, hidden, 1, activation=nnx.relu6, **common)
      if expansion != 1
      else nnx.data(None)
    )
    self.depthwise = ConvBN(
      hidden, hidden, 3, strides=strides, groups=hidden, activation=nnx.relu6, **common
    )
    self.project = ConvBN(hidden, out_features, 1, activation=None, **common)
    self.use_residual = strides == 1 and in_features == out_features

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x if self.expand is None else self.expand(x)
    y = self.project(self.depthwise(y))
    return x + y if self.use_residual else y


class MobileNetV2(nnx.Module):
  """MobileNetV2 returning ``(logits, {"tokens", "pooled"})``."""

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
    common = layer_options(
      kernel_init=initializers.kaiming_normal_fan_out, conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype,
      rngs=rngs)
    self.stem = ConvBN(in_channels, STEM_WIDTH, 3, strides=2, activation=nnx.relu6, **common)
    blocks = []
    in_features = STEM_WIDTH
    for expansion, width, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
      for index in range(repeats):
        blocks.append(
          InvertedResidual(
            in_features,
            width,
            strides=first_stride if index == 0 else 1,
            expansion=expansion,
            conv_impl=conv_impl,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
          )
        )
        in_features = width
    self.blocks = nnx.List(blocks)
    self.last_conv = ConvBN(in_features, EMBED_DIM, 1, activation=nnx.relu6, **common)
    self.dropout = nnx.Dropout(DROPOUT_RATE, rngs=rngs)
    self.classifier = nnx.Linear(
      EMBED_DIM,
      num_classes,
      kernel_init=initializers.normal(0.01),
      bias_init=nnx.initializers.zeros_init(),
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    self.token_dim = EMBED_DIM
    self.embed_dim = EMBED_DIM

  def __call__(self, images: jax.Array) -> ModelOutput:
    x = self.stem(images)
    for block in self.blocks:
      x = block(x)
    x = self.last_conv(x)
    pooled = global_average_pool(x)
    return model_output(self.classifier(self.dropout(pooled)), x, pooled)


@register_model("mobilenet_v2")
def mobilenet_v2(**kwargs) -> MobileNetV2:
  """torchvision MobileNetV2, width 1.0, with a 512-channel last conv."""
  return MobileNetV2(**kwargs)
