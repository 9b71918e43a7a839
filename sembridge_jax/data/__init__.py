"""The asymmetric MS/RGB benchmark: synthetic generator, TFDS dataset and Grain pipeline.

Typical use::

  benchmark = data.load_benchmark(config.data, data_dir=...)      # builds once
  loader = data.make_loader(benchmark, "rgb_train", batch_size=64, seed=0, shuffle=True,
                            num_epochs=10, drop_remainder=True,
                            normalization="per_image_max", pairing=pair_table)
  for batch in loader: ...   # numpy dicts: image, label, id, mask, teacher_id
"""

from sembridge_jax.data.benchmark import (
    SPLITS,
    Benchmark,
    default_data_config,
    load_benchmark,
    make_builder,
    synthetic_parameters,
)
from sembridge_jax.data.errors import InvalidBenchmarkError, Problem
from sembridge_jax.data.layout import BandStats
from sembridge_jax.data.loader import PADDING_ID, EpochPlan, Loader, make_loader
from sembridge_jax.data.pairing import PairTable
from sembridge_jax.data.preprocessing import NORMALIZERS, true_colour_rendering
from sembridge_jax.data.specs import DATASET_NAMES, DATASETS, DatasetSpec, get_spec
from sembridge_jax.data.synthetic import (
    SyntheticParameters,
    generate_synthetic_benchmark,
    synthetic_class_names,
)

__all__ = [
    "BandStats", "Benchmark", "DATASETS", "DATASET_NAMES", "DatasetSpec", "EpochPlan",
    "InvalidBenchmarkError", "Loader", "NORMALIZERS", "PADDING_ID", "PairTable", "Problem",
    "SPLITS", "SyntheticParameters", "default_data_config", "generate_synthetic_benchmark",
    "get_spec", "load_benchmark", "make_builder", "make_loader", "synthetic_class_names",
    "synthetic_parameters", "true_colour_rendering",
]
