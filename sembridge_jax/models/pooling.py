"""Max-pooling over NHWC maps with the same two implementations as the convolutions.

``y[b, h, w, c] = max_{i < kh, j < kw} x_pad[b, sh*h + i, sw*w + j, c]`` with
``-inf`` padding (PyTorch's ``nn.MaxPool2d``). The gradient goes, for each
output, entirely to the *first* maximal input in row-major window order -- the
choice of XLA's ``reduce_window``/``select_and_scatter`` and of PyTorch.

* ``"xla"``: ``lax.reduce_window``. Its JAX derivative builds four int32
  index maps of the padded input and a variadic reduce-window, which costs
  ~25% of a ShuffleNetV2 train step on CPU.
* ``"im2col"``: the maximum over the window taps (``windows.py``), taken
  separably (width, then height), with the gradient routed through a one-hot
  "first tap attaining the max" selection: the same values and the same
  gradients from slices and elementwise ops, ~3-5x faster to differentiate.

``"auto"`` is ``"im2col"`` on CPU and ``"xla"`` elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from sembridge_jax.models.conv import CONV_IMPLS, ConvImpl
from sembridge_jax.models.windows import Pads, normalize_padding, pair, window_taps


def max_pool_xla(
  x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: Pads
) -> jax.Array:
  """The max-pool of the module docstring as one ``lax.reduce_window``."""
  return lax.reduce_window(
    x,
    -jnp.inf,
    lax.max,
    (1, *window, 1),
    (1, *strides, 1),
    ((0, 0), *padding, (0, 0)),
  )


def _first_max(taps: list[jax.Array]) -> jax.Array:
  """Elementwise max over ``taps``, differentiated as "all to the first maximal tap"."""
  maximum = lax.stop_gradient(functools.reduce(jnp.maximum, taps))
  # Exactly one tap is selected per element: the first equal to the maximum.
  # Summing ``where(selected, tap, 0)`` reproduces the maximum and sends the
  # whole gradient to that tap.
  pooled = jnp.zeros_like(maximum)
  taken = jnp.zeros(maximum.shape, bool)
  for tap in taps:
    selected = (tap == maximum) & ~taken
    taken = taken | selected
    pooled = pooled + jnp.where(selected, tap, 0)
  # No tap equals a NaN maximum: keep the NaN.
  return jnp.where(taken, pooled, maximum)


def max_pool_taps(
  x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: Pads
) -> jax.Array:
  """The max-pool of the module docstring from window taps, one axis at a time.

  ``max over (i, j) = max over i of (max over j)``: first along the width (kw
  taps), then along the height (kh taps). The first maximal element in
  row-major window order lies in the first row whose row-maximum is the
  maximum, at that row's first maximal column, so selecting the first maximum
  in each 1-D pass routes the gradient exactly like ``reduce_window``. Two
  passes of kh + kw taps are also much cheaper to differentiate than kh * kw.
  """
  (kh, kw), (sh, sw), (pad_h, pad_w) = window, strides, padding
  rows = _first_max(window_taps(x, (1, kw), (1, sw), ((0, 0), pad_w), -jnp.inf))
  return _first_max(window_taps(rows, (kh, 1), (sh, 1), (pad_h, (0, 0)), -jnp.inf))


# (A pooling has no kernel: "xla_gemm_grad" pools as "xla", and "onednn", a CPU-only
# convolution, as "auto" does on the CPU.)
_IMPLEMENTATIONS = {"xla": max_pool_xla, "im2col": max_pool_taps, "xla_gemm_grad": max_pool_xla,
                    "onednn": max_pool_taps}


def max_pool(
  x: jax.Array,
  window: int | tuple[int, int],
  *,
  strides: int | tuple[int, int],
  padding: int | Pads = 0,
  impl: ConvImpl = "auto",
) -> jax.Array:
  """Max-pools (B, H, W, C) ``x`` (see the module docstring); ``impl`` as for convs."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}.")
  if impl == "auto":
    impl = "im2col" if jax.default_backend() == "cpu" else "xla"
  if x.ndim != 4:
    raise ValueError(f"x must be NHWC (4 dims), got shape {x.shape}.")
  return _IMPLEMENTATIONS[impl](
    x, pair(window, "window"), pair(strides, "strides"), normalize_padding(padding)
  )


class MaxPool(nnx.Module):
  """``nn.MaxPool2d(window, strides, padding)``; ``conv_impl`` picks the implementation.

  The attribute shares its name with :class:`~sembridge_jax.models.conv.Conv`'s
  so that ``model.set_attributes(conv_impl=...)`` switches both.
  """

  def __init__(
    self,
    window: int,
    *,
    strides: int,
    padding: int = 0,
    conv_impl: ConvImpl = "auto",
  ):
    if conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.")
    self.window = pair(window, "window")
    self.strides = pair(strides, "strides")
    self.padding = normalize_padding(padding)
    self.conv_impl = conv_impl

  def __call__(self, x: jax.Array) -> jax.Array:
    return max_pool(
      x, self.window, strides=self.strides, padding=self.padding, impl=self.conv_impl
    )
