"""Input pipeline throughput: the TFDS + Grain loader vs a per-file (PyTorch-style) reader.

Both read the same synthetic benchmark files and produce the same batches: decoded,
normalised (MS: per-image max; RGB: resize, /255, (x - 0.5) / 0.5), batched, shuffled,
and for the student split with each record's matched teacher id looked up.

* per-file reader: what the authors' loader does per sample -- open the GeoTIFF with
  rasterio or the JPEG with Pillow, normalise, then collate a batch with ``np.stack``.
* pipeline (cached): `make_loader` with the split decoded into memory once (the default
  for splits that fit in memory); the first epoch includes that decoding.
* pipeline (streaming): `make_loader(cache=False)`: every batch read from ArrayRecord
  and decoded again.

Run: ``python bench/input_pipeline.py [--image-size 32] [--per-class 120] [--epochs 3]``.
Prints a markdown table of examples/s.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np
import rasterio
from PIL import Image

from sembridge_jax import data


class PerFileReader:
  """A map-style dataset over files: one file open + decode + normalise per sample."""

  def __init__(self, root: pathlib.Path, filenames: list[str], ids: np.ndarray,
               rgb_size: int):
    self.paths = [root / f for f in filenames]
    self.ids = ids
    self.rgb_size = rgb_size

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    path = self.paths[index]
    if path.suffix == ".tif":
      with rasterio.open(path) as dataset:
        x = np.moveaxis(dataset.read(), 0, -1).astype(np.float32)
      x = (x / x.max() - 0.5) / 0.5
    else:
      with Image.open(path) as image:
        x = np.asarray(image.convert("RGB").resize((self.rgb_size, self.rgb_size),
                                                   Image.BILINEAR), np.float32)
      x = (x / 255.0 - 0.5) / 0.5
    return x, int(self.ids[index])


def per_file_epochs(reader: PerFileReader, batch_size: int, epochs: int, seed: int,
                    pairs: dict[int, int] | None) -> int:
  """Iterates like a DataLoader(shuffle=True, drop_last=True); returns examples seen."""
  seen = 0
  for epoch in range(epochs):
    order = np.random.default_rng([seed, epoch]).permutation(len(reader))
    for start in range(0, len(order) - batch_size + 1, batch_size):
      samples = [reader[int(i)] for i in order[start:start + batch_size]]
      images = np.stack([s[0] for s in samples])
      ids = np.array([s[1] for s in samples])
      if pairs is not None:
        np.array([pairs[int(i)] for i in ids])
      seen += len(images)
  return seen


def timed(fn) -> tuple[float, int]:
  start = time.perf_counter()
  count = fn()
  return time.perf_counter() - start, count


def pipeline_epochs(benchmark, split, *, batch_size, epochs, seed, pairing, cache) -> int:
  loader = data.make_loader(benchmark, split, batch_size=batch_size, seed=seed, shuffle=True,
                            num_epochs=epochs, drop_remainder=True,
                            normalization="per_image_max", pairing=pairing, cache=cache,
                            shard_index=0, shard_count=1)
  return sum(int(batch["mask"].sum()) for batch in loader)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--per-class", type=int, default=120)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--data-dir", default="")
  args = parser.parse_args()

  data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench_input_pipeline_")
  config = data.default_data_config("synthetic")
  config.synthetic.update(image_size=args.image_size, ms_per_class=args.per_class,
                          rgb_per_class=args.per_class)
  config.rgb_size = args.image_size
  start = time.perf_counter()
  benchmark = data.load_benchmark(config, data_dir=data_dir)
  print(f"built/opened {benchmark.builder.builder_config.name} in "
        f"{time.perf_counter() - start:.1f} s")
  root = pathlib.Path(benchmark.metadata["source"]["location"])
  students, teachers = benchmark.ids("rgb_train"), benchmark.ids("ms_train")
  table = data.PairTable(students, np.random.default_rng(0).choice(teachers, len(students)))
  pairs = dict(zip(*map(np.ndarray.tolist, table.as_arrays())))

  rows = []
  for split, pairing in (("ms_train", None), ("rgb_train", table)):
    reader = PerFileReader(root, benchmark.filenames(split), benchmark.ids(split),
                           benchmark.image_size)
    per_file = timed(lambda: per_file_epochs(reader, args.batch_size, args.epochs, 0,
                                             pairs if pairing else None))
    # A freshly opened benchmark: the cached run's first epoch pays for decoding the split.
    benchmark = data.load_benchmark(config, data_dir=data_dir)
    cached = timed(lambda: pipeline_epochs(benchmark, split, batch_size=args.batch_size,
                                           epochs=args.epochs, seed=0, pairing=pairing,
                                           cache=True))
    warm = timed(lambda: pipeline_epochs(benchmark, split, batch_size=args.batch_size,
                                         epochs=args.epochs, seed=1, pairing=pairing,
                                         cache=True))
    streaming = timed(lambda: pipeline_epochs(benchmark, split, batch_size=args.batch_size,
                                              epochs=args.epochs, seed=0, pairing=pairing,
                                              cache=False))
    base = per_file[1] / per_file[0]
    what = f"{split}{' + teacher ids' if pairing else ''}"
    for name, (seconds, count) in (("per-file reader (rasterio/Pillow)", per_file),
                                   ("pipeline, cached (incl. first decode)", cached),
                                   ("pipeline, cached (warm)", warm),
                                   ("pipeline, streaming", streaming)):
      rows.append((what, name, count / seconds, count / seconds / base))

  print(f"\n{args.epochs} epochs, batch {args.batch_size}, {args.image_size}x{args.image_size} "
        f"px, {benchmark.ms_channels} MS bands, {len(benchmark.sources['ms_train'])} MS / "
        f"{len(benchmark.sources['rgb_train'])} RGB train records\n")
  print("| split | reader | examples/s | vs per-file |")
  print("|---|---|---:|---:|")
  for what, name, rate, ratio in rows:
    print(f"| {what} | {name} | {rate:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
  main()
