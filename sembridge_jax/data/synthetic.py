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
import io
import json
import pathlib
import shutil
from typing import NamedTuple

import numpy as np
from PIL import Image

# Band layout of the MS sensor, 0-based (the 10 bands of S2S_EU: Sentinel-2 B1..B7, B10..B12):
# 0 aerosol, 1 blue, 2 green, 3 red, 4..6 red edge, 7 cirrus, 8..9 SWIR. Bands beyond 9 are
# further non-visible bands.
VISIBLE_BANDS = (1, 2, 3)        # blue, green, red: what an RGB camera integrates
TRUE_COLOUR_BANDS = (3, 2, 1)    # red, green, blue order, for a true-colour rendering
MIN_MS_BANDS = 5                 # aerosol + 3 visible + at least one band beyond red

REFLECTANCE_SCALE = 10_000       # stored DN = reflectance * 10000 (Sentinel-2 L1C convention)
MATERIAL_VARIABILITY = 0.08      # per-image, per-band log-normal sigma of material spectra
VISIBLE_PAIR_CONTRAST = 0.06     # relative visible difference inside a confusable pair
NONVISIBLE_PAIR_CONTRAST = 0.8   # relative non-visible difference inside a confusable pair
PAIR_FRACTION = 0.4              # number of confusable pairs = round(PAIR_FRACTION * K), >= 1
RGB_REGION_TEXTURE_SCALE = 1.35  # RGB region: coarser ground sampling -> higher spatial frequency
MS_PIXEL_SIZE_M = 10.0

# Texture parameter vector (columns of TEXTURE_FAMILIES):
# grating weight, grating frequency (cycles/px), grid weight, noise weight,
# log2 noise correlation length (px), line weight, contrast.
TEXTURE_FAMILIES = np.array([
    [1.0, 0.20, 0.0, 0.25, 0.0, 0.0, 0.45],   # fine stripes (crop rows)
    [1.0, 0.07, 0.0, 0.25, 1.0, 0.0, 0.45],   # coarse stripes (fields)
    [0.0, 0.10, 0.0, 1.00, 2.0, 0.0, 0.40],   # blobs (forest, shrub)
    [0.0, 0.10, 0.0, 1.00, -0.5, 0.0, 0.35],  # fine speckle (urban)
    [0.2, 0.16, 1.0, 0.30, 0.0, 0.0, 0.40],   # grid (residential)
    [0.0, 0.10, 0.0, 0.40, 3.0, 0.0, 0.15],   # smooth (water)
    [0.0, 0.10, 0.0, 0.35, 1.0, 1.0, 0.50],   # linear feature (river, highway)
    [0.5, 0.12, 0.5, 0.60, 1.5, 0.3, 0.35],   # mixed patches (pasture)
])
_FREQUENCY_COLUMN, _LOG_LENGTH_COLUMN = 1, 4


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
  seed: int = 0

  def validate(self) -> "SyntheticParameters":
    checks = (
        ("num_classes", self.num_classes >= 2, "an integer >= 2"),
        ("ms_bands", self.ms_bands >= MIN_MS_BANDS, f"an integer >= {MIN_MS_BANDS}"),
        ("image_size", self.image_size >= 8, "an integer >= 8"),
        ("ms_per_class", self.ms_per_class >= 1, "an integer >= 1"),
        ("rgb_per_class", self.rgb_per_class >= 1, "an integer >= 1"),
        ("semantic_overlap", 0.0 <= self.semantic_overlap <= 1.0, "a number in [0, 1]"),
        ("scene_variation", 0.0 <= self.scene_variation <= 1.0, "a number in [0, 1]"),
        ("seed", self.seed >= 0, "a non-negative integer"),
    )
    for name, ok, expected in checks:
      if not ok:
        raise ValueError(f"synthetic benchmark: {name}={getattr(self, name)!r} is invalid; "
                         f"expected {expected}")
    return self


class ClassStructure(NamedTuple):
  """Which classes an RGB camera confuses: ``pairs`` (a, b) and ``singletons``."""
  group: np.ndarray        # (K,) texture/secondary-material group of each class
  pair_sign: np.ndarray    # (K,) -1 / +1 for the two pair members, 0 for singletons
  pairs: tuple[tuple[int, int], ...]
  singletons: tuple[int, ...]


class RegionPrototypes(NamedTuple):
  """Class-conditional appearance of one region."""
  primary: np.ndarray      # (K, B) reflectance of the class's primary material
  secondary: np.ndarray    # (K, B) reflectance of its secondary material
  texture: np.ndarray      # (K, P) texture parameters (columns of TEXTURE_FAMILIES)
  condition: np.ndarray    # (K, B) log-reflectance response to the scene condition


def synthetic_class_names(num_classes: int) -> tuple[str, ...]:
  """Class folder names of the synthetic benchmark: ``class_00``, ``class_01``, ..."""
  return tuple(f"class_{k:02d}" for k in range(num_classes))


def class_structure(num_classes: int, rng: np.random.Generator) -> ClassStructure:
  """Randomly assigns ``round(PAIR_FRACTION * K)`` pairs (at least one) and singletons."""
  num_pairs = min(num_classes // 2, max(1, int(round(PAIR_FRACTION * num_classes))))
  order = rng.permutation(num_classes)
  pairs = tuple((int(order[2 * i]), int(order[2 * i + 1])) for i in range(num_pairs))
  singletons = tuple(int(c) for c in order[2 * num_pairs:])
  group = np.empty(num_classes, np.int64)
  pair_sign = np.zeros(num_classes)
  for g, (a, b) in enumerate(pairs):
    group[[a, b]] = g
    pair_sign[a], pair_sign[b] = -1.0, 1.0
  for g, c in enumerate(singletons, start=num_pairs):
    group[c] = g
  return ClassStructure(group, pair_sign, pairs, singletons)


def _draw_region(rng: np.random.Generator, structure: ClassStructure, ms_bands: int,
                 visible_direction: np.ndarray, nonvisible_direction: np.ndarray
                 ) -> RegionPrototypes:
  """One region's prototypes: per-group materials and texture, then the pair offsets.

  The pair offsets are multiplicative along directions shared by all regions, so an
  interpolation between regions keeps each pair's contrast.
  """
  num_groups = int(structure.group.max()) + 1
  primary = rng.uniform(0.04, 0.45, (num_groups, ms_bands))
  secondary = rng.uniform(0.04, 0.45, (num_groups, ms_bands))
  families = rng.permutation(max(num_groups, len(TEXTURE_FAMILIES))) % len(TEXTURE_FAMILIES)
  texture = TEXTURE_FAMILIES[families[:num_groups]].copy()
  # Scale and weight jitter so that groups sharing a family (K > 16) still differ.
  texture[:, _FREQUENCY_COLUMN] *= np.exp(rng.normal(0.0, 0.15, num_groups))
  texture[:, _LOG_LENGTH_COLUMN] += rng.normal(0.0, 0.3, num_groups)
  texture[:, 0] = np.clip(texture[:, 0] + rng.normal(0, 0.1, num_groups), 0, None)

  class_primary = primary[structure.group].copy()
  visible = np.zeros(ms_bands, bool)
  visible[list(VISIBLE_BANDS)] = True
  sign = structure.pair_sign[:, None]
  class_primary[:, visible] *= 1.0 + sign * (VISIBLE_PAIR_CONTRAST / 2) * visible_direction[
      structure.group]
  # Both materials carry the non-visible difference (like moisture or chlorophyll content
  # changing a whole scene), so the MS sensor sees it in every pixel.
  nonvisible_factor = 1.0 + sign * (NONVISIBLE_PAIR_CONTRAST / 2) * nonvisible_direction[
      structure.group]
  class_primary[:, ~visible] *= nonvisible_factor
  class_secondary = secondary[structure.group].copy()
  class_secondary[:, ~visible] *= nonvisible_factor
  return RegionPrototypes(class_primary, class_secondary, texture[structure.group],
                          np.zeros_like(class_primary))


def _mix_regions(shared: RegionPrototypes, regional: RegionPrototypes,
                 overlap: float) -> RegionPrototypes:
  return RegionPrototypes(*(overlap * s + (1.0 - overlap) * r for s, r in zip(shared, regional)))


def make_prototypes(params: SyntheticParameters
                    ) -> tuple[ClassStructure, RegionPrototypes, RegionPrototypes]:
  """(structure, MS-region prototypes, RGB-region prototypes), a pure function of ``params``."""
  rng = np.random.default_rng([params.seed, 0])
  structure = class_structure(params.num_classes, rng)
  num_groups = int(structure.group.max()) + 1
  num_nonvisible = params.ms_bands - len(VISIBLE_BANDS)
  # Unit-norm visible direction (all bands move together, up to sign: a subtle tint) and a
  # +-1 non-visible pattern (every non-visible band differs strongly).
  visible_direction = rng.choice([-1.0, 1.0], (num_groups, len(VISIBLE_BANDS)))
  nonvisible_direction = rng.choice([-1.0, 1.0], (num_groups, num_nonvisible))
  draw = lambda r: _draw_region(r, structure, params.ms_bands, visible_direction,
                                nonvisible_direction)
  shared = draw(np.random.default_rng([params.seed, 1]))
  ms_region = draw(np.random.default_rng([params.seed, 2]))
  rgb_region = draw(np.random.default_rng([params.seed, 3]))
  overlap = params.semantic_overlap
  # The condition response is physics, not regional style: both regions share it. Unit
  # RMS over the bands, one per class group (a pair's classes respond alike).
  response = np.random.default_rng([params.seed, 4]).normal(size=(num_groups, params.ms_bands))
  response /= np.sqrt(np.mean(response ** 2, axis=1, keepdims=True))
  condition = params.scene_variation * response[structure.group]
  return structure, *(_mix_regions(shared, regional, overlap)._replace(condition=condition)
                      for regional in (ms_region, rgb_region))


def _smooth_noise(rng: np.random.Generator, size: int, length: float) -> np.ndarray:
  """Unit-variance Gaussian random field with correlation length ``length`` pixels."""
  white = rng.normal(size=(size, size))
  freq = np.fft.fftfreq(size)
  radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
  field = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2 * (np.pi * length) ** 2 * radius2)).real
  return (field - field.mean()) / (field.std() + 1e-8)


def abundance_map(rng: np.random.Generator, texture: np.ndarray, size: int,
                  frequency_scale: float = 1.0) -> np.ndarray:
  """The primary material's abundance in [0, 1] for one scene, (size, size)."""
  grating_w, frequency, grid_w, noise_w, log_length, line_w, contrast = texture
  frequency = frequency * frequency_scale
  length = 2.0 ** log_length / frequency_scale
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  theta = rng.uniform(0, np.pi)
  u = x * np.cos(theta) + y * np.sin(theta)
  v = -x * np.sin(theta) + y * np.cos(theta)
  pattern = grating_w * np.cos(2 * np.pi * frequency * u + rng.uniform(0, 2 * np.pi))
  pattern += grid_w * 0.5 * (np.cos(2 * np.pi * frequency * u + rng.uniform(0, 2 * np.pi))
                             + np.cos(2 * np.pi * frequency * v + rng.uniform(0, 2 * np.pi)))
  pattern += noise_w * _smooth_noise(rng, size, max(length, 0.3))
  offset = rng.uniform(-0.25, 0.25) * size
  pattern += line_w * 2.0 * (np.exp(-0.5 * ((v - size / 2 - offset) / (0.08 * size)) ** 2) - 0.3)
  return np.clip(0.5 + contrast * pattern, 0.0, 1.0)


def render_reflectance(rng: np.random.Generator, prototypes: RegionPrototypes, label: int,
                       size: int, frequency_scale: float = 1.0) -> np.ndarray:
  """A scene's reflectance cube (size, size, B) for class ``label``."""
  bands = prototypes.primary.shape[1]
  # Drawn only when there is a condition, so that scene_variation=0 reproduces version 1.
  condition = (np.exp(rng.uniform(-1.0, 1.0) * prototypes.condition[label])
               if prototypes.condition[label].any() else 1.0)
  primary = (prototypes.primary[label] * condition
             * np.exp(rng.normal(0, MATERIAL_VARIABILITY, bands)))
  secondary = (prototypes.secondary[label] * condition
               * np.exp(rng.normal(0, MATERIAL_VARIABILITY, bands)))
  a = abundance_map(rng, prototypes.texture[label], size, frequency_scale)[..., None]
  return a * primary + (1.0 - a) * secondary


def ms_sensor(rng: np.random.Generator, reflectance: np.ndarray) -> np.ndarray:
  """Calibrated MS sensor: small gain jitter and noise, uint16 DN (H, W, B)."""
  gain = rng.uniform(0.9, 1.1)
  dn = reflectance * gain * REFLECTANCE_SCALE + rng.normal(0.0, 40.0, reflectance.shape)
  return np.clip(np.rint(dn), 1, 65535).astype(np.uint16)


# Colour crosstalk of the consumer camera, rows: R, G, B outputs; columns: red, green, blue.
_CAMERA_MIXING = np.array([[0.86, 0.11, 0.03],
                           [0.07, 0.85, 0.08],
                           [0.02, 0.12, 0.86]])


def rgb_camera(rng: np.random.Generator, reflectance: np.ndarray) -> np.ndarray:
  """Consumer RGB camera under variable illumination: uint8 (H, W, 3)."""
  red_green_blue = reflectance[..., list(TRUE_COLOUR_BANDS)]
  linear = red_green_blue @ _CAMERA_MIXING.T
  brightness = rng.uniform(0.7, 1.3)
  colour_cast = np.exp(rng.normal(0.0, 0.05, 3))
  haze = rng.uniform(0.0, 0.04) * np.array([0.7, 0.85, 1.0])
  radiance = linear * brightness * colour_cast + haze
  # Mild optical blur: the RGB camera's point-spread function.
  radiance = 0.6 * radiance + 0.1 * (np.roll(radiance, 1, 0) + np.roll(radiance, -1, 0)
                                     + np.roll(radiance, 1, 1) + np.roll(radiance, -1, 1))
  tone = np.clip(radiance / 0.5, 0.0, 1.0) ** (1 / 2.2)
  pixels = 255.0 * tone + rng.normal(0.0, 2.0, tone.shape)
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def true_colour(reflectance_or_dn: np.ndarray) -> np.ndarray:
  """Linear true-colour rendering in [0, 1] (H, W, 3), scaled by the image's maximum."""
  rgb = reflectance_or_dn[..., list(TRUE_COLOUR_BANDS)].astype(np.float64)
  return rgb / max(float(rgb.max()), 1e-12)


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


GENERATOR_VERSION = 2  # 2: the scene condition (version 1 = scene_variation=0)
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
  structure, ms_protos, rgb_protos = make_prototypes(params)
  names = synthetic_class_names(params.num_classes)
  for label, name in enumerate(names):
    ms_rng = np.random.default_rng([params.seed, 10, label])
    for i in range(params.ms_per_class):
      cube = render_reflectance(ms_rng, ms_protos, label, params.image_size)
      origin = (300_000.0 + ms_rng.integers(0, 10_000) * 640.0,
                5_000_000.0 + ms_rng.integers(0, 10_000) * 640.0)
      yield Scene("MS", f"MS/{name}/{name}_{i:04d}.tif", ms_sensor(ms_rng, cube),
                  scene_descriptor(cube), origin)
    rgb_rng = np.random.default_rng([params.seed, 20, label])
    for i in range(params.rgb_per_class):
      cube = render_reflectance(rgb_rng, rgb_protos, label, params.image_size,
                                RGB_REGION_TEXTURE_SCALE)
      yield Scene("RGB", f"RGB/{name}/{name}_{i:04d}.jpg", rgb_camera(rgb_rng, cube),
                  scene_descriptor(cube), None)


def scene_descriptors(params: SyntheticParameters) -> dict[str, np.ndarray]:
  """``relative_path -> scene_descriptor`` for every image (regenerated, not read)."""
  return {scene.relative_path: scene.descriptor for scene in iter_scenes(params)}


def generate_synthetic_benchmark(root: str | pathlib.Path, *, num_classes: int = 10,
                                 ms_bands: int = 10, image_size: int = 32,
                                 ms_per_class: int = 120, rgb_per_class: int = 120,
                                 semantic_overlap: float = 0.5, scene_variation: float = 0.5,
                                 seed: int = 0) -> pathlib.Path:
  """Writes ``root/MS/<class>/*.tif`` (uint16 GeoTIFF) and ``root/RGB/<class>/*.jpg``.

  Deterministic: the same arguments give byte-identical files. Also writes
  ``root/GENERATOR.json`` (parameters, class names and which classes are RGB-confusable).
  An existing ``root/MS`` or ``root/RGB`` is replaced. Returns ``root``.
  """
  params = SyntheticParameters(
      num_classes=num_classes, ms_bands=ms_bands, image_size=image_size,
      ms_per_class=ms_per_class, rgb_per_class=rgb_per_class,
      semantic_overlap=float(semantic_overlap), scene_variation=float(scene_variation),
      seed=seed).validate()
  root = pathlib.Path(root)
  structure, _, _ = make_prototypes(params)
  names = synthetic_class_names(num_classes)
  for modality in ("MS", "RGB"):
    shutil.rmtree(root / modality, ignore_errors=True)
  for name in names:
    (root / "MS" / name).mkdir(parents=True)
    (root / "RGB" / name).mkdir(parents=True)
  for scene in iter_scenes(params):
    if scene.modality == "MS":
      _write_geotiff(root / scene.relative_path, scene.pixels, scene.origin)
    else:
      (root / scene.relative_path).write_bytes(_jpeg_bytes(scene.pixels))
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
