"""What every stage shares: its error type, its description and its workdir."""

from __future__ import annotations

import pathlib
from typing import Any, Callable, NamedTuple

from sembridge_jax.config_base import load_benchmark  # noqa: F401  (re-exported)
from sembridge_jax.workdir import Workdir


class StageError(RuntimeError):
  """A stage cannot run (missing inputs, missing feature); the message says why."""


class Stage(NamedTuple):
  """A stage as the command line lists and documents it."""
  name: str
  run: Callable[..., Any]          # run(config, workdir, benchmark=None)
  summary: str                     # one line for `sembridge-jax --help`
  reads: str
  writes: str
  config_keys: tuple[str, ...]     # the config sections and keys it uses


def as_workdir(workdir: Workdir | str | pathlib.Path) -> Workdir:
  return workdir if isinstance(workdir, Workdir) else Workdir(pathlib.Path(workdir))
