"""Batch decoding, resizing and normalisation of MS and RGB images (NumPy, vectorised).

Normalisation schemes for MS images, (B, H, W, C) raw digital numbers -> float32:

* ``per_image_max`` (the authors'): ``x / max(x)`` with the maximum over the whole image
  (all pixels and bands), then ``(x - 0.5) / 0.5``, so values lie in [-1, 1];
* ``band_stats``: ``(x - mean_c) / std_c`` with the MS train split's per-band statistics
  stored in the dataset metadata.

RGB images (and true-colour renderings of MS images, so that the matcher sees both the
same way): resize to the model size, scale to [0, 1] (``/255``; a rendering is already
``bands / max``), then ``(x - 0.5) / 0.5``.

Resizing is PIL's antialiased bilinear filter written as two small matrices, so a whole
batch resizes with two ``einsum`` s and JPEGs and renderings are resampled identically.
"""

from __future__ import annotations

import functools
import io
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from sembridge_jax.data.layout import BandStats

Normalizer = Callable[[np.ndarray, BandStats], np.ndarray]


def normalize_per_image_max(ms: np.ndarray, stats: BandStats) -> np.ndarray:
  """``(x / max_image(x) - 0.5) / 0.5``; an all-zero image maps to -1."""
  del stats  # The authors' scheme needs no dataset statistics.
  x = ms.astype(np.float32)
  peak = x.max(axis=(1, 2, 3), keepdims=True)
  return (x / np.maximum(peak, 1.0) - 0.5) / 0.5


def normalize_band_stats(ms: np.ndarray, stats: BandStats) -> np.ndarray:
  """``(x - mean_c) / std_c`` with the train split's per-band statistics."""
  mean = np.asarray(stats.mean, np.float32)
  std = np.maximum(np.asarray(stats.std, np.float32), 1e-6)
  return (ms.astype(np.float32) - mean) / std


NORMALIZERS: Mapping[str, Normalizer] = {
    "per_image_max": normalize_per_image_max,
    "band_stats": normalize_band_stats,
}


def get_normalizer(name: str) -> Normalizer:
  if name not in NORMALIZERS:
    raise ValueError(f"normalization={name!r} is unknown; allowed: {sorted(NORMALIZERS)}")
  return NORMALIZERS[name]


def unit_to_model_range(x: np.ndarray) -> np.ndarray:
  """[0, 1] -> [-1, 1]: the RGB normalisation ``(x - 0.5) / 0.5``."""
  return ((x - 0.5) / 0.5).astype(np.float32)


@functools.lru_cache(maxsize=64)
def resampling_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) weights of PIL's BILINEAR resize along one axis.

  Output pixel ``i`` is centred at ``(i + 0.5) * s`` in input coordinates, ``s =
  in_size / out_size``; the triangle filter ``max(0, 1 - |d| / max(s, 1))`` (widened when
  downsampling, i.e. antialiased) is evaluated on the input pixel centres within its
  support and normalised to sum to one, as in PIL's ``ImagingResample``.
  """
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  support = filter_scale  # The bilinear filter's support is 1, widened by filter_scale.
  weights = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    centre = (i + 0.5) * scale
    first = max(int(centre - support + 0.5), 0)
    last = min(int(centre + support + 0.5), in_size)
    taps = np.arange(first, last)
    w = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) / filter_scale))
    weights[i, first:last] = w / w.sum()
  return weights.astype(np.float32)


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """(B, H, W, C) -> (B, size, size, C) float32 (a no-op cast when already that size)."""
  height, width = images.shape[1:3]
  images = images.astype(np.float32, copy=False)
  if (height, width) == (size, size):
    return images
  rows, cols = resampling_matrix(height, size), resampling_matrix(width, size)
  return np.einsum("oh,bhwc,pw->bopc", rows, images, cols, optimize=True)


def decode_jpegs(jpegs: Sequence[bytes]) -> np.ndarray:
  """Decodes same-sized RGB JPEGs into (B, H, W, 3) uint8."""
  return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])


def rgb_to_model(rgb: np.ndarray, size: int) -> np.ndarray:
  """uint8-valued RGB (B, H, W, 3) -> resized, ``(x / 255 - 0.5) / 0.5`` float32."""
  return unit_to_model_range(resize(rgb, size) / 255.0)


def true_colour_linear(ms: np.ndarray, bands: Sequence[int]) -> np.ndarray:
  """``ms[..., bands] / max`` in [0, 1], (B, H, W, 3) float32 at the MS size.

  The maximum is over the three bands and the whole image: a linear stretch of the
  scene's reflectance (what `sembridge_jax.data.augmentation.random_camera` images).
  """
  rgb = ms[..., list(bands)].astype(np.float32)
  peak = rgb.max(axis=(1, 2, 3), keepdims=True)
  return rgb / np.maximum(peak, 1.0)


def true_colour_rendering(ms: np.ndarray, bands: Sequence[int], size: int,
                          gamma: float = 1.0) -> np.ndarray:
  """True-colour rendering of raw MS images, normalised exactly like RGB images.

  ``(ms[..., bands] / max) ** (1 / gamma)`` (the maximum of those three bands over the
  image) plays the role of ``rgb / 255``; then resize to ``size`` and
  ``(x - 0.5) / 0.5``. ``gamma`` is the display encoding of the RGB images the rendering
  should resemble: 1 for a linear stretch of reflectance, about 2.2 for camera or sRGB
  JPEGs (which store ``linear ** (1 / 2.2)``).
  """
  if gamma <= 0:
    raise ValueError(f"rendering gamma must be positive; got {gamma}")
  unit = true_colour_linear(ms, bands)
  if gamma != 1.0:
    unit = unit ** np.float32(1.0 / gamma)
  return unit_to_model_range(resize(unit, size))
