r"""The transport cost between teacher and student feature distributions, in three settings.

The paper's central claim (METHOD section 1): with unpaired (asymmetric) data, moving
knowledge from the teacher's feature distribution to the student's costs more than with
paired (symmetric) data, and SemBridge lowers that cost. This module measures it.

Measure. For a student point cloud ``X = {x_i}`` (n points) and a teacher point cloud
``Y = {y_j}`` (m points), uniform weights ``a = 1/n``, ``b = 1/m`` and the cosine cost
``c(x, y) = 1 - cos(x, y)`` (the cost of SemBridge's OT term without its semantic part),
the entropic OT value is

    OT_eps(X, Y) = min_{P 1 = a, P^T 1 = b}  <P, C> + eps KL(P || a b^T),

and the *Sinkhorn divergence* (Feydy et al., 2019) removes its entropic bias,

    S_eps(X, Y) = OT_eps(X, Y) - (OT_eps(X, X) + OT_eps(Y, Y)) / 2.

On unit vectors ``c = ||x - y||^2 / 2``, so ``exp(-c / eps)`` is a Gaussian kernel:
``S_eps >= 0``, with equality iff the two (L2-normalised) distributions coincide; it
tends to the Wasserstein cost as ``eps -> 0`` and to an MMD as ``eps -> inf``.
``eps`` is *absolute* (default 0.05, about 5% of the cost of two orthogonal features)
and the same in every setting, so the numbers are comparable across settings and
students. Computed with :func:`ott.tools.sinkhorn_divergence.sinkdiv`.

Point clouds. Every feature lives in the *alignment space* of
`sembridge_jax.analysis.workdir` (pooled embeddings through the OT term's adapters; the
identity at the default widths): the space where SemBridge's OT term transports mass.
Student features are those of one student snapshot (before distillation, or after a
run); teacher features come from the frozen teacher's gallery (MS train images).

* ``paired`` (SCKD): ``X`` = the student on the true-colour RGB rendering of every MS
  train image, ``Y`` = the teacher on those same MS images. Pair ``i <-> i`` is the
  same scene.
* ``random`` (ACKD): ``X`` = the student on every RGB train image, ``Y`` = the teacher
  on a uniformly random same-class MS image for each (the pairs KD alone trains with).
* ``sfm`` (ACKD + SFM): ``X`` as in ``random``, ``Y`` = the teacher on each image's
  SFM-matched MS image: the SemBridge run's final (re-matched) pair table for the
  SemBridge student, the initial SFM table (``matching/pairs.npz``) otherwise.

The divergence compares *distributions*: the pairs enter only through which teacher
images (with multiplicity) make up ``Y``. We also report the *pairing cost*
``mean_i c(x_i, y_pair(i))``, the cost of the coupling the pairs impose; it is feasible
for the unregularised problem, so it bounds the Wasserstein cost ``W(X, Y)`` from above.

Caveat. Pooled features of two independently trained networks need not share axes, so
before distillation and after a run without the OT term (KD alone aligns logits only)
the divergence is high in every setting; compare settings *within* a student. Only the
SemBridge run trains its student's features towards the teacher's in this space.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import costs
from ott.tools import sinkhorn_divergence as ott_divergence

from sembridge_jax.analysis.workdir import INITIAL, AnalysisWorkdir
from sembridge_jax.runs import Run

__all__ = [
    "DEFAULT_EPSILON",
    "SETTINGS",
    "SinkhornDivergence",
    "TransportCost",
    "TransportCostTable",
    "TransportSetting",
    "measure_transport_costs",
    "pairing_cost",
    "setting_clouds",
    "sinkhorn_divergence",
    "student_label",
]

DEFAULT_EPSILON = 0.05


class SinkhornDivergence(NamedTuple):
  """``S_eps(X, Y)`` and the solver diagnostics of its three OT problems."""
  divergence: jax.Array  # scalar
  converged: jax.Array   # bool: all of OT(X, Y), OT(X, X), OT(Y, Y) converged
  n_iters: jax.Array     # int: iterations of the OT(X, Y) solve


def _unit(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def sinkhorn_divergence(student: jax.Array, teacher: jax.Array, *,
                        epsilon: float = DEFAULT_EPSILON, max_iterations: int = 2000,
                        threshold: float = 1e-5) -> SinkhornDivergence:
  """Sinkhorn divergence between two point clouds under the cosine cost.

  Args:
    student: (n, d) features.
    teacher: (m, d) features.
    epsilon: absolute entropic regularisation.
    max_iterations: Sinkhorn budget of each of the three problems.
    threshold: marginal error at which a solve stops.

  Returns:
    A :class:`SinkhornDivergence`.
  """
  if student.ndim != 2 or teacher.ndim != 2 or student.shape[1] != teacher.shape[1]:
    raise ValueError("`student` and `teacher` must be (n, d) and (m, d) point clouds of the "
                     f"same width; got {student.shape} and {teacher.shape}.")
  x = _unit(student.astype(jnp.float32))
  y = _unit(teacher.astype(jnp.float32))
  divergence, output = ott_divergence.sinkdiv(
      x, y, cost_fn=costs.Cosine(), epsilon=epsilon,
      solve_kwargs={"max_iterations": max_iterations, "threshold": threshold})
  return SinkhornDivergence(divergence=divergence,
                            converged=jnp.all(jnp.asarray(output.converged)),
                            n_iters=jnp.asarray(output.n_iters[0], jnp.int32))


def pairing_cost(student: np.ndarray, teacher: np.ndarray) -> float:
  """``mean_i (1 - cos(student_i, teacher_i))``: the cost of the pairs as a coupling."""
  s = student / np.maximum(np.linalg.norm(student, axis=-1, keepdims=True), 1e-12)
  t = teacher / np.maximum(np.linalg.norm(teacher, axis=-1, keepdims=True), 1e-12)
  return float(np.mean(1.0 - np.sum(s * t, axis=-1)))


# -- the three settings -------------------------------------------------------------------


class TransportSetting(NamedTuple):
  """A pair of point clouds to compare, built from a workdir and a student snapshot."""
  name: str
  label: str
  # (analysis, snapshot, features of a split by name) -> (X, Y) with X[i] paired with Y[i]
  clouds: Callable[..., tuple[np.ndarray, np.ndarray]]


def _paired_clouds(analysis, snapshot, features):
  renderings = features("ms_train")
  rows = analysis.gallery.rows_for(renderings.ids)
  return renderings.pooled, analysis.teacher_features(snapshot, rows)


def _random_clouds(analysis, snapshot, features):
  students = features("rgb_train")
  rows = analysis.random_pairing(snapshot.seed).lookup(students.ids)
  return students.pooled, analysis.teacher_features(snapshot, rows)


def _sfm_clouds(analysis, snapshot, features):
  students = features("rgb_train")
  own_table = snapshot.run.sembridge and snapshot.pairing is not None
  pairing = snapshot.pairing if own_table else analysis.sfm_pairing()
  rows = pairing.lookup(students.ids)
  return students.pooled, analysis.teacher_features(snapshot, rows)


SETTINGS: Mapping[str, TransportSetting] = {
    "paired": TransportSetting("paired", "paired (SCKD)", _paired_clouds),
    "random": TransportSetting("random", "unpaired, random (ACKD)", _random_clouds),
    "sfm": TransportSetting("sfm", "unpaired, SFM (SemBridge)", _sfm_clouds),
}


def setting_clouds(analysis, snapshot, setting: str, features=None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The (student, teacher) point clouds of ``setting`` for one student snapshot."""
  if setting not in SETTINGS:
    raise ValueError(f"setting={setting!r} is unknown; allowed: {list(SETTINGS)}")
  features = features or functools.lru_cache(maxsize=None)(
      lambda split: analysis.student_features(snapshot, split))
  return SETTINGS[setting].clouds(analysis, snapshot, features)


def student_label(name: str) -> str:
  """Readable name of a student snapshot: ``"kd+sembridge"`` -> ``"after kd + SemBridge"``."""
  if name == INITIAL:
    return "before distillation"
  run = Run.parse(name)
  return f"after {run.short_label}" if run.sembridge else f"after {run.method} alone"


# -- results --------------------------------------------------------------------------------


class TransportCost(NamedTuple):
  """One cell: a setting measured on one student snapshot."""
  setting: str        # a key of SETTINGS
  student: str        # "initial" or a run name
  divergence: float   # S_eps(X, Y)
  pairing_cost: float  # mean cost of the pairs (i, pair(i))
  num_points: int     # n = m points per cloud (after subsampling)
  converged: bool
  n_iters: int


class TransportCostTable(NamedTuple):
  """Every (setting, student) cell of one measurement."""
  entries: tuple[TransportCost, ...]
  epsilon: float

  def value(self, setting: str, student: str, field: str = "divergence") -> float:
    for entry in self.entries:
      if entry.setting == setting and entry.student == student:
        return float(getattr(entry, field))
    raise KeyError(f"no entry for setting={setting!r}, student={student!r}")

  def as_nested_dict(self, field: str = "divergence") -> dict[str, dict[str, float]]:
    """``{setting label: {student label: value}}`` (the input of `plot_transport_costs`)."""
    table: dict[str, dict[str, float]] = {}
    for entry in self.entries:
      table.setdefault(SETTINGS[entry.setting].label, {})[student_label(entry.student)] = float(
          getattr(entry, field))
    return table

  def to_markdown(self) -> str:
    lines = [f"| setting | student | Sinkhorn divergence (eps={self.epsilon:g}) | pairing cost "
             "| points | converged |", "|---|---|---|---|---|---|"]
    for e in self.entries:
      lines.append(f"| {SETTINGS[e.setting].label} | {student_label(e.student)} | "
                   f"{e.divergence:.4f} | {e.pairing_cost:.4f} | {e.num_points} | "
                   f"{'yes' if e.converged else 'no'} |")
    return "\n".join(lines)


def measure_transport_costs(analysis, students: Sequence[str] | None = None, *,
                            settings: Sequence[str] = tuple(SETTINGS), seed: int | None = None,
                            epsilon: float = DEFAULT_EPSILON, max_points: int = 2048,
                            max_iterations: int = 2000, threshold: float = 1e-5
                            ) -> TransportCostTable:
  """Sinkhorn divergence and pairing cost for every (setting, student) pair.

  Args:
    analysis: an opened workdir, :class:`sembridge_jax.analysis.workdir.AnalysisWorkdir` (or a
      path, opened with the config saved in its ``results.json``).
    students: snapshot names; default ``("initial", <method>, <method>+sembridge)``:
      before distillation, after the method alone, after SemBridge.
    settings: keys of :data:`SETTINGS`.
    seed: the distillation seed (default: the config's first).
    epsilon: absolute entropic regularisation of the divergence.
    max_points: clouds with more pairs are subsampled (seeded, pairs kept together) to
      bound the ``n x n`` cost matrices.
    max_iterations, threshold: Sinkhorn settings of each solve.

  Returns:
    A :class:`TransportCostTable`.
  """
  if not isinstance(analysis, AnalysisWorkdir):
    analysis = AnalysisWorkdir.open(analysis)
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    raise ValueError(f"settings {unknown} are unknown; allowed: {list(SETTINGS)}")
  if epsilon <= 0:
    raise ValueError(f"`epsilon` must be positive; got {epsilon}.")
  students = tuple(students or (INITIAL, analysis.baseline_run, analysis.sembridge_run))
  entries = []
  for name in students:
    snapshot = analysis.student(name, seed)
    features = functools.lru_cache(maxsize=None)(
        lambda split, snapshot=snapshot: analysis.student_features(snapshot, split))
    for setting in settings:
      student, teacher = setting_clouds(analysis, snapshot, setting, features)
      if len(student) > max_points:
        keep = np.sort(np.random.default_rng(0).permutation(len(student))[:max_points])
        student, teacher = student[keep], teacher[keep]
      result = jax.device_get(sinkhorn_divergence(
          jnp.asarray(student), jnp.asarray(teacher), epsilon=epsilon,
          max_iterations=max_iterations, threshold=threshold))
      entries.append(TransportCost(
          setting=setting, student=name, divergence=float(result.divergence),
          pairing_cost=pairing_cost(student, teacher), num_points=len(student),
          converged=bool(result.converged), n_iters=int(result.n_iters)))
  return TransportCostTable(entries=tuple(entries), epsilon=float(epsilon))
