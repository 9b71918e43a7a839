"""TFDS dataset ``ackd_benchmark`` (laid out as ``tfds new`` does).

Import `tfds_builders.ackd_benchmark.ackd_benchmark_dataset_builder` to register it, or
build it with ``tfds build tfds_builders/ackd_benchmark --config s2s_eu --manual_dir DIR``.
The package itself imports nothing, so that the ``tfds build`` command (which imports the
builder module as ``ackd_benchmark.ackd_benchmark_dataset_builder``) and a regular import
never define the builder twice in one process.
"""
