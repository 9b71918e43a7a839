"""What each benchmark dataset looks like on disk (METHOD section 5), as a registry.

A `DatasetSpec` is the single source of truth for a dataset's class vocabulary, file
formats, MS band selection and image sizes; the TFDS builder configs, the file readers
and the input pipeline all read it.
"""

from __future__ import annotations

import dataclasses
import types

from sembridge_jax.data import synthetic

MS_EXTENSIONS = types.MappingProxyType({"geotiff": (".tif", ".tiff"), "mat": (".mat",)})
RGB_EXTENSIONS = (".jpg", ".jpeg")
MAT_KEY = "msi"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The on-disk layout of one dataset root ``<root_name>/{MS,RGB}/<class>/<file>``.

  Attributes:
    name: registry key and TFDS config name, e.g. ``"s2s_eu"``.
    root_name: folder of the dataset root inside a manual_dir, e.g. ``"S2S_EU"``.
    class_names: the class folders, in label order.
    ms_format: ``"geotiff"`` (rasterio) or ``"mat"`` (scipy, key ``msi``, H x W x bands).
    ms_source_bands: number of bands every MS file must have.
    ms_band_selection: 1-based source bands kept, in order; ``None`` keeps all.
    ms_size: expected MS height = width; ``None``: any, but the same for every file.
    rgb_size: expected RGB height = width; ``None``: any, but the same for every file.
    true_colour_bands: 0-based indices *into the stored bands* of red, green, blue.
    description: one line for the TFDS config.
  """
  name: str
  root_name: str
  class_names: tuple[str, ...]
  ms_format: str
  ms_source_bands: int
  ms_band_selection: tuple[int, ...] | None
  ms_size: int | None
  rgb_size: int | None
  true_colour_bands: tuple[int, int, int]
  description: str

  @property
  def ms_channels(self) -> int:
    """Number of stored (selected) MS bands."""
    return len(self.ms_band_selection) if self.ms_band_selection else self.ms_source_bands

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def ms_extensions(self) -> tuple[str, ...]:
    return MS_EXTENSIONS[self.ms_format]


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (
        DatasetSpec(
            name="s2s_eu", root_name="S2S_EU",
            class_names=("SeaLake", "River", "Residential", "PermanentCrop", "Pasture",
                         "Industrial", "Highway", "HerbaceousVegetation", "Forest", "AnnualCrop"),
            ms_format="geotiff", ms_source_bands=13,
            # 1-based source bands 1-7, 10, 11, 12 (as the authors' loader). In EuroSAT's
            # band order (B01-B08, B08A, B09-B12) that is B01-B07, B09, B10, B11. Stored band
            # k is source band ms_band_selection[k]; true colour B04, B03, B02 -> stored 3, 2, 1.
            ms_band_selection=(1, 2, 3, 4, 5, 6, 7, 10, 11, 12), ms_size=64, rgb_size=64,
            true_colour_bands=(3, 2, 1),
            description="Sentinel-2 MS (EuroSAT, Europe) -> RGB (another region), 10 classes."),
        DatasetSpec(
            name="s2s_cn", root_name="S2S_CN",
            class_names=("beach", "circularfarmland", "cloud", "desert", "forest", "mountain",
                         "rectangularfarmland", "residential", "river", "snowberg"),
            ms_format="geotiff", ms_source_bands=14, ms_band_selection=None, ms_size=None,
            rgb_size=128,
            # Tiangong-2 wide-band spectrometer VNIR bands, roughly 45 nm apart from 403 nm:
            # ~673 nm (red), ~538 nm (green), ~448 nm (blue). Configurable (data.rgb_bands).
            true_colour_bands=(6, 3, 1),
            description="Tiangong-2 14-band MS (China) -> RGB, 10 classes."),
        DatasetSpec(
            name="m2s_gl", root_name="M2S_GL",
            class_names=("forest", "agriculture", "shrub", "pasture", "water_body", "sea",
                         "industry", "grassland", "water_course", "crop", "sport", "transport",
                         "beach", "airport", "port"),
            ms_format="mat", ms_source_bands=10, ms_band_selection=None, ms_size=None,
            rgb_size=128,
            # Assumes the usual 10-band Sentinel-2 stack B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
            true_colour_bands=(2, 1, 0),
            description="10-band MS (.mat, global) -> RGB, 15 classes."),
    )
}
# The public EuroSAT archives, cut into disjoint MS and RGB scenes (or regions): see
# sembridge_jax.data.eurosat. Same vocabulary and band selection as S2S_EU.
EUROSAT_ASYM = "eurosat_asym"
EUROSAT_SPEC = dataclasses.replace(
    DATASETS["s2s_eu"], name=EUROSAT_ASYM, root_name="EuroSAT",
    class_names=("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                 "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"),
    description="EuroSAT MS and RGB archives, disjoint scenes (or UTM zones) per modality, "
                "10 classes.")

SYNTHETIC = "synthetic"
DATASET_NAMES = (*DATASETS, EUROSAT_ASYM, SYNTHETIC)


def synthetic_spec(params: synthetic.SyntheticParameters) -> DatasetSpec:
  """The spec of the generated synthetic benchmark (GeoTIFF MS, JPEG RGB)."""
  return DatasetSpec(
      name=SYNTHETIC, root_name="SYNTHETIC",
      class_names=synthetic.synthetic_class_names(params.num_classes),
      ms_format="geotiff", ms_source_bands=params.ms_bands, ms_band_selection=None,
      ms_size=params.image_size, rgb_size=params.image_size,
      true_colour_bands=synthetic.TRUE_COLOUR_BANDS,
      description="Seeded synthetic asymmetric MS/RGB benchmark (sembridge_jax.data.synthetic).")


def get_spec(name: str, synthetic_params: synthetic.SyntheticParameters | None = None
             ) -> DatasetSpec:
  """The spec registered under ``name`` (``synthetic`` is built from its parameters)."""
  if name == SYNTHETIC:
    return synthetic_spec(synthetic_params or synthetic.SyntheticParameters())
  if name == EUROSAT_ASYM:
    return EUROSAT_SPEC
  if name not in DATASETS:
    raise ValueError(f"dataset name={name!r} is unknown; allowed: {list(DATASET_NAMES)}")
  return DATASETS[name]
