"""The taps of a sliding window: shifted, strided views of a padded feature map.

For a (B, H, W, C) map, a (kh, kw) window moved with strides (sh, sw) over the
map padded by ``((top, bottom), (left, right))`` with ``pad_value``, tap
``(i, j)`` is the (B, Ho, Wo, C) array

    tap_ij[b, h, w, c] = x_pad[b, sh*h + i, sw*w + j, c],
    Ho = floor((H + top + bottom - kh) / sh) + 1  (likewise Wo),

i.e. the input pixel that window position ``(h, w)`` sees through its offset
``(i, j)``. Convolutions (``conv.py``) and max-pooling (``pooling.py``) are
reductions over the taps; built from static slices they differentiate into
pads and slices, which XLA's CPU backend handles well.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], tuple[int, int]]


def output_size(size: int, window: int, stride: int, pad: tuple[int, int]) -> int:
  """Length of one spatial output axis: ``floor((size + pads - window) / stride) + 1``."""
  return (size + pad[0] + pad[1] - window) // stride + 1


def window_taps(
  x: jax.Array,
  window: tuple[int, int],
  strides: tuple[int, int],
  padding: Pads,
  pad_value: float = 0.0,
) -> list[jax.Array]:
  """The ``kh*kw`` taps of the module docstring, in row-major ``(i, j)`` order."""
  (kh, kw), (sh, sw) = window, strides
  batch, height, width, channels = x.shape
  out_h = output_size(height, kh, sh, padding[0])
  out_w = output_size(width, kw, sw, padding[1])
  if out_h < 1 or out_w < 1:
    raise ValueError(
      f"input map {height}x{width} is too small for a {kh}x{kw} window with "
      f"padding {padding}."
    )
  if any(p for pair in padding for p in pair):
    x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)), constant_values=pad_value)
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


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  """``n`` -> ``(n, n)``; a pair of ints passes through; anything else is a ValueError."""
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
  return value  # type: ignore[return-value]


def normalize_padding(padding: int | Sequence[tuple[int, int]]) -> Pads:
  """``p`` -> ``((p, p), (p, p))`` (PyTorch's symmetric padding); pairs pass through."""
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  pads = tuple(tuple(p) for p in padding)
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(
      f"padding must be an int or ((top, bottom), (left, right)), got {padding!r}."
    )
  return pads  # type: ignore[return-value]
