"""What only the synthetic benchmark knows: scene descriptors and confusable class pairs.

A report of ``config.reports`` (`sembridge_jax.stages.reports`); on other datasets it
does nothing.

* ``on_match``: how close the SFM pairs are in *true* scene content, against random
  same-class pairs (`synthetic_match_quality`);
* ``on_results`` / ``describe_results``: where every run's test errors are, given the
  classes the generator makes confusable in RGB (`confusable_pair_analysis`).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import numpy as np

from sembridge_jax import matching, workdir as workdir_lib
from sembridge_jax.data import synthetic, synthetic_parameters
from sembridge_jax.workdir import Workdir

SYNTHETIC = "synthetic"


def synthetic_match_quality(config: ml_collections.ConfigDict, benchmark, student_ids: np.ndarray,
                            teacher_ids: np.ndarray, random_teacher_ids: np.ndarray
                            ) -> dict[str, float]:
  """The mean distance between the physical scene descriptors
  (`sembridge_jax.data.synthetic.scene_descriptor`) of each student and its teacher, for
  the SFM pairs and for random same-class pairs.

  Two versions. ``true_feature_distance`` compares the descriptors as they are; because
  the two regions' class prototypes differ (``semantic_overlap`` < 1), it is dominated
  by the region offset and rewards sending every student of a class to the one teacher
  nearest the RGB region's class mean (a hub). ``relative_feature_distance`` first
  subtracts each region's class mean from its descriptors, so it asks what SFM is for:
  is a student that is, say, greener than its class's average paired with a teacher that
  is greener than *its* class's average?
  """
  descriptors = synthetic.scene_descriptors(synthetic_parameters(config.data))

  def of(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of a whole split in source order, and minus their class means."""
    raw = np.stack([descriptors[name] for name in benchmark.filenames(split)])
    return raw, np.asarray(matching.centre_per_class(raw, benchmark.labels(split)))

  (rgb_raw, rgb_relative), (ms_raw, ms_relative) = of("rgb_train"), of("ms_train")
  students = benchmark.index_of("rgb_train", student_ids)
  distance = lambda a, b, teachers: float(np.linalg.norm(
      a[students] - b[benchmark.index_of("ms_train", teachers)], axis=-1).mean())
  return {"matched_true_feature_distance": distance(rgb_raw, ms_raw, teacher_ids),
          "random_true_feature_distance": distance(rgb_raw, ms_raw, random_teacher_ids),
          "matched_relative_feature_distance": distance(rgb_relative, ms_relative, teacher_ids),
          "random_relative_feature_distance": distance(rgb_relative, ms_relative,
                                                       random_teacher_ids)}


def confusable_pair_analysis(pairs: tuple[tuple[int, int], ...], confusion: np.ndarray
                             ) -> dict[str, float]:
  """Where a classifier's test errors are, given the classes that come in confusable pairs.

  ``confusion[i, j]`` counts test images of class i predicted as j. Returns the accuracy on
  the classes that belong to a pair, on the other classes, and the share of all errors
  that confuse the two members of a pair (``confusion[a, b] + confusion[b, a]``).
  """
  confusion = np.asarray(confusion, np.float64)
  in_pair = np.zeros(len(confusion), bool)
  in_pair[[c for pair in pairs for c in pair]] = True
  correct = np.diag(confusion)
  errors = confusion.sum() - correct.sum()
  within = sum(confusion[a, b] + confusion[b, a] for a, b in pairs)
  accuracy = lambda mask: float(correct[mask].sum() / max(confusion[mask].sum(), 1.0))
  return {"pair_class_oa": accuracy(in_pair), "other_class_oa": accuracy(~in_pair),
          "within_pair_error_share": float(within / errors) if errors else 0.0}


def synthetic_pair_analysis(config: ml_collections.ConfigDict, workdir: Workdir
                            ) -> dict[str, dict[str, float]]:
  """`confusable_pair_analysis` of the teacher and every finished run (mean over seeds).

  Only the synthetic benchmark knows its confusable pairs (classes that differ mainly in
  non-visible bands, see `sembridge_jax.data.synthetic`): it shows how much of an RGB
  student's gap to the MS teacher is information the RGB camera does not record.
  """
  pairs = synthetic.make_prototypes(synthetic_parameters(config.data))[0].pairs
  folders: dict[str, list] = {"teacher": [workdir.teacher]}
  for run in workdir.finished_runs():
    folders.setdefault(run.name, []).append(workdir.run(run))
  analysis = {}
  for name, runs in folders.items():
    paths = [workdir_lib.test_metrics(folder) for folder in runs]
    per_seed = [confusable_pair_analysis(pairs, json.loads(p.read_text())["confusion"])
                for p in paths if p.exists()]
    if per_seed:
      analysis[name] = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
  return analysis


# -- the reporting hooks ---------------------------------------------------------------------

def on_match(config: ml_collections.ConfigDict, workdir: Workdir, benchmark, pairs
             ) -> dict[str, float]:
  if benchmark.name != SYNTHETIC:
    return {}
  quality = synthetic_match_quality(config, benchmark, pairs.student_ids, pairs.teacher_ids,
                                    pairs.random_teacher_ids)
  if jax.process_index() == 0:
    print(f"match: true scene-colour distance {quality['matched_true_feature_distance']:.4f} "
          f"(matched) vs {quality['random_true_feature_distance']:.4f} (random same-class "
          f"pairs); relative to each region's class mean "
          f"{quality['matched_relative_feature_distance']:.4f} vs "
          f"{quality['random_relative_feature_distance']:.4f}; lower is better", flush=True)
  return quality


def on_results(config: ml_collections.ConfigDict, workdir: Workdir, results: dict[str, Any]
               ) -> dict[str, Any]:
  if config.data.name != SYNTHETIC:
    return {}
  return {"synthetic_pairs": synthetic_pair_analysis(config, workdir)}


def describe_results(results: dict[str, Any]) -> str | None:
  analysis = results.get("synthetic_pairs")
  if not analysis:
    return None
  lines = ["", "Synthetic benchmark: accuracy on the classes an RGB camera confuses in pairs "
           "(they differ mainly in non-visible bands) vs the other classes",
           "| run | pair classes OA (%) | other classes OA (%) | errors within a pair (%) |",
           "|---|---|---|---|"]
  for name, m in analysis.items():
    lines.append(f"| {name} | {100 * m['pair_class_oa']:.1f} | {100 * m['other_class_oa']:.1f} "
                 f"| {100 * m['within_pair_error_share']:.1f} |")
  return "\n".join(lines)
