"""The Grain input pipeline: values, order, padding, resume, sharding, pairing."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import rasterio
from PIL import Image

from sembridge_jax import data

MS_SIZE, RGB_SIZE, BANDS = 8, 12, 5


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> data.Benchmark:
  config = data.default_data_config("synthetic")
  config.synthetic.update(num_classes=3, ms_bands=BANDS, image_size=MS_SIZE, ms_per_class=10,
                          rgb_per_class=9, seed=1)
  config.rgb_size = RGB_SIZE  # Stored RGB is 8x8: the loader resizes to 12x12.
  return data.load_benchmark(config, data_dir=tmp_path_factory.mktemp("tfds"))


def loader(benchmark, split="ms_train", **kwargs):
  defaults = dict(batch_size=4, seed=0, shuffle=True, num_epochs=1, drop_remainder=False,
                  normalization="per_image_max", shard_index=0, shard_count=1)
  return data.make_loader(benchmark, split, **{**defaults, **kwargs})


def source_root(benchmark) -> pathlib.Path:
  return pathlib.Path(benchmark.metadata["source"]["location"])


def raw_ms(benchmark, split) -> dict[int, np.ndarray]:
  """Independent reading of the MS files with rasterio, by id."""
  out = {}
  for record_id, name in zip(benchmark.ids(split), benchmark.filenames(split)):
    with rasterio.open(source_root(benchmark) / name) as dataset:
      out[int(record_id)] = np.moveaxis(dataset.read(), 0, -1).astype(np.float64)
  return out


def collect(batches, key):
  return np.concatenate([b[key][b["mask"]] for b in batches])


def test_fields_shapes_and_dtypes(benchmark):
  ms = next(iter(loader(benchmark, with_rgb_rendering=True)))
  assert ms["image"].shape == (4, MS_SIZE, MS_SIZE, BANDS) and ms["image"].dtype == np.float32
  assert ms["rgb_rendering"].shape == (4, RGB_SIZE, RGB_SIZE, 3)
  assert ms["label"].dtype == np.int32 and ms["id"].dtype == np.int32
  assert ms["mask"].dtype == bool and ms["mask"].all()
  rgb = next(iter(loader(benchmark, "rgb_test")))
  assert rgb["image"].shape == (4, RGB_SIZE, RGB_SIZE, 3)
  assert benchmark.image_size == RGB_SIZE and benchmark.ms_image_size == MS_SIZE


@pytest.mark.parametrize("normalization", ["per_image_max", "band_stats"])
def test_ms_normalisation_matches_numpy_on_the_files(benchmark, normalization):
  files = raw_ms(benchmark, "ms_test")
  batches = list(loader(benchmark, "ms_test", normalization=normalization))
  images, ids, labels = collect(batches, "image"), collect(batches, "id"), collect(batches, "label")
  assert sorted(ids) == sorted(files)
  for image, record_id in zip(images, ids):
    x = files[int(record_id)]
    if normalization == "per_image_max":
      expected = (x / x.max() - 0.5) / 0.5
    else:
      expected = (x - benchmark.ms_stats.mean) / benchmark.ms_stats.std
    np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-5)
  order = np.argsort(ids)
  np.testing.assert_array_equal(labels[order], benchmark.labels("ms_test")[
      np.argsort(benchmark.ids("ms_test"))])


def test_rgb_matches_pil_decode_and_bilinear_resize(benchmark):
  batches = list(loader(benchmark, "rgb_test", shuffle=False))
  names = dict(zip(benchmark.ids("rgb_test"), benchmark.filenames("rgb_test")))
  for image, record_id in zip(collect(batches, "image"), collect(batches, "id")):
    with Image.open(source_root(benchmark) / names[record_id]) as jpeg:
      resized = np.asarray(jpeg.convert("RGB").resize((RGB_SIZE, RGB_SIZE), Image.BILINEAR))
    # PIL rounds to uint8 after each of its two passes; we resize in float.
    np.testing.assert_allclose(image, (resized / 255.0 - 0.5) / 0.5, atol=2.5 * 2 / 255)


@pytest.mark.parametrize("gamma", [1.0, 2.2])
def test_rgb_rendering_is_true_colour_over_its_max(benchmark, gamma):
  files = raw_ms(benchmark, "ms_train")
  batch = next(iter(loader(benchmark, with_rgb_rendering=True, rendering_gamma=gamma)))
  bands = list(benchmark.rgb_bands)
  for rendering, record_id in zip(batch["rgb_rendering"], batch["id"]):
    rgb = files[int(record_id)][..., bands]
    rgb = (rgb / rgb.max()) ** (1 / gamma)
    expected = np.stack([np.asarray(Image.fromarray(rgb[..., c].astype(np.float32), mode="F")
                                    .resize((RGB_SIZE, RGB_SIZE), Image.BILINEAR))
                         for c in range(3)], -1)
    np.testing.assert_allclose(rendering, (expected - 0.5) / 0.5, atol=1e-5)


def test_epochs_are_permutations_with_padding(benchmark):
  n = len(benchmark.sources["ms_train"])
  assert n % 7  # The last batch is partial.
  batches = list(loader(benchmark, batch_size=7, num_epochs=2))
  steps = -(-n // 7)
  assert len(batches) == 2 * steps
  epochs = [collect(batches[:steps], "id"), collect(batches[steps:], "id")]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.sort(benchmark.ids("ms_train")))
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled every epoch.
  last = batches[steps - 1]
  padding = ~last["mask"]
  assert padding.sum() == steps * 7 - n
  assert (last["id"][padding] == -1).all() and (last["label"][padding] == -1).all()
  assert (last["image"][padding] == 0).all()
  unshuffled = collect(list(loader(benchmark, shuffle=False)), "id")
  np.testing.assert_array_equal(unshuffled, benchmark.ids("ms_train"))


def test_drop_remainder_and_length(benchmark):
  n = len(benchmark.sources["rgb_train"])
  dropped = loader(benchmark, "rgb_train", batch_size=5, drop_remainder=True, num_epochs=3)
  assert len(dropped) == 3 * (n // 5) and dropped.steps_per_epoch == n // 5
  batches = list(dropped)
  assert len(batches) == len(dropped) and all(b["mask"].all() for b in batches)


def test_same_seed_same_batches_other_seed_other_order(benchmark):
  a = [b["id"] for b in loader(benchmark, seed=3, num_epochs=2)]
  b = [b["id"] for b in loader(benchmark, seed=3, num_epochs=2)]
  c = [b["id"] for b in loader(benchmark, seed=4, num_epochs=2)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_resume_from_iterator_state_gives_the_same_batches(benchmark):
  kwargs = dict(split="rgb_train", seed=5, num_epochs=3, augment=True)
  iterator = iter(loader(benchmark, **kwargs))
  for _ in range(4):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(8)]  # Crosses an epoch boundary.
  resumed = iter(loader(benchmark, **kwargs))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_hosts_partition_each_epoch_into_the_global_batch(benchmark):
  shards = 3
  single = list(loader(benchmark, batch_size=4 * shards, num_epochs=2, seed=2))
  per_host = [list(loader(benchmark, batch_size=4, num_epochs=2, seed=2, shard_index=h,
                          shard_count=shards)) for h in range(shards)]
  assert all(len(host) == len(single) for host in per_host)
  for step, global_batch in enumerate(single):
    for key in ("id", "mask", "label", "image"):
      np.testing.assert_array_equal(
          np.concatenate([host[step][key] for host in per_host]), global_batch[key])
  steps = len(single) // 2
  for epoch in range(2):
    seen = [collect(host[epoch * steps:(epoch + 1) * steps], "id") for host in per_host]
    everything = np.concatenate(seen)
    assert len(everything) == len(np.unique(everything)) == len(benchmark.ids("ms_train"))


def test_pairing_adds_teacher_ids_and_follows_updates(benchmark):
  students = benchmark.ids("rgb_train")
  teachers = benchmark.ids("ms_train")
  rng = np.random.default_rng(0)
  table = data.PairTable(students, rng.choice(teachers, len(students)))
  first = table.lookup(students)
  paired = loader(benchmark, "rgb_train", batch_size=4, num_epochs=2, pairing=table,
                  prefetch=16)
  iterator = iter(paired)
  epoch_one = [next(iterator) for _ in range(paired.steps_per_epoch)]
  for batch in epoch_one:
    valid = batch["mask"]
    np.testing.assert_array_equal(batch["teacher_id"][valid], table.lookup(batch["id"][valid]))
    assert (batch["teacher_id"][~valid] == -1).all()
  # Re-matching between epochs: batches of epoch two, though prefetched, see the update.
  table.update(students, rng.choice(teachers, len(students)))
  assert not np.array_equal(table.lookup(students), first)
  for batch in iterator:
    valid = batch["mask"]
    np.testing.assert_array_equal(batch["teacher_id"][valid], table.lookup(batch["id"][valid]))


def test_teacher_images_are_the_normalised_ms_images_of_the_teachers(benchmark):
  students = benchmark.ids("rgb_test")
  table = data.PairTable(students, np.resize(benchmark.ids("ms_train")[::-1], len(students)))
  ms_batches = list(loader(benchmark, "ms_train", batch_size=64, shuffle=False,
                           normalization="band_stats"))
  ms_images = dict(zip(collect(ms_batches, "id"), collect(ms_batches, "image")))
  for batch in loader(benchmark, "rgb_test", normalization="band_stats", pairing=table,
                      teacher_split="ms_train"):
    for teacher_id, image, valid in zip(batch["teacher_id"], batch["teacher_image"],
                                        batch["mask"]):
      if valid:
        np.testing.assert_array_equal(image, ms_images[teacher_id])
      else:
        assert (image == 0).all()


def test_augmentation_is_seeded_and_only_touches_rgb(benchmark):
  plain = next(iter(loader(benchmark, "rgb_train")))
  augmented = next(iter(loader(benchmark, "rgb_train", augment=True)))
  again = next(iter(loader(benchmark, "rgb_train", augment=True)))
  np.testing.assert_array_equal(augmented["id"], plain["id"])
  np.testing.assert_array_equal(augmented["image"], again["image"])
  assert not np.allclose(augmented["image"], plain["image"])
  assert augmented["image"].min() >= -1 and augmented["image"].max() <= 1
  ms_plain = next(iter(loader(benchmark, with_rgb_rendering=True)))
  ms_augmented = next(iter(loader(benchmark, with_rgb_rendering=True, augment=True)))
  np.testing.assert_array_equal(ms_augmented["image"], ms_plain["image"])
  assert not np.allclose(ms_augmented["rgb_rendering"], ms_plain["rgb_rendering"])
  # colour_jitter=0: flips only, so every rendering keeps its values, only their places move.
  ms_flipped = next(iter(loader(benchmark, with_rgb_rendering=True, augment=True,
                                colour_jitter=0.0)))
  np.testing.assert_allclose(np.sort(ms_flipped["rgb_rendering"].reshape(len(ms_plain["id"]), -1)),
                             np.sort(ms_plain["rgb_rendering"].reshape(len(ms_plain["id"]), -1)),
                             atol=1e-5)
  assert not np.allclose(ms_flipped["rgb_rendering"], ms_plain["rgb_rendering"])


def test_random_camera_renders_each_image_through_its_own_camera(benchmark):
  kwargs = dict(with_rgb_rendering=True, augment=True, colour_jitter=0.0, random_camera=True)
  plain = next(iter(loader(benchmark, with_rgb_rendering=True)))
  camera = next(iter(loader(benchmark, **kwargs)))
  np.testing.assert_array_equal(camera["image"], plain["image"])  # The MS view is untouched.
  np.testing.assert_array_equal(camera["rgb_rendering"],
                                next(iter(loader(benchmark, **kwargs)))["rgb_rendering"])
  assert camera["rgb_rendering"].min() >= -1 and camera["rgb_rendering"].max() <= 1
  # Other exposures and tone curves: the mean brightness moves differently per image.
  shift = (camera["rgb_rendering"] - plain["rgb_rendering"]).mean(axis=(1, 2, 3))
  assert np.ptp(shift) > 0.05
  # Without augment the flag does nothing (validation renderings stay fixed).
  np.testing.assert_array_equal(
      next(iter(loader(benchmark, with_rgb_rendering=True, random_camera=True)))["rgb_rendering"],
      plain["rgb_rendering"])


def test_streaming_and_cached_reads_agree(benchmark):
  for split in ("ms_test", "rgb_test"):
    cached = list(loader(benchmark, split, cache=True, with_rgb_rendering=split == "ms_test"))
    streamed = list(loader(benchmark, split, cache=False,
                           with_rgb_rendering=split == "ms_test"))
    for a, b in zip(cached, streamed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_invalid_arguments_are_named(benchmark):
  with pytest.raises(ValueError, match="split='train' is unknown"):
    loader(benchmark, "train")
  with pytest.raises(ValueError, match="normalization='zscore' is unknown"):
    loader(benchmark, normalization="zscore")
  with pytest.raises(ValueError, match="with_rgb_rendering=True needs an MS split"):
    loader(benchmark, "rgb_train", with_rgb_rendering=True)
  with pytest.raises(ValueError, match="random_camera=True images the RGB rendering"):
    loader(benchmark, "rgb_train", augment=True, random_camera=True)
  with pytest.raises(ValueError, match="exceeds the split's"):
    loader(benchmark, batch_size=1000, drop_remainder=True)
  with pytest.raises(ValueError, match="teacher_split is set but pairing is None"):
    loader(benchmark, "rgb_train", teacher_split="ms_train")
  with pytest.raises(ValueError, match="shard_index=3 is invalid"):
    loader(benchmark, shard_index=3, shard_count=3)
  table = data.PairTable([10_000], [0])
  with pytest.raises(KeyError, match="student ids without a teacher"):
    next(iter(loader(benchmark, "rgb_train", pairing=table)))
