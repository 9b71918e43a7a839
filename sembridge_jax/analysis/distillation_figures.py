"""The figures the CLI writes after distillation: one batch's OT problem and its pairs.

For a finished run (default: the SemBridge run of ``distill.method``), one random batch
of RGB train students and the teachers the run ended up matched with are put through
the OT term exactly as in training (alignment-space features, ``distill.epsilon``
relative to the mean cost, ``distill.semantic_weight``), except that Sinkhorn runs until
its marginal error is below 1e-5 and records the error at every iteration.
Written to the run's ``figures/`` folder (``DIR/distill/<run>/seed_<S>/figures/``); as
the report ``distillation_figures`` of ``config.reports``, after every SemBridge run:

  transport_plan.png        the plan, sorted by class, class boundaries drawn
  dual_potentials.png       f (students) and g (teachers), coloured by class
  sinkhorn_convergence.png  marginal error per iteration
  matched_pairs.png         student RGB next to its matched teacher in false colour
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sembridge_jax import workdir as workdir_lib
from sembridge_jax.alignment import SinkhornAlignmentResult, sinkhorn_alignment
from sembridge_jax.analysis.workdir import AlignmentBatch, AnalysisWorkdir
from sembridge_jax.runs import Run
from sembridge_jax.viz.images import default_false_colour, plot_matched_pairs
from sembridge_jax.viz.transport import (plot_dual_potentials, plot_sinkhorn_convergence,
                                         plot_transport_plan)

__all__ = ["DistillationFigures", "matched_pairs_figure", "on_run", "solve_batch",
           "write_distillation_figures"]


class DistillationFigures(NamedTuple):
  """Paths of the written PNGs."""
  transport_plan: pathlib.Path
  dual_potentials: pathlib.Path
  sinkhorn_convergence: pathlib.Path
  matched_pairs: pathlib.Path


def solve_batch(batch: AlignmentBatch, *, epsilon: float, semantic_weight: float,
                max_iterations: int = 2000, threshold: float = 1e-5
                ) -> SinkhornAlignmentResult:
  """The OT term of one batch, run to ``threshold``, error recorded every iteration.

  The default threshold sits above float32's floor: the L1 marginal error of a batch's
  plan stops improving around 1e-6, so a 1e-6 target may never be met.
  """
  _, result = sinkhorn_alignment(
      jnp.asarray(batch.student), jnp.asarray(batch.teacher),
      student_labels=jnp.asarray(batch.student_labels),
      teacher_labels=jnp.asarray(batch.teacher_labels), epsilon=epsilon,
      semantic_weight=semantic_weight, max_iterations=max_iterations, threshold=threshold,
      inner_iterations=1, min_iterations=0)
  return result


def _spread_over_classes(labels: np.ndarray, count: int) -> np.ndarray:
  """Up to ``count`` positions, taking classes in turn (so every class shows up)."""
  by_class = [list(np.flatnonzero(labels == k)) for k in np.unique(labels)]
  picked: list[int] = []
  while len(picked) < min(count, len(labels)):
    for positions in by_class:
      if positions and len(picked) < count:
        picked.append(positions.pop(0))
  return np.asarray(sorted(picked, key=lambda i: (labels[i], i)), np.int64)


def matched_pairs_figure(analysis: AnalysisWorkdir, batch: AlignmentBatch, *,
                         num_pairs: int = 8, title: str | None = None):
  """Grid of ``num_pairs`` pairs of ``batch`` (classes in turn), scored by feature cosine."""
  picked = _spread_over_classes(batch.student_labels, num_pairs)
  colour = default_false_colour(analysis.config.data.name, analysis.benchmark.ms_channels)
  s = batch.student[picked] / np.linalg.norm(batch.student[picked], axis=-1, keepdims=True)
  t = batch.teacher[picked] / np.linalg.norm(batch.teacher[picked], axis=-1, keepdims=True)
  return plot_matched_pairs(
      analysis.raw_images("rgb_train", batch.student_ids[picked]),
      analysis.raw_images("ms_train", batch.teacher_ids[picked]), colour.bands,
      batch.student_labels[picked], analysis.benchmark.class_names, band_names=colour.names,
      teacher_labels=batch.teacher_labels[picked], scores=np.sum(s * t, axis=-1),
      score_name="feature cosine", title=title)


def write_distillation_figures(workdir: str | pathlib.Path,
                               config: ml_collections.ConfigDict | None = None, *,
                               run: str | None = None, seed: int | None = None,
                               outdir: str | pathlib.Path | None = None, batch_seed: int = 0,
                               num_pairs: int = 8, dpi: int = 120) -> DistillationFigures:
  """Writes the four PNGs of a finished distillation run (see the module docstring).

  Args:
    workdir: the pipeline workdir.
    config: the run's config (default: the one in ``DIR/results.json``).
    run: the run name (default ``<distill.method>+sembridge``).
    seed: the run's seed (default: the config's first).
    outdir: where to write (default ``DIR/distill/<run>/seed_<S>/figures``).
    batch_seed: which random batch of students to show.
    num_pairs: pairs in the matched-pairs grid.
    dpi: resolution of the PNGs.

  Returns:
    The paths written.
  """
  analysis = AnalysisWorkdir.open(workdir, config)
  snapshot = analysis.student(run or analysis.sembridge_run, seed)
  batch = analysis.alignment_batch(snapshot, seed=batch_seed)
  d = analysis.config.distill
  threshold = 1e-5
  result = solve_batch(batch, epsilon=float(d.epsilon), semantic_weight=float(d.semantic_weight),
                       threshold=threshold, max_iterations=1000)
  names = analysis.benchmark.class_names
  what = f"{snapshot.name} (seed {snapshot.seed}), batch of {len(batch.student)}"
  figures = {
      "transport_plan": plot_transport_plan(result.plan, batch.student_labels,
                                            batch.teacher_labels, names),
      "dual_potentials": plot_dual_potentials(
          result.f, result.g, batch.student_labels, batch.teacher_labels, names,
          title=f"Dual potentials of the OT term: {what}"),
      "sinkhorn_convergence": plot_sinkhorn_convergence(
          result.errors, threshold=threshold,
          title=f"Sinkhorn convergence (ε = {float(d.epsilon):g} × mean C)\n{what}"),
      "matched_pairs": matched_pairs_figure(analysis, batch, num_pairs=num_pairs),
  }
  figures["transport_plan"].axes[0].set_title(
      f"{figures['transport_plan'].axes[0].get_title()}\n{what}")
  outdir = pathlib.Path(outdir) if outdir is not None else workdir_lib.figures(
      analysis.workdir.run(Run.parse(snapshot.name, snapshot.seed)))
  paths = {name: outdir / f"{name}.png" for name in figures}
  if jax.process_index() == 0:  # Every process computes (the features are sharded).
    outdir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
      figure.savefig(paths[name], dpi=dpi)
  return DistillationFigures(**paths)


def on_run(config: ml_collections.ConfigDict, workdir, run: Run) -> None:
  """The reporting hook (`sembridge_jax.stages.reports`): figures of a SemBridge run.
  Runs on every process (its computations are sharded over all devices)."""
  if not run.sembridge:
    return
  figures = write_distillation_figures(workdir.root, config, run=run.name, seed=run.seed)
  if jax.process_index() == 0:
    print(f"{run.name}: figures in {figures.transport_plan.parent}", flush=True)
