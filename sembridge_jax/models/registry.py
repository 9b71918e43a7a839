"""The model zoo by name: ``register_model`` fills it, ``create_model`` builds from it.

Every factory takes the same keyword arguments (``num_classes``, ``in_channels``,
``rngs``, ``dtype``, ``param_dtype``, ``conv_impl``) and returns an ``nnx.Module``
whose call maps (B, H, W, in_channels) images to ``(logits, features)`` (see
``outputs.py``) and that has the integer attributes ``token_dim`` (width D of
``features["tokens"]``) and ``embed_dim`` (width of ``features["pooled"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.models.conv import CONV_IMPLS, ConvImpl

ModelFactory = Callable[..., nnx.Module]
_Factory = TypeVar("_Factory", bound=ModelFactory)

MODEL_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[_Factory], _Factory]:
  """Decorator adding a factory to ``MODEL_REGISTRY`` under ``name``."""

  def register(factory: _Factory) -> _Factory:
    if name in MODEL_REGISTRY:
      raise ValueError(f"model name {name!r} is already registered.")
    MODEL_REGISTRY[name] = factory
    return factory

  return register


def create_model(
  name: str,
  *,
  num_classes: int,
  in_channels: int,
  rngs: nnx.Rngs,
  dtype: jnp.dtype = jnp.float32,
  param_dtype: jnp.dtype = jnp.float32,
  conv_impl: ConvImpl = "auto",
) -> nnx.Module:
  """Builds model ``name`` (in train mode, as freshly built NNX modules are).

  Args:
    name: a key of ``MODEL_REGISTRY`` ("resnet34", "mobilenet_v2",
      "shufflenet_v2_x0_5").
    num_classes: K, the width of the logits.
    in_channels: C, the channels of the input images (3 for RGB, 10-14 for MS).
    rngs: parameter initialisation (``params`` or ``default`` stream) and, for
      MobileNetV2's dropout, the ``dropout`` stream (``default`` if absent).
    dtype: compute dtype (e.g. ``jnp.bfloat16``); outputs are float32 anyway.
    param_dtype: parameter dtype.
    conv_impl: "auto" (on one CPU device oneDNN's convolutions where available, else
      im2col GEMMs for small/depthwise convs and GEMM kernel gradients for large dense
      ones; XLA convolutions on GPU/TPU), "xla", "im2col", "xla_gemm_grad" or "onednn";
      see ``conv.py``.

  Raises:
    ValueError: unknown ``name`` or ``conv_impl``, or non-positive sizes.
  """
  if name not in MODEL_REGISTRY:
    raise ValueError(f"name must be one of {sorted(MODEL_REGISTRY)}, got {name!r}.")
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.")
  for argument, value in (("num_classes", num_classes), ("in_channels", in_channels)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{argument} must be a positive int, got {value!r}.")
  return MODEL_REGISTRY[name](
    num_classes=num_classes,
    in_channels=in_channels,
    rngs=rngs,
    dtype=dtype,
    param_dtype=param_dtype,
    conv_impl=conv_impl,
  )


def count_params(module: nnx.Module) -> int:
  """Number of trainable scalars: every ``nnx.Param`` (BatchNorm running stats excluded)."""
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))
