"""Wall time of building the synthetic benchmark, with and without worker processes.

  python bench/build_time.py [--dataset synthetic] [--per-class 1000] [--size 64]
      [--workers 1,auto] [--rounds 1]

Each round builds the dataset into a fresh folder once per ``--workers`` setting,
alternating: ``1`` reads every file in this process, ``auto`` as a build does by default
(`sembridge_jax.data.parallel.workers_for`), an integer that many workers
(``SEMBRIDGE_JAX_BUILD_WORKERS``). ``synthetic``: the generator, the inspection and the
records (the generator's own processes are the same in every setting); ``s2s_eu``: a
fake S2S_EU root (13-band uint16 GeoTIFFs and JPEGs of 64 px, `data.fixtures`) written
once, then only the inspection and the records, as for downloaded files. Prints a
Markdown table of seconds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sembridge_jax import config_base  # noqa: E402
from sembridge_jax.data import benchmark, fixtures, parallel, specs  # noqa: E402


def data_config(dataset: str, per_class: int, size: int, scratch: pathlib.Path):
  config = config_base.dataset_config(dataset)
  if dataset == "synthetic":
    config.synthetic.ms_per_class = config.synthetic.rgb_per_class = per_class
    config.synthetic.image_size = size
    config.synthetic.extra_rgb_test_per_class = 0   # as configs/synthetic_s2s_size.py
  else:
    fixtures.write_fake_root(scratch, dataset, files_per_class=per_class)
    config.manual_dir = str(scratch)
  return config


def build_seconds(config, workers: str) -> float:
  if workers == "auto":
    os.environ.pop(parallel.WORKERS_ENV, None)
  else:
    os.environ[parallel.WORKERS_ENV] = workers
  with tempfile.TemporaryDirectory() as data_dir:
    start = time.perf_counter()
    benchmark.load_benchmark(config, data_dir=data_dir)
    return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="synthetic", choices=("synthetic", "s2s_eu"))
  parser.add_argument("--per-class", type=int, default=1000, help="MS and RGB images per class")
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--workers", default="1,auto", help="settings, e.g. 1,auto or 1,4,8")
  parser.add_argument("--rounds", type=int, default=1)
  args = parser.parse_args()
  settings = args.workers.split(",")
  seconds = {setting: [] for setting in settings}
  with tempfile.TemporaryDirectory() as scratch:
    config = data_config(args.dataset, args.per_class, args.size, pathlib.Path(scratch))
    for _ in range(args.rounds):
      for setting in settings:
        seconds[setting].append(build_seconds(config, setting))
        print(f"[build_time] workers={setting}: {seconds[setting][-1]:.1f} s", flush=True)
  files = 2 * len(specs.get_spec(args.dataset).class_names) * args.per_class
  print(f"\n{args.dataset}: {files} files, {parallel.available_cpus()} CPUs, "
        f"median of {args.rounds} round(s)\n\n| workers | build (s) | vs 1 |\n|---|---|---|")
  base = statistics.median(seconds[settings[0]])
  for setting, values in seconds.items():
    workers = setting if setting != "auto" else f"auto ({parallel.workers_for(files)})"
    print(f"| {workers} | {statistics.median(values):.1f} | {base / statistics.median(values):.2f}x |")


if __name__ == "__main__":
  main()
