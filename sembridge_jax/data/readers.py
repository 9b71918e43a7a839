"""Reading one benchmark file: MS GeoTIFF / .mat with band selection, RGB JPEG bytes.

Every failure raises `InvalidBenchmarkError` naming the file and what was expected.
Policies:
  * MS pixel values are stored raw as uint16 digital numbers. Integer data in
    [0, 65535] (and float data holding only such integers) converts losslessly;
    anything else (negative, fractional or larger values) is refused.
  * Image sizes are never resampled at build time: resampling would change MS
    radiometry and re-encode JPEGs. A file whose size differs from the dataset's is
    refused (see `layout.check_sizes`); the input pipeline resizes RGB to the size the
    models see.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image

from sembridge_jax.data import errors
from sembridge_jax.data.specs import MAT_KEY, DatasetSpec

_UINT16_MAX = np.iinfo(np.uint16).max


def _to_uint16(array: np.ndarray, path: pathlib.Path) -> np.ndarray:
  if array.dtype == np.uint16:
    return array
  if array.size and (np.issubdtype(array.dtype, np.integer)
                     or np.issubdtype(array.dtype, np.floating)):
    finite = np.isfinite(array).all() if np.issubdtype(array.dtype, np.floating) else True
    if (finite and array.min() >= 0 and array.max() <= _UINT16_MAX
        and np.array_equal(array, np.round(array))):
      return array.astype(np.uint16)
  raise errors.single(path, "integer digital numbers in [0, 65535] (stored as uint16)",
                      f"dtype {array.dtype}" + (
                          f" with values in [{array.min()}, {array.max()}]" if array.size else
                          " with no pixels"))


def _read_geotiff(path: pathlib.Path, source_bands: int) -> np.ndarray:
  import rasterio
  from rasterio.errors import NotGeoreferencedWarning, RasterioError
  try:
    with warnings.catch_warnings():
      # Plain (non-georeferenced) TIFFs are accepted: only the pixels are used.
      warnings.simplefilter("ignore", NotGeoreferencedWarning)
      with rasterio.open(path) as dataset:
        if dataset.count != source_bands:
          raise errors.single(path, f"a GeoTIFF with {source_bands} bands",
                              f"{dataset.count} band(s)")
        pixels = dataset.read()
  except RasterioError as e:
    raise errors.single(path, f"a readable {source_bands}-band GeoTIFF",
                        f"a corrupt or truncated file ({e})") from e
  return np.moveaxis(pixels, 0, -1)


def _read_mat(path: pathlib.Path, source_bands: int) -> np.ndarray:
  import scipy.io
  try:
    contents = scipy.io.loadmat(path)
  except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files.
    raise errors.single(path, f"a MATLAB v5/v7 .mat file with key {MAT_KEY!r}",
                        f"an unsupported .mat version ({e}); re-save it with -v7") from e
  except Exception as e:  # scipy raises ValueError, TypeError, OSError... on corrupt files.
    raise errors.single(path, f"a readable .mat file with key {MAT_KEY!r}",
                        f"a corrupt file ({type(e).__name__}: {e})") from e
  if MAT_KEY not in contents:
    keys = sorted(k for k in contents if not k.startswith("__"))
    raise errors.single(path, f"a .mat file with key {MAT_KEY!r}", f"keys {keys}")
  pixels = np.asarray(contents[MAT_KEY])
  if pixels.ndim != 3 or pixels.shape[-1] != source_bands:
    raise errors.single(path, f"{MAT_KEY!r} of shape (H, W, {source_bands})",
                        f"shape {pixels.shape}")
  return pixels


_MS_READERS = {"geotiff": _read_geotiff, "mat": _read_mat}


def read_ms(path: pathlib.Path, spec: DatasetSpec) -> np.ndarray:
  """The stored MS image of ``path``: (H, W, spec.ms_channels) uint16, bands selected."""
  pixels = _MS_READERS[spec.ms_format](path, spec.ms_source_bands)
  if spec.ms_band_selection is not None:
    pixels = pixels[..., [band - 1 for band in spec.ms_band_selection]]
  return np.ascontiguousarray(_to_uint16(pixels, path))


class RgbFile(NamedTuple):
  jpeg: bytes                 # the file's original bytes, stored unchanged
  size: tuple[int, int]       # (height, width)


def read_rgb(path: pathlib.Path) -> RgbFile:
  """Checks that ``path`` is a complete 3-channel JPEG; returns its bytes and size."""
  jpeg = path.read_bytes()
  try:
    with Image.open(io.BytesIO(jpeg)) as image:
      image_format, mode, (width, height) = image.format, image.mode, image.size
      image.load()  # Decodes fully: a truncated file raises here.
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
    raise errors.single(path, "a readable RGB JPEG", f"an unreadable or truncated file ({e})"
                        ) from e
  if image_format != "JPEG":
    raise errors.single(path, "a JPEG image", f"a {image_format} image")
  if mode != "RGB":
    raise errors.single(path, "a 3-channel RGB JPEG", f"mode {mode!r}")
  return RgbFile(jpeg, (height, width))


def read_stored(path: pathlib.Path, spec: DatasetSpec, is_ms: bool) -> np.ndarray | bytes:
  """What a record stores of ``path``: the MS pixels (`read_ms`) or the JPEG's bytes."""
  return read_ms(path, spec) if is_ms else read_rgb(path).jpeg
