r"""The ``sembridge-jax`` command: one stage of the pipeline, configured by a config file.

  sembridge-jax <stage> --config configs/<name>.py --workdir DIR [--config.key=value ...]

Stages (see `sembridge_jax.stages`): pipeline, train-matcher, match, train-teacher,
train-student, distill, evaluate, benchmark. On several hosts add ``--distributed``
(calls `jax.distributed.initialize()`, which reads the coordinator from the TPU/SLURM
environment or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file; override keys with --config.key=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Initialise jax.distributed for a multi-host run.")


def main(argv: list[str]) -> int:
  from sembridge_jax import config_base, stages  # Local: flags parse before JAX starts.

  usage = f"usage: sembridge-jax <stage> --config FILE --workdir DIR; stages: {', '.join(stages.STAGES)}"
  if len(argv) != 2:
    print(usage, file=sys.stderr)
    return 2
  stage = argv[1]
  if stage not in stages.STAGES:
    print(f"unknown stage {stage!r}; {usage}", file=sys.stderr)
    return 2
  if _CONFIG.value is None or _WORKDIR.value is None:
    print(f"--config and --workdir are required; {usage}", file=sys.stderr)
    return 2
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  try:
    config = config_base.validate_config(_CONFIG.value)
  except ValueError as error:
    print(f"invalid config: {error}", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  try:
    stages.run_stage(stage, config, _WORKDIR.value)
  except stages.StageError as error:
    print(f"sembridge-jax {stage}: {error}", file=sys.stderr)
    return 1
  return 0


def run() -> None:
  flags.mark_flags_as_required([])
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
