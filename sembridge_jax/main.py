r"""The ``sembridge-jax`` command: one stage of the pipeline, configured by a config file.

  sembridge-jax STAGE --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
  sembridge-jax --help            the stages, one line each
  sembridge-jax STAGE --help      what a stage does, reads, writes and which keys it uses

A user error (bad config, missing input, invalid data) prints one line and exits
non-zero; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import logging as std_logging
import os
import pathlib
import sys
import textwrap
import traceback

from absl import flags, logging
from ml_collections import config_flags

PROGRAM = "sembridge-jax"
USAGE = f"usage: {PROGRAM} STAGE --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]"
HELP_ARGS = ("-h", "--help", "-help", "--helpfull")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file; override keys with --config.key=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Initialise jax.distributed for a multi-host run.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")

OPTIONS = """options:
  --config FILE           a configs/*.py file (get_config() -> ConfigDict)
  --config.KEY=VALUE      override any key, e.g. --config.distill.method=dkd
  --workdir DIR           where checkpoints, metrics and results go (resumes from it)
  --distributed           call jax.distributed.initialize() (several hosts)
  --verbose               show tracebacks"""


def overview(stages) -> str:
  width = max(len(name) for name in stages)
  listed = "\n".join(
      textwrap.fill(stage.summary, 92, initial_indent=f"  {name:<{width}}  ",
                    subsequent_indent=" " * (width + 4)) for name, stage in stages.items())
  return (f"{PROGRAM}: SemBridge, asymmetric cross-modal knowledge distillation, in JAX\n\n"
          f"{USAGE}\n       {PROGRAM} STAGE --help\n\nstages:\n{listed}\n\n{OPTIONS}\n")


def stage_help(stage) -> str:
  doc = textwrap.fill(" ".join((stage.run.__doc__ or "").split()), 92)
  keys = ", ".join(f"config.{key}" for key in stage.config_keys)
  return (f"{PROGRAM} {stage.name}: {stage.summary}\n\n"
          f"usage: {PROGRAM} {stage.name} --config configs/NAME.py --workdir DIR "
          f"[--config.KEY=VALUE ...]\n\n{doc}\n\n"
          f"reads:  {stage.reads}\nwrites: {stage.writes}\nconfig: {keys}\n\n{OPTIONS}\n")


DISTRIBUTED_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
                   "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def initialize_distributed() -> None:
  """`jax.distributed.initialize` with the coordinator, process count and process id
  from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` where set
  (JAX itself reads only the address); unset, JAX detects them (TPU, SLURM, Open MPI)."""
  import jax
  kwargs = {}
  for argument, variable in DISTRIBUTED_ENV.items():
    value = os.environ.get(variable, "").strip()
    if value:
      try:
        kwargs[argument] = value if argument == "coordinator_address" else int(value)
      except ValueError:
        raise ValueError(f"{variable}={value!r} is not an integer") from None
  jax.distributed.initialize(**kwargs)


def main(argv: list[str]) -> int:
  from sembridge_jax import config_base, stages  # Local: flags parse before JAX starts.
  from sembridge_jax.train.divergence import TrainingDiverged

  # What a user can cause and fix: bad settings or inputs, missing files, a full or
  # unwritable disk, a diverging run. Anything else is a bug and keeps its traceback.
  USER_ERRORS = (stages.StageError, TrainingDiverged, ValueError, FileNotFoundError,
                 KeyError, OSError)

  if len(argv) != 2:
    print(f"{PROGRAM}: give exactly one stage; {PROGRAM} --help lists them", file=sys.stderr)
    return 2
  stage = argv[1]
  if _CONFIG.value is None or _WORKDIR.value is None:
    print(f"{PROGRAM} {stage}: --config and --workdir are required; {USAGE}", file=sys.stderr)
    return 2
  if _DISTRIBUTED.value:
    try:
      initialize_distributed()
    except (ValueError, RuntimeError) as error:
      print(f"{PROGRAM} {stage}: --distributed: {_one_line(error)}", file=sys.stderr)
      return 2
  try:
    config = config_base.validate_config(_CONFIG.value)
  except (ValueError, OSError) as error:
    print(f"{PROGRAM} {stage}: invalid config: {_one_line(error)}", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  if not _VERBOSE.value:
    logging.use_python_logging(quiet=True)
    # Orbax logs a failed write several times with its traceback; the one-line error
    # below names it. (--verbose keeps everything.)
    std_logging.getLogger("absl").addFilter(
        lambda record: "orbax" not in record.pathname
        and not record.getMessage().startswith("Using custom data configuration"))
    _silence_closed_event_loops()
  try:
    stages.run_stage(stage, config, _WORKDIR.value)
  except USER_ERRORS as error:
    if _VERBOSE.value:
      traceback.print_exc()
    hint = "" if _VERBOSE.value else " (--verbose shows the traceback)"
    print(f"{PROGRAM} {stage}: error: {_one_line(error)}{hint}", file=sys.stderr)
    return 1
  return 0


def _silence_closed_event_loops() -> None:
  """After a failed asynchronous checkpoint write, TensorStore's threads keep calling
  back into the closed asyncio loop, and each call prints a traceback that says nothing
  (hundreds of them would bury the one line that names the error)."""
  def closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"

  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
  sys.excepthook = lambda kind, error, tb: (None if closed_loop(error)
                                            else excepthook(kind, error, tb))
  sys.unraisablehook = lambda info: (None if closed_loop(info.exc_value)
                                     else unraisablehook(info))


def _config_file(args: list[str]) -> str | None:
  for i, arg in enumerate(args):
    if arg == "--config" and i + 1 < len(args):
      return args[i + 1]
    if arg.startswith("--config="):
      return arg.partition("=")[2]
  return None


def run() -> None:
  """The console entry point. Help is answered before absl parses anything (absl's own
  help lists flags, not stages); the stage is what remains after absl has parsed."""
  from sembridge_jax.stages import STAGES  # Local: the registry imports JAX.

  args = sys.argv[1:]
  named = [a for a in args if a in STAGES]  # Help only: flag values may look like anything.
  if not args or any(a in HELP_ARGS for a in args) or args[0] == "help":
    print(stage_help(STAGES[named[0]]) if named else overview(STAGES), end="")
    sys.exit(0)
  config_file = _config_file(args)
  if config_file is not None and not pathlib.Path(config_file).is_file():
    print(f"{PROGRAM}: config file {config_file} not found", file=sys.stderr)
    sys.exit(2)
  try:
    argv = flags.FLAGS(sys.argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
    # A misspelt key, an unparsable value or a missing config file: one line.
    print(f"{PROGRAM}: invalid arguments: {_one_line(error)}", file=sys.stderr)
    sys.exit(2)
  if len(argv) == 2 and argv[1] not in STAGES:
    print(f"{PROGRAM}: unknown stage {argv[1]!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
    sys.exit(2)
  sys.exit(main(argv))


def _one_line(error: BaseException) -> str:
  """The message of an exception, without the quoting and line breaks of KeyErrors."""
  keyed = isinstance(error, (KeyError, AttributeError)) and error.args
  text = str(error.args[0]) if keyed else str(error)
  text = text.strip().strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
  return " ".join(text.split())


if __name__ == "__main__":
  run()
