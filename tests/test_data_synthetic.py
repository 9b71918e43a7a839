"""The synthetic asymmetric benchmark generator."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import rasterio
from PIL import Image

from sembridge_jax.data import synthetic

SMALL = dict(num_classes=4, ms_bands=6, image_size=8, ms_per_class=3, rgb_per_class=2)


def all_files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def test_generation_is_deterministic_and_seeded(tmp_path):
  a = all_files(synthetic.generate_synthetic_benchmark(tmp_path / "a", **SMALL, seed=4))
  b = all_files(synthetic.generate_synthetic_benchmark(tmp_path / "b", **SMALL, seed=4))
  c = all_files(synthetic.generate_synthetic_benchmark(tmp_path / "c", **SMALL, seed=5))
  assert a == b
  assert a.keys() - {"GENERATOR.json"} == c.keys() - {"GENERATOR.json"}
  assert all(a[k] != c[k] for k in a if k.endswith((".tif", ".jpg")))


def test_classes_rendered_in_parallel_give_the_same_files(tmp_path, monkeypatch):
  serial = all_files(synthetic.generate_synthetic_benchmark(
      tmp_path / "serial", **SMALL, extra_rgb_test_per_class=2, workers=1))
  monkeypatch.setattr(synthetic, "PARALLEL_MIN_IMAGES", 0)
  parallel = all_files(synthetic.generate_synthetic_benchmark(
      tmp_path / "parallel", **SMALL, extra_rgb_test_per_class=2, workers=2))
  assert serial == parallel
  assert sum(name.endswith(".tif") for name in serial) == 4 * 3


def test_layout_georeferencing_and_formats(tmp_path):
  root = synthetic.generate_synthetic_benchmark(tmp_path, **SMALL)
  names = synthetic.synthetic_class_names(4)
  assert sorted(p.name for p in (root / "MS").iterdir()) == list(names)
  assert sorted(p.name for p in (root / "RGB").iterdir()) == list(names)
  for name in names:
    tifs = sorted((root / "MS" / name).iterdir())
    jpgs = sorted((root / "RGB" / name).iterdir())
    assert len(tifs) == 3 and len(jpgs) == 2
    origins = set()
    for tif in tifs:
      with rasterio.open(tif) as dataset:
        assert dataset.driver == "GTiff" and dataset.count == 6
        assert dataset.dtypes == ("uint16",) * 6 and dataset.shape == (8, 8)
        assert dataset.crs.to_epsg() == 32632
        assert dataset.transform.a == 10.0 and dataset.transform.e == -10.0
        origins.add((dataset.transform.c, dataset.transform.f))
        assert dataset.read().min() > 0
    assert len(origins) == 3  # Different scenes, different places.
    for jpg in jpgs:
      with Image.open(jpg) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (8, 8)
  manifest = json.loads((root / synthetic.MANIFEST_NAME).read_text())
  assert manifest["parameters"]["ms_bands"] == 6 and manifest["class_names"] == list(names)
  paired = [c for pair in manifest["rgb_confusable_pairs"] for c in pair]
  assert sorted(paired + manifest["singletons"]) == list(names)


@pytest.mark.parametrize("bad", [dict(ms_bands=4), dict(num_classes=1),
                                 dict(semantic_overlap=1.5), dict(scene_variation=-0.1),
                                 dict(ms_per_class=0)])
def test_invalid_parameters_are_named(bad, tmp_path):
  key = next(iter(bad))
  with pytest.raises(ValueError, match=f"{key}={bad[key]!r} is invalid"):
    synthetic.generate_synthetic_benchmark(tmp_path, **bad)


def test_semantic_overlap_interpolates_the_class_evidence():
  """MS-region minus RGB-region prototypes shrink linearly to zero as overlap -> 1."""
  def gap(overlap):
    _, ms, rgb = synthetic.make_prototypes(synthetic.SyntheticParameters(semantic_overlap=overlap))
    return np.concatenate([(m - r).ravel() for m, r in zip(ms, rgb)])
  disjoint = gap(0.0)
  assert np.abs(disjoint).max() > 0.05
  for overlap in (0.25, 0.5, 0.9):
    np.testing.assert_allclose(gap(overlap), (1 - overlap) * disjoint, atol=1e-12)
  np.testing.assert_allclose(gap(1.0), 0.0, atol=1e-12)


def test_scene_condition_is_shared_by_both_regions_and_by_a_pair():
  params = synthetic.SyntheticParameters(scene_variation=0.4)
  structure, ms, rgb = synthetic.make_prototypes(params)
  np.testing.assert_array_equal(ms.condition, rgb.condition)
  np.testing.assert_allclose(np.sqrt(np.mean(ms.condition ** 2, axis=1)), 0.4)
  for a, b in structure.pairs:
    np.testing.assert_array_equal(ms.condition[a], ms.condition[b])
  # Everything else is the same draw as without a condition.
  _, ms0, rgb0 = synthetic.make_prototypes(dataclasses.replace(params, scene_variation=0.0))
  for with_condition, without in ((ms, ms0), (rgb, rgb0)):
    assert not without.condition.any()
    for field in ("primary", "secondary", "texture"):
      np.testing.assert_array_equal(getattr(with_condition, field), getattr(without, field))


def test_scenes_of_a_class_vary_along_one_direction_in_both_regions():
  """What SFM can find: the within-class variation of scene colour that both regions share."""
  params = synthetic.SyntheticParameters(num_classes=4, image_size=8, ms_per_class=60,
                                         rgb_per_class=60, scene_variation=0.5)
  scenes = list(synthetic.iter_scenes(params))
  labels = np.array([int(s.relative_path.split("/")[1][-2:]) for s in scenes])
  is_ms = np.array([s.modality == "MS" for s in scenes])
  descriptors = np.stack([s.descriptor for s in scenes]).astype(np.float64)
  flat = np.stack([s.descriptor for s in synthetic.iter_scenes(
      dataclasses.replace(params, scene_variation=0.0))]).astype(np.float64)

  def principal(x):
    x = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    return vt[0], singular[0] ** 2 / np.sum(singular ** 2), np.mean(np.sum(x ** 2, axis=1))

  for label in range(4):
    ms_axis, ms_share, ms_spread = principal(descriptors[is_ms & (labels == label)])
    rgb_axis, rgb_share, _ = principal(descriptors[~is_ms & (labels == label)])
    *_, flat_spread = principal(flat[is_ms & (labels == label)])
    assert ms_spread > 4 * flat_spread  # The condition dominates the within-class spread,
    assert min(ms_share, rgb_share) > 0.6  # mostly along one direction,
    assert abs(ms_axis @ rgb_axis) > 0.9  # the same in both regions.


def test_confusable_pairs_differ_mostly_outside_the_visible_bands():
  structure, ms, rgb = synthetic.make_prototypes(synthetic.SyntheticParameters())
  assert len(structure.pairs) == 4 and len(structure.singletons) == 2
  visible = list(synthetic.VISIBLE_BANDS)
  hidden = [b for b in range(10) if b not in visible]
  for region in (ms, rgb):
    for a, b in structure.pairs:
      log_ratio = np.log(region.primary[a] / region.primary[b])
      assert np.abs(log_ratio[visible]).max() < 1.5 * synthetic.VISIBLE_PAIR_CONTRAST
      assert np.abs(log_ratio[hidden]).min() > 0.5 * synthetic.NONVISIBLE_PAIR_CONTRAST
      np.testing.assert_array_equal(region.texture[a], region.texture[b])


def _features(images: np.ndarray) -> np.ndarray:
  """Per-band means and log band ratios plus gradient energy (a cheap texture cue)."""
  means = images.mean(axis=(1, 2))
  log_means = np.log(means + 1e-3)
  ratios = (log_means[:, :, None] - log_means[:, None, :]).reshape(len(images), -1)
  gradient = np.abs(np.diff(images.mean(-1), axis=1)).mean(axis=(1, 2))
  return np.concatenate([means, images.std(axis=(1, 2)), ratios, gradient[:, None]], axis=1)


def _ridge_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
  """Held-out accuracy of a closed-form ridge classifier on a stratified 75/25 split."""
  rng = np.random.default_rng(seed)
  test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    test[members[: len(members) // 4]] = True
  mean, std = features[~test].mean(0), features[~test].std(0) + 1e-8
  x = np.c_[(features - mean) / std, np.ones(len(features))]
  targets = np.eye(labels.max() + 1)[labels]
  weights = np.linalg.solve(x[~test].T @ x[~test] + 1.0 * np.eye(x.shape[1]),
                            x[~test].T @ targets[~test])
  return float(((x[test] @ weights).argmax(1) == labels[test]).mean())


def test_ms_is_easy_and_rgb_is_at_least_ten_points_harder(tmp_path):
  """The property the benchmark exists for, on a cheap linear proxy of a classifier."""
  root = synthetic.generate_synthetic_benchmark(
      tmp_path, num_classes=10, image_size=16, ms_per_class=48, rgb_per_class=48, seed=2)
  ms_images, rgb_images, ms_labels, rgb_labels = [], [], [], []
  for label, name in enumerate(synthetic.synthetic_class_names(10)):
    for tif in sorted((root / "MS" / name).iterdir()):
      with rasterio.open(tif) as dataset:
        pixels = np.moveaxis(dataset.read(), 0, -1).astype(np.float64)
      ms_images.append(pixels / pixels.max())  # The authors' per-image max.
      ms_labels.append(label)
    for jpg in sorted((root / "RGB" / name).iterdir()):
      rgb_images.append(np.asarray(Image.open(jpg), np.float64) / 255)
      rgb_labels.append(label)
  ms_accuracy = _ridge_accuracy(_features(np.stack(ms_images)), np.array(ms_labels))
  rgb_accuracy = _ridge_accuracy(_features(np.stack(rgb_images)), np.array(rgb_labels))
  assert ms_accuracy >= 0.9, ms_accuracy
  assert rgb_accuracy <= ms_accuracy - 0.1, (ms_accuracy, rgb_accuracy)
  assert rgb_accuracy >= 0.4, rgb_accuracy  # Hard, but not noise: there is signal to learn.
