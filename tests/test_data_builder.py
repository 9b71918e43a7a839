"""The ackd_benchmark TFDS builder on tiny fake dataset roots written by the tests."""

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
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from sembridge_jax import data
from sembridge_jax.data import fixtures, parallel, specs
from tfds_builders.ackd_benchmark import ackd_benchmark_dataset_builder as builder_lib

FILES_PER_CLASS = 3
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> pathlib.Path:
  """One manual_dir holding S2S_EU, S2S_CN and M2S_GL (3 MS + 3 RGB files per class)."""
  directory = tmp_path_factory.mktemp("manual")
  for seed, name in enumerate(specs.DATASETS):
    fixtures.write_fake_root(directory, name, files_per_class=FILES_PER_CLASS, seed=seed)
  return directory


def data_config(name: str, manual_dir: pathlib.Path | str, **overrides):
  config = data.default_data_config(name)
  config.manual_dir = str(manual_dir)
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def built(manual_dir, tfds_dir) -> dict[str, data.Benchmark]:
  return {name: data.load_benchmark(data_config(name, manual_dir), data_dir=tfds_dir)
          for name in specs.DATASETS}


def read_source_file(path: pathlib.Path) -> np.ndarray:
  """Independent reader: the file's full (H, W, source bands) pixels."""
  if path.suffix == ".mat":
    return scipy.io.loadmat(path)["msi"]
  with rasterio.open(path) as dataset:
    return np.moveaxis(dataset.read(), 0, -1)


@pytest.mark.parametrize("name", list(specs.DATASETS))
def test_real_config_builds_and_reads_back(name, built, manual_dir):
  spec = specs.DATASETS[name]
  benchmark = built[name]
  assert benchmark.class_names == spec.class_names
  assert benchmark.ms_channels == spec.ms_channels
  n_per_modality = FILES_PER_CLASS * spec.num_classes
  # Stratified 80/20 of 3 files per class: round(0.6) = 1 test file per class.
  sizes = {split: len(source) for split, source in benchmark.sources.items()}
  assert sizes == {"ms_train": 2 * spec.num_classes, "ms_test": spec.num_classes,
                   "rgb_train": 2 * spec.num_classes, "rgb_test": spec.num_classes}
  for modality in ("ms", "rgb"):
    ids = np.concatenate([benchmark.ids(f"{modality}_train"), benchmark.ids(f"{modality}_test")])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n_per_modality))
  for split, source in benchmark.sources.items():
    labels = benchmark.labels(split)
    np.testing.assert_array_equal(np.bincount(labels, minlength=spec.num_classes),
                                  benchmark.metadata["splits"][split]["class_counts"])
    for i in range(len(source)):
      record = source[i]
      assert record["id"] == benchmark.ids(split)[i]
      assert record["label"] == labels[i]
      filename = record["filename"].decode()
      assert filename == benchmark.filenames(split)[i]
      modality, class_name, _ = filename.split("/")
      assert spec.class_names[record["label"]] == class_name
      path = manual_dir / spec.root_name / filename
      if split.startswith("ms"):
        assert modality == "MS" and record["rgb_jpeg"] == b""
        expected = read_source_file(path)
        if spec.ms_band_selection:
          expected = expected[..., [b - 1 for b in spec.ms_band_selection]]
        assert record["ms_image"].dtype == np.uint16
        np.testing.assert_array_equal(record["ms_image"], expected)
      else:
        assert modality == "RGB" and record["ms_image"].shape == (0, 0, spec.ms_channels)
        assert record["rgb_jpeg"] == path.read_bytes()  # The original bytes, unchanged.


def test_s2s_eu_keeps_the_papers_ten_bands(built):
  """Band values encode their 1-based source band (fixtures): B8, B8A (8, 9) and B13 go."""
  record = built["s2s_eu"].sources["ms_train"][0]
  source_band = record["ms_image"].reshape(-1, 10).min(0) // fixtures.BAND_VALUE_STEP
  np.testing.assert_array_equal(source_band, [1, 2, 3, 4, 5, 6, 7, 10, 11, 12])


def test_metadata_records_split_and_train_band_statistics(built, manual_dir):
  benchmark = built["s2s_cn"]
  metadata = benchmark.metadata
  assert metadata["split_seed"] == 0 and metadata["test_fraction"] == 0.2
  assert metadata["ms_size"] == [16, 16] and metadata["rgb_size"] == [128, 128]
  pixels = np.concatenate([
      read_source_file(manual_dir / "S2S_CN" / f).reshape(-1, 14).astype(np.float64)
      for f in benchmark.filenames("ms_train")])
  np.testing.assert_allclose(benchmark.ms_stats.mean, pixels.mean(0), rtol=1e-10)
  np.testing.assert_allclose(benchmark.ms_stats.std, pixels.std(0), rtol=1e-8)
  np.testing.assert_array_equal(benchmark.ms_stats.max, pixels.max(0))
  train, test = set(benchmark.filenames("ms_train")), set(benchmark.filenames("ms_test"))
  assert not train & test


def test_build_is_deterministic_and_split_seed_changes_the_split(manual_dir, tmp_path):
  first = data.load_benchmark(data_config("m2s_gl", manual_dir), data_dir=tmp_path / "a")
  again = data.load_benchmark(data_config("m2s_gl", manual_dir), data_dir=tmp_path / "b")
  for split in data.SPLITS:
    assert first.filenames(split) == again.filenames(split)
    for i in range(len(first.sources[split])):
      a, b = first.sources[split][i], again.sources[split][i]
      assert a["id"] == b["id"] and a["filename"] == b["filename"]
      np.testing.assert_array_equal(a["ms_image"], b["ms_image"])
  reseeded = data.load_benchmark(data_config("m2s_gl", manual_dir, split_seed=7),
                                 data_dir=tmp_path / "a")
  assert reseeded.builder.builder_config.name == "m2s_gl_split7"
  assert reseeded.metadata["split_seed"] == 7
  assert reseeded.filenames("ms_test") != first.filenames("ms_test")
  assert (sorted(reseeded.filenames("ms_test") + reseeded.filenames("ms_train"))
          == sorted(first.filenames("ms_test") + first.filenames("ms_train")))


def test_rebuild_is_idempotent(built, manual_dir, tfds_dir):
  benchmark = built["s2s_eu"]
  version_dir = tfds_dir / "ackd_benchmark" / "s2s_eu" / str(builder_lib.Builder.VERSION)
  record_file = next(version_dir.glob("*ms_train*"))
  modified = record_file.stat().st_mtime_ns
  again = data.load_benchmark(data_config("s2s_eu", manual_dir), data_dir=tfds_dir)
  assert again.metadata == benchmark.metadata
  assert record_file.stat().st_mtime_ns == modified  # Opened, not rebuilt.


def test_synthetic_configs_do_not_collide(tmp_path):
  small = data.default_data_config("synthetic")
  small.synthetic.update(num_classes=2, ms_bands=5, image_size=8, ms_per_class=4,
                         rgb_per_class=3)
  other = data.default_data_config("synthetic")
  other.synthetic.update(small.synthetic.to_dict(), semantic_overlap=0.25, seed=3)
  a = data.load_benchmark(small, data_dir=tmp_path)
  b = data.load_benchmark(other, data_dir=tmp_path)
  assert a.builder.builder_config.name == "synthetic_classes2_bands5_size8_ms4_rgb3"
  assert b.builder.builder_config.name == (
      "synthetic_classes2_bands5_size8_ms4_rgb3_overlap0.25_seed3")
  assert a.metadata["synthetic"]["seed"] == 0 and b.metadata["synthetic"]["seed"] == 3
  assert a.ms_channels == 5 and len(a.sources["ms_train"]) + len(a.sources["ms_test"]) == 8
  assert data.make_builder(data.default_data_config("synthetic"), tmp_path).builder_config.name \
      == "synthetic"


def test_synthetic_test_only_scenes_join_rgb_test_with_their_labels(tmp_path):
  config = data.default_data_config("synthetic")
  config.synthetic.update(num_classes=3, ms_bands=5, image_size=8, ms_per_class=4,
                          rgb_per_class=5, extra_rgb_test_per_class=4)
  benchmark = data.load_benchmark(config, data_dir=tmp_path)
  assert benchmark.builder.builder_config.name.endswith("_extratest4")
  train_files = benchmark.filenames("rgb_train")
  test_files = benchmark.filenames("rgb_test")
  assert len(train_files) == 12 and len(test_files) == 3 + 12
  assert not [f for f in train_files if f.startswith("RGB_TEST/")]
  assert len([f for f in test_files if f.startswith("RGB_TEST/")]) == 12
  for split in ("rgb_train", "rgb_test", "ms_train", "ms_test"):
    ids = benchmark.ids(split)
    assert np.all(np.diff(ids) > 0), split           # Records in ascending id order.
    stored = [int(record["label"]) for record in benchmark.sources[split]]
    np.testing.assert_array_equal(benchmark.labels(split), stored, err_msg=split)
    assert [int(r["id"]) for r in benchmark.sources[split]] == ids.tolist()
  # Without them, the split is the one of dataset 1.1.0 (the other scenes are unchanged).
  config.synthetic.extra_rgb_test_per_class = 0
  before = data.load_benchmark(config, data_dir=tmp_path)
  assert before.filenames("rgb_train") == train_files
  assert before.filenames("rgb_test") == [f for f in test_files if f.startswith("RGB/")]


# --- Bad input: every case raises InvalidBenchmarkError naming the file, writes nothing. ---

def _break(root: pathlib.Path, case: str) -> str:
  """Damages the fake S2S_EU root ``root``; returns a substring the error must contain."""
  ms, rgb = root / "MS", root / "RGB"
  tif = ms / "Forest" / "Forest_0.tif"
  if case == "corrupt_tiff":
    tif.write_bytes(b"II*\x00 this is not a tiff")
    return "Forest_0.tif: expected a readable 13-band GeoTIFF"
  if case == "truncated_tiff":
    tif.write_bytes(tif.read_bytes()[:4000])
    return "Forest_0.tif: expected a readable 13-band GeoTIFF"
  if case == "wrong_band_count":
    fixtures.write_geotiff(tif, fixtures.fake_ms_image(np.random.default_rng(0), 64, 12))
    return "Forest_0.tif: expected a GeoTIFF with 13 bands; found 12 band(s)"
  if case == "wrong_ms_size":
    fixtures.write_geotiff(tif, fixtures.fake_ms_image(np.random.default_rng(0), 32, 13))
    return "Forest_0.tif: expected 64x64 pixels; found 32x32"
  if case == "wrong_rgb_size":
    (rgb / "Forest" / "Forest_0.jpg").write_bytes(
        fixtures.jpeg_bytes(np.zeros((48, 64, 3), np.uint8)))
    return "Forest_0.jpg: expected 64x64 pixels; found 48x64"
  if case == "float_ms":
    fixtures.write_geotiff(tif, np.full((64, 64, 13), 0.5, np.float32))
    return "Forest_0.tif: expected integer digital numbers in [0, 65535]"
  if case == "truncated_jpeg":
    jpg = rgb / "Forest" / "Forest_0.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    return "Forest_0.jpg: expected a readable RGB JPEG"
  if case == "grey_jpeg":
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(rgb / "Forest" / "Forest_0.jpg")
    return "Forest_0.jpg: expected a 3-channel RGB JPEG; found mode 'L'"
  if case == "png_named_jpg":
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(rgb / "Forest" / "Forest_0.jpg",
                                                           format="PNG")
    return "Forest_0.jpg: expected a JPEG image; found a PNG image"
  if case == "class_missing_in_rgb":
    shutil.rmtree(rgb / "Highway")
    return "RGB/Highway: expected the class folder of 'Highway'"
  if case == "unknown_class":
    shutil.copytree(ms / "Forest", ms / "Jungle")
    return "MS/Jungle: expected a class folder among"
  if case == "empty_class":
    for f in (ms / "Pasture").iterdir():
      f.unlink()
    return "MS/Pasture: expected at least one MS image (.tif or .tiff); found an empty class"
  if case == "stray_file":
    (ms / "River" / "notes.txt").write_text("hello")
    return "River/notes.txt: expected a MS image file with extension .tif or .tiff"
  if case == "stray_file_at_modality_level":
    (rgb / "index.csv").write_text("a,b")
    return "RGB/index.csv: expected only class folders here; found a file"
  raise AssertionError(case)


BAD_S2S_EU_CASES = ["corrupt_tiff", "truncated_tiff", "wrong_band_count", "wrong_ms_size",
                    "wrong_rgb_size", "float_ms", "truncated_jpeg", "grey_jpeg", "png_named_jpg",
                    "class_missing_in_rgb", "unknown_class", "empty_class", "stray_file",
                    "stray_file_at_modality_level"]


def assert_nothing_loadable(data_dir: pathlib.Path, config_name: str) -> None:
  dataset_dir = data_dir / "ackd_benchmark" / config_name
  leftovers = list(dataset_dir.rglob("*")) if dataset_dir.exists() else []
  assert not [p for p in leftovers if p.is_file()], leftovers
  builder = builder_lib.Builder(config=config_name, data_dir=os.fspath(data_dir))
  assert not builder.is_prepared()
  with pytest.raises((AssertionError, KeyError), match="not been generated"):
    builder.as_data_source("ms_train")


@pytest.mark.parametrize("case", BAD_S2S_EU_CASES)
def test_bad_s2s_eu_input_fails_cleanly(case, manual_dir, tmp_path):
  broken = tmp_path / "manual"
  shutil.copytree(manual_dir / "S2S_EU", broken / "S2S_EU")
  expected = _break(broken / "S2S_EU", case)
  with pytest.raises(data.InvalidBenchmarkError) as error:
    data.load_benchmark(data_config("s2s_eu", broken), data_dir=tmp_path / "tfds")
  assert expected in str(error.value), str(error.value)
  assert str(broken / "S2S_EU") in str(error.value)  # The full path of the offender.
  assert_nothing_loadable(tmp_path / "tfds", "s2s_eu")


@pytest.fixture
def parallel_reads(monkeypatch):
  """Builds read every file in two worker processes, however small the dataset."""
  monkeypatch.setattr(parallel, "PARALLEL_MIN_FILES", 0)
  monkeypatch.setattr(parallel, "available_cpus", lambda: 2)
  monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)


def record_files(benchmark: data.Benchmark) -> dict[str, bytes]:
  version_dir = pathlib.Path(benchmark.builder.data_dir)
  return {path.name: path.read_bytes() for path in sorted(version_dir.glob("*.array_record*"))}


def test_parallel_reads_build_the_same_records_and_statistics(built, manual_dir, tmp_path,
                                                              parallel_reads):
  assert parallel.workers_for(1) == 2
  parallel_build = data.load_benchmark(data_config("s2s_eu", manual_dir), data_dir=tmp_path)
  serial_build = built["s2s_eu"]   # the module's build, one process
  assert record_files(parallel_build) == record_files(serial_build)
  assert parallel_build.metadata == serial_build.metadata   # band statistics to the last bit
  assert len(record_files(serial_build)) == 4


@pytest.mark.parametrize("reads", ["serial", "parallel"])
def test_all_problems_are_listed_at_once(manual_dir, tmp_path, reads, request):
  if reads == "parallel":
    request.getfixturevalue("parallel_reads")
  broken = tmp_path / "manual"
  shutil.copytree(manual_dir / "S2S_EU", broken / "S2S_EU")
  for case in ("corrupt_tiff", "grey_jpeg"):
    _break(broken / "S2S_EU", case)
  ms = broken / "S2S_EU" / "MS"
  (ms / "River" / "River_0.tif").write_bytes(b"garbage")
  fixtures.write_geotiff(ms / "River" / "River_1.tif",
                         fixtures.fake_ms_image(np.random.default_rng(0), 64, 12))
  with pytest.raises(data.InvalidBenchmarkError) as error:
    data.load_benchmark(data_config("s2s_eu", broken), data_dir=tmp_path / "tfds")
  offenders = sorted(pathlib.Path(p.path).name for p in error.value.problems)
  assert offenders == ["Forest_0.jpg", "Forest_0.tif", "River_0.tif", "River_1.tif"]


@pytest.mark.parametrize("case", ["missing_msi", "wrong_shape", "fractional_values"])
def test_bad_mat_files(case, manual_dir, tmp_path):
  broken = tmp_path / "manual"
  shutil.copytree(manual_dir / "M2S_GL", broken / "M2S_GL")
  mat = broken / "M2S_GL" / "MS" / "sea" / "sea_1.mat"
  if case == "missing_msi":
    fixtures.write_mat(mat, np.zeros((16, 16, 10), np.uint16), key="image")
    expected = "sea_1.mat: expected a .mat file with key 'msi'; found keys ['image']"
  elif case == "wrong_shape":
    fixtures.write_mat(mat, np.zeros((16, 16, 9), np.uint16))
    expected = "sea_1.mat: expected 'msi' of shape (H, W, 10); found shape (16, 16, 9)"
  else:
    fixtures.write_mat(mat, np.full((16, 16, 10), 0.25))
    expected = "sea_1.mat: expected integer digital numbers in [0, 65535]"
  with pytest.raises(data.InvalidBenchmarkError, match=expected.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[").replace("]", r"\]")):
    data.load_benchmark(data_config("m2s_gl", broken), data_dir=tmp_path / "tfds")
  assert_nothing_loadable(tmp_path / "tfds", "m2s_gl")


def test_ms_size_outlier_is_refused_when_the_spec_leaves_the_size_open(manual_dir, tmp_path):
  broken = tmp_path / "manual"
  shutil.copytree(manual_dir / "S2S_CN", broken / "S2S_CN")
  fixtures.write_geotiff(broken / "S2S_CN" / "MS" / "cloud" / "cloud_2.tif",
                         fixtures.fake_ms_image(np.random.default_rng(0), 20, 14))
  with pytest.raises(data.InvalidBenchmarkError,
                     match="cloud_2.tif: expected 16x16 pixels like the other MS images; "
                           "found 20x20"):
    data.load_benchmark(data_config("s2s_cn", broken), data_dir=tmp_path / "tfds")


@pytest.mark.parametrize("case", ["missing", "empty", "a_file", "unreadable", "no_root"])
def test_bad_manual_dir(case, tmp_path, monkeypatch):
  manual = tmp_path / "manual"
  if case == "empty":
    manual.mkdir()
  elif case == "a_file":
    manual.write_text("not a folder")
  elif case == "no_root":
    (manual / "S2S_CN").mkdir(parents=True)
  elif case == "unreadable":
    # Running as root, permission bits do not stop reads: make listing it fail instead.
    (manual / "S2S_EU").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path):
      if isinstance(path, (str, os.PathLike)) and pathlib.Path(path) == manual:
        raise PermissionError(13, "Permission denied", str(path))
      return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
  with pytest.raises(data.InvalidBenchmarkError) as error:
    data.load_benchmark(data_config("s2s_eu", manual), data_dir=tmp_path / "tfds")
  message = str(error.value)
  assert str(manual) in message
  assert {"missing": "does not exist or is empty", "empty": "does not exist or is empty",
          "a_file": "expected a readable folder", "unreadable": "Permission denied",
          "no_root": "S2S_EU/MS"}[case] in message, message


# --- URL archive through TFDS's download manager ---

def test_archive_url_builds_through_the_download_manager(manual_dir, http_server, tmp_path):
  served, url = http_server
  with zipfile.ZipFile(served / "s2s_cn.zip", "w") as archive:
    for path in sorted((manual_dir / "S2S_CN").rglob("*")):
      archive.write(path, path.relative_to(manual_dir))
  config = data.default_data_config("s2s_cn")
  config.download_url = f"{url}/s2s_cn.zip"
  benchmark = data.load_benchmark(config, data_dir=tmp_path / "tfds")
  assert benchmark.builder.builder_config.name.startswith("s2s_cn_archive")
  assert benchmark.metadata["source"] == {"kind": "archive", "location": config.download_url}
  reference = data.load_benchmark(data_config("s2s_cn", manual_dir), data_dir=tmp_path / "ref")
  for split in data.SPLITS:
    assert benchmark.filenames(split) == reference.filenames(split)
  np.testing.assert_array_equal(benchmark.sources["ms_test"][3]["ms_image"],
                                reference.sources["ms_test"][3]["ms_image"])


def test_builds_and_reads_without_tensorflow(manual_dir, tmp_path):
  """TensorFlow is not a dependency: with it made unimportable (the test extra installs
  it for the CLI test below), a real config and the synthetic one still build and load."""
  code = f"""
import sys

class Hidden:  # Wraps an import finder so that it never finds tensorflow.
  def __init__(self, finder):
    self.finder = finder
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return self.finder.find_spec(name, path, target)
  def __getattr__(self, attribute):
    return getattr(self.finder, attribute)

sys.meta_path[:] = [Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
from sembridge_jax import data
for name in ("s2s_eu", "synthetic"):
  config = data.default_data_config(name)
  if name == "synthetic":
    config.synthetic.update(dict(ms_per_class=5, rgb_per_class=5, num_classes=3))
  else:
    config.manual_dir = {str(manual_dir)!r}
  benchmark = data.load_benchmark(config, data_dir={str(tmp_path / "tfds")!r})
  record = benchmark.sources["ms_train"][0]
  print(name, len(benchmark.sources["rgb_train"]), record["ms_image"].dtype)
assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=str(REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.split("\n")
  assert any(line.startswith("s2s_eu ") and line.endswith(" uint16") for line in lines)
  assert any(line.startswith("synthetic 12 ") for line in lines), result.stdout

# --- The `tfds build` command line ---
# tensorflow-datasets 4.9.10's CLI imports tensorflow, apache_beam (a DoFn defined at
# import time by its format converter) and mlcroissant before parsing any argument; the
# test extra installs all three (the package itself needs none of them).


def test_tfds_build_cli(manual_dir, tmp_path):
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  command = [str(tfds_cli) if tfds_cli.exists() else sys.executable, *(
      [] if tfds_cli.exists() else ["-m", "tensorflow_datasets.scripts.cli.main"]),
      "build", str(REPO / "tfds_builders" / "ackd_benchmark"), "--config", "s2s_eu",
      "--manual_dir", str(manual_dir), "--data_dir", str(tmp_path / "tfds")]
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  built_dir = tmp_path / "tfds" / "ackd_benchmark" / "s2s_eu" / str(builder_lib.Builder.VERSION)
  info = json.loads((built_dir / "dataset_info.json").read_text())
  assert info["fileFormat"] == "array_record"
  source = tfds.data_source("ackd_benchmark/s2s_eu", data_dir=tmp_path / "tfds")
  assert len(source["ms_train"]) == 20


def test_empty_ms_images_are_size_problems_not_a_crash(manual_dir, tmp_path):
  """Zero-pixel MS images (here a whole class, so some are training images) are listed
  with the other problems; no statistics are taken of them."""
  broken = tmp_path / "manual"
  shutil.copytree(manual_dir / "M2S_GL", broken / "M2S_GL")
  spec = specs.get_spec("m2s_gl")
  empty = sorted(next(iter(sorted((broken / "M2S_GL" / "MS").iterdir()))).iterdir())
  for path in empty:
    scipy.io.savemat(path, {"msi": np.zeros((0, 0, spec.ms_source_bands), np.uint16)})
  with pytest.raises(data.InvalidBenchmarkError) as error:
    data.load_benchmark(data_config("m2s_gl", broken), data_dir=tmp_path / "tfds")
  assert {pathlib.Path(p.path).name for p in error.value.problems} == {p.name for p in empty}
