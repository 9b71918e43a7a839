r"""Figures of one entropic OT problem: the plan, the dual potentials, the convergence.

All three read the arrays of :class:`~sembridge_jax.alignment.SinkhornAlignmentResult`
(OTT-JAX conventions): the plan ``P`` (n, m) with rows summing to ``1/n`` and columns
to ``1/m``; the potentials ``f`` (n) and ``g`` (m) with
``P_ij = exp((f_i + g_j - C_ij) / eps)``; the error history ``errors`` (marginal L1
error every ``inner_iterations`` iterations, ``-1`` where the solver had stopped,
``inf`` where nothing was measured).

Samples are shown sorted by class (stable, so ties keep their batch order), which turns
the semantic term of the cost, ``lambda_sem [y_i != y_j]``, into visible diagonal
blocks: mass that leaves its block crossed a class boundary.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global figure registry, nothing to close; a notebook displays the returned figure).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sembridge_jax.viz import validation

__all__ = [
    "ClassOrder",
    "class_colours",
    "class_order",
    "plot_dual_potentials",
    "plot_epsilon_sweep",
    "plot_sinkhorn_convergence",
    "plot_transport_plan",
    "within_class_mass",
]

# Display floor of a zero marginal error on the log axis.
_ERROR_FLOOR = 1e-16


class ClassOrder(NamedTuple):
  """Samples sorted by class: ``order[k]`` is the sample shown at position ``k``."""
  order: np.ndarray       # (n,) permutation, stable within a class
  classes: np.ndarray     # (c,) class ids present, ascending
  boundaries: np.ndarray  # (c - 1,) positions between consecutive classes (k - 0.5)
  centres: np.ndarray     # (c,) centre position of each class block


def class_order(labels: np.ndarray) -> ClassOrder:
  """Stable sort of ``labels`` and the block boundaries and centres it creates."""
  order = np.argsort(labels, kind="stable")
  classes, counts = np.unique(labels, return_counts=True)
  ends = np.cumsum(counts)
  starts = ends - counts
  return ClassOrder(order=order, classes=classes, boundaries=ends[:-1] - 0.5,
                    centres=(starts + ends - 1) / 2.0)


def class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
  """One colour per class id (tab10 up to 10 classes, tab20 beyond)."""
  cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
  return [cmap(k % cmap.N) for k in range(num_classes)]


def within_class_mass(plan: np.ndarray, student_labels: np.ndarray,
                      teacher_labels: np.ndarray) -> float:
  """Fraction of the plan's mass on same-class (student, teacher) entries."""
  same = student_labels[:, None] == teacher_labels[None, :]
  return float(plan[same].sum() / plan.sum())


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
  if ax is not None:
    return ax.figure, ax
  fig = Figure(figsize=figsize, layout="constrained")
  return fig, fig.add_subplot()


def _check_plan(plan: Any, student_labels: Any, teacher_labels: Any
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  plan = validation.finite_array("plan", plan, ndim=2)
  if plan.min() < 0:
    raise ValueError(f"`plan` must be non-negative (a transport plan); got minimum {plan.min():.3g}.")
  if plan.sum() <= 0:
    raise ValueError("`plan` carries no mass (all entries are zero).")
  n, m = plan.shape
  ys = validation.class_labels("student_labels", student_labels, n,
                               length_of=f"`plan` (shape {plan.shape}) along its rows")
  yt = validation.class_labels("teacher_labels", teacher_labels, m,
                               length_of=f"`plan` (shape {plan.shape}) along its columns")
  return plan, ys, yt


def plot_transport_plan(plan: Any, student_labels: Any, teacher_labels: Any,
                        class_names: Sequence[str] | None = None, ax: Axes | None = None, *,
                        title: str | None = None, vmax: float | None = None,
                        colorbar: bool = True, cmap: str = "viridis") -> Figure:
  """Heatmap of a transport plan, rows and columns sorted by class, blocks outlined.

  Shows ``n * P_ij``: the share of student ``i``'s mass sent to teacher ``j`` (each row
  sums to 1), so plans of different batch sizes read on the same scale. White lines are
  class boundaries; with a semantic cost term the mass should stay in the diagonal
  blocks, and the title reports the fraction that does.

  Args:
    plan: (n, m) non-negative transport plan, students along rows.
    student_labels: (n,) integer classes of the students (rows).
    teacher_labels: (m,) integer classes of the teachers (columns).
    class_names: names of the class ids (default ``"class k"``).
    ax: axes to draw into (default: a new figure).
    title: replaces the default title.
    vmax: top of the colour scale (default: the largest share shown).
    colorbar: whether to draw the colour bar.
    cmap: a matplotlib colormap name.

  Returns:
    The figure holding ``ax``.
  """
  plan, ys, yt = _check_plan(plan, student_labels, teacher_labels)
  names = validation.class_name_list(class_names, [ys, yt])
  n, m = plan.shape
  rows, cols = class_order(ys), class_order(yt)
  shares = n * plan[rows.order][:, cols.order]

  fig, ax = _new_axes(ax, (6.4, 5.4))
  image = ax.imshow(shares, cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else shares.max(),
                    interpolation="nearest", aspect="auto")
  for position in rows.boundaries:
    ax.axhline(position, color="white", linewidth=1.5)
  for position in cols.boundaries:
    ax.axvline(position, color="white", linewidth=1.5)
  ax.set_yticks(rows.centres, [names[k] for k in rows.classes])
  ax.set_xticks(cols.centres, [names[k] for k in cols.classes], rotation=30, ha="right")
  ax.set_ylabel(f"student sample ({n}, sorted by class)")
  ax.set_xlabel(f"teacher sample ({m}, sorted by class)")
  kept = within_class_mass(plan, ys, yt)
  ax.set_title(title if title is not None else
               f"Transport plan: {100 * kept:.1f}% of the mass stays within its class")
  if colorbar:
    fig.colorbar(image, ax=ax, label="share of the student's mass (n · P[i, j])")
  return fig


def plot_epsilon_sweep(results: Sequence[Any], epsilons: Sequence[float], student_labels: Any,
                       teacher_labels: Any, class_names: Sequence[str] | None = None, *,
                       title: str | None = None) -> Figure:
  """Plans of one problem solved at several ``epsilon``, side by side on one colour scale.

  Args:
    results: one :class:`~sembridge_jax.alignment.SinkhornAlignmentResult` (anything with
      ``plan``, ``cost``, ``n_iters`` and ``converged``) per epsilon.
    epsilons: the relative epsilons the results were solved with (for the titles).
    student_labels, teacher_labels, class_names: as in :func:`plot_transport_plan`.
    title: figure title.

  Returns:
    A figure with one panel per epsilon; each panel's title gives the Sinkhorn
    iterations and the transport cost ``<P, C>``.
  """
  if len(results) == 0:
    raise ValueError("`results` is empty; pass one Sinkhorn result per epsilon.")
  if len(results) != len(epsilons):
    raise ValueError(f"`results` has {len(results)} entries but `epsilons` has {len(epsilons)}.")
  fig = Figure(figsize=(4.2 * len(results) + 1.0, 4.4), layout="constrained")
  axes = fig.subplots(1, len(results), squeeze=False)[0]
  image = None
  for ax, result, epsilon in zip(axes, results, epsilons):
    plan = validation.finite_array("results[].plan", result.plan, ndim=2)
    cost = validation.finite_array("results[].cost", result.cost, ndim=2)
    if cost.shape != plan.shape:
      raise ValueError(f"a result's `cost` has shape {cost.shape} but its `plan` {plan.shape}.")
    converged = bool(np.asarray(result.converged))
    plot_transport_plan(plan, student_labels, teacher_labels, class_names, ax=ax, vmax=1.0,
                        colorbar=False, title=(
                            f"ε = {epsilon:g} × mean(C)\n{int(np.asarray(result.n_iters))} "
                            f"iterations{'' if converged else ' (not converged)'}, "
                            f"⟨P, C⟩ = {float(np.sum(plan * cost)):.3f}"))
    image = ax.images[-1]
    if ax is not axes[0]:
      ax.set_ylabel("")
  fig.colorbar(image, ax=list(axes), label="share of the student's mass (n · P[i, j])")
  fig.suptitle(title or "One OT problem at several ε: the smaller ε, the sharper the plan")
  return fig


def _separated_maxima(x: np.ndarray, y: np.ndarray, count: int) -> list[int]:
  """Indices of the ``count`` largest ``y`` whose labels would not overlap: a point is
  skipped when it lies within 4 positions and 8% of the value range of one already taken
  (near-equal neighbours would print their labels on top of each other)."""
  span = max(float(np.ptp(y)), 1e-12)
  taken: list[int] = []
  for i in np.argsort(-y):
    if len(taken) >= count:
      break
    if all(abs(x[i] - x[j]) >= 4 or abs(y[i] - y[j]) >= 0.08 * span for j in taken):
      taken.append(int(i))
  return taken


def plot_dual_potentials(f: Any, g: Any, student_labels: Any, teacher_labels: Any,
                         class_names: Sequence[str] | None = None, *, annotate: int = 3,
                         title: str | None = None) -> Figure:
  """The dual potentials (Lagrange multipliers of the marginals), per sample, by class.

  ``f_i`` is the price of the constraint "student ``i`` ships exactly ``1/n`` of mass":
  raising its mass by ``delta`` raises the OT cost by ``f_i * delta``. A student far
  from every teacher of its class has a high ``f_i`` (it is expensive to serve); a
  teacher far from the students of its class has a high ``g_j`` (expensive to fill).
  Both are defined up to one constant (``(f + c, g - c)`` give the same plan), so each
  panel shows its potential minus its mean.

  Args:
    f: (n,) student potentials.
    g: (m,) teacher potentials.
    student_labels, teacher_labels: (n,) and (m,) integer classes.
    class_names: names of the class ids.
    annotate: label the ``annotate`` most expensive samples of each side with their
      batch index.
    title: figure title.

  Returns:
    A figure with two panels (students, teachers).
  """
  f = validation.finite_array("f", f, ndim=1)
  g = validation.finite_array("g", g, ndim=1)
  ys = validation.class_labels("student_labels", student_labels, len(f), length_of="`f`")
  yt = validation.class_labels("teacher_labels", teacher_labels, len(g), length_of="`g`")
  names = validation.class_name_list(class_names, [ys, yt])
  colours = class_colours(len(names))

  fig = Figure(figsize=(11.0, 4.2), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  panels = ((axes[0], f - f.mean(), ys, "student", "f", "serve"),
            (axes[1], g - g.mean(), yt, "teacher", "g", "fill"))
  for ax, values, labels, who, symbol, verb in panels:
    order = class_order(labels)
    shown = values[order.order]
    position = np.arange(len(shown))
    for k in order.classes:
      at = labels[order.order] == k
      ax.scatter(position[at], shown[at], color=colours[k], s=28, label=names[k],
                 edgecolors="black", linewidths=0.3, zorder=3)
      ax.hlines(shown[at].mean(), position[at].min() - 0.4, position[at].max() + 0.4,
                color=colours[k], linewidth=2.0, alpha=0.6, zorder=2)
    for boundary in order.boundaries:
      ax.axvline(boundary, color="0.7", linestyle=":", linewidth=1.0)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    for rank in _separated_maxima(position, shown, annotate):
      ax.annotate(f"#{order.order[rank]}", (position[rank], shown[rank]),
                  textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"{who} sample (sorted by class; #k = index in the batch)")
    ax.set_title(f"{who} potential {symbol} (high = expensive to {verb})")
    ax.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("potential minus its mean (cost units)")
  handles, labels = axes[0].get_legend_handles_labels()
  seen = dict(zip(labels, handles))
  for handle, label in zip(*axes[1].get_legend_handles_labels()):
    seen.setdefault(label, handle)
  fig.legend(list(seen.values()), list(seen.keys()), title="class", loc="outside right center")
  fig.suptitle(title or "Dual potentials: the prices of the marginal constraints "
               "(lines: class means)")
  return fig


def _error_curve(name: str, errors: Any, inner_iterations: int) -> tuple[np.ndarray, np.ndarray]:
  array = np.asarray(errors, dtype=np.float64)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(f"`{name}` must be a non-empty 1-D error history; got shape {array.shape}.")
  if np.isnan(array).any():
    raise ValueError(f"`{name}` holds NaN at iteration index "
                     f"{int(np.flatnonzero(np.isnan(array))[0])}: the solve diverged.")
  if ((array < 0) & (array != -1)).any():
    raise ValueError(f"`{name}` holds negative errors other than -1 (OTT's 'not run' marker).")
  iterations = inner_iterations * (np.arange(array.size) + 1)
  measured = np.isfinite(array) & (array >= 0)
  if not measured.any():
    raise ValueError(f"`{name}` holds no measured error (only -1 / inf); solve with "
                     "min_iterations=0 or a smaller inner_iterations to record one.")
  return iterations[measured], np.maximum(array[measured], _ERROR_FLOOR)


def plot_sinkhorn_convergence(errors: Any | Mapping[str, Any], *, inner_iterations: int = 1,
                              threshold: float | None = None, ax: Axes | None = None,
                              title: str | None = None) -> Figure:
  """Marginal error per Sinkhorn iteration, on a log scale.

  Args:
    errors: one error history (1-D, OTT's ``errors``: ``-1`` = not run and ``inf`` = not
      measured are dropped) or a mapping ``curve label -> history``.
    inner_iterations: iterations between two recorded errors.
    threshold: convergence threshold, drawn as a dashed line.
    ax: axes to draw into (default: a new figure).
    title: replaces the default title.

  Returns:
    The figure holding ``ax``.
  """
  if inner_iterations < 1:
    raise ValueError(f"`inner_iterations` must be >= 1; got {inner_iterations}.")
  curves = dict(errors) if isinstance(errors, Mapping) else {"marginal error": errors}
  if not curves:
    raise ValueError("`errors` is an empty mapping; pass at least one error history.")
  fig, ax = _new_axes(ax, (6.4, 4.2))
  for label, history in curves.items():
    iterations, values = _error_curve(f"errors[{label!r}]" if isinstance(errors, Mapping)
                                      else "errors", history, inner_iterations)
    ax.plot(iterations, values, marker="o" if len(values) < 30 else None, markersize=3,
            label=str(label))
  if threshold is not None:
    if not threshold > 0:
      raise ValueError(f"`threshold` must be positive; got {threshold}.")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1.0,
               label=f"threshold {threshold:g}")
  ax.set_yscale("log")
  ax.set_xlabel("Sinkhorn iteration")
  ax.set_ylabel("marginal error (L1 distance to the target marginal)")
  ax.set_title(title or "Sinkhorn convergence")
  ax.grid(which="both", alpha=0.3)
  ax.legend()
  return fig
