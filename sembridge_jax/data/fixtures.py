"""Tiny fake dataset roots laid out exactly like the distributed benchmark (for tests).

`write_fake_root` writes ``<directory>/<ROOT>/MS/<class>/*`` (GeoTIFF with the dataset's
full source band count, or ``.mat`` with key ``msi``) and ``RGB/<class>/*.jpg`` for every
class. Pixel values encode their source band: band ``b`` (1-based) of every MS file lies
in ``[1000 b, 1000 b + 999]``, so a test can tell which bands a reader selected.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image

from sembridge_jax.data import specs

BAND_VALUE_STEP = 1000


def fake_ms_image(rng: np.random.Generator, size: int, bands: int) -> np.ndarray:
  """(size, size, bands) uint16 with band b (0-based) in [1000 (b + 1), 1000 (b + 1) + 999]."""
  base = BAND_VALUE_STEP * np.arange(1, bands + 1, dtype=np.int64)
  return (base + rng.integers(0, BAND_VALUE_STEP, (size, size, bands))).astype(np.uint16)


def write_geotiff(path: pathlib.Path, pixels: np.ndarray, epsg: int = 32632) -> None:
  """Writes (H, W, C) ``pixels`` as a georeferenced GeoTIFF (default UTM 32N, 10 m pixels)."""
  import rasterio
  from affine import Affine
  height, width, bands = pixels.shape
  with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=bands,
                     dtype=pixels.dtype.name, crs=f"EPSG:{epsg}",
                     transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)) as dst:
    dst.write(np.moveaxis(pixels, -1, 0))


def write_mat(path: pathlib.Path, pixels: np.ndarray, key: str = specs.MAT_KEY) -> None:
  import scipy.io
  scipy.io.savemat(path, {key: pixels})


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def write_fake_root(directory: str | pathlib.Path, name: str, *, files_per_class: int = 3,
                    ms_size: int | None = None, rgb_size: int | None = None,
                    seed: int = 0) -> pathlib.Path:
  """Writes a fake root of dataset ``name`` into ``directory``; returns the root.

  Sizes default to the spec's (16 pixels where the spec leaves the MS size open).
  """
  spec = specs.get_spec(name)
  ms_size = ms_size or spec.ms_size or 16
  rgb_size = rgb_size or spec.rgb_size or 16
  root = pathlib.Path(directory) / spec.root_name
  rng = np.random.default_rng(seed)
  for class_name in spec.class_names:
    (root / "MS" / class_name).mkdir(parents=True, exist_ok=True)
    (root / "RGB" / class_name).mkdir(parents=True, exist_ok=True)
    for i in range(files_per_class):
      pixels = fake_ms_image(rng, ms_size, spec.ms_source_bands)
      stem = root / "MS" / class_name / f"{class_name}_{i}"
      if spec.ms_format == "mat":
        write_mat(stem.with_suffix(".mat"), pixels)
      else:
        write_geotiff(stem.with_suffix(".tif"), pixels)
      rgb = rng.integers(0, 256, (rgb_size, rgb_size, 3), dtype=np.uint8)
      (root / "RGB" / class_name / f"{class_name}_{i}.jpg").write_bytes(jpeg_bytes(rgb))
  return root


def write_fake_eurosat(directory: str | pathlib.Path, *, scenes_per_class: int = 6,
                       zones: tuple[int, ...] = (31, 32, 33), seed: int = 0
                       ) -> tuple[pathlib.Path, pathlib.Path]:
  """EuroSAT's release layout: ``EuroSAT_MS/<Class>/<Class>_<n>.tif`` (13 bands, uint16,
  64 x 64, scene n of a class in UTM zone ``zones[(n + label) % len(zones)]`` north) and
  the same-named ``EuroSAT_RGB/<Class>/<Class>_<n>.jpg``. Returns the two folders."""
  from sembridge_jax.data import eurosat
  spec = specs.get_spec(specs.EUROSAT_ASYM)
  rng = np.random.default_rng(seed)
  directory = pathlib.Path(directory)
  ms_root, rgb_root = directory / eurosat.MS_FOLDER, directory / eurosat.RGB_FOLDER
  for label, name in enumerate(spec.class_names):
    (ms_root / name).mkdir(parents=True, exist_ok=True)
    (rgb_root / name).mkdir(parents=True, exist_ok=True)
    for n in range(1, scenes_per_class + 1):
      zone = zones[(n + label) % len(zones)]
      write_geotiff(ms_root / name / f"{name}_{n}.tif",
                    fake_ms_image(rng, spec.ms_size, spec.ms_source_bands), epsg=32600 + zone)
      pixels = rng.integers(0, 256, (spec.rgb_size, spec.rgb_size, 3), dtype=np.uint8)
      (rgb_root / name / f"{name}_{n}.jpg").write_bytes(jpeg_bytes(pixels))
  return ms_root, rgb_root
