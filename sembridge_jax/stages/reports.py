"""The one door from the stages to the research code: reports chosen by ``config.reports``.

Each name in ``config.reports`` is a module of `sembridge_jax.analysis`, loaded by name
(big_vision's evaluators), so the library's stages never import research code. A
report module defines any of

* ``on_match(config, workdir, benchmark, pairs) -> dict``: after the ``match`` stage;
  the dict joins ``matching/summary.json`` (``pairs`` is a `MatchedPairs`);
* ``on_run(config, workdir, run) -> None``: after every seed of a distillation run;
* ``on_results(config, workdir, results) -> dict``: joins ``results.json``;
* ``describe_results(results) -> str | None``: printed after the results table.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import ml_collections
import numpy as np

PACKAGE = "sembridge_jax.analysis"


class MatchedPairs(NamedTuple):
  """The initial SFM pairs and the random same-class yardstick, by record id."""
  student_ids: np.ndarray
  teacher_ids: np.ndarray
  random_teacher_ids: np.ndarray


def _modules(config: ml_collections.ConfigDict):
  for name in config.get("reports", ()):
    yield importlib.import_module(f"{PACKAGE}.{name}")


def call(config: ml_collections.ConfigDict, event: str, **context: Any) -> dict[str, Any]:
  """Calls ``on_<event>`` of every configured report; merges what they return."""
  merged: dict[str, Any] = {}
  for module in _modules(config):
    hook = getattr(module, f"on_{event}", None)
    if hook is not None:
      merged.update(hook(config=config, **context) or {})
  return merged


def describe(config: ml_collections.ConfigDict, results: dict[str, Any]) -> list[str]:
  """The reports' printed read-outs of ``results``."""
  texts = []
  for module in _modules(config):
    describe_results = getattr(module, "describe_results", None)
    text = describe_results(results) if describe_results else None
    if text:
      texts.append(text)
  return texts
