"""ResNet-34 (torchvision's ``resnet34``, any number of input channels).

Stem: 7x7/2 conv (64) -> BN -> ReLU -> 3x3/2 max-pool. Then four stages of
BasicBlocks, ``[3, 4, 6, 3]`` blocks of width ``[64, 128, 256, 512]``; the first
block of stages 2-4 has stride 2 (on its first 3x3 conv) and a 1x1/2 conv + BN
shortcut. BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.
Head: global average pool (the 512-d ``pooled`` embedding) -> Linear(512, K).
A (B, 64, 64, C) input leaves a 2x2x512 map, i.e. 4 tokens of width 512.

Initialisation as torchvision: convs ``N(0, 2 / fan_out)``, BN scale 1 and
shift 0, the classifier PyTorch's default Linear init.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models import initializers
from sembridge_jax.models.blocks import ConvBN, layer_options, stem_with_max_pool
from sembridge_jax.models.conv import ConvImpl
from sembridge_jax.models.outputs import ModelOutput, global_average_pool, model_output
from sembridge_jax.models.registry import register_model

EMBED_DIM = 512
STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nnx.Module):
  """Two 3x3 ConvBNs with an identity (or 1x1/stride ConvBN) shortcut."""

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
    common = layer_options(
      kernel_init=initializers.kaiming_normal_fan_out, conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype,
      rngs=rngs)
    self.conv1 = ConvBN(
      in_features, out_features, 3, strides=strides, activation=nnx.relu, **common
    )
    self.conv2 = ConvBN(out_features, out_features, 3, activation=None, **common)
    self.downsample = (
      ConvBN(in_features, out_features, 1, strides=strides, activation=None, **common)
      if strides != 1 or in_features != out_features
      else nnx.data(None)
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    return nnx.relu(self.conv2(self.conv1(x)) + shortcut)


class ResNet(nnx.Module):
  """A BasicBlock ResNet returning ``(logits, {"tokens", "pooled"})``."""

  def __init__(
    self,
    stage_sizes: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    dtype: jnp.dtype | None = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    conv_impl: ConvImpl = "auto",
  ):
    if len(stage_sizes) != len(STAGE_WIDTHS):
      raise ValueError(
        f"stage_sizes must have {len(STAGE_WIDTHS)} entries, got {tuple(stage_sizes)}."
      )
    common = layer_options(conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem, self.pool = stem_with_max_pool(in_channels, STAGE_WIDTHS[0], 7,
                                              kernel_init=initializers.kaiming_normal_fan_out, **common)
    blocks = []
    in_features = STAGE_WIDTHS[0]
    for stage, (size, width) in enumerate(zip(stage_sizes, STAGE_WIDTHS)):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        blocks.append(BasicBlock(in_features, width, strides=strides, **common))
        in_features = width
    self.blocks = nnx.List(blocks)
    self.fc = nnx.Linear(
      EMBED_DIM,
      num_classes,
      kernel_init=initializers.torch_default_kernel,
      bias_init=initializers.torch_default_bias(EMBED_DIM),
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    self.token_dim = STAGE_WIDTHS[-1]
    self.embed_dim = EMBED_DIM

  def __call__(self, images: jax.Array) -> ModelOutput:
    x = self.pool(self.stem(images))
    for block in self.blocks:
      x = block(x)
    pooled = global_average_pool(x)
    return model_output(self.fc(pooled), x, pooled)


@register_model("resnet34")
def resnet34(**kwargs) -> ResNet:
  """torchvision ResNet-34: BasicBlocks ``[3, 4, 6, 3]``."""
  return ResNet((3, 4, 6, 3), **kwargs)
