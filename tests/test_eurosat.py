"""``eurosat_asym``: EuroSAT's MS and RGB archives cut into disjoint scenes or regions,
from extracted folders, from the two zips, or downloaded over a (loopback) URL."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import rasterio

from conftest import REPO
from sembridge_jax import data
from sembridge_jax.data import errors, eurosat, fixtures, specs

SPEC = specs.get_spec(specs.EUROSAT_ASYM)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> pathlib.Path:
  """A manual_dir holding EuroSAT_MS/ and EuroSAT_RGB/ (3 UTM zones, 6 scenes a class)."""
  directory = tmp_path_factory.mktemp("eurosat")
  fixtures.write_fake_eurosat(directory)
  return directory


def build(manual_dir, data_dir, split_by="scene", **overrides):
  config = data.default_data_config(specs.EUROSAT_ASYM)
  config.manual_dir, config.split_by = str(manual_dir), split_by
  config.update(overrides)
  return data.load_benchmark(config, data_dir=data_dir)


def scenes_of(benchmark, modality: str) -> set[str]:
  return {pathlib.PurePosixPath(f).stem for split in data.SPLITS if split.startswith(modality)
          for f in benchmark.filenames(split)}


def zones_of(benchmark, modality: str, downloads: pathlib.Path) -> set[str]:
  return {eurosat.utm_zone(downloads / eurosat.MS_FOLDER / f"{s.rsplit('_', 1)[0]}" / f"{s}.tif")
          for s in scenes_of(benchmark, modality)}


def test_scene_split_keeps_every_scene_on_one_side(downloads, tmp_path):
  benchmark = build(downloads, tmp_path)
  ms, rgb = scenes_of(benchmark, "ms"), scenes_of(benchmark, "rgb")
  assert not ms & rgb
  assert len(ms) == len(rgb) == 30  # Half of each class's 6 scenes on each side.
  split = benchmark.metadata["source"]["split"]
  assert split["ms_class_counts"] == split["rgb_class_counts"] == [3] * 10
  assert benchmark.ms_channels == 10 and benchmark.num_classes == 10


def test_ms_records_hold_exactly_bands_1_to_7_10_11_12(downloads, tmp_path):
  benchmark = build(downloads, tmp_path)
  record = benchmark.sources["ms_train"][0]
  path = downloads / benchmark.filenames("ms_train")[0]
  with rasterio.open(path) as tif:
    expected = np.moveaxis(tif.read([1, 2, 3, 4, 5, 6, 7, 10, 11, 12]), 0, -1)
  np.testing.assert_array_equal(record["ms_image"], expected)


def test_region_split_keeps_every_zone_on_one_side(downloads, tmp_path):
  benchmark = build(downloads, tmp_path, split_by="region")
  ms_zones, rgb_zones = zones_of(benchmark, "ms", downloads), zones_of(benchmark, "rgb", downloads)
  assert ms_zones and rgb_zones and not ms_zones & rgb_zones
  zones = benchmark.metadata["source"]["split"]["zones"]
  assert {z for z, v in zones.items() if v["side"] == "MS"} == ms_zones
  assert benchmark.builder.builder_config.name == "eurosat_asym_byregion"


def zip_folder(folder: pathlib.Path, archive: pathlib.Path) -> None:
  with zipfile.ZipFile(archive, "w") as zipped:
    for path in sorted(folder.rglob("*")):
      zipped.write(path, path.relative_to(folder.parent))


@pytest.mark.parametrize("split_by", eurosat.SPLIT_MODES)
def test_the_two_archives_over_a_url_build_the_same_benchmark(downloads, http_server, tmp_path,
                                                              split_by):
  served, url = http_server
  for folder in (eurosat.MS_FOLDER, eurosat.RGB_FOLDER):
    zip_folder(downloads / folder, served / f"{folder}.zip")
  config = data.default_data_config(specs.EUROSAT_ASYM)
  config.download_url, config.split_by = url, split_by
  downloaded = data.load_benchmark(config, data_dir=tmp_path / "url")
  assert downloaded.metadata["source"]["kind"] == "archive"
  # The same two zips as a manual_dir, and the extracted folders: the same splits.
  zips = tmp_path / "zips"
  zips.mkdir()
  for folder in (eurosat.MS_FOLDER, eurosat.RGB_FOLDER):
    shutil.copy(served / f"{folder}.zip", zips)
  from_zips = build(zips, tmp_path / "zips_tfds", split_by=split_by)
  from_folders = build(downloads, tmp_path / "folders", split_by=split_by)
  for split in data.SPLITS:
    names = downloaded.filenames(split)
    assert names == from_zips.filenames(split) == from_folders.filenames(split)
  np.testing.assert_array_equal(downloaded.sources["ms_test"][2]["ms_image"],
                                from_folders.sources["ms_test"][2]["ms_image"])


@pytest.mark.parametrize("fault", ["missing_class", "ms_without_rgb", "rgb_without_ms",
                                   "not_a_geotiff"])
def test_a_bad_archive_names_the_file(downloads, tmp_path, fault):
  broken = tmp_path / "broken"
  shutil.copytree(downloads, broken)
  ms, rgb = broken / eurosat.MS_FOLDER, broken / eurosat.RGB_FOLDER
  culprit = {"missing_class": rgb / "Pasture", "ms_without_rgb": ms / "Forest" / "Forest_2.tif",
             "rgb_without_ms": rgb / "River" / "River_3.jpg",
             "not_a_geotiff": ms / "Highway" / "Highway_1.tif"}[fault]
  if fault == "missing_class":
    shutil.rmtree(culprit)
  elif fault == "ms_without_rgb":
    (rgb / "Forest" / "Forest_2.jpg").unlink()
  elif fault == "rgb_without_ms":
    (ms / "River" / "River_3.tif").unlink()
  else:  # Every Highway scene, so that the side a scene lands on does not matter.
    for path in (ms / "Highway").iterdir():
      path.write_text("not an image")
  with pytest.raises(errors.InvalidBenchmarkError) as raised:
    build(broken, tmp_path / "tfds")
  message = str(raised.value)
  if fault == "not_a_geotiff":
    assert f"{ms / 'Highway' / 'Highway_'}" in message and "corrupt" in message, message
  else:
    assert str(culprit) in message, message


def test_the_config_runs_the_whole_pipeline_on_the_fixture(downloads, tmp_path):
  overrides = {"data.manual_dir": str(downloads), "pipeline.seeds": "(0,)",
               "matching.rematch_epochs": "(0,)", "eval_batch_size": "10", "progress": "False",
               "reports": "()"}  # The research read-outs have tests of their own.
  for section in ("teacher", "student", "matcher", "distill"):
    overrides[f"{section}.epochs"] = "1"
    overrides[f"{section}.batch_size"] = "10"
  for role in ("teacher", "student", "matcher"):
    overrides[f"model.{role}"] = "shufflenet_v2_x0_5"
  result = subprocess.run(
      [sys.executable, "-m", "sembridge_jax.main", "pipeline", "--config", "configs/eurosat.py",
       "--workdir", str(tmp_path / "run"), *(f"--config.{k}={v}" for k, v in overrides.items())],
      capture_output=True, text=True, cwd=str(REPO), timeout=900,
      env={**os.environ, "JAX_PLATFORMS": "cpu",  # Compile-bound: skip XLA's optimisations.
           "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"})
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert {"teacher", "student_only", "kd", "kd+sembridge"} <= set(results)
  assert "| SemBridge |" in result.stdout
