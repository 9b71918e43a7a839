"""SFM parts 1 and 2: train the self-supervised matcher, then pair every RGB train image
with its nearest same-class MS train image in the matcher's embedding space."""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import numpy as np

from sembridge_jax import matching, sharding
from sembridge_jax.distill.distiller import random_same_class_pairs
from sembridge_jax.results import say
from sembridge_jax.stages import reports
from sembridge_jax.stages.common import Stage, as_workdir, load_benchmark
from sembridge_jax.train import matcher


def train_matcher(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """SFM part 1: the self-supervised MS/RGB matcher."""
  workdir = as_workdir(workdir)
  benchmark = benchmark or load_benchmark(config, workdir)
  result = matcher.train_matcher(config, workdir.matcher, benchmark)
  say(f"matcher: best validation loss {result['best_val_loss']:.4f} at epoch {result['best_epoch']}")
  return result


def match(config: ml_collections.ConfigDict, workdir, benchmark=None) -> dict[str, Any]:
  """SFM part 2: each RGB train image's nearest same-class MS image in matcher space
  (after `matching.centre_per_class` if ``config.matching.centre_embeddings``)."""
  workdir = as_workdir(workdir)
  benchmark = benchmark or load_benchmark(config, workdir)
  ms, rgb = matcher.embed_splits(config, workdir.matcher, benchmark)
  student_emb, teacher_emb = rgb.outputs["embedding"], ms.outputs["embedding"]
  if config.matching.centre_embeddings:
    student_emb = matching.centre_per_class(student_emb, rgb.labels)
    teacher_emb = matching.centre_per_class(teacher_emb, ms.labels)
  selection = matching.nearest_teacher_with_scores(
      student_emb, teacher_emb, rgb.labels, ms.labels, k=1,
      student_chunk_size=config.matching.chunk_size, mesh=sharding.make_mesh())
  rows = np.asarray(selection.indices)[:, 0]
  scores = np.asarray(selection.scores)[:, 0]
  score_name = f"{'class-centred ' if config.matching.centre_embeddings else ''}cosine similarity"
  report = matching.match_report(scores, rows, len(ms.ids), score_name=score_name)
  # Yardstick: the same embedding similarity for random same-class pairs.
  random_rows = random_same_class_pairs(rgb.labels, ms.labels, config.seed)
  random_scores = np.sum(np.asarray(matching.l2_normalize(student_emb))
                         * np.asarray(matching.l2_normalize(teacher_emb))[random_rows], -1)
  summary = {"centre_embeddings": bool(config.matching.centre_embeddings),
             "matched_mean_similarity": float(scores.mean()),
             "random_same_class_mean_similarity": float(random_scores.mean()),
             "distinct_teachers": int(report.distinct_teachers),
             "max_students_per_teacher": int(report.max_students_per_teacher)}
  if jax.process_index() == 0:
    workdir.matching.mkdir(parents=True, exist_ok=True)
    np.savez(workdir.pairs, student_id=rgb.ids, teacher_id=ms.ids[rows], similarity=scores)
    matching.write_match_report(report, workdir.matching, "initial")
  say("match: " + matching.format_match_report(report).replace("\n", "; "))
  say(f"match: mean {score_name} {summary['matched_mean_similarity']:.3f} (matched) vs "
      f"{summary['random_same_class_mean_similarity']:.3f} (random same-class pairs)")
  pairs = reports.MatchedPairs(rgb.ids, ms.ids[rows], ms.ids[random_rows])
  summary.update(reports.call(config, "match", workdir=workdir, benchmark=benchmark, pairs=pairs))
  if jax.process_index() == 0:
    workdir.match_summary.write_text(json.dumps(summary, indent=2))
  return summary


STAGES = (
    Stage("train-matcher", train_matcher,
          "SFM 1: train the self-supervised MS/RGB matcher (no labels in the loss)",
          reads="the benchmark's ms_train (pairs of an MS image and its own RGB rendering) "
                "and ms_test (validation)",
          writes="DIR/matcher/ (checkpoints: latest and best by validation loss, metrics.jsonl)",
          config_keys=("model.matcher", "matcher.*", "data.rgb_bands", "checkpoint.*")),
    Stage("match", match,
          "SFM 2: pair every RGB train image with its nearest same-class MS train image",
          reads="DIR/matcher/ (best checkpoint), the benchmark's ms_train and rgb_train",
          writes="DIR/matching/pairs.npz, summary.json, the match report (JSON + histogram)",
          config_keys=("matching.centre_embeddings", "matching.chunk_size", "eval_batch_size",
                       "reports")),
)
