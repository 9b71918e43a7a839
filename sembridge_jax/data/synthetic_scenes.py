"""The synthetic benchmark's scene model: class structure, region prototypes, rendering
and the two sensors (the physics; `sembridge_jax.data.synthetic` says what it models and
writes the files)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
                 visible_direction: np.ndarray, nonvisible_direction: np.ndarray,
                 pair_evidence: str = "nonvisible") -> RegionPrototypes:
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
  class_secondary = secondary[structure.group].copy()
  visible = np.zeros(ms_bands, bool)
  visible[list(VISIBLE_BANDS)] = True
  sign = structure.pair_sign[:, None]
  subtle, strong = VISIBLE_PAIR_CONTRAST, NONVISIBLE_PAIR_CONTRAST
  if pair_evidence == "visible":
    # The same pairs, the contrasts swapped: strong in the visible bands of both
    # materials, subtle in the primary material's non-visible bands.
    visible_factor = 1.0 + sign * (strong / 2) * visible_direction[structure.group]
    class_primary[:, visible] *= visible_factor
    class_secondary[:, visible] *= visible_factor
    class_primary[:, ~visible] *= 1.0 + sign * (subtle / 2) * nonvisible_direction[
        structure.group]
    return RegionPrototypes(class_primary, class_secondary, texture[structure.group],
                            np.zeros_like(class_primary))
  class_primary[:, visible] *= 1.0 + sign * (subtle / 2) * visible_direction[structure.group]
  # Both materials carry the non-visible difference (like moisture or chlorophyll content
  # changing a whole scene), so the MS sensor sees it in every pixel.
  nonvisible_factor = 1.0 + sign * (strong / 2) * nonvisible_direction[structure.group]
  class_primary[:, ~visible] *= nonvisible_factor
  class_secondary[:, ~visible] *= nonvisible_factor
  return RegionPrototypes(class_primary, class_secondary, texture[structure.group],
                          np.zeros_like(class_primary))


def _mix_regions(shared: RegionPrototypes, regional: RegionPrototypes,
                 overlap: float) -> RegionPrototypes:
  return RegionPrototypes(*(overlap * s + (1.0 - overlap) * r for s, r in zip(shared, regional)))


def make_prototypes(params  # a `sembridge_jax.data.synthetic.SyntheticParameters`
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
                                nonvisible_direction, params.pair_evidence)
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
