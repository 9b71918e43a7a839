"""A seeded synthetic asymmetric MS/RGB benchmark written in the real benchmark's layout.

Two "regions" see the same class vocabulary through different sensors:

* the **MS region** is imaged by a calibrated multi-spectral sensor (``ms_bands`` bands,
  Sentinel-2-like band layout, reflectance x 10000 stored as uint16 GeoTIFF);
* the **RGB region** is imaged by a consumer camera: the three visible bands only, mixed
  by a colour-crosstalk matrix, a random per-image illumination (brightness, colour cast,
  haze), a gamma tone curve, noise and JPEG compression; its ground sampling distance
  differs, so its textures have other spatial statistics.

Scene model. A scene of class ``c`` is a two-material mixture: every pixel's reflectance
spectrum is ``a(x) * primary_c + (1 - a(x)) * secondary_c`` with an abundance map ``a(x)``
drawn from the class's texture (gratings, a grid, smooth or fine noise, a linear feature,
with weights and scales per class), plus per-image material variability (log-normal,
``MATERIAL_VARIABILITY`` per band) and sensor noise.

Scene condition (``scene_variation``, generator version 2). Every scene also has a
condition ``z ~ U(-1, 1)`` (think season, moisture, vigour) that scales both materials'
reflectance by ``exp(z * scene_variation * response_g)``, with a unit-RMS spectral
response per class group shared by *both* regions. It is the within-class variation the
two unpaired regions have in common -- what SFM's matcher can find -- and at the default
0.5 it outweighs the per-image material variability and the RGB camera's colour cast.
Without it (``scene_variation=0``, byte-identical to version 1) two same-class scenes
differ only by independent per-band noise smaller than the camera's cast, and no matcher
we trained paired look-alikes better than random pairs.

Why the RGB student must stay below the MS teacher. Classes come in *confusable pairs*
plus singletons. The two classes of a pair share texture and secondary material, and
their primary materials differ in the visible bands by only ``VISIBLE_PAIR_CONTRAST``
(less than one standard deviation of the per-image material variability, so even the
Bayes classifier on a noiseless visible spectrum separates them only ~70% of the time),
but differ by ``NONVISIBLE_PAIR_CONTRAST`` (several standard deviations) in the
non-visible bands (aerosol, red edge, cirrus, SWIR) of both materials. The MS sensor sees
those bands; the RGB camera does not. With the default 10 classes (4 pairs, 2 singletons)
the Bayes accuracy of any RGB classifier is about 0.2 + 0.8 * 0.7 ~ 76% without the scene
condition (which can only lower it), while MS classes are separable. Measured on the default set (a ridge classifier on per-band means, log
band ratios and a gradient statistic, a quarter of each class held out): MS 100%, RGB
59% (version 1: 61%); the pipeline's ShuffleNetV2 RGB student reaches 55%.

Semantic overlap. Every class prototype (material spectra and texture parameters) of a
region is ``overlap * shared + (1 - overlap) * regional``, where ``shared`` is common to
both regions and ``regional`` is drawn independently per region (with the same pair
structure). ``semantic_overlap = 1`` gives both regions the same class evidence (they
still differ in sensor, illumination and texture scale); ``0`` shares only class names.

The MS and RGB sets are unpaired: different scenes, different counts. A true-colour
rendering of an MS image (its bands ``TRUE_COLOUR_BANDS``) looks like an RGB image of the
same class taken by a different sensor, which is what the SFM matcher trains on.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import pathlib
import shutil
from typing import NamedTuple

import numpy as np
from PIL import Image

from sembridge_jax.data import parallel

# The scene model lives in its own module; its names are part of this one's API.
from sembridge_jax.data.synthetic_scenes import (  # noqa: F401
    VISIBLE_BANDS,
    TRUE_COLOUR_BANDS,
    MIN_MS_BANDS,
    REFLECTANCE_SCALE,
    MATERIAL_VARIABILITY,
    VISIBLE_PAIR_CONTRAST,
    NONVISIBLE_PAIR_CONTRAST,
    PAIR_FRACTION,
    RGB_REGION_TEXTURE_SCALE,
    MS_PIXEL_SIZE_M,
    TEXTURE_FAMILIES,
    ClassStructure,
    RegionPrototypes,
    synthetic_class_names,
    class_structure,
    make_prototypes,
    abundance_map,
    render_reflectance,
    ms_sensor,
    rgb_camera,
    true_colour,
)

PAIR_EVIDENCE = ("nonvisible", "visible")
# Test-only RGB scenes per class (dataset 1.2.0): with 120 per class and a 0.2 test
# fraction the RGB test split held 240 images, ~3 points of binomial noise on one run's
# OA; 480 more per class make it 5,040 (docs/dataset_versions.md).
EXTRA_RGB_TEST_PER_CLASS = 480
EXTRA_RGB_TEST_FOLDER = "RGB_TEST"   # beside MS/ and RGB/; the builder adds it to rgb_test
# From this many images on, classes render in parallel processes (S2S_EU's size has
# 54,000; a worker's start, a fresh interpreter importing this package, costs seconds).
PARALLEL_MIN_IMAGES = 20_000

@dataclasses.dataclass(frozen=True)
class SyntheticParameters:
  """Everything that determines the generated files (with the generator's version)."""
  num_classes: int = 10
  ms_bands: int = 10
  image_size: int = 32
  ms_per_class: int = 120
  rgb_per_class: int = 120
  semantic_overlap: float = 0.5
  scene_variation: float = 0.5
  # RGB scenes per class drawn for the test split only (generator version 3), after and
  # independent of the ``rgb_per_class`` scenes, so the training split is unchanged.
  extra_rgb_test_per_class: int = EXTRA_RGB_TEST_PER_CLASS
  # Where a confusable pair's classes differ: "nonvisible" (the default: the RGB camera
  # cannot tell them apart) or "visible" (the contrasts swap bands: every class is
  # visible to the camera; for the regime map, bench/regimes.py).
  pair_evidence: str = "nonvisible"
  seed: int = 0

  def validate(self) -> "SyntheticParameters":
    checks = (
        ("num_classes", self.num_classes >= 2, "an integer >= 2"),
        ("ms_bands", self.ms_bands >= MIN_MS_BANDS, f"an integer >= {MIN_MS_BANDS}"),
        ("image_size", self.image_size >= 8, "an integer >= 8"),
        ("ms_per_class", self.ms_per_class >= 1, "an integer >= 1"),
        ("rgb_per_class", self.rgb_per_class >= 1, "an integer >= 1"),
        ("extra_rgb_test_per_class", self.extra_rgb_test_per_class >= 0, "an integer >= 0"),
        ("semantic_overlap", 0.0 <= self.semantic_overlap <= 1.0, "a number in [0, 1]"),
        ("scene_variation", 0.0 <= self.scene_variation <= 1.0, "a number in [0, 1]"),
        ("pair_evidence", self.pair_evidence in PAIR_EVIDENCE, f"one of {PAIR_EVIDENCE}"),
        ("seed", self.seed >= 0, "a non-negative integer"),
    )
    for name, ok, expected in checks:
      if not ok:
        raise ValueError(f"synthetic benchmark: {name}={getattr(self, name)!r} is invalid; "
                         f"expected {expected}")
    return self


def _write_geotiff(path: pathlib.Path, dn: np.ndarray, origin: tuple[float, float]) -> None:
  import rasterio
  from affine import Affine
  height, width, bands = dn.shape
  with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=bands,
                     dtype="uint16", crs="EPSG:32632",
                     # North-up: x grows east, y decreases southwards.
                     transform=Affine(MS_PIXEL_SIZE_M, 0.0, origin[0],
                                      0.0, -MS_PIXEL_SIZE_M, origin[1])) as dst:
    dst.write(np.moveaxis(dn, -1, 0))


def _jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


# 2: the scene condition (version 1 = scene_variation=0); 3: test-only RGB scenes
# (version 2 = extra_rgb_test_per_class=0).
GENERATOR_VERSION = 3
MANIFEST_NAME = "GENERATOR.json"


class Scene(NamedTuple):
  """One generated image before it is written."""
  modality: str           # "MS" or "RGB"
  relative_path: str      # e.g. "RGB/class_03/class_03_0007.jpg"
  pixels: np.ndarray      # uint16 (H, W, B) DN for MS, uint8 (H, W, 3) for RGB
  descriptor: np.ndarray  # (3,) the scene's physical content, see `scene_descriptor`
  origin: tuple[float, float] | None  # GeoTIFF origin (MS only)


def scene_descriptor(reflectance: np.ndarray) -> np.ndarray:
  """What a scene *is*, independent of the sensor that images it: the chromaticity
  ``(r, g, b) / (r + g + b)`` of its mean true-colour reflectance.

  Chromaticity carries the scene's materials and their mixing proportions (which vary
  from scene to scene inside a class) and drops overall brightness, which the sensors'
  gain and illumination change anyway. Two scenes with close descriptors look alike to a
  sensor-invariant observer; the match report uses it as ground truth for how well SFM
  pairs students with similar-looking teachers (something no real benchmark provides).
  """
  rgb = reflectance[..., list(TRUE_COLOUR_BANDS)].reshape(-1, 3).mean(axis=0)
  return (rgb / rgb.sum()).astype(np.float32)


def iter_scenes(params: SyntheticParameters):
  """Yields every `Scene` of the benchmark in a fixed order (deterministic)."""
  params = params.validate()
  for label in range(params.num_classes):
    yield from iter_class_scenes(params, label)


def iter_class_scenes(params: SyntheticParameters, label: int):
  """Yields the `Scene` s of class ``label`` in a fixed order. Each class draws from
  random streams of its own, so classes can be rendered in any order or in parallel."""
  _, ms_protos, rgb_protos = make_prototypes(params)
  name = synthetic_class_names(params.num_classes)[label]
  ms_rng = np.random.default_rng([params.seed, 10, label])
  for i in range(params.ms_per_class):
    cube = render_reflectance(ms_rng, ms_protos, label, params.image_size)
    origin = (300_000.0 + ms_rng.integers(0, 10_000) * 640.0,
              5_000_000.0 + ms_rng.integers(0, 10_000) * 640.0)
    yield Scene("MS", f"MS/{name}/{name}_{i:04d}.tif", ms_sensor(ms_rng, cube),
                scene_descriptor(cube), origin)
  # The test-only scenes draw from a stream of their own: the training scenes are the
  # same whatever their count is.
  for stream, folder, count in ((20, "RGB", params.rgb_per_class),
                                (30, EXTRA_RGB_TEST_FOLDER, params.extra_rgb_test_per_class)):
    rgb_rng = np.random.default_rng([params.seed, stream, label])
    for i in range(count):
      cube = render_reflectance(rgb_rng, rgb_protos, label, params.image_size,
                                RGB_REGION_TEXTURE_SCALE)
      yield Scene("RGB", f"{folder}/{name}/{name}_{i:04d}.jpg", rgb_camera(rgb_rng, cube),
                  scene_descriptor(cube), None)


def scene_descriptors(params: SyntheticParameters) -> dict[str, np.ndarray]:
  """``relative_path -> scene_descriptor`` for every image (regenerated, not read)."""
  return {scene.relative_path: scene.descriptor for scene in iter_scenes(params)}


def _write_class(root: pathlib.Path, params: SyntheticParameters, label: int) -> None:
  """Writes class ``label``'s files (one worker's share of `generate_synthetic_benchmark`)."""
  for scene in iter_class_scenes(params, label):
    if scene.modality == "MS":
      _write_geotiff(root / scene.relative_path, scene.pixels, scene.origin)
    else:
      (root / scene.relative_path).write_bytes(_jpeg_bytes(scene.pixels))


def generate_synthetic_benchmark(root: str | pathlib.Path, *, num_classes: int = 10,
                                 ms_bands: int = 10, image_size: int = 32,
                                 ms_per_class: int = 120, rgb_per_class: int = 120,
                                 semantic_overlap: float = 0.5, scene_variation: float = 0.5,
                                 extra_rgb_test_per_class: int = EXTRA_RGB_TEST_PER_CLASS,
                                 pair_evidence: str = "nonvisible",
                                 seed: int = 0, workers: int | None = None) -> pathlib.Path:
  """Writes ``root/MS/<class>/*.tif`` (uint16 GeoTIFF) and ``root/RGB/<class>/*.jpg``,
  and the test-only RGB scenes under ``root/RGB_TEST/<class>/*.jpg``.

  Deterministic: the same arguments give byte-identical files. Also writes
  ``root/GENERATOR.json`` (parameters, class names and which classes are RGB-confusable).
  An existing ``root/MS`` or ``root/RGB`` is replaced. Returns ``root``.

  ``workers`` processes render the classes in parallel (default: one per class, at most
  `parallel.workers_for`'s count) once the benchmark has ``PARALLEL_MIN_IMAGES`` images
  or more; 1 renders in this process. Every class draws from random streams of its own,
  so the files are the same whatever the number of workers.
  """
  params = SyntheticParameters(
      num_classes=num_classes, ms_bands=ms_bands, image_size=image_size,
      ms_per_class=ms_per_class, rgb_per_class=rgb_per_class,
      semantic_overlap=float(semantic_overlap), scene_variation=float(scene_variation),
      extra_rgb_test_per_class=extra_rgb_test_per_class, pair_evidence=pair_evidence,
      seed=seed).validate()
  root = pathlib.Path(root)
  structure, _, _ = make_prototypes(params)
  names = synthetic_class_names(num_classes)
  folders = ("MS", "RGB", EXTRA_RGB_TEST_FOLDER)
  for folder in folders:
    shutil.rmtree(root / folder, ignore_errors=True)
  for name in names:
    for folder in folders[:2] + (folders[2:] if params.extra_rgb_test_per_class else ()):
      (root / folder / name).mkdir(parents=True)
  write = functools.partial(_write_class, root, params)
  images = params.num_classes * (params.ms_per_class + params.rgb_per_class
                                 + params.extra_rgb_test_per_class)
  if images < PARALLEL_MIN_IMAGES:
    workers = 1
  elif workers is None:  # $SEMBRIDGE_JAX_BUILD_WORKERS and the cap apply here too
    workers = min(params.num_classes, parallel.workers_for(images, minimum=0))
  list(parallel.ordered_map(write, range(params.num_classes), workers=workers, chunk_size=1))
  manifest = {
      "generator_version": GENERATOR_VERSION,
      "parameters": dataclasses.asdict(params),
      "class_names": list(names),
      "rgb_confusable_pairs": [[names[a], names[b]] for a, b in structure.pairs],
      "singletons": [names[c] for c in structure.singletons],
      "visible_bands": list(VISIBLE_BANDS),
      "true_colour_bands": list(TRUE_COLOUR_BANDS),
  }
  (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
  return root
