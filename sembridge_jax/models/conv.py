"""2-D convolution with two interchangeable implementations.

Every model in this package convolves through :func:`conv2d` / :class:`Conv`.
For an NHWC input ``x``, an HWIO kernel ``k`` of shape ``(kh, kw, C/G, O)``,
strides ``(sh, sw)``, explicit zero padding and ``G`` feature groups, both
implementations compute the same cross-correlation (PyTorch/XLA convention)::

    y[b, h, w, o] = sum_{i < kh, j < kw, c < C/G}
                    x_pad[b, sh*h + i, sw*w + j, g(o) * C/G + c] * k[i, j, c, o]

with ``g(o) = o // (O / G)`` the group of output channel ``o``.

* ``"xla"``: one ``lax.conv_general_dilated``. The right choice on GPU/TPU.
* ``"xla_gemm_grad"``: ``"xla"``, except that the kernel gradient of a dense stride-1
  convolution is one GEMM (:func:`conv2d_xla_gemm_grad`). ``"auto"`` uses it where it
  pays on CPU; as a model-wide setting it is for benchmarking (it sends depthwise, 1x1
  and tiny-map convolutions down XLA:CPU's slow paths).
* ``"onednn"``: oneDNN's CPU convolution and its two gradients as XLA custom calls
  (``onednn.py``); ``"auto"`` takes it on CPU for outputs of 4x4 and larger.
* ``"im2col"``: the ``kh*kw`` shifted, strided views ("taps", see
  ``windows.py``) ``x_pad[:, i::sh, j::sw, :]`` are cut out with static
  slices and then

  - dense (G = 1): concatenated along channels into a patch matrix of width
    ``kh*kw*C`` and multiplied by the kernel reshaped to ``(kh*kw*C, O)`` --
    one GEMM;
  - depthwise (C/G = 1): multiplied elementwise by the per-tap kernel rows and
    summed (a GEMM would be block-diagonal, i.e. mostly zeros), with a
    hand-written VJP that avoids storing the taps;
  - other grouped convolutions: one batched GEMM over the groups (einsum).

Why two paths: XLA's CPU backend lowers convolutions on small feature maps to
a very slow loop (e.g. a 3x3, 512 -> 512 convolution on a 2x2 map at batch 64
takes ~0.8 s forward, ~50x its im2col GEMM), and its depthwise convolutions
and their weight gradients are slow at every size. Slices, concatenations and
dots differentiate into pads, slices and dots, all of which XLA:CPU handles
well. ``"auto"`` (the default) therefore picks ``"im2col"`` on CPU for
depthwise and 1x1 convolutions and for those whose output map is small, and
``"xla"`` everywhere else, except that on CPU a dense stride-1 convolution on a 16x16
or larger map takes its kernel gradient from one GEMM (:func:`conv2d_xla_gemm_grad`:
XLA:CPU's own kernel-gradient convolution is slow there too, and custom VJPs have no
forward-mode rule, so ``jax.jvp`` through one needs ``conv_impl="xla"``). The choice
is made at trace time from
``jax.default_backend()`` and the static shapes, so it costs nothing at run
time. The parameters are the same for both paths (the kernel keeps the
``nnx.Conv`` layout ``(kh, kw, C/G, O)``), so checkpoints are interchangeable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, TypeAlias

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from sembridge_jax.models import onednn
from sembridge_jax.models.depthwise import depthwise_conv
from sembridge_jax.models.windows import (
  Pads,
  normalize_padding,
  output_size,
  pair,
  window_taps,
)

ConvImpl: TypeAlias = Literal["auto", "xla", "im2col", "xla_gemm_grad", "onednn"]
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "im2col", "xla_gemm_grad", "onednn")

Padding: TypeAlias = int | Sequence[tuple[int, int]]

# On CPU, dense 3x3 (and larger) convolutions whose output map has at most this
# many pixels go through im2col. Measured at batch 64 on 2 cores (forward /
# weight gradient / input gradient): XLA is 1-3x faster than im2col on 8x8 and
# larger maps, the two are even on 4x4, and XLA collapses below (2x2 output,
# 512 -> 512: 4.1 s / 3.2 s / 7.7 s against 30 / 64 / 75 ms).
CPU_IM2COL_MAX_OUTPUT_PIXELS = 16
# On CPU, dense stride-1 convolutions (3x3 and larger) whose output map has at least this
# many pixels take their kernel gradient from one GEMM (`conv2d_xla_gemm_grad`). Measured
# at batch 64 on 2 cores, 3x3 64 -> 64: 16x16 32.4 -> 21.7 ms (bench/conv_profile.py),
# 32x32 136 -> 89 ms; on 8x8 (128 -> 128) it is slower, 7.6 -> 9.9 ms.
CPU_GEMM_GRAD_MIN_OUTPUT_PIXELS = 256
# On CPU, where oneDNN is available (models/onednn.py), convolutions with at least this
# many output pixels go to it. Measured at batch 64 on 2 cores (bench/conv_profile.py,
# forward + both gradients): it is 1.2-3.6x faster than the paths below on 4x4 and larger
# outputs of ResNet-34, MobileNetV2 and ShuffleNetV2 (e.g. 16x16 64 -> 64 3x3: 40.6 ->
# 11.2 ms; 32x32 depthwise 96, stride 2: 14.1 -> 4.2 ms) and slower on 2x2 maps
# (512 -> 512 3x3: 15.5 -> 42.3 ms), where im2col's GEMMs stay.
CPU_ONEDNN_MIN_OUTPUT_PIXELS = 16


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
    window_strides=pair(strides, "strides"),
    padding=normalize_padding(padding),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=feature_group_count,
  )


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
  groups, multiplier = feature_group_count, out // feature_group_count
  strides, padding = pair(strides, "strides"), normalize_padding(padding)

  if groups > 1 and group_in == 1:
    # Depthwise: output channel o reads input channel o // multiplier.
    if multiplier > 1:
      x = jnp.repeat(x, multiplier, axis=-1)
    return depthwise_conv(x, kernel, strides, padding)

  taps = window_taps(x, (kh, kw), strides, padding)
  if groups == 1:
    # Dense: patches (B, Ho, Wo, kh*kw*C) @ kernel (kh*kw*C, O). The
    # concatenation order (tap-major, channel-minor) equals the row-major
    # flattening of the kernel's leading (kh, kw, C) axes.
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * group_in, out))

  # General grouped: one GEMM per group, batched by einsum. Output channels are
  # group-major (o = g * multiplier + m), as in lax.conv.
  patches = jnp.stack(taps, axis=3)  # (B, Ho, Wo, T, C)
  patches = patches.reshape(*patches.shape[:4], groups, group_in)
  weights = kernel.reshape(kh * kw, group_in, groups, multiplier)
  result = jnp.einsum("bhwtgc,tcgm->bhwgm", patches, weights)
  return result.reshape(*result.shape[:3], out)


def conv2d_xla_gemm_grad(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: tuple[int, int] = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
) -> jax.Array:
  """:func:`conv2d_xla` whose kernel gradient is one GEMM where the convolution is dense
  and has stride 1 (others are plain :func:`conv2d_xla`).

  Same arguments, result and dtype as :func:`conv2d_xla`; the forward pass and the
  input gradient are XLA's. The kernel gradient
  ``dk[i, j, c, o] = sum_{b, h, w} x_pad[b, h + i, w + j, c] * dy[b, h, w, o]`` is
  computed as ``X^T D`` with

  * ``X[b, h, w', (i, c)] = x_pad[b, h + i, w', c]``: the ``kh`` row-shifted copies of
    the padded input side by side along channels, over its full padded width ``w'``;
  * ``D[b, h, w', (j, o)] = dy[b, h, w' - j, o]`` (zero outside): ``dy`` shifted right
    by ``j`` columns, ``kw`` copies side by side;

  so that ``(X^T D)[(i, c), (j, o)]`` sums ``x_pad[b, h + i, w + j, c] dy[b, h, w, o]``
  over ``b, h`` and ``w = w' - j``. XLA:CPU runs its own weight-gradient convolution on
  16x16 and larger maps at a sixth of the GEMM's speed; this costs ``(W + kw - 1) / W``
  more multiplications than the minimum and two copies of ``kh`` and ``kw`` times the
  activations, and is 1.5x faster there (slower on 8x8 and smaller maps).
  """
  _check_shapes(x, kernel, feature_group_count)
  if feature_group_count != 1 or pair(strides, "strides") != (1, 1):
    return conv2d_xla(x, kernel, strides=strides, padding=padding,
                      feature_group_count=feature_group_count)
  return _xla_conv_gemm_grad(x, kernel, normalize_padding(padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _xla_conv_gemm_grad(x: jax.Array, kernel: jax.Array, padding: Pads) -> jax.Array:
  return conv2d_xla(x, kernel, padding=padding)


def _xla_conv_gemm_grad_fwd(x, kernel, padding):
  return conv2d_xla(x, kernel, padding=padding), (x, kernel)


def _xla_conv_gemm_grad_bwd(padding, residuals, dy):
  x, kernel = residuals
  kh, kw, channels, out = kernel.shape
  _, input_vjp = jax.vjp(lambda inputs: conv2d_xla(inputs, kernel, padding=padding), x)
  (dx,) = input_vjp(dy)
  x_pad = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_h, out_w = dy.shape[1:3]
  padded_w = x_pad.shape[2]
  rows = jnp.concatenate([x_pad[:, i:i + out_h] for i in range(kh)], axis=-1)
  shifted = jnp.concatenate(
    [jnp.pad(dy, ((0, 0), (0, 0), (j, padded_w - out_w - j), (0, 0))) for j in range(kw)],
    axis=-1,
  )
  gram = lax.dot_general(
    rows.reshape(-1, kh * channels), shifted.reshape(-1, kw * out),
    (((0,), (0,)), ((), ())), preferred_element_type=jnp.promote_types(x.dtype, jnp.float32),
  )
  dkernel = gram.reshape(kh, channels, kw, out).transpose(0, 2, 1, 3)
  return dx, dkernel.astype(kernel.dtype)


_xla_conv_gemm_grad.defvjp(_xla_conv_gemm_grad_fwd, _xla_conv_gemm_grad_bwd)


def _conv2d_onednn(x, kernel, *, strides=(1, 1), padding=0, feature_group_count=1):
  _check_shapes(x, kernel, feature_group_count)
  return onednn.conv2d_onednn(x, kernel, strides=strides, padding=normalize_padding(padding),
                              feature_group_count=feature_group_count)


_IMPLEMENTATIONS = {"xla": conv2d_xla, "im2col": conv2d_im2col,
                    "xla_gemm_grad": conv2d_xla_gemm_grad, "onednn": _conv2d_onednn}


def resolve_conv_impl(
  impl: ConvImpl,
  *,
  input_shape: Sequence[int],
  kernel_shape: Sequence[int],
  strides: tuple[int, int] | int = (1, 1),
  padding: Padding = 0,
  feature_group_count: int = 1,
  backend: str | None = None,
  dtype: jnp.dtype | None = None,
) -> Literal["xla", "im2col", "xla_gemm_grad", "onednn"]:
  """Turns ``"auto"`` into a concrete implementation; others pass through.

  ``"auto"`` means, on the CPU backend, ``"im2col"`` for depthwise
  convolutions, 1x1 convolutions (a plain GEMM there) and convolutions with at
  most ``CPU_IM2COL_MAX_OUTPUT_PIXELS`` output pixels, and ``"xla"`` for the
  rest, except ``"xla_gemm_grad"`` for dense stride-1 convolutions with kernels of at
  least 3x3 and at least ``CPU_GEMM_GRAD_MIN_OUTPUT_PIXELS`` output pixels; on GPU/TPU
  it always means ``"xla"``. Where oneDNN is available (``onednn.available()``), the
  process has one device and ``dtype`` is float32 (None: assumed), every convolution
  with at least ``CPU_ONEDNN_MIN_OUTPUT_PIXELS`` output pixels goes to ``"onednn"``
  first.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}.")
  if impl != "auto":
    return impl
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  kh, kw, group_in, _ = kernel_shape
  (sh, sw), pads = pair(strides, "strides"), normalize_padding(padding)
  out_pixels = output_size(input_shape[1], kh, sh, pads[0]) * output_size(
    input_shape[2], kw, sw, pads[1]
  )
  if (out_pixels >= CPU_ONEDNN_MIN_OUTPUT_PIXELS and jax.device_count() == 1
      and min(pad for side in pads for pad in side) >= 0
      and (dtype is None or jnp.dtype(dtype) == jnp.float32) and onednn.available()):
    return "onednn"
  if ((group_in == 1 and feature_group_count > 1) or (kh, kw) == (1, 1)
      or out_pixels <= CPU_IM2COL_MAX_OUTPUT_PIXELS):
    return "im2col"
  if ((sh, sw) == (1, 1) and feature_group_count == 1 and min(kh, kw) >= 3
      and out_pixels >= CPU_GEMM_GRAD_MIN_OUTPUT_PIXELS):
    return "xla_gemm_grad"
  return "xla"


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
    impl: one of ``CONV_IMPLS`` (see :func:`resolve_conv_impl`).

  Returns:
    (B, Ho, Wo, O), ``Ho = floor((H + top + bottom - kh) / sh) + 1``.
  """
  strides = pair(strides, "strides")
  concrete = resolve_conv_impl(
    impl,
    input_shape=x.shape,
    kernel_shape=kernel.shape,
    strides=strides,
    padding=padding,
    feature_group_count=feature_group_count,
    dtype=jnp.result_type(x, kernel),
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
    kh, kw = pair(kernel_size, "kernel_size")
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
    self.strides = pair(strides, "strides")
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
