"""How much the choice of a same-class teacher can change a KD target: a report of
``config.reports`` on the workdir's teacher gallery (`matching.kd_target_spread`)."""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from sembridge_jax import matching
from sembridge_jax.workdir import Workdir


def gallery_kd_target_spread(config: ml_collections.ConfigDict, workdir: Workdir):
  """`matching.kd_target_spread` of the workdir's gallery at ``distill.temperature``
  (None if there is no gallery)."""
  if not workdir.gallery.exists():
    return None
  with np.load(workdir.gallery) as stored:
    return matching.kd_target_spread(stored["logits"], stored["labels"],
                                     temperature=config.distill.temperature)


def on_results(config: ml_collections.ConfigDict, workdir: Workdir, results: dict[str, Any]
               ) -> dict[str, Any]:
  spread = gallery_kd_target_spread(config, workdir)
  return {} if spread is None else {"kd_target_spread": spread.as_dict()}


def describe_results(results: dict[str, Any]) -> str | None:
  if "kd_target_spread" not in results:
    return None
  return "gallery: " + matching.format_kd_target_spread(
      matching.KDTargetSpread.from_dict(results["kd_target_spread"]))
