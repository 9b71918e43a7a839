"""2-D convolution with two interchangeable implementations.

Every model in this package convolves through :func:`conv2d` / :class:`Conv`.
For an NHWC input ``x``, an HWIO kernel ``k`` of shape ``(kh, kw, C/G, O)``,
strides ``(sh, sw)``, explicit zero padding and ``G`` feature groups, both
implementations compute the same cross-correlation (PyTorch/XLA convention)::

    y[b, h, w, o] = sum_{i < kh, j < kw, c < C/G}
                    x_pad[b, sh*h + i, sw*w + j, g(o) * C/G + c] * k[i, j, c, o]

with ``g(o) = o // (O / G)`` the group of output channel ``o``.

* ``"xla"``: one ``lax.conv_general_dilated``. The right choice on GPU/TPU.
* ``"im2col"``: the ``kh*kw`` shifted, strided views ("taps")
  ``x_pad[:, i::sh, j::sw, :]`` are cut out with static slices and then

  - dense (G = 1): concatenated along channels into a patch matrix of width
    ``kh*kw*C`` and multiplied by the kernel reshaped to ``(kh*kw*C, O)`` --
    one GEMM;
  - depthwise (C/G = 1): multiplied elementwise by the per-tap kernel rows and
    summed (a GEMM would be block-diagonal, i.e. mostly zeros);
  - other grouped convolutions: one batched GEMM over the groups (einsum).

Why two paths: XLA's CPU backend lowers convolutions on small feature maps to
a very slow loop (e.g. a 3x3, 512 -> 512 convolution on a 2x2 map at batch 64
takes ~0.8 s forward, ~50x its im2col GEMM), and its depthwise convolutions
and their weight gradients are slow at every size. Slices, concatenations and
dots differentiate into pads, slices and dots, all of which XLA:CPU handles
well. ``"auto"`` (the default) therefore picks ``"im2col"`` on CPU for
depthwise and 1x1 convolutions and for those whose output map is small, and
``"xla"`` everywhere else; the choice is made at trace time from
``jax.default_backend()`` and the static shapes, so it costs nothing at run
time. The parameters are the same for both paths (the kernel keeps the
``nnx.Conv`` layout ``(kh, kw, C/G, O)``), so checkpoints are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

ConvImpl: TypeAlias = Literal["auto", "xla", "im2col"]
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "im2col")

Padding: TypeAlias = int | Sequence[tuple[int, int]]

# On CPU, dense 3x3 (and larger) convolutions whose output map has at most this
# many pixels go through im2col. Measured at batch 64 on 2 cores (forward /
# weight gradient / input gradient): XLA is 1-3x faster than im2col on 8x8 and
# larger maps, the two are even on 4x4, and XLA collapses below (2x2 output,
# 512 -> 512: 4.1 s / 3.2 s / 7.7 s against 30 / 64 / 75 ms).
CPU_IM2COL_MAX_OUTPUT_PIXELS = 16


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
  return value  # type: ignore[return-value]


def normalize_padding(padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
  """``p`` -> ``((p, p), (p, p))`` (PyTorch's symmetric padding); pairs pass through."""
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  pads = tuple(tuple(p) for p in padding)
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(
      f"padding must be an int or ((top, bottom), (left, right)), got {padding!r}."
    )
  return pads  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  """Length of one spatial output axis: ``floor((size + pads - kernel) / stride) + 1``."""
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def _check_shapes(x: jax.Array, kernel: jax.Array, feature_group_count: int) -> None:
  if x.ndim != 4:
    raise ValueError(f"x must be NHWC (4 dims), got shape {x.shape}.")
  if kernel.ndim != 4:
    raise ValueError(f"kernel must be HWIO (4 dims), got shape {kernel.shape}.")
  channels, (_, _, group_in, out) = x.shape[-1], kernel.shape
  if channels != group_in * feature_group_count or out % feature_group_count:
    raise ValueError(
      f"kernel shape {kernel.shape} does not fit {channels} input channels in "
      f"{feature_group_count} groups: expected (kh, kw, {channels} // groups, "
      "a multiple of groups)."
    )


def conv2d_xla(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: tuple[int, int] = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
) -> jax.Array:
  """The convolution of the module docstring as one ``lax.conv_general_dilated``."""
  _check_shapes(x, kernel, feature_group_count)
  return lax.conv_general_dilated(
    x,
    kernel,
    window_strides=_pair(strides, "strides"),
    padding=normalize_padding(padding),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=feature_group_count,
  )


def _taps(
  x: jax.Array,
  kernel_size: tuple[int, int],
  strides: tuple[int, int],
  padding: tuple[tuple[int, int], tuple[int, int]],
) -> list[jax.Array]:
  """The ``kh*kw`` views ``x_pad[:, i + sh*h, j + sw*w, :]``, row-major in (i, j).

  Each view has shape (B, Ho, Wo, C); view ``i*kw + j`` is what kernel tap
  ``(i, j)`` multiplies.
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  batch, height, width, channels = x.shape
  out_h = output_size(height, kh, sh, padding[0])
  out_w = output_size(width, kw, sw, padding[1])
  if out_h < 1 or out_w < 1:
    raise ValueError(
      f"input map {height}x{width} is too small for a {kh}x{kw} kernel with "
      f"padding {padding}."
    )
  if any(p for pair in padding for p in pair):
    x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  return [
    lax.slice(
      x,
      (0, i, j, 0),
      (batch, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, channels),
      (1, sh, sw, 1),
    )
    for i in range(kh)
    for j in range(kw)
  ]


def conv2d_im2col(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: tuple[int, int] = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
) -> jax.Array:
  """The convolution of the module docstring from shifted views and GEMMs.

  Same arguments, result and dtype as :func:`conv2d_xla`.
  """
  _check_shapes(x, kernel, feature_group_count)
  kh, kw, group_in, out = kernel.shape
  groups = feature_group_count
  taps = _taps(x, (kh, kw), _pair(strides, "strides"), normalize_padding(padding))

  if groups == 1:
    # Dense: patches (B, Ho, Wo, kh*kw*C) @ kernel (kh*kw*C, O). The
    # concatenation order (tap-major, channel-minor) equals the row-major
    # flattening of the kernel's leading (kh, kw, C) axes.
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * group_in, out))

  multiplier = out // groups
  if group_in == 1:
    # Depthwise: output channel o reads input channel o // multiplier.
    if multiplier > 1:
      taps = [jnp.repeat(tap, multiplier, axis=-1) for tap in taps]
    weights = kernel.reshape(kh * kw, out)
    result = taps[0] * weights[0]
    for tap, weight in zip(taps[1:], weights[1:]):
      result = result + tap * weight
    return result

  # General grouped: one GEMM per group, batched by einsum. Output channels are
  # group-major (o = g * multiplier + m), as in lax.conv.
  patches = jnp.stack(taps, axis=3)  # (B, Ho, Wo, T, C)
  patches = patches.reshape(*patches.shape[:4], groups, group_in)
  weights = kernel.reshape(kh * kw, group_in, groups, multiplier)
  result = jnp.einsum("bhwtgc,tcgm->bhwgm", patches, weights)
  return result.reshape(*result.shape[:3], out)


_IMPLEMENTATIONS = {"xla": conv2d_xla, "im2col": conv2d_im2col}


def resolve_conv_impl(
  impl: ConvImpl,
  *,
  input_shape: Sequence[int],
  kernel_shape: Sequence[int],
  strides: tuple[int, int] | int = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
  backend: str | None = None,
) -> Literal["xla", "im2col"]:
  """Turns ``"auto"`` into a concrete implementation; others pass through.

  ``"auto"`` means, on the CPU backend, ``"im2col"`` for depthwise
  convolutions, 1x1 convolutions (a plain GEMM there) and convolutions with at
  most ``CPU_IM2COL_MAX_OUTPUT_PIXELS`` output pixels, and ``"xla"`` for the
  rest; on GPU/TPU it always means ``"xla"``.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}.")
  if impl != "auto":
    return impl
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  kh, kw, group_in, _ = kernel_shape
  if (group_in == 1 and feature_group_count > 1) or (kh, kw) == (1, 1):
    return "im2col"
  (sh, sw), pads = _pair(strides, "strides"), normalize_padding(padding)
  out_pixels = output_size(input_shape[1], kh, sh, pads[0]) * output_size(
    input_shape[2], kw, sw, pads[1]
  )
  return "im2col" if out_pixels <= CPU_IM2COL_MAX_OUTPUT_PIXELS else "xla"


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: tuple[int, int] | int = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
  impl: ConvImpl = "auto",
) -> jax.Array:
  """The convolution of the module docstring with implementation ``impl``.

  Args:
    x: (B, H, W, C) input.
    kernel: (kh, kw, C / feature_group_count, O) kernel.
    strides: stride per spatial axis (an int means both).
    padding: zero padding; an int ``p`` pads every side by ``p`` (PyTorch),
      or ``((top, bottom), (left, right))``.
    feature_group_count: number of groups G (C for depthwise).
    impl: ``"auto"``, ``"xla"`` or ``"im2col"`` (see :func:`resolve_conv_impl`).

  Returns:
    (B, Ho, Wo, O), ``Ho = floor((H + top + bottom - kh) / sh) + 1``.
  """
  strides = _pair(strides, "strides")
  concrete = resolve_conv_impl(
    impl,
    input_shape=x.shape,
    kernel_shape=kernel.shape,
    strides=strides,
    padding=padding,
    feature_group_count=feature_group_count,
  )
  return _IMPLEMENTATIONS[concrete](
    x,
    kernel,
    strides=strides,
    padding=padding,
    feature_group_count=feature_group_count,
  )


class Conv(nnx.Module):
  """2-D convolution layer over NHWC inputs, parameter-compatible with ``nnx.Conv``.

  ``kernel`` has shape ``(kh, kw, in_features // groups, out_features)`` and
  ``bias`` (if any) ``(out_features,)``. ``conv_impl`` is a plain attribute, so
  a whole model can be switched after construction with
  ``model.set_attributes(conv_impl="xla")``.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | tuple[int, int],
    *,
    strides: int | tuple[int, int] = 1,
    padding: Padding = 0,
    groups: int = 1,
    use_bias: bool = False,
    kernel_init: nnx.Initializer,
    bias_init: nnx.Initializer = nnx.initializers.zeros_init(),
    conv_impl: ConvImpl = "auto",
    dtype: jnp.dtype | None = None,
    param_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if in_features % groups or out_features % groups:
      raise ValueError(
        f"in_features ({in_features}) and out_features ({out_features}) must "
        f"both be divisible by groups ({groups})."
      )
    if conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.")
    kh, kw = _pair(kernel_size, "kernel_size")
    self.kernel = nnx.Param(
      kernel_init(rngs.params(), (kh, kw, in_features // groups, out_features), param_dtype)
    )
    self.bias = (
      nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
      if use_bias
      else nnx.data(None)
    )
    self.in_features = in_features
    self.out_features = out_features
    self.strides = _pair(strides, "strides")
    self.padding = normalize_padding(padding)
    self.groups = groups
    self.conv_impl = conv_impl
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    y = conv2d(
      x.astype(dtype),
      self.kernel[...].astype(dtype),
      strides=self.strides,
      padding=self.padding,
      feature_group_count=self.groups,
      impl=self.conv_impl,
    )
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y
