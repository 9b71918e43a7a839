"""Sinkhorn alignment: POT agreement, duality, envelope-theorem gradients, jit/vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn as ott_sinkhorn

from sembridge_jax.alignment import (
    label_mismatch,
    semantic_cost_matrix,
    sinkhorn_alignment,
)

N_STUDENT, N_TEACHER, WIDTH, CLASSES = 12, 9, 6, 3


def _problem(seed: int = 0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(N_STUDENT, WIDTH)).astype(dtype)
  teacher = rng.normal(size=(N_TEACHER, WIDTH)).astype(dtype)
  student_labels = rng.integers(0, CLASSES, N_STUDENT)
  teacher_labels = rng.integers(0, CLASSES, N_TEACHER)
  return student, teacher, student_labels, teacher_labels


def _numpy_cost(student, teacher, student_labels, teacher_labels, semantic_weight):
  s = student / np.linalg.norm(student, axis=1, keepdims=True)
  t = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
  mismatch = (student_labels[:, None] != teacher_labels[None, :]).astype(np.float64)
  return 1.0 - s @ t.T + semantic_weight * mismatch


@jax.jit
def _tight_solve(student, teacher, student_labels, teacher_labels):
  """A solve run far past convergence (used in float64), lambda_sem = 0.5."""
  return sinkhorn_alignment(student, teacher, student_labels=student_labels,
                            teacher_labels=teacher_labels, semantic_weight=0.5,
                            max_iterations=3000, threshold=1e-12)


def test_cost_matrix_matches_numpy():
  student, teacher, ys, yt = _problem(dtype=np.float32)
  cost = semantic_cost_matrix(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(ys),
                              jnp.asarray(yt), semantic_weight=0.7)
  expected = _numpy_cost(student.astype(np.float64), teacher.astype(np.float64), ys, yt, 0.7)
  np.testing.assert_allclose(cost, expected, atol=1e-6)


def test_multi_hot_mismatch_is_jaccard_distance_and_reduces_to_inequality():
  rng = np.random.default_rng(1)
  ys = rng.integers(0, 2, (7, 5))
  yt = rng.integers(0, 2, (4, 5))
  ys[0] = 0  # empty label sets are handled
  yt[0] = 0
  expected = np.zeros((7, 4))
  for i in range(7):
    for j in range(4):
      union = np.sum(ys[i] | yt[j])
      expected[i, j] = 0.0 if union == 0 else 1.0 - np.sum(ys[i] & yt[j]) / union
  np.testing.assert_allclose(label_mismatch(jnp.asarray(ys), jnp.asarray(yt)), expected,
                             atol=1e-6)
  classes_s, classes_t = rng.integers(0, 5, 7), rng.integers(0, 5, 4)
  one_hot = label_mismatch(jax.nn.one_hot(classes_s, 5), jax.nn.one_hot(classes_t, 5))
  np.testing.assert_array_equal(one_hot, label_mismatch(jnp.asarray(classes_s),
                                                        jnp.asarray(classes_t)))


def test_plan_matches_pot_log_sinkhorn_and_duality_holds():
  student, teacher, ys, yt = _problem()
  with jax.enable_x64(True):
    loss, result = _tight_solve(student, teacher, ys, yt)
    cost = _numpy_cost(student, teacher, ys, yt, 0.5)
    eps = float(result.epsilon)
    a = np.full(N_STUDENT, 1.0 / N_STUDENT)
    b = np.full(N_TEACHER, 1.0 / N_TEACHER)

    # Same cost, same absolute epsilon (0.05 of the mean cost).
    np.testing.assert_allclose(eps, 0.05 * cost.mean(), rtol=1e-12)
    np.testing.assert_allclose(result.cost, cost, atol=1e-12)
    reference = pot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100_000,
                             stopThr=1e-14)
    plan = np.asarray(result.plan)
    np.testing.assert_allclose(plan, reference, atol=1e-5)
    assert np.abs(plan - reference).max() < 1e-9  # in fact far tighter in float64
    np.testing.assert_allclose(loss, np.sum(reference * cost), atol=1e-9)

    # Primal feasibility: the marginals.
    np.testing.assert_allclose(plan.sum(axis=1), a, atol=1e-10)
    np.testing.assert_allclose(plan.sum(axis=0), b, atol=1e-10)
    assert bool(result.converged) and float(result.marginal_error) < 1e-10

    # Optimality of the duals (OTT convention): P = exp((f_i + g_j - C_ij) / eps) and
    # f, g are the fixed point of the log-domain updates (zero dual gradient).
    f, g = np.asarray(result.f), np.asarray(result.g)
    np.testing.assert_allclose(plan, np.exp((f[:, None] + g[None, :] - cost) / eps),
                               atol=1e-12)
    lse = lambda z, axis: np.log(np.sum(np.exp(z), axis=axis))  # noqa: E731
    np.testing.assert_allclose(
        f, eps * np.log(a) - eps * lse((g[None, :] - cost) / eps, 1), atol=1e-9)
    np.testing.assert_allclose(
        g, eps * np.log(b) - eps * lse((f[:, None] - cost) / eps, 0), atol=1e-9)


def test_gradient_is_the_envelope_theorem_gradient():
  student, teacher, ys, yt = _problem(seed=3)
  with jax.enable_x64(True):
    gradient = np.asarray(jax.jit(jax.grad(lambda x: _tight_solve(x, teacher, ys, yt)[0]))(
        student))
    _, result = _tight_solve(student, teacher, ys, yt)
    plan, eps = np.asarray(result.plan), float(result.epsilon)

    def plan_fixed_cost(x):  # sum_ij P*_ij C_ij(x), in NumPy
      return np.sum(plan * _numpy_cost(x, teacher, ys, yt, 0.5))

    @jax.jit
    def regularised_ot_of_cost(cost):  # W_eps(C) at the fixed epsilon
      problem = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=eps))
      solver = ott_sinkhorn.Sinkhorn(threshold=1e-13, max_iterations=5000)
      return solver(problem).reg_ot_cost

    def regularised_ot(x):  # re-solved for every perturbed x
      return float(regularised_ot_of_cost(_numpy_cost(x, teacher, ys, yt, 0.5)))

    h = 1e-6
    for i, k in [(0, 0), (3, 2), (7, 5), (11, 1)]:
      bump = np.zeros_like(student)
      bump[i, k] = h
      fd_plan_fixed = (plan_fixed_cost(student + bump) - plan_fixed_cost(student - bump)) / (2 * h)
      fd_envelope = (regularised_ot(student + bump) - regularised_ot(student - bump)) / (2 * h)
      np.testing.assert_allclose(gradient[i, k], fd_plan_fixed, rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(gradient[i, k], fd_envelope, rtol=1e-4, atol=1e-7)


def test_gradient_reaches_teacher_side_and_skips_the_loop():
  student, teacher, ys, yt = _problem(dtype=np.float32)
  grads = jax.jit(jax.grad(lambda s, t: sinkhorn_alignment(s, t)[0], argnums=(0, 1)))(
      student, teacher)
  assert all(np.isfinite(np.asarray(g)).all() and np.abs(g).max() > 0 for g in grads)
  # The backward pass holds no Sinkhorn iterations: no loop appears in the VJP.
  _, vjp = jax.vjp(lambda s: sinkhorn_alignment(s, jnp.asarray(teacher))[0],
                   jnp.asarray(student))
  backward = str(jax.make_jaxpr(vjp)(jnp.ones((), jnp.float32)))
  assert "scan" not in backward and "while" not in backward


def test_jit_and_vmap_match_single_solves():
  problems = [_problem(seed, dtype=np.float32) for seed in range(3)]
  students = jnp.stack([jnp.asarray(p[0]) for p in problems])
  teachers = jnp.stack([jnp.asarray(p[1]) for p in problems])
  ys = jnp.stack([jnp.asarray(p[2]) for p in problems])
  yt = jnp.stack([jnp.asarray(p[3]) for p in problems])

  def solve(s, t, a, b):
    return sinkhorn_alignment(s, t, student_labels=a, teacher_labels=b, max_iterations=100)

  losses, results = jax.jit(jax.vmap(solve))(students, teachers, ys, yt)
  single = jax.jit(solve)
  for k in range(3):
    loss, result = single(students[k], teachers[k], ys[k], yt[k])
    np.testing.assert_allclose(losses[k], loss, rtol=1e-5)
    np.testing.assert_allclose(results.plan[k], result.plan, atol=1e-6)
  assert results.n_iters.tolist() == [100, 100, 100]


def test_fixed_budget_and_early_exit_report_iterations_honestly():
  student, teacher, ys, yt = _problem(dtype=np.float32)
  s, t = jnp.asarray(student), jnp.asarray(teacher)
  _, fixed = sinkhorn_alignment(s, t, max_iterations=200, threshold=1e-5)
  assert int(fixed.n_iters) == 200 and bool(fixed.converged)
  assert fixed.errors.shape == (20,) and np.isfinite(fixed.errors[-1])

  _, early = sinkhorn_alignment(s, t, max_iterations=200, threshold=1e-5, min_iterations=0)
  assert bool(early.converged) and int(early.n_iters) < 200
  errors = np.asarray(early.errors)
  run = int(early.n_iters) // 10
  assert errors[run - 1] < 1e-5 and np.all(errors[run:] == -1)
  np.testing.assert_allclose(early.plan, fixed.plan, atol=1e-5)

  # Too small a budget for a tight threshold is reported as not converged.
  _, short = sinkhorn_alignment(s, t, student_labels=jnp.asarray(ys),
                                teacher_labels=jnp.asarray(yt), max_iterations=2,
                                inner_iterations=1, threshold=1e-9)
  assert not bool(short.converged) and int(short.n_iters) == 2
  assert float(short.marginal_error) > 1e-9


def test_rejects_bad_arguments():
  s = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="max_iterations"):
    sinkhorn_alignment(s, s, max_iterations=25, inner_iterations=10)
  with pytest.raises(ValueError, match="same width"):
    sinkhorn_alignment(s, jnp.ones((4, 5)))
  with pytest.raises(ValueError, match="both"):
    sinkhorn_alignment(s, s, student_labels=jnp.zeros(4, int))
