"""The stages of the SemBridge pipeline, by name (a registry the CLI dispatches on).

Workdir layout (every stage resumes from what is already there)::

  DIR/tfds/                      built TFDS dataset (unless config.data.data_dir is set)
  DIR/matcher/                   self-supervised MS/RGB matcher (train-matcher)
  DIR/matching/                  pair table student id -> teacher id + match report (match)
  DIR/teacher/                   MS teacher (train-teacher)
  DIR/gallery/                   frozen teacher outputs for every MS train image
  DIR/student_only/seed_S/       RGB student trained alone (train-student)
  DIR/distill/<run>/seed_S/      distilled students (distill)
  DIR/results.json               the comparison table (pipeline, evaluate)
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np


class StageError(RuntimeError):
  """A stage cannot run (missing inputs, missing feature); the message says why."""


def data_dir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> str:
  return config.data.data_dir or str(workdir / "tfds")


def load_benchmark(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  from sembridge_jax import data as data_lib
  with config.unlocked():
    config.data.data_dir = data_dir(config, workdir)
  benchmark = data_lib.load_benchmark(config.data, data_dir=config.data.data_dir)
  if benchmark.ms_channels != config.data.ms_channels:
    raise StageError(f"config.data.ms_channels={config.data.ms_channels} but dataset "
                     f"{benchmark.name!r} has {benchmark.ms_channels} MS channels")
  return benchmark


def _print(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def format_metrics(name: str, metrics: dict[str, Any]) -> str:
  return (f"{name:<28} OA {100 * metrics['oa']:6.2f}  macro-P {100 * metrics['macro_precision']:6.2f}"
          f"  macro-R {100 * metrics['macro_recall']:6.2f}  macro-F1 {100 * metrics['macro_f1']:6.2f}")


def train_teacher(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None
                  ) -> dict[str, Any]:
  """Trains the MS teacher on ``ms_train``; test metrics on ``ms_test``."""
  from sembridge_jax.train import classifier
  benchmark = benchmark or load_benchmark(config, workdir)
  result = classifier.train_and_evaluate(config, workdir / "teacher", "teacher", benchmark=benchmark)
  _print(format_metrics(f"teacher ({config.model.teacher}, MS)", result.metrics.as_dict()))
  return {**result.metrics.as_dict(), "seconds": result.seconds}


def train_student(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None
                  ) -> dict[str, Any]:
  """Trains the RGB student alone, once per seed of ``config.pipeline.seeds``."""
  from sembridge_jax.train import classifier
  benchmark = benchmark or load_benchmark(config, workdir)
  per_seed = {}
  for seed in config.pipeline.seeds:
    result = classifier.train_and_evaluate(config, workdir / "student_only" / f"seed_{seed}",
                                           "student", seed=seed, benchmark=benchmark)
    per_seed[seed] = {**result.metrics.as_dict(), "seconds": result.seconds}
    _print(format_metrics(f"student alone (seed {seed})", per_seed[seed]))
  return summarize_seeds(per_seed)


def summarize_seeds(per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
  """Mean and std over seeds of every metric, plus the per-seed values."""
  keys = [k for k in next(iter(per_seed.values())) if k != "seconds"]
  summary: dict[str, Any] = {}
  for key in keys:
    values = np.array([m[key] for m in per_seed.values()])
    summary[key] = float(values.mean())
    summary[f"{key}_std"] = float(values.std())
  summary["per_seed"] = {str(s): m for s, m in per_seed.items()}
  return summary


def train_matcher(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None
                  ) -> dict[str, Any]:
  """SFM part 1: the self-supervised MS/RGB matcher."""
  from sembridge_jax.train import matcher
  benchmark = benchmark or load_benchmark(config, workdir)
  result = matcher.train_matcher(config, workdir, benchmark)
  _print(f"matcher: best validation loss {result['best_val_loss']:.4f} at epoch {result['best_epoch']}")
  return result


def match(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None) -> dict[str, Any]:
  """SFM part 2: each RGB train image's nearest same-class MS image in matcher space
  (after `matching.centre_per_class` if ``config.matching.centre_embeddings``)."""
  from sembridge_jax import matching
  from sembridge_jax.distill.trainer import random_same_class_pairs
  from sembridge_jax.train import matcher, sharding
  benchmark = benchmark or load_benchmark(config, workdir)
  ms, rgb = matcher.embed_splits(config, workdir, benchmark)
  student_emb, teacher_emb = rgb.outputs["embedding"], ms.outputs["embedding"]
  if config.matching.centre_embeddings:
    student_emb = matching.centre_per_class(student_emb, rgb.labels)
    teacher_emb = matching.centre_per_class(teacher_emb, ms.labels)
  selection = matching.nearest_teacher_with_scores(
      student_emb, teacher_emb, rgb.labels, ms.labels, k=1,
      student_chunk_size=config.matching.chunk_size, mesh=sharding.make_mesh())
  rows = np.asarray(selection.indices)[:, 0]
  scores = np.asarray(selection.scores)[:, 0]
  outdir = workdir / "matching"
  centred = "class-centred " if config.matching.centre_embeddings else ""
  score_name = f"{centred}cosine similarity"
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
  if benchmark.name == "synthetic":
    summary.update(synthetic_match_quality(config, benchmark, rgb.ids, ms.ids[rows],
                                           ms.ids[random_rows]))
  if jax.process_index() == 0:
    outdir.mkdir(parents=True, exist_ok=True)
    np.savez(outdir / "pairs.npz", student_id=rgb.ids, teacher_id=ms.ids[rows], similarity=scores)
    matching.write_match_report(report, outdir, "initial")
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2))
  _print("match: " + matching.format_match_report(report).replace("\n", "; "))
  _print(f"match: mean {score_name} {summary['matched_mean_similarity']:.3f} "
         f"(matched) vs {summary['random_same_class_mean_similarity']:.3f} "
         "(random same-class pairs)")
  if "matched_true_feature_distance" in summary:
    _print(f"match: true scene-colour distance {summary['matched_true_feature_distance']:.4f} "
           f"(matched) vs {summary['random_true_feature_distance']:.4f} (random same-class pairs); "
           f"relative to each region's class mean {summary['matched_relative_feature_distance']:.4f}"
           f" vs {summary['random_relative_feature_distance']:.4f}; lower is better")
  return summary


def synthetic_match_quality(config: ml_collections.ConfigDict, benchmark, student_ids: np.ndarray,
                            teacher_ids: np.ndarray, random_teacher_ids: np.ndarray
                            ) -> dict[str, float]:
  """Ground truth only the synthetic benchmark has: the mean distance between the
  physical scene descriptors (`sembridge_jax.data.synthetic.scene_descriptor`) of each
  student and its teacher, for the SFM pairs and for random same-class pairs.

  Two versions. ``true_feature_distance`` compares the descriptors as they are; because
  the two regions' class prototypes differ (``semantic_overlap`` < 1), it is dominated
  by the region offset and rewards sending every student of a class to the one teacher
  nearest the RGB region's class mean (a hub). ``relative_feature_distance`` first
  subtracts each region's class mean from its descriptors, so it asks what SFM is for:
  is a student that is, say, greener than its class's average paired with a teacher that
  is greener than *its* class's average?
  """
  from sembridge_jax import matching
  from sembridge_jax.data import synthetic, synthetic_parameters
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


def synthetic_pair_analysis(config: ml_collections.ConfigDict, workdir: pathlib.Path
                            ) -> dict[str, dict[str, float]]:
  """`confusable_pair_analysis` of every finished run in the workdir (mean over seeds).

  Only the synthetic benchmark knows its confusable pairs (classes that differ mainly in
  non-visible bands, see `sembridge_jax.data.synthetic`): it shows how much of an RGB
  student's gap to the MS teacher is information the RGB camera does not record.
  """
  from sembridge_jax.data import synthetic, synthetic_parameters
  pairs = synthetic.make_prototypes(synthetic_parameters(config.data))[0].pairs
  runs = {"teacher": [workdir / "teacher" / "test_metrics.json"], **student_runs(workdir)}
  analysis = {}
  for name, paths in runs.items():
    per_seed = [confusable_pair_analysis(pairs, json.loads(p.read_text())["confusion"])
                for p in paths if p.exists()]
    if per_seed:
      analysis[name] = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
  return analysis


def print_pair_analysis(analysis: dict[str, dict[str, float]]) -> None:
  lines = ["", "Synthetic benchmark: accuracy on the classes an RGB camera confuses in pairs "
           "(they differ mainly in non-visible bands) vs the other classes",
           "| run | pair classes OA (%) | other classes OA (%) | errors within a pair (%) |",
           "|---|---|---|---|"]
  for name, m in analysis.items():
    lines.append(f"| {name} | {100 * m['pair_class_oa']:.1f} | {100 * m['other_class_oa']:.1f} "
                 f"| {100 * m['within_pair_error_share']:.1f} |")
  _print("\n".join(lines))


def teacher_gallery(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark):
  from sembridge_jax.distill.gallery import build_gallery, gallery_path
  if not (workdir / "teacher" / "checkpoints").exists():
    raise StageError("no trained teacher in the workdir: run `sembridge-jax train-teacher` first")
  return build_gallery(config, workdir / "teacher", benchmark, gallery_path(workdir))


def distill_runs(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark, runs,
                 seeds) -> dict[str, Any]:
  """Trains every (run, seed) cell; returns per-run summaries over seeds."""
  from sembridge_jax.distill import trainer
  gallery = teacher_gallery(config, workdir, benchmark)
  out = {}
  for run in runs:
    if run.sembridge and config.distill.use_sfm and not (workdir / "matching" / "pairs.npz").exists():
      raise StageError("SemBridge needs the SFM pair table: run `sembridge-jax train-matcher` and "
                       "`sembridge-jax match` first (or set --config.distill.use_sfm=False)")
    per_seed = {}
    for seed in seeds:
      result = trainer.distill(config, workdir, benchmark, gallery, run, seed=seed)
      per_seed[seed] = {k: v for k, v in result.items() if k not in ("state", "modeldef")}
      _print(format_metrics(f"{run.name} (seed {seed})", per_seed[seed]))
    out[run.name] = summarize_seeds(per_seed)
    if run.sembridge and jax.process_index() == 0:
      from sembridge_jax import viz
      figures = viz.write_distillation_figures(workdir, config, run=run.name, seed=seeds[0])
      _print(f"{run.name}: figures in {figures.transport_plan.parent}")
  return out


def distill(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None) -> dict[str, Any]:
  """Distils students with ``config.distill.method`` (under SemBridge unless
  ``config.distill.sembridge`` is False), once per seed of ``config.pipeline.seeds``."""
  from sembridge_jax.distill.trainer import DistillRun
  benchmark = benchmark or load_benchmark(config, workdir)
  run = DistillRun(config.distill.method, bool(config.distill.sembridge))
  return distill_runs(config, workdir, benchmark, [run], config.pipeline.seeds)


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark=None
             ) -> dict[str, Any]:
  """Collects the test metrics of every finished run in the workdir into results.json."""
  results = collect_results(workdir)
  if not results:
    raise StageError(f"no finished runs under {workdir}")
  results["config"] = config.to_dict()
  previous = workdir / "results.json"
  if previous.exists():
    results["timings"] = json.loads(previous.read_text()).get("timings", {})
  report_results(config, workdir, results)
  return results


def _read_metrics(path: pathlib.Path) -> dict[str, float]:
  metrics = json.loads(path.read_text())
  return {k: metrics[k] for k in ("oa", "macro_precision", "macro_recall", "macro_f1")}


def student_runs(workdir: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """``{"student_only" | "<distill run>": [seed_*/test_metrics.json, ...]}`` in the workdir."""
  runs = {"student_only": sorted((workdir / "student_only").glob("seed_*/test_metrics.json"))}
  for rundir in sorted((workdir / "distill").glob("*")):
    runs[rundir.name] = sorted(rundir.glob("seed_*/test_metrics.json"))
  return runs


def collect_results(workdir: pathlib.Path) -> dict[str, Any]:
  """``{"teacher": ..., "student_only": ..., "<run>": ...}`` from test_metrics.json files."""
  results: dict[str, Any] = {}
  if (workdir / "teacher" / "test_metrics.json").exists():
    teacher = _read_metrics(workdir / "teacher" / "test_metrics.json")
    results["teacher"] = summarize_seeds({0: teacher})
  for name, paths in student_runs(workdir).items():
    if paths:
      results[name] = summarize_seeds({int(p.parent.name.split("_")[1]): _read_metrics(p)
                                       for p in paths})
  if "kd+sembridge" in results:
    results["sembridge"] = results["kd+sembridge"]
  return results


def pipeline(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """train-matcher, match, train-teacher, the student alone, KD with random same-class
  pairs and SemBridge (each over ``config.pipeline.seeds``); writes ``DIR/results.json``
  and prints the comparison table."""
  from sembridge_jax.distill.trainer import DistillRun
  timings: dict[str, float] = {}

  def timed(name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    output = fn(*args, **kwargs)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return output

  benchmark = timed("build-dataset", load_benchmark, config, workdir)
  if config.distill.use_sfm:
    timed("train-matcher", train_matcher, config, workdir, benchmark)
    timed("match", match, config, workdir, benchmark)
  timed("train-teacher", train_teacher, config, workdir, benchmark)
  timed("teacher-gallery", teacher_gallery, config, workdir, benchmark)
  timed("train-student", train_student, config, workdir, benchmark)
  seeds = config.pipeline.seeds
  method = config.distill.method
  timed("distill-baseline", distill_runs, config, workdir, benchmark, [DistillRun(method, False)], seeds)
  timed("distill-sembridge", distill_runs, config, workdir, benchmark, [DistillRun(method, True)], seeds)

  results = collect_results(workdir)
  results["kd"] = results[method]
  results["sembridge"] = results[f"{method}+sembridge"]
  results["config"] = config.to_dict()
  results["timings"] = timings
  report_results(config, workdir, results)
  return results


def gallery_kd_target_spread(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """`sembridge_jax.matching.kd_target_spread` of the workdir's teacher gallery (None if
  there is no gallery): how much a same-class teacher's choice can change a KD target."""
  from sembridge_jax import matching
  from sembridge_jax.distill.gallery import gallery_path
  path = gallery_path(workdir)
  if not path.exists():
    return None
  with np.load(path) as stored:
    return matching.kd_target_spread(stored["logits"], stored["labels"],
                                     temperature=config.distill.temperature)


def report_results(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                   results: dict[str, Any]) -> None:
  """Adds the synthetic benchmark's pair analysis and the gallery's KD-target spread,
  writes results.json, prints the tables."""
  from sembridge_jax import matching
  if config.data.name == "synthetic":
    results["synthetic_pairs"] = synthetic_pair_analysis(config, workdir)
  spread = gallery_kd_target_spread(config, workdir)
  if spread is not None:
    results["kd_target_spread"] = spread.as_dict()
  write_results(workdir, results)
  print_results_table(results)
  if "synthetic_pairs" in results:
    print_pair_analysis(results["synthetic_pairs"])
  if spread is not None:
    _print("gallery: " + matching.format_kd_target_spread(spread))


def write_results(workdir: pathlib.Path, results: dict[str, Any]) -> None:
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, (tuple, set)):
    return list(value)
  return str(value)


def print_results_table(results: dict[str, Any]) -> None:
  rows = [("teacher (MS)", "teacher"), ("student alone (RGB)", "student_only"),
          ("KD, random same-class pairs", "kd"), ("SemBridge", "sembridge")]
  lines = ["", "| run | OA (%) | macro-F1 (%) |", "|---|---|---|"]
  for label, key in rows:
    if key not in results:
      continue
    r = results[key]
    lines.append(f"| {label} | {100 * r['oa']:.2f} ± {100 * r.get('oa_std', 0):.2f} "
                 f"| {100 * r['macro_f1']:.2f} ± {100 * r.get('macro_f1_std', 0):.2f} |")
  _print("\n".join(lines))


STAGES: dict[str, Callable[..., Any]] = {
    "pipeline": pipeline,
    "train-matcher": train_matcher,
    "match": match,
    "train-teacher": train_teacher,
    "train-student": train_student,
    "distill": distill,
    "evaluate": evaluate,
    "benchmark": lambda config, workdir, benchmark=None: _benchmark(config, workdir),
}


def _benchmark(config, workdir):
  from sembridge_jax import benchmark as benchmark_lib
  return benchmark_lib.run_benchmark(config, workdir)


def run_stage(name: str, config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Any:
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  return STAGES[name](config, workdir)
