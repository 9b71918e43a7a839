"""``eurosat_asym``: an asymmetric benchmark cut from the public EuroSAT archives.

EuroSAT (Helber et al., 2019) is released as two archives of the *same* 27,000 scenes:
``EuroSAT_MS.zip`` (``EuroSAT_MS/<Class>/<Class>_<n>.tif``: 13-band uint16 Sentinel-2
GeoTIFFs in UTM, 64 x 64 px) and ``EuroSAT_RGB.zip`` (``EuroSAT_RGB/<Class>/<Class>_<n>.jpg``,
same names). Here every scene goes to exactly one side, so the MS teacher and the RGB
student never see the same place:

* ``split_by="scene"``: a seeded, stratified half of each class's scenes gives the MS
  set, the other half the RGB set;
* ``split_by="region"``: scenes are grouped by the UTM zone of their GeoTIFF, and whole
  zones go to one side: the largest zone first, each to the side that keeps the classes'
  MS and RGB counts closest (``sum_c |ms_c - rgb_c|``), ties broken by the seed. Every
  class must keep at least two scenes on each side.

The result is a `layout.DatasetFiles` (MS files of the MS scenes, RGB files of the RGB
scenes) that the builder splits into train and test exactly as any other dataset. The
band selection is S2S_EU's (bands 1-7, 10, 11, 12).
"""

from __future__ import annotations

import collections
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from sembridge_jax.data import archives, errors, layout
from sembridge_jax.data.errors import Problem
from sembridge_jax.data.specs import DatasetSpec

MS_FOLDER, RGB_FOLDER = "EuroSAT_MS", "EuroSAT_RGB"
# The archives' official location (Zenodo record 7711810, the authors' current release).
OFFICIAL_URL = "https://zenodo.org/records/7711810/files"
SPLIT_MODES = ("scene", "region")
MIN_SCENES_PER_SIDE = 2   # each side's class needs a train and a test image


class Scene(NamedTuple):
  name: str            # "<Class>_<n>", shared by the MS and the RGB file
  label: int
  ms_path: pathlib.Path
  rgb_path: pathlib.Path


class Assignment(NamedTuple):
  """Which scenes went to which side, and why (saved in the dataset metadata)."""
  ms: tuple[Scene, ...]
  rgb: tuple[Scene, ...]
  summary: dict


def archive_names() -> tuple[str, str]:
  return f"{MS_FOLDER}.zip", f"{RGB_FOLDER}.zip"


def source_paths(directory: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """The EuroSAT folders or zips a manual_dir holds (what its fingerprint reads)."""
  return tuple(directory / folder if (directory / folder).is_dir() else directory / archive
               for folder, archive in zip((MS_FOLDER, RGB_FOLDER), archive_names()))


def locate(directory: pathlib.Path, extract_to: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """The ``EuroSAT_MS`` and ``EuroSAT_RGB`` folders in ``directory``: extracted folders,
  or the two zips (extracted under ``extract_to``)."""
  found = []
  for folder, archive in zip((MS_FOLDER, RGB_FOLDER), archive_names()):
    if (directory / folder).is_dir():
      found.append(directory / folder)
    elif (directory / archive).is_file():
      extracted = archives.extract_archive(directory / archive, extract_to / folder)
      found.append(extracted / folder if (extracted / folder).is_dir() else extracted)
    else:
      raise errors.single(directory / folder, f"the folder {folder}/ or the archive {archive} "
                          "(EuroSAT's release layout)", "neither exists")
  return found[0], found[1]


def scan(ms_root: pathlib.Path, rgb_root: pathlib.Path, spec: DatasetSpec) -> list[Scene]:
  """Every scene with both files; every problem (a missing class folder, a file without
  its twin, a stray file) named at once."""
  problems: list[Problem] = []
  listed = {}
  for root, extensions, other in ((ms_root, spec.ms_extensions, rgb_root),
                                  (rgb_root, (".jpg", ".jpeg"), ms_root)):
    per_class = {}
    for name in spec.class_names:
      folder = root / name
      if not folder.is_dir():
        problems.append(Problem(str(folder), f"the class folder of {name!r}", "it is missing"))
        continue
      files = {}
      for path in sorted(folder.iterdir()):
        if path.name in layout.IGNORED_NAMES:
          continue
        if path.is_dir() or path.suffix.lower() not in extensions:
          problems.append(Problem(str(path), f"a {' or '.join(extensions)} image", "another entry"))
        else:
          files[path.stem] = path
      per_class[name] = files
    listed[root] = per_class
  ms, rgb = listed[ms_root], listed[rgb_root]
  scenes = []
  for label, name in enumerate(spec.class_names):
    if name not in ms or name not in rgb:
      continue
    for stem in sorted(set(ms[name]) | set(rgb[name])):
      if stem not in rgb[name]:
        problems.append(Problem(str(ms[name][stem]), f"an RGB twin {RGB_FOLDER}/{name}/{stem}.jpg",
                                "none"))
      elif stem not in ms[name]:
        problems.append(Problem(str(rgb[name][stem]), f"an MS twin {MS_FOLDER}/{name}/{stem}.tif",
                                "none"))
      else:
        scenes.append(Scene(stem, label, ms[name][stem], rgb[name][stem]))
  if problems:
    raise errors.InvalidBenchmarkError(problems, context=f"EuroSAT folders {ms_root}, {rgb_root}")
  return scenes


def utm_zone(path: pathlib.Path) -> str:
  """``"32N"`` for a GeoTIFF in EPSG:32632 (``"32S"``: 327xx); other CRSs by their name."""
  import rasterio
  from rasterio.errors import RasterioError
  try:
    with rasterio.open(path) as dataset:
      crs = dataset.crs
  except RasterioError as e:
    raise errors.single(path, "a readable GeoTIFF", f"a corrupt or non-GeoTIFF file ({e})") from e
  if crs is None:
    raise errors.single(path, "a georeferenced GeoTIFF (its UTM zone decides its region)",
                        "no coordinate reference system")
  epsg = crs.to_epsg()
  if epsg and 32601 <= epsg <= 32660:
    return f"{epsg - 32600}N"
  if epsg and 32701 <= epsg <= 32760:
    return f"{epsg - 32700}S"
  return str(crs)


def split_scenes(scenes: Sequence[Scene], split_by: str, seed: int, class_names: Sequence[str],
                 zones: Sequence[str] | None = None) -> Assignment:
  """MS and RGB scenes, disjoint (asserted), by ``split_by`` (see the module docstring).
  ``zones[i]`` is scene i's region (`utm_zone`), needed for ``"region"``."""
  if split_by not in SPLIT_MODES:
    raise ValueError(f"split_by={split_by!r} is invalid; allowed: {SPLIT_MODES}")
  rng = np.random.default_rng(seed)
  num_classes = len(class_names)
  if split_by == "scene":
    to_ms = np.zeros(len(scenes), bool)
    labels = np.asarray([s.label for s in scenes])
    for label in range(num_classes):
      members = np.flatnonzero(labels == label)
      to_ms[rng.permutation(members)[:(len(members) + 1) // 2]] = True
    summary = {"split_by": "scene", "seed": seed}
  else:
    if zones is None or len(zones) != len(scenes):
      raise ValueError("split_by='region' needs one zone per scene")
    zone_of_side, summary = _assign_zones(scenes, zones, rng, num_classes)
    to_ms = np.asarray([zone_of_side[z] == "MS" for z in zones])
    summary.update(split_by="region", seed=seed)
  ms = tuple(s for s, m in zip(scenes, to_ms) if m)
  rgb = tuple(s for s, m in zip(scenes, to_ms) if not m)
  assert not {s.name for s in ms} & {s.name for s in rgb}, "a scene on both sides"
  counts = lambda side: np.bincount([s.label for s in side], minlength=num_classes).tolist()
  summary.update(ms_scenes=len(ms), rgb_scenes=len(rgb), ms_class_counts=counts(ms),
                 rgb_class_counts=counts(rgb))
  thin = [c for c in range(num_classes) if min(summary["ms_class_counts"][c],
                                               summary["rgb_class_counts"][c]) < MIN_SCENES_PER_SIDE]
  if thin:
    raise errors.InvalidBenchmarkError([Problem(
        f"class {class_names[c]}", f"at least {MIN_SCENES_PER_SIDE} scenes on each side",
        f"{summary['ms_class_counts'][c]} MS / {summary['rgb_class_counts'][c]} RGB "
        f"({'its zones cannot be shared out' if split_by == 'region' else 'too few scenes'})")
        for c in thin], context=f"eurosat_asym split_by={split_by!r}")
  return Assignment(ms, rgb, summary)


def _assign_zones(scenes, zones, rng, num_classes) -> tuple[dict[str, str], dict]:
  per_zone: dict[str, np.ndarray] = collections.defaultdict(lambda: np.zeros(num_classes, int))
  for scene, zone in zip(scenes, zones):
    per_zone[zone][scene.label] += 1
  order = sorted(per_zone, key=lambda z: (-per_zone[z].sum(), rng.random()))
  totals = {"MS": np.zeros(num_classes, int), "RGB": np.zeros(num_classes, int)}
  side_of = {}
  for zone in order:
    cost = {}
    for side, other in (("MS", "RGB"), ("RGB", "MS")):
      cost[side] = np.abs(totals[side] + per_zone[zone] - totals[other]).sum()
    side = min(cost, key=lambda s: (cost[s], totals[s].sum(), rng.random()))
    side_of[zone] = side
    totals[side] += per_zone[zone]
  return side_of, {"zones": {z: {"side": side_of[z], "class_counts": per_zone[z].tolist()}
                             for z in sorted(per_zone)}}


def dataset_files(assignment: Assignment, ms_root: pathlib.Path, rgb_root: pathlib.Path
                  ) -> layout.DatasetFiles:
  """The two sides as the builder's `layout.DatasetFiles`, ids by (label, name) as
  `layout.scan` assigns them; paths relative to the folder holding both roots."""
  def files(scenes, root, attribute):
    ordered = sorted(scenes, key=lambda s: (s.label, getattr(s, attribute).name))
    return tuple(layout.SourceFile(i, s.label, f"{root.name}/{getattr(s, attribute).parent.name}/"
                                   f"{getattr(s, attribute).name}", getattr(s, attribute))
                 for i, s in enumerate(ordered))
  return layout.DatasetFiles(ms_root.parent, files(assignment.ms, ms_root, "ms_path"),
                             files(assignment.rgb, rgb_root, "rgb_path"))
