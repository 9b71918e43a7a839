"""TFDS builder ``ackd_benchmark``: unpaired MS / RGB splits of the SemBridge benchmark.

Records (one feature dict for both modalities; the split says which one is filled):

  ``ms_image``  uint16 (H, W, C), zlib-compressed raw digital numbers (band-selected);
                empty (0, 0, C) in RGB records.
  ``rgb_jpeg``  the RGB file's original JPEG bytes; empty in MS records.
  ``label``     ClassLabel with the dataset's class names.
  ``filename``  path relative to the dataset root, e.g. ``MS/Forest/Forest_1.tif``.
  ``id``        stable id within the modality (files ordered by label, then name).

Splits ``ms_train``, ``ms_test``, ``rgb_train``, ``rgb_test`` are written unshuffled in
id order (``disable_shuffling``), so record index ``i`` of a split has id
``metadata["splits"][split]["ids"][i]``. Building never needs TensorFlow; every file is
read and checked (and the MS train statistics computed) before anything is written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from sembridge_jax.data import (archives, errors, eurosat, layout, parallel, readers, specs,
                                synthetic)

SPLITS = ("ms_train", "ms_test", "rgb_train", "rgb_test")
METADATA_FORMAT = 1
DEFAULT_TEST_FRACTION = 0.2


@dataclasses.dataclass
class AckdBenchmarkConfig(tfds.core.BuilderConfig):
  """A dataset (``specs.DATASETS`` key or ``synthetic``) plus how to split and fetch it.

  Attributes:
    dataset: which `DatasetSpec`.
    split_seed: seed of the stratified train/test split of each modality.
    test_fraction: fraction of each class held out for testing.
    archive_url: optional URL of an archive (zip/tar) of the dataset root, fetched with
      TFDS's download manager instead of reading the manual_dir.
    synthetic: generator parameters of the ``synthetic`` dataset.
    split_by: ``eurosat_asym`` only: ``"scene"`` or ``"region"`` (`sembridge_jax.data.eurosat`).
  """
  dataset: str = ""
  split_seed: int = 0
  test_fraction: float = DEFAULT_TEST_FRACTION
  archive_url: str = ""
  synthetic: synthetic.SyntheticParameters | None = None
  split_by: str = "scene"

  @property
  def spec(self) -> specs.DatasetSpec:
    return specs.get_spec(self.dataset, self.synthetic)


def config_name(dataset: str, *, split_seed: int = 0,
                test_fraction: float = DEFAULT_TEST_FRACTION, archive_url: str = "",
                synthetic_params: synthetic.SyntheticParameters | None = None,
                split_by: str = "scene") -> str:
  """``dataset`` plus every non-default setting, so different data never share a folder
  (an archive URL adds a short hash of itself: another archive may hold other files)."""
  parts = [dataset]
  if dataset == specs.SYNTHETIC and synthetic_params is not None:
    default = synthetic.SyntheticParameters()
    short = {"num_classes": "classes", "ms_bands": "bands", "image_size": "size",
             "ms_per_class": "ms", "rgb_per_class": "rgb", "semantic_overlap": "overlap",
             "scene_variation": "scenes", "extra_rgb_test_per_class": "extratest",
             "pair_evidence": "pairs", "seed": "seed"}
    for field in dataclasses.fields(synthetic.SyntheticParameters):
      value = getattr(synthetic_params, field.name)
      if value != getattr(default, field.name):
        parts.append(f"{short[field.name]}{value:g}" if not isinstance(value, str)
                     else f"{short[field.name]}{value}")
  if split_by != "scene":
    parts.append(f"by{split_by}")
  if split_seed != 0:
    parts.append(f"split{split_seed}")
  if test_fraction != DEFAULT_TEST_FRACTION:
    parts.append(f"test{test_fraction:g}")
  if archive_url:
    parts.append(f"archive{hashlib.sha256(archive_url.encode()).hexdigest()[:8]}")
  return "_".join(parts)


def make_config(dataset: str, *, split_seed: int = 0, archive_url: str = "",
                test_fraction: float = DEFAULT_TEST_FRACTION,
                synthetic_params: synthetic.SyntheticParameters | None = None,
                split_by: str = "scene") -> AckdBenchmarkConfig:
  """A config for ``dataset``, named by `config_name`."""
  if split_by not in eurosat.SPLIT_MODES or (split_by != "scene" and dataset != specs.EUROSAT_ASYM):
    raise ValueError(f"split_by={split_by!r} is invalid for dataset {dataset!r}; allowed: "
                     f"{list(eurosat.SPLIT_MODES) if dataset == specs.EUROSAT_ASYM else ['scene']}")
  if dataset == specs.SYNTHETIC:
    synthetic_params = (synthetic_params or synthetic.SyntheticParameters()).validate()
  elif synthetic_params is not None:
    raise ValueError(f"synthetic_params is only valid for dataset 'synthetic', not {dataset!r}")
  spec = specs.get_spec(dataset, synthetic_params)
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction!r} is invalid; expected a number in (0, 1)")
  return AckdBenchmarkConfig(
      name=config_name(dataset, split_seed=split_seed, test_fraction=test_fraction,
                       archive_url=archive_url, synthetic_params=synthetic_params,
                       split_by=split_by),
      description=spec.description, dataset=dataset, split_seed=int(split_seed),
      test_fraction=float(test_fraction), archive_url=archive_url,
      synthetic=synthetic_params, split_by=split_by)


_LAYOUT_HELP = "\n".join(
    f"  {s.root_name}/MS/<class>/*{s.ms_extensions[0]}   ({s.ms_source_bands} bands"
    + (f", key '{specs.MAT_KEY}', H x W x {s.ms_source_bands}" if s.ms_format == "mat" else "")
    + f")\n  {s.root_name}/RGB/<class>/*.jpg\n    classes: {', '.join(s.class_names)}"
    for s in specs.DATASETS.values())


class Builder(tfds.core.GeneratorBasedBuilder):
  """The asymmetric MS/RGB benchmark (SemBridge, METHOD section 5)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "synthetic: per-scene condition shared by both regions (scene_variation, "
               "default 0.5; 1.0.0's synthetic data is scene_variation=0). Real datasets "
               "unchanged.",
      "1.2.0": "synthetic: 480 test-only RGB scenes per class (extra_rgb_test_per_class; "
               "rgb_test grows from 240 to 5,040 images, every other split is unchanged; "
               "extra_rgb_test_per_class=0 is 1.1.0's data). Real datasets unchanged.",
  }
  BUILDER_CONFIGS = [make_config(name) for name in specs.DATASET_NAMES]
  DEFAULT_BUILDER_CONFIG_NAME = specs.SYNTHETIC
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put the dataset roots, as distributed, in the manual_dir (one or more of them):

{_LAYOUT_HELP}

The manual_dir may also be a dataset root itself (holding MS/ and RGB/ directly). MS and
RGB files are unpaired; every class must have at least one file in each modality.
eurosat_asym reads EuroSAT's two archives instead: EuroSAT_MS/ and EuroSAT_RGB/ (or
EuroSAT_MS.zip and EuroSAT_RGB.zip) in the manual_dir, or downloads both (archive_url:
the folder URL holding them; default {eurosat.OFFICIAL_URL}).
Instead of a manual_dir, a config may name an archive of a dataset root (archive_url).
The 'synthetic' config needs no files.
"""

  def __init__(self, *, file_format: str | None = "array_record", **kwargs: Any):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "ms_image": tfds.features.Tensor(
                shape=(None, None, spec.ms_channels), dtype=np.uint16,
                encoding=tfds.features.Encoding.ZLIB,
                doc="Raw MS digital numbers, selected bands; empty in RGB records."),
            "rgb_jpeg": tfds.features.Tensor(
                shape=(), dtype=np.object_,
                doc="Original JPEG bytes of the RGB file; empty in MS records."),
            "label": tfds.features.ClassLabel(names=spec.class_names),
            "filename": tfds.features.Text(doc="Path relative to the dataset root."),
            "id": tfds.features.Scalar(dtype=np.int64,
                                       doc="Stable id within the modality."),
        }),
        disable_shuffling=True,  # Record i of a split is the i-th id of the metadata.
        metadata=tfds.core.MetadataDict(),
        homepage="https://arxiv.org/abs/2511.08901",
    )

  def _dataset_root(self, dl_manager: tfds.download.DownloadManager) -> tuple[pathlib.Path, dict]:
    """(dataset root, provenance) from the generator, the archive URL or the manual_dir."""
    config = self.builder_config
    spec = config.spec
    if config.dataset == specs.SYNTHETIC:
      # Generated files play the role of a downloaded archive and are read like one.
      directory = pathlib.Path(dl_manager.download_dir) / "generated" / config.name
      synthetic.generate_synthetic_benchmark(directory, **dataclasses.asdict(config.synthetic))
      return directory, {"kind": "synthetic", "location": str(directory)}
    if config.archive_url:
      # TFDS downloads (and caches); the standard library extracts (TFDS's extractor
      # needs TensorFlow).
      archive = pathlib.Path(dl_manager.download(config.archive_url))
      extracted = archives.extract_archive(
          archive, pathlib.Path(dl_manager.download_dir) / "extracted" / archive.name)
      return layout.locate_root(extracted, spec), {"kind": "archive",
                                                    "location": config.archive_url}
    try:
      manual_dir = pathlib.Path(dl_manager.manual_dir)
    except (AssertionError, OSError) as e:
      raise errors.single("manual_dir", f"a readable folder holding {spec.root_name}/MS and "
                          f"{spec.root_name}/RGB", str(e).splitlines()[0]) from e
    root = layout.locate_root(manual_dir, spec)
    return root, {"kind": "manual_dir", "location": str(manual_dir.resolve()),
                  "fingerprint": layout.fingerprint(*layout.source_paths(root))}

  def _eurosat_files(self, dl_manager: tfds.download.DownloadManager
                     ) -> tuple[layout.DatasetFiles, dict]:
    """The EuroSAT archives cut into disjoint MS and RGB scenes (or regions)."""
    config = self.builder_config
    # TFDS fills in <download_dir>/manual when no manual_dir was given: only an empty or
    # missing default means "download"; a manual_dir given and wrong is an error.
    given = getattr(dl_manager, "_manual_dir", None)
    default = pathlib.Path(dl_manager.download_dir) / "manual"
    if given is not None and (pathlib.Path(given) != default or
                              (default.is_dir() and any(default.iterdir()))):
      try:
        directory = pathlib.Path(dl_manager.manual_dir)
      except (AssertionError, OSError) as e:
        raise errors.single("manual_dir", "a folder holding EuroSAT_MS/ and EuroSAT_RGB/ (or "
                            "EuroSAT_MS.zip and EuroSAT_RGB.zip)", str(e).splitlines()[0]) from e
      provenance = {"kind": "manual_dir", "location": str(directory.resolve())}
      sources = eurosat.source_paths(directory)
    else:
      base = config.archive_url or eurosat.OFFICIAL_URL
      paths = dl_manager.download({name: f"{base}/{name}" for name in eurosat.archive_names()})
      sources = tuple(pathlib.Path(paths[name]) for name in eurosat.archive_names())
      directory = pathlib.Path(dl_manager.download_dir) / "eurosat" / _files_key(sources)
      directory.mkdir(parents=True, exist_ok=True)
      for name, path in zip(eurosat.archive_names(), sources):
        if not (directory / name).is_symlink():
          (directory / name).symlink_to(path.absolute())
      provenance = {"kind": "archive", "location": base}
    # Extracted copies are keyed by the archives' fingerprint: other zips, other folder.
    extract_to = (pathlib.Path(dl_manager.download_dir) / "extracted" / config.name
                  / _files_key(sources))
    ms_root, rgb_root = eurosat.locate(directory, extract_to)
    scenes = eurosat.scan(ms_root, rgb_root, config.spec)
    zones = ([eurosat.utm_zone(s.ms_path) for s in scenes] if config.split_by == "region"
             else None)
    assignment = eurosat.split_scenes(scenes, config.split_by, config.split_seed,
                                      config.spec.class_names, zones)
    print(f"eurosat_asym: {json.dumps(assignment.summary)}", flush=True)
    if provenance["kind"] == "manual_dir":
      provenance["fingerprint"] = layout.fingerprint(*sources)
    provenance["split"] = assignment.summary
    return eurosat.dataset_files(assignment, ms_root, rgb_root), provenance

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    spec = config.spec
    if config.dataset == specs.EUROSAT_ASYM:
      files, provenance = self._eurosat_files(dl_manager)
      root = files.root
    else:
      root, provenance = self._dataset_root(dl_manager)
      files = layout.scan(root, spec)
    ms_test = layout.stratified_test_mask([f.label for f in files.ms],
                                          test_fraction=config.test_fraction,
                                          seed=config.split_seed, stream=0)
    rgb_test = layout.stratified_test_mask([f.label for f in files.rgb],
                                           test_fraction=config.test_fraction,
                                           seed=config.split_seed, stream=1)
    # Large datasets are read by worker processes, in both passes over the files.
    workers = parallel.workers_for(len(files.ms) + len(files.rgb))
    inspection = layout.inspect(files, spec, ~ms_test, workers=workers)
    split_files = {
        "ms_train": [f for f, t in zip(files.ms, ms_test) if not t],
        "ms_test": [f for f, t in zip(files.ms, ms_test) if t],
        "rgb_train": [f for f, t in zip(files.rgb, rgb_test) if not t],
        "rgb_test": [f for f, t in zip(files.rgb, rgb_test) if t],
    }
    if config.dataset == specs.SYNTHETIC:
      split_files["rgb_test"] += layout.scan_extra_test(
          root / synthetic.EXTRA_RGB_TEST_FOLDER, spec, first_id=len(files.rgb))
    empty = [errors.Problem(str(root / name.split("_")[0].upper()),
                            f"files for a non-empty {name} split (two or more in some class)",
                            "one file per class") for name, records in split_files.items()
             if not records]
    if empty:
      raise errors.InvalidBenchmarkError(empty, context=f"dataset root {root}")
    self.info.metadata.update(_metadata(config, spec, provenance, inspection, split_files))
    return {name: self._generate_examples(records, name.startswith("ms"), workers)
            for name, records in split_files.items()}

  def _generate_examples(self, records: list[layout.SourceFile], is_ms: bool, workers: int
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    spec = self.builder_config.spec
    no_ms = np.zeros((0, 0, spec.ms_channels), np.uint16)
    # The workers read ahead, in order, while TFDS compresses and writes here.
    stored = parallel.ordered_map(functools.partial(readers.read_stored, spec=spec, is_ms=is_ms),
                                  [record.path for record in records],
                                  workers=workers if len(records) > 1 else 1)
    for record, payload in zip(records, stored, strict=True):
      yield record.id, {
          "ms_image": payload if is_ms else no_ms,
          "rgb_jpeg": b"" if is_ms else payload,
          "label": record.label,
          "filename": record.relpath,
          "id": record.id,
      }


def _files_key(paths) -> str:
  """A short name for a set of source files (their `layout.fingerprint`)."""
  return hashlib.sha256(json.dumps(layout.fingerprint(*paths), sort_keys=True).encode()
                        ).hexdigest()[:12]


def _metadata(config: AckdBenchmarkConfig, spec: specs.DatasetSpec, provenance: dict,
              inspection: layout.Inspection,
              split_files: dict[str, list[layout.SourceFile]]) -> dict[str, Any]:
  """JSON-able metadata: the split (ids and files per split), sizes, MS train statistics."""
  stats = inspection.ms_train_stats
  return {
      "format": METADATA_FORMAT,
      "dataset": config.dataset,
      "source": provenance,
      "split_seed": config.split_seed,
      "test_fraction": config.test_fraction,
      "class_names": list(spec.class_names),
      "ms_source_bands": spec.ms_source_bands,
      "ms_band_selection": list(spec.ms_band_selection or range(1, spec.ms_source_bands + 1)),
      "ms_size": list(inspection.ms_size),
      "rgb_size": list(inspection.rgb_size),
      "true_colour_bands": list(spec.true_colour_bands),
      "ms_band_stats": {"split": "ms_train", "mean": stats.mean.tolist(),
                        "std": stats.std.tolist(), "max": stats.max.tolist()},
      "splits": {
          name: {"ids": [f.id for f in records],
                 "labels": [f.label for f in records],
                 "filenames": [f.relpath for f in records],
                 "class_counts": np.bincount([f.label for f in records],
                                             minlength=spec.num_classes).tolist()}
          for name, records in split_files.items()},
      "synthetic": dataclasses.asdict(config.synthetic) if config.synthetic else None,
  }
