"""Scanning and checking a dataset root ``<root>/{MS,RGB}/<class>/<file>`` against its spec.

`scan` lists the files and checks the folder structure; `inspect` reads every file once
(catching corrupt files, wrong band counts, wrong sizes) and computes the per-band
statistics of the MS train split. Both collect *every* problem before raising a single
`InvalidBenchmarkError`, and nothing is written until both have passed.

Ids are stable: within each modality, files are ordered by (label, file name) and
numbered from 0, so the same files always get the same ids, whatever the split seed.
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from sembridge_jax.data import errors, parallel, readers
from sembridge_jax.data.errors import Problem
from sembridge_jax.data.specs import RGB_EXTENSIONS, DatasetSpec

MODALITIES = ("MS", "RGB")
# Operating-system metadata that may sit in any folder; everything else must be an image.
IGNORED_NAMES = frozenset({"Thumbs.db", "desktop.ini"})


class SourceFile(NamedTuple):
  id: int
  label: int
  relpath: str              # POSIX path relative to the dataset root, e.g. "MS/Forest/1.tif"
  path: pathlib.Path


class DatasetFiles(NamedTuple):
  root: pathlib.Path
  ms: tuple[SourceFile, ...]
  rgb: tuple[SourceFile, ...]


class BandStats(NamedTuple):
  """Per-band statistics over every pixel of a set of MS images, each (C,) float64."""
  mean: np.ndarray
  std: np.ndarray
  max: np.ndarray


class Inspection(NamedTuple):
  ms_size: tuple[int, int]
  rgb_size: tuple[int, int]
  ms_train_stats: BandStats


def _is_ignored(name: str) -> bool:
  return name.startswith(".") or name in IGNORED_NAMES


def _list_dir(path: pathlib.Path) -> list[os.DirEntry]:
  try:
    with os.scandir(path) as entries:
      return sorted((e for e in entries if not _is_ignored(e.name)), key=lambda e: e.name)
  except OSError as e:
    raise errors.single(path, "a readable directory", f"{type(e).__name__}: {e.strerror or e}"
                        ) from e


def has_modalities(directory: pathlib.Path) -> bool:
  return all((directory / m).is_dir() for m in MODALITIES)


def fingerprint(*paths: str | os.PathLike) -> dict[str, int]:
  """A cheap identity of a dataset's source files (folders walked, files taken as they
  are): how many files, their total size and the newest modification time (whole
  seconds). Reading every file would be exact and slow; this catches another folder,
  added, removed or rewritten files."""
  count = size = newest = 0
  for path in map(pathlib.Path, paths):
    walked = os.walk(path) if path.is_dir() else [(str(path.parent), [], [path.name])]
    for folder, subfolders, names in walked:
      subfolders[:] = [d for d in subfolders if not _is_ignored(d)]
      for name in names:
        if _is_ignored(name):  # What `scan` ignores cannot change the dataset.
          continue
        stat = os.stat(os.path.join(folder, name))
        count, size, newest = count + 1, size + stat.st_size, max(newest, int(stat.st_mtime))
  return {"file_count": count, "total_bytes": size, "newest_mtime": newest}


def source_paths(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """What `fingerprint` reads of a dataset root."""
  return tuple(root / modality for modality in MODALITIES)


def locate_root(directory: str | os.PathLike, spec: DatasetSpec) -> pathlib.Path:
  """The dataset root inside ``directory``: itself, ``directory/<root_name>``, or its only
  sub-folder (an extracted archive), whichever holds ``MS/`` and ``RGB/``."""
  directory = pathlib.Path(directory)
  expected = (f"a folder holding {spec.root_name}/MS/<class>/*{spec.ms_extensions[0]} and "
              f"{spec.root_name}/RGB/<class>/*.jpg (or MS/ and RGB/ directly)")
  if not directory.is_dir():
    raise errors.single(directory, expected, "no such directory" if not directory.exists()
                        else "a file")
  entries = _list_dir(directory)
  if not entries:
    raise errors.single(directory, expected, "an empty directory")
  candidates = [directory, directory / spec.root_name]
  subdirs = [pathlib.Path(e.path) for e in entries if e.is_dir()]
  if len(subdirs) == 1:
    candidates += [subdirs[0], subdirs[0] / spec.root_name]
  for candidate in candidates:
    if has_modalities(candidate):
      return candidate
  raise errors.single(directory, expected, f"entries {[e.name for e in entries][:10]}")


def scan(root: pathlib.Path, spec: DatasetSpec) -> DatasetFiles:
  """Lists ``root``'s image files and checks the class folders; ids assigned here."""
  problems: list[Problem] = []
  listed: dict[str, list[SourceFile]] = {}
  class_set = set(spec.class_names)
  extensions = {"MS": spec.ms_extensions, "RGB": RGB_EXTENSIONS}
  for modality in MODALITIES:
    folder = root / modality
    entries = _list_dir(folder)
    present = {e.name for e in entries if e.is_dir()}
    for entry in entries:
      if not entry.is_dir():
        problems.append(Problem(entry.path, "only class folders here", "a file"))
      elif entry.name not in class_set:
        problems.append(Problem(entry.path, f"a class folder among {list(spec.class_names)}",
                                "an unknown class"))
    for name in spec.class_names:
      if name not in present:
        other = "RGB" if modality == "MS" else "MS"
        problems.append(Problem(str(folder / name), f"the class folder of {name!r} (all "
                                f"{spec.num_classes} classes in both MS and RGB)",
                                "it is missing" + (f" (it exists in {other})" if
                                                   (root / other / name).is_dir() else "")))
    files = []
    for label, name in enumerate(spec.class_names):
      if name not in present:
        continue
      images = []
      for entry in _list_dir(folder / name):
        if entry.is_dir():
          problems.append(Problem(entry.path, f"only {modality} image files", "a folder"))
        elif not entry.name.lower().endswith(extensions[modality]):
          problems.append(Problem(entry.path, f"a {modality} image file with extension "
                                  f"{' or '.join(extensions[modality])}", "another file"))
        else:
          images.append(entry)
      if not images:
        problems.append(Problem(str(folder / name), f"at least one {modality} image "
                                f"({' or '.join(extensions[modality])})", "an empty class"))
      files += [(label, f"{modality}/{name}/{e.name}", pathlib.Path(e.path)) for e in images]
    listed[modality] = [SourceFile(i, *f) for i, f in enumerate(files)]
  if problems:
    raise errors.InvalidBenchmarkError(problems, context=f"dataset root {root}")
  return DatasetFiles(root, tuple(listed["MS"]), tuple(listed["RGB"]))


def scan_extra_test(folder: pathlib.Path, spec: DatasetSpec, *, first_id: int
                    ) -> list[SourceFile]:
  """The RGB images of ``folder/<class>/`` (test-only scenes, e.g. the synthetic
  generator's ``RGB_TEST``), with ids from ``first_id`` on; none if it does not exist."""
  files = []
  for label, name in enumerate(spec.class_names):
    images = [e for e in _list_dir(folder / name) if not e.is_dir()
              and e.name.lower().endswith(RGB_EXTENSIONS)] if (folder / name).is_dir() else []
    files += [(label, f"{folder.name}/{name}/{e.name}", pathlib.Path(e.path)) for e in images]
  return [SourceFile(first_id + i, *f) for i, f in enumerate(files)]


def stratified_test_mask(labels: Sequence[int], *, test_fraction: float, seed: int,
                         stream: int = 0) -> np.ndarray:
  """Boolean mask of the test records: ``round(test_fraction * n_c)`` per class, at least
  one and at most ``n_c - 1`` when the class has two or more records, drawn with
  ``default_rng([seed, stream])`` (one stream per modality)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, stream])
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    n = len(members)
    n_test = 0 if n < 2 else min(n - 1, max(1, int(round(test_fraction * n))))
    is_test[rng.permutation(members)[:n_test]] = True
  return is_test


def _size_problems(sizes: dict[str, tuple[int, int]], expected: int | None, what: str
                   ) -> tuple[tuple[int, int] | None, list[Problem]]:
  if not sizes:
    return None, []
  if expected is not None:
    target = (expected, expected)
    description = f"{expected}x{expected} pixels"
  else:  # The majority size; the others are the outliers.
    target = collections.Counter(sizes.values()).most_common(1)[0][0]
    description = f"{target[0]}x{target[1]} pixels like the other {what} images"
  problems = [Problem(path, description, f"{h}x{w}") for path, (h, w) in sizes.items()
              if (h, w) != target]
  return target, problems


class _MsFileSummary(NamedTuple):
  """What `inspect` needs of one MS file: its size and, for a training file, its
  per-band sums of ``pixel - shift`` and their squares, its per-band maximum and its
  pixel count (``None`` / 0 for a test file)."""
  size: tuple[int, int]
  centred_sum: np.ndarray | None
  centred_sq_sum: np.ndarray | None
  band_max: np.ndarray | None
  pixels: int


def _band_values(pixels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
  """(pixels, bands) float64: what the band statistics and their shift are taken of."""
  return pixels.reshape(-1, spec.ms_channels).astype(np.float64)


def _ms_file_summary(file: tuple[pathlib.Path, bool], spec: DatasetSpec,
                     shift: np.ndarray | None) -> _MsFileSummary | list[Problem]:
  """One MS file's `_MsFileSummary`, or its problems (runs in `parallel` workers)."""
  path, is_train = file
  try:
    pixels = readers.read_ms(path, spec)
  except errors.InvalidBenchmarkError as e:
    return list(e.problems)
  if not is_train or shift is None or not pixels.size:  # (an empty image: a size problem)
    return _MsFileSummary(pixels.shape[:2], None, None, None, 0)
  values = _band_values(pixels, spec)
  centred = values - shift
  return _MsFileSummary(pixels.shape[:2], centred.sum(0), (centred ** 2).sum(0),
                        values.max(0), len(values))


def _rgb_file_size(path: pathlib.Path) -> tuple[int, int] | list[Problem]:
  try:
    return readers.read_rgb(path).size
  except errors.InvalidBenchmarkError as e:
    return list(e.problems)


def _first_mean(path: pathlib.Path, spec: DatasetSpec) -> np.ndarray | None:
  """Per-band mean of one MS file (float64), ``None`` if it cannot be read."""
  try:
    return _band_values(readers.read_ms(path, spec), spec).mean(0)
  except errors.InvalidBenchmarkError:
    return None  # inspect reports it with the others


def inspect(files: DatasetFiles, spec: DatasetSpec, ms_train_mask: np.ndarray, *,
            workers: int = 1) -> Inspection:
  """Reads every file; checks contents and sizes; MS train per-band mean / std / max.

  ``workers`` > 1: the files are read by that many `parallel` worker processes; the
  statistics are summed in file order, so they are the same bits whatever the number.
  """
  problems: list[Problem] = []
  ms_sizes, rgb_sizes = {}, {}
  channels = spec.ms_channels
  # float64 sums around a per-band shift (the first training image's mean) keep the
  # variance exact.
  first_train = next((f for f, is_train in zip(files.ms, ms_train_mask) if is_train), None)
  shift = None if first_train is None else _first_mean(first_train.path, spec)
  total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
  band_max = np.zeros(channels)
  summaries = parallel.ordered_map(
      functools.partial(_ms_file_summary, spec=spec, shift=shift),
      [(f.path, bool(is_train)) for f, is_train in zip(files.ms, ms_train_mask)],
      workers=workers)
  # strict: the map is read to its end, which ends its worker processes.
  for record, is_train, summary in zip(files.ms, ms_train_mask, summaries, strict=True):
    if isinstance(summary, list):
      problems += summary
      continue
    ms_sizes[str(record.path)] = summary.size
    if is_train and not problems and summary.pixels:
      total += summary.centred_sum
      total_sq += summary.centred_sq_sum
      count += summary.pixels
      band_max = np.maximum(band_max, summary.band_max)
  sizes = parallel.ordered_map(_rgb_file_size, [f.path for f in files.rgb], workers=workers)
  for record, size in zip(files.rgb, sizes, strict=True):
    if isinstance(size, list):
      problems += size
    else:
      rgb_sizes[str(record.path)] = size
  ms_size, ms_problems = _size_problems(ms_sizes, spec.ms_size, "MS")
  rgb_size, rgb_problems = _size_problems(rgb_sizes, spec.rgb_size, "RGB")
  problems += ms_problems + rgb_problems
  if not problems and count == 0:
    problems.append(Problem(str(files.root / "MS"), "at least one MS training image",
                            "none after the train/test split"))
  if problems:
    raise errors.InvalidBenchmarkError(problems, context=f"dataset root {files.root}")
  mean_centred = total / count
  variance = np.maximum(total_sq / count - mean_centred ** 2, 0.0)
  stats = BandStats(mean=shift + mean_centred, std=np.sqrt(variance), max=band_max)
  return Inspection(ms_size, rgb_size, stats)
