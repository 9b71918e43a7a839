"""Figures of `sembridge_jax.viz` and the Sinkhorn divergence of `transport_cost`.

Each figure is checked against an independent NumPy evaluation of what it should show
(the sorted plan, the centred potentials, the stretched false colour, the bar heights),
for its labels and titles, and for clear errors on malformed input.
"""

from __future__ import annotations

import numpy as np
import ot as pot
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from sembridge_jax import viz
from sembridge_jax.analysis import transport_cost
from sembridge_jax.alignment import sinkhorn_alignment

CLASS_NAMES = ("forest", "river", "urban")


def _labelled_problem(seed: int = 0, n: int = 9, width: int = 5):
  rng = np.random.default_rng(seed)
  student_labels = rng.permutation(np.arange(n) % 3)
  teacher_labels = rng.permutation(np.arange(n) % 3)
  student = rng.normal(size=(n, width)) + 3.0 * np.eye(width)[student_labels]
  teacher = rng.normal(size=(n, width)) + 3.0 * np.eye(width)[teacher_labels]
  return student, teacher, student_labels, teacher_labels


def _solve(epsilon: float = 0.05, seed: int = 0):
  student, teacher, ys, yt = _labelled_problem(seed)
  _, result = sinkhorn_alignment(student, teacher, student_labels=ys, teacher_labels=yt,
                                 epsilon=epsilon, max_iterations=500, inner_iterations=1,
                                 min_iterations=0, threshold=1e-6)
  return result, ys, yt


# -- transport plan -----------------------------------------------------------------------


def test_transport_plan_shows_class_sorted_shares_with_boundaries():
  result, ys, yt = _solve()
  plan = np.asarray(result.plan, np.float64)
  fig = viz.plot_transport_plan(plan, ys, yt, CLASS_NAMES)
  assert isinstance(fig, Figure)
  ax, colorbar_ax = fig.axes
  # What is drawn: n * P with rows and columns sorted (stably) by class.
  expected = len(ys) * plan[np.argsort(ys, kind="stable")][:, np.argsort(yt, kind="stable")]
  np.testing.assert_allclose(ax.images[0].get_array(), expected)
  # Two boundaries per axis for three classes: at 2.5 and 5.5 (three samples per class).
  horizontal = sorted(line.get_ydata()[0] for line in ax.lines if line.get_ydata()[0] ==
                      line.get_ydata()[1] and line.get_xdata()[0] == 0)
  assert horizontal == [2.5, 5.5]
  assert len(ax.lines) == 4
  assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
  assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
  assert "student" in ax.get_ylabel() and "teacher" in ax.get_xlabel()
  kept = plan[ys[:, None] == yt[None, :]].sum() / plan.sum()
  assert f"{100 * kept:.1f}%" in ax.get_title()
  assert kept > 0.99  # the semantic term keeps the mass inside the class blocks
  assert "share" in colorbar_ax.get_ylabel()


def test_transport_plan_accepts_rectangular_plans_and_default_class_names():
  plan = np.full((4, 6), 1 / 24)
  fig = viz.plot_transport_plan(plan, [0, 0, 1, 1], [0, 1, 1, 0, 1, 0])
  assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["class 0", "class 1"]


@pytest.mark.parametrize("plan, ys, yt, message", [
    (np.ones(4), [0], [0], "`plan` must have 2"),
    (np.full((3, 3), np.nan), [0, 1, 2], [0, 1, 2], "`plan` holds 9 non-finite"),
    (-np.ones((2, 2)), [0, 1], [0, 1], "non-negative"),
    (np.ones((3, 2)), [0, 1], [0, 1], "`student_labels` has 2 entries but `plan`"),
    (np.ones((2, 3)), [0, 1], [0, 1], "`teacher_labels` has 2 entries but `plan`"),
    (np.ones((2, 2)), [0.5, 1.0], [0, 1], "integer class ids"),
    (np.ones((2, 2)), [[0, 1]], [0, 1], "1-D vector"),
    (np.ones((2, 2)), [0, -1], [0, 1], "padding"),
])
def test_transport_plan_rejects_malformed_input(plan, ys, yt, message):
  with pytest.raises(ValueError, match=message):
    viz.plot_transport_plan(plan, ys, yt)


def test_transport_plan_rejects_too_few_class_names():
  with pytest.raises(ValueError, match="`class_names` has 2 names"):
    viz.plot_transport_plan(np.ones((3, 3)), [0, 1, 2], [0, 1, 2], class_names=["a", "b"])


def test_epsilon_sweep_has_a_panel_per_epsilon_with_iterations_and_cost():
  epsilons = (0.01, 0.1, 1.0)
  solved = [_solve(e) for e in epsilons]
  results = [r for r, _, _ in solved]
  _, ys, yt = solved[0]
  fig = viz.plot_epsilon_sweep(results, epsilons, ys, yt, CLASS_NAMES)
  panels = [ax for ax in fig.axes if ax.images]
  assert len(panels) == 3
  for ax, result, epsilon in zip(panels, results, epsilons):
    title = ax.get_title()
    assert f"ε = {epsilon:g}" in title
    assert f"{int(result.n_iters)} iterations" in title
    assert f"{float(np.sum(np.asarray(result.plan) * np.asarray(result.cost))):.3f}" in title
  # Larger epsilon: blurrier plan, fewer iterations.
  assert int(results[0].n_iters) > int(results[-1].n_iters)
  with pytest.raises(ValueError, match="`results` has 3 entries but `epsilons` has 2"):
    viz.plot_epsilon_sweep(results, epsilons[:2], ys, yt)


# -- potentials and convergence --------------------------------------------------------------


def test_dual_potentials_plot_centred_potentials_sorted_by_class():
  result, ys, yt = _solve()
  f, g = np.asarray(result.f, np.float64), np.asarray(result.g, np.float64)
  fig = viz.plot_dual_potentials(f, g, ys, yt, CLASS_NAMES, annotate=2)
  student_ax, teacher_ax = fig.axes[:2]
  for ax, values, labels in ((student_ax, f, ys), (teacher_ax, g, yt)):
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3  # one per class
    drawn = np.concatenate([s.get_offsets()[:, 1] for s in scatters])
    expected = (values - values.mean())[np.argsort(labels, kind="stable")]
    np.testing.assert_allclose(drawn, expected, atol=1e-12)
    assert len(ax.texts) == 2  # the two most expensive samples are annotated
  assert "potential" in student_ax.get_ylabel()
  assert "student" in student_ax.get_xlabel() and "teacher" in teacher_ax.get_xlabel()
  assert [t.get_text() for t in fig.legends[0].get_texts()] == list(CLASS_NAMES)


def test_dual_potential_labels_skip_overlapping_neighbours():
  # Samples 0 and 1 (same class, adjacent, nearly equal) are the two most expensive
  # students: labelling both would print one label over the other.
  f = np.array([1.0, 0.99, -0.2, -0.3, 0.6, -0.5, -0.4, -0.1, -0.6, -0.45])
  labels = np.zeros(10, np.int64)
  fig = viz.plot_dual_potentials(f, np.zeros(10), labels, labels, ["only"], annotate=2)
  texts = [t.get_text() for t in fig.axes[0].texts]
  assert texts == ["#0", "#4"]


def test_dual_potentials_reject_malformed_input():
  with pytest.raises(ValueError, match="`student_labels` has 2 entries but `f` has 3"):
    viz.plot_dual_potentials(np.zeros(3), np.zeros(3), [0, 1], [0, 1, 2])
  with pytest.raises(ValueError, match="`g` holds 1 non-finite"):
    viz.plot_dual_potentials(np.zeros(2), np.array([0.0, np.nan]), [0, 1], [0, 1])
  with pytest.raises(ValueError, match="`f` must have 1"):
    viz.plot_dual_potentials(np.zeros((2, 2)), np.zeros(2), [0, 1], [0, 1])


def test_sinkhorn_convergence_drops_unmeasured_entries_and_uses_a_log_axis():
  errors = np.array([0.5, 0.05, 1e-3, 0.0, -1.0, -1.0])
  fig = viz.plot_sinkhorn_convergence(errors, inner_iterations=10, threshold=1e-3)
  ax = fig.axes[0]
  assert ax.get_yscale() == "log"
  curve = ax.lines[0]
  np.testing.assert_array_equal(curve.get_xdata(), [10, 20, 30, 40])
  np.testing.assert_allclose(curve.get_ydata(), [0.5, 0.05, 1e-3, 1e-16])
  assert ax.lines[1].get_ydata()[0] == 1e-3  # threshold line
  assert "iteration" in ax.get_xlabel() and "error" in ax.get_ylabel()


def test_sinkhorn_convergence_of_real_solves_one_curve_each():
  results = {f"ε={e:g}": _solve(e)[0].errors for e in (0.02, 0.2)}
  fig = viz.plot_sinkhorn_convergence(results, threshold=1e-6)
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == list(results)
  for line, errors in zip(ax.lines, results.values()):
    measured = np.asarray(errors)[np.asarray(errors) >= 0]
    assert len(line.get_xdata()) == len(measured)
    assert line.get_ydata()[-1] < 1e-6 <= line.get_ydata()[0]


@pytest.mark.parametrize("errors, message", [
    (np.array([0.1, np.nan]), "NaN at iteration index 1"),
    (np.array([-1.0, np.inf]), "no measured error"),
    (np.array([0.1, -0.5]), "negative errors"),
    (np.zeros((2, 2)), "1-D error history"),
    ({}, "empty mapping"),
])
def test_sinkhorn_convergence_rejects_malformed_histories(errors, message):
  with pytest.raises(ValueError, match=message):
    viz.plot_sinkhorn_convergence(errors)


# -- matched pairs ----------------------------------------------------------------------------


def _images(n: int = 3, bands: int = 5, seed: int = 0):
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  ms = rng.integers(100, 5000, (n, 6, 6, bands)).astype(np.uint16)
  return rgb, ms


def test_false_colour_is_a_per_image_per_band_percentile_stretch():
  _, ms = _images()
  composite = viz.false_colour(ms, (4, 3, 2), percentiles=(5, 95))
  assert composite.shape == (3, 6, 6, 3)
  for i in range(3):
    for k, band in enumerate((4, 3, 2)):
      x = ms[i, :, :, band].astype(np.float64)
      lo, hi = np.percentile(x, 5), np.percentile(x, 95)
      np.testing.assert_allclose(composite[i, :, :, k], np.clip((x - lo) / (hi - lo), 0, 1))


def test_matched_pairs_grid_shows_each_student_next_to_its_teacher():
  rgb, ms = _images(n=5)
  fig = viz.plot_matched_pairs(rgb, ms, (4, 3, 2), [0, 1, 2, 0, 1], CLASS_NAMES,
                               band_names=("nir", "red", "green"), teacher_labels=[0, 1, 2, 0, 2],
                               scores=np.linspace(0, 1, 5), pairs_per_row=2)
  image_axes = [ax for ax in fig.axes if ax.images]
  assert len(image_axes) == 10
  student_ax, teacher_ax = image_axes[0], image_axes[1]
  np.testing.assert_allclose(student_ax.images[0].get_array(), rgb[0] / 255.0)
  np.testing.assert_allclose(teacher_ax.images[0].get_array(),
                             viz.false_colour(ms[:1], (4, 3, 2))[0])
  assert "forest" in student_ax.get_title() and "student RGB" in student_ax.get_title()
  assert "nir-red-green" in teacher_ax.get_title()
  assert "similarity 0.00" in student_ax.get_xlabel()
  # A cross-class teacher is named in its title.
  assert "urban" in image_axes[9].get_title()
  assert "false colour" in fig.get_suptitle()


@pytest.mark.parametrize("kwargs, message", [
    ({"false_colour_bands": (5, 3, 2)}, r"three band indices in \[0, 5\)"),
    ({"false_colour_bands": (3, 2)}, "three band indices"),
    ({"labels": [0, 1]}, "`labels` has 2 entries but `rgb_images` has 3"),
    ({"ms_images": np.zeros((2, 6, 6, 5))}, "with N = 3"),
    ({"rgb_images": np.full((3, 8, 8, 3), 2.0)}, "floats in \\[0, 1\\]"),
    ({"rgb_images": np.zeros((3, 8, 8))}, r"\(N, H, W, 3\)"),
    ({"ms_images": np.full((3, 6, 6, 5), np.nan)}, "non-finite"),
    ({"scores": np.zeros(2)}, "`scores` has 2 entries"),
])
def test_matched_pairs_reject_malformed_input(kwargs, message):
  rgb, ms = _images()
  arguments = dict(rgb_images=rgb, ms_images=ms, false_colour_bands=(4, 3, 2), labels=[0, 1, 2])
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=message):
    viz.plot_matched_pairs(**arguments)


def test_default_false_colour_bands_fit_each_dataset():
  assert viz.default_false_colour("s2s_eu", 10).bands == (6, 3, 2)
  assert viz.default_false_colour("synthetic", 5).bands == (4, 3, 2)
  with pytest.raises(ValueError, match="need more than the 5 MS channels"):
    viz.default_false_colour("s2s_cn", 5)


# -- transport costs ------------------------------------------------------------------------


def _bar_heights(ax):
  return [patch.get_height() for patch in ax.patches]


def test_transport_cost_bars_flat_and_grouped():
  fig = viz.plot_transport_costs({"paired": 0.1, "random": 0.4, "sfm": 0.25})
  ax = fig.axes[0]
  np.testing.assert_allclose(_bar_heights(ax), [0.1, 0.4, 0.25])
  assert [t.get_text() for t in ax.get_xticklabels()] == ["paired", "random", "sfm"]
  assert "Sinkhorn divergence" in ax.get_ylabel() and ax.get_title()
  assert "0.400" in [t.get_text() for t in ax.texts]

  nested = {"paired": {"before": 0.5, "after": 0.1},
            "random": {"before": 0.6, "after": 0.3}}
  fig = viz.plot_transport_costs(nested, legend_title="student")
  ax = fig.axes[0]
  np.testing.assert_allclose(_bar_heights(ax), [0.5, 0.6, 0.1, 0.3])  # series by series
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]


@pytest.mark.parametrize("costs, message", [
    ({}, "non-empty mapping"),
    ({"paired": float("nan")}, "must be finite"),
    ({"paired": 0.1, "random": {"a": 0.2}}, "mixes numbers and mappings"),
    ({"paired": "high"}, "not a number"),
])
def test_transport_cost_bars_reject_malformed_input(costs, message):
  with pytest.raises(ValueError, match=message):
    viz.plot_transport_costs(costs)


# -- Sinkhorn divergence ---------------------------------------------------------------------


def _pot_regularised_cost(x: np.ndarray, y: np.ndarray, epsilon: float) -> float:
  """``<P, C> + eps KL(P || a b^T)`` at POT's log-domain Sinkhorn solution."""
  unit = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)
  cost = 1.0 - unit(x) @ unit(y).T
  a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
  plan = pot.sinkhorn(a, b, cost, epsilon, method="sinkhorn_log", numItermax=20000,
                      stopThr=1e-12)
  return float(np.sum(plan * cost) + epsilon * np.sum(plan * np.log(plan / np.outer(a, b))))


def test_sinkhorn_divergence_matches_pot():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(12, 4)), rng.normal(size=(9, 4)) + 0.7
  epsilon = 0.1
  expected = _pot_regularised_cost(x, y, epsilon) - 0.5 * (
      _pot_regularised_cost(x, x, epsilon) + _pot_regularised_cost(y, y, epsilon))
  result = transport_cost.sinkhorn_divergence(x.astype(np.float32), y.astype(np.float32),
                                              epsilon=epsilon, threshold=1e-6)
  assert bool(result.converged)
  np.testing.assert_allclose(float(result.divergence), expected, atol=2e-4)


def test_sinkhorn_divergence_is_zero_on_equal_clouds_and_grows_with_the_gap():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(16, 6)).astype(np.float32)
  same = float(transport_cost.sinkhorn_divergence(x, x[::-1]).divergence)
  assert abs(same) < 1e-4  # permuting the points changes nothing
  direction = np.eye(6, dtype=np.float32)[0]
  gaps = [float(transport_cost.sinkhorn_divergence(x, x + shift * direction).divergence)
          for shift in (0.5, 1.5, 4.0)]
  assert 0 < gaps[0] < gaps[1] < gaps[2]
  with pytest.raises(ValueError, match="same width"):
    transport_cost.sinkhorn_divergence(x, x[:, :3])


def test_pairing_cost_is_the_mean_cosine_cost_of_the_pairs():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
  expected = np.mean([1 - s[i] @ t[i] / np.linalg.norm(s[i]) / np.linalg.norm(t[i])
                      for i in range(7)])
  assert transport_cost.pairing_cost(s, t) == pytest.approx(expected)


def test_cost_table_nests_by_setting_and_student():
  entries = tuple(transport_cost.TransportCost(setting, student, value, value + 0.1, 10, True, 5)
                  for setting, student, value in (("paired", "initial", 0.5),
                                                  ("sfm", "initial", 0.7),
                                                  ("sfm", "kd+sembridge", 0.2)))
  table = transport_cost.TransportCostTable(entries, 0.05)
  assert table.as_nested_dict() == {
      "paired (SCKD)": {"before distillation": 0.5},
      "unpaired, SFM (SemBridge)": {"before distillation": 0.7, "after kd + SemBridge": 0.2}}
  assert table.value("sfm", "kd+sembridge", "pairing_cost") == pytest.approx(0.3)
  assert "| unpaired, SFM (SemBridge) | after kd + SemBridge | 0.2000 |" in table.to_markdown()
  with pytest.raises(KeyError):
    table.value("random", "initial")
