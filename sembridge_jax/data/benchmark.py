"""`load_benchmark`: build (once) and open the ``ackd_benchmark`` TFDS dataset of a config.

The data config (``config.data`` of the project's configs; `default_data_config` gives a
complete one) names the dataset and how to split, fetch and present it::

  name            synthetic | s2s_eu | s2s_cn | m2s_gl
  manual_dir      folder holding S2S_EU/, S2S_CN/, M2S_GL/ as distributed
  download_url    or an archive of a dataset root, fetched by TFDS's download manager
  split_seed      seed of the stratified 80/20 split (part of the TFDS config name)
  normalization   per_image_max | band_stats          (used by `make_loader`)
  rgb_size        RGB height = width the models see
  rgb_bands       0-based stored MS bands of the true-colour rendering (R, G, B)
  augment         RGB flips + colour jitter
  synthetic.*     generator parameters (part of the TFDS config name when non-default)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
from typing import Any, Mapping

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from sembridge_jax.data import eurosat, layout, records, specs, synthetic
from sembridge_jax.data.layout import BandStats

SPLITS = ("ms_train", "ms_test", "rgb_train", "rgb_test")


def default_data_config(name: str = specs.SYNTHETIC) -> ml_collections.ConfigDict:
  """A complete data config for dataset ``name`` with the paper's presentation defaults."""
  spec = specs.get_spec(name)
  defaults = synthetic.SyntheticParameters()
  c = ml_collections.ConfigDict()
  c.name = name
  c.manual_dir = ""
  c.download_url = ""
  c.data_dir = ""
  c.split_seed = 0
  c.ms_channels = spec.ms_channels
  c.normalization = "per_image_max"
  c.rgb_size = spec.rgb_size or 128
  c.rgb_bands = tuple(spec.true_colour_bands)
  c.augment = False
  c.rebuild = False       # True: delete and rebuild the dataset in data_dir (new files)
  c.split_by = "scene"    # eurosat_asym: "scene" or "region" (disjoint UTM zones)
  c.synthetic = ml_collections.ConfigDict(dataclasses.asdict(defaults))
  return c


def synthetic_parameters(data_config: Mapping[str, Any] | ml_collections.ConfigDict
                         ) -> synthetic.SyntheticParameters:
  """The generator parameters of ``data_config.synthetic`` (defaults for missing keys)."""
  given = dict(data_config.get("synthetic") or {})
  known = {f.name for f in dataclasses.fields(synthetic.SyntheticParameters)}
  unknown = sorted(set(given) - known)
  if unknown:
    raise ValueError(f"data.synthetic has unknown keys {unknown}; allowed: {sorted(known)}")
  return synthetic.SyntheticParameters(**given).validate()


def make_builder(data_config: Mapping[str, Any] | ml_collections.ConfigDict,
                 data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The ``ackd_benchmark`` builder for ``data_config``, with a custom BuilderConfig whose
  name encodes every non-default setting (so different synthetic parameters or split
  seeds never collide in ``data_dir``)."""
  from tfds_builders.ackd_benchmark import ackd_benchmark_dataset_builder as builder_lib

  name = data_config["name"]
  if name not in specs.DATASET_NAMES:
    raise ValueError(f"data.name={name!r} is unknown; allowed: {list(specs.DATASET_NAMES)}")
  config = builder_lib.make_config(
      name, split_seed=int(data_config.get("split_seed", 0)),
      archive_url=str(data_config.get("download_url", "") or ""),
      synthetic_params=synthetic_parameters(data_config) if name == specs.SYNTHETIC else None,
      split_by=str(data_config.get("split_by", "scene")))
  registered = builder_lib.Builder.builder_configs.get(config.name)
  if registered is not None:
    # TFDS refuses a custom config named like a registered one: use the registered one
    # (the name encodes every setting, so they are the same configuration).
    config = registered
  return builder_lib.Builder(config=config, data_dir=os.fspath(data_dir))


@dataclasses.dataclass(frozen=True, eq=False)
class Benchmark:
  """An opened benchmark: metadata plus a random-access TFDS source per split.

  Record ``i`` of ``sources[split]`` has id ``ids(split)[i]`` and label
  ``labels(split)[i]`` (records are stored in id order, ids in label order).
  """
  name: str
  class_names: tuple[str, ...]
  num_classes: int
  ms_channels: int
  image_size: int                 # RGB height = width the models see (data.rgb_size)
  ms_image_size: int              # stored MS height = width
  rgb_source_size: int            # stored RGB height = width (JPEGs are resized on load)
  ms_stats: BandStats             # per-band mean / std / max of ms_train
  rgb_bands: tuple[int, int, int]  # stored MS bands of the true-colour rendering
  sources: Mapping[str, Any]
  metadata: Mapping[str, Any]
  builder: tfds.core.DatasetBuilder
  cache_bytes: int = records.DEFAULT_CACHE_BYTES
  _readers: dict = dataclasses.field(default_factory=dict, repr=False)

  def _split_metadata(self, split: str) -> Mapping[str, Any]:
    if split not in self.sources:
      raise ValueError(f"split={split!r} is unknown; allowed: {list(self.sources)}")
    return self.metadata["splits"][split]

  def ids(self, split: str) -> np.ndarray:
    """Record ids of ``split`` in source order (int64)."""
    return np.asarray(self._split_metadata(split)["ids"], np.int64)

  def labels(self, split: str) -> np.ndarray:
    """Labels of ``split`` in source order (int64): the metadata's ``labels`` (builder
    1.2.0 on), else from its class counts (earlier builds list records class by class;
    1.2.0's synthetic test split, with its test-only scenes after the others, does not)."""
    metadata = self._split_metadata(split)
    if "labels" in metadata:
      return np.asarray(metadata["labels"], np.int64)
    return np.repeat(np.arange(self.num_classes), metadata["class_counts"])

  def filenames(self, split: str) -> list[str]:
    return list(self._split_metadata(split)["filenames"])

  def index_of(self, split: str, ids: np.ndarray) -> np.ndarray:
    """Source positions of records ``ids`` of ``split``; KeyError names unknown ids."""
    all_ids = self.ids(split)  # Ascending: records are written in id order.
    ids = np.asarray(ids, np.int64)
    positions = np.clip(np.searchsorted(all_ids, ids), 0, max(len(all_ids) - 1, 0))
    missing = ids[all_ids[positions] != ids] if len(all_ids) else ids
    if missing.size:
      raise KeyError(f"ids not in split {split!r}: {np.unique(missing)[:10].tolist()}")
    return positions

  def is_ms(self, split: str) -> bool:
    self._split_metadata(split)
    return split.startswith("ms")

  def reader(self, split: str, cache: bool | None = None) -> records.RecordReader:
    """The raw-image reader of ``split``, shared by every loader (so a split is decoded
    into memory at most once); ``cache=None`` caches when the decoded split fits in
    ``cache_bytes``."""
    is_ms = self.is_ms(split)
    shape = ((*self.metadata["ms_size"], self.ms_channels) if is_ms
             else (*self.metadata["rgb_size"], 3))
    probe = records.RecordReader(self.sources[split], is_ms=is_ms, image_shape=shape,
                                 cache=False)
    use_cache = probe.decoded_bytes <= self.cache_bytes if cache is None else bool(cache)
    return self._readers.setdefault((split, use_cache), records.RecordReader(
        self.sources[split], is_ms=is_ms, image_shape=shape, cache=use_cache))


def _build(builder: tfds.core.DatasetBuilder, data_config) -> None:
  """Builds the dataset unless it is built from the configured files. A dataset built
  from another ``manual_dir`` (or from files changed since) is refused, or, with
  ``data.rebuild=True``, deleted and built again: the flag only acts on a mismatch, so
  leaving it on does not rebuild every stage."""
  manual_dir = data_config.get("manual_dir", "") or None
  if builder.is_prepared():
    mismatch = source_mismatch(dict(builder.info.metadata), data_config, builder.data_dir)
    if mismatch and not data_config.get("rebuild", False):
      raise ValueError(mismatch)
    if mismatch:
      shutil.rmtree(builder.data_dir)
  was_prepared = builder.is_prepared()
  start = time.perf_counter()
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  if not was_prepared:  # Minutes for a large dataset: say where they went.
    print(f"[data] built {builder.info.full_name} in {time.perf_counter() - start:.0f} s",
          flush=True)


def _resolved(path) -> str:
  return str(pathlib.Path(path).expanduser().resolve())


def source_mismatch(metadata: Mapping[str, Any], data_config, data_dir) -> str | None:
  """Why the dataset in ``data_dir`` does not come from the configured ``manual_dir``
  (another folder, or files changed since), or None. Nothing to compare (a generated or
  downloaded dataset, no manual_dir given, or the folder since removed) is no mismatch."""
  source, manual_dir = metadata.get("source", {}), data_config.get("manual_dir", "")
  if source.get("kind") != "manual_dir" or not manual_dir:
    return None
  directory = pathlib.Path(manual_dir).expanduser()
  if not directory.is_dir():
    return None  # The files are gone; the built dataset is what is left of them.
  spec = specs.get_spec(data_config["name"])
  now, before = {"location": _resolved(directory)}, {"location": _resolved(source["location"])}
  if source.get("fingerprint") is not None:  # Built before fingerprints were recorded: no.
    paths = (eurosat.source_paths(directory) if spec.name == specs.EUROSAT_ASYM
             else layout.source_paths(layout.locate_root(directory, spec)))
    now["fingerprint"], before["fingerprint"] = layout.fingerprint(*paths), source["fingerprint"]
  if now == before:
    return None
  return (f"the dataset in {data_dir} was built from {before['location']} "
          f"({before.get('fingerprint')}); data.manual_dir is now {now['location']} "
          f"({now.get('fingerprint')}): rebuild it with --config.data.rebuild=True, or give a "
          "new --config.data.data_dir")


def load_benchmark(data_config: Mapping[str, Any] | ml_collections.ConfigDict, *,
                   data_dir: str | os.PathLike) -> Benchmark:
  """Builds the dataset into ``data_dir`` if needed (idempotent) and opens it.

  On several hosts, process 0 builds (or refuses a dataset built from other files) while
  the others wait; they then open it (or, if ``data_dir`` is not shared, build the
  identical dataset themselves).
  """
  import jax

  builder = make_builder(data_config, data_dir)
  if jax.process_count() > 1:
    # Process 0 decides; the others wait, learn its outcome, then open a fresh builder
    # (one made before the build holds empty metadata).
    from jax.experimental import multihost_utils
    refusal = None
    if jax.process_index() == 0:
      try:
        _build(builder, data_config)
      except ValueError as error:  # Every process must still reach the broadcast.
        refusal = error
    if multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)):
      raise refusal or ValueError("process 0 refused the dataset (its error says why)")
    if jax.process_index() != 0:
      builder = make_builder(data_config, data_dir)
      if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=data_config.get("manual_dir", "") or None))
  else:
    _build(builder, data_config)
  metadata = dict(builder.info.metadata)
  stats = metadata["ms_band_stats"]
  ms_size, rgb_size = metadata["ms_size"], metadata["rgb_size"]
  rgb_bands = tuple(int(b) for b in data_config.get("rgb_bands", metadata["true_colour_bands"]))
  channels = len(metadata["ms_band_selection"])
  if len(rgb_bands) != 3 or not all(0 <= b < channels for b in rgb_bands):
    raise ValueError(f"data.rgb_bands={rgb_bands} is invalid; expected three indices in "
                     f"[0, {channels})")
  class_names = tuple(builder.info.features["label"].names)
  return Benchmark(
      name=builder.builder_config.dataset,
      class_names=class_names,
      num_classes=len(class_names),
      ms_channels=channels,
      image_size=int(data_config.get("rgb_size", rgb_size[0])),
      ms_image_size=int(ms_size[0]),
      rgb_source_size=int(rgb_size[0]),
      ms_stats=BandStats(*(np.asarray(stats[k], np.float64) for k in ("mean", "std", "max"))),
      rgb_bands=rgb_bands,  # type: ignore[arg-type]
      sources={split: builder.as_data_source(split) for split in SPLITS},
      metadata=metadata,
      builder=builder,
  )
