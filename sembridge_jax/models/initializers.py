"""PyTorch/torchvision parameter initialisations, in ``jax.nn.initializers`` form.

The authors' models are torchvision definitions, so we start from the same
distributions (not the same numbers):

* ``kaiming_normal_fan_out``: torchvision ResNet/MobileNetV2 convolutions,
  ``N(0, 2 / fan_out)`` with ``fan_out = kh * kw * out_channels`` and *no*
  truncation (``torch.nn.init.kaiming_normal_(mode="fan_out")``).
* ``torch_default_kernel``: PyTorch's default for ``nn.Conv2d``/``nn.Linear``
  weights, ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-b, b)`` with
  ``b = sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in)``.
* ``torch_default_bias(fan_in)``: PyTorch's default bias, ``U(-1/sqrt(fan_in),
  1/sqrt(fan_in))``. The bias shape does not carry ``fan_in``, hence the factory.
* ``normal(0.01)``: torchvision MobileNetV2's classifier weights.

JAX kernels are laid out ``(kh, kw, in / groups, out)`` (conv) and
``(in, out)`` (dense), for which ``variance_scaling`` computes the same fans
as PyTorch does from ``(out, in / groups, kh, kw)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx



def compiled(initializer: nnx.Initializer) -> nnx.Initializer:
  """``initializer(key, shape, dtype)`` as one jitted program per (shape, dtype).

  Run eagerly, an initializer dispatches several small ops, each compiled
  separately for every new parameter shape; on CPU that made building a model
  take 10-15 s, almost all of it XLA compilation. One program per shape is
  ~5x cheaper, and the values are the same.
  """
  return jax.jit(initializer, static_argnums=(1, 2))


kaiming_normal_fan_out: nnx.Initializer = compiled(
  nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
)

torch_default_kernel: nnx.Initializer = compiled(
  nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
)


def torch_default_bias(fan_in: int) -> nnx.Initializer:
  """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's default bias init."""
  if fan_in < 1:
    raise ValueError(f"fan_in must be positive, got {fan_in}.")
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return compiled(init)


def normal(stddev: float) -> nnx.Initializer:
  """``N(0, stddev^2)``, untruncated."""
  return compiled(nnx.initializers.normal(stddev))
