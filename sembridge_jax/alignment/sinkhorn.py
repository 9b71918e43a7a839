r"""Semantic-aware entropic optimal transport between student and teacher batches.

Cost. For student features ``s_i`` (i < n) and teacher features ``t_j`` (j < m)

    C[i, j] = (1 - cos(s_i, t_j)) + lambda_sem * mismatch(y_i, y_j),

with ``mismatch = [y_i != y_j]`` for integer labels and the Jaccard distance
``1 - |y_i & y_j| / |y_i | y_j|`` for multi-hot labels (equal to ``[y_i != y_j]``
on one-hot vectors), so the semantic term keeps mass within a class.

Primal. With uniform marginals ``a = 1/n``, ``b = 1/m`` and
``eps = epsilon * mean(C)`` (epsilon *relative* to the mean cost, so one value
suits any feature scale),

    W_eps(C) = min_{P >= 0, P 1 = a, P^T 1 = b}  <P, C> + eps KL(P || a b^T).

Dual. The Lagrange multipliers ``f`` (n) and ``g`` (m) of the two marginal
constraints solve the unconstrained concave problem

    W_eps(C) = max_{f, g}  <f, a> + <g, b> - eps <exp((f + g^T - C) / eps), 1> + eps,

and at the optimum ``P*_ij = exp((f_i + g_j - C_ij) / eps)`` (OTT-JAX's
convention: the marginals ``a_i b_j`` are absorbed into the potentials). The
log-domain Sinkhorn iterations are block-coordinate ascent on this dual,

    f_i <- eps log a_i - eps logsumexp_j((g_j - C_ij) / eps),
    g_j <- eps log b_j - eps logsumexp_i((f_i - C_ij) / eps),

solved by :class:`ott.solvers.linear.sinkhorn.Sinkhorn` with ``lse_mode=True``.

Gradient (envelope theorem). ``W_eps`` is a minimum over a set of plans that does
not depend on ``C``, of a function linear in ``C``; by Danskin's (envelope)
theorem its gradient is ``dW_eps/dC = P*``: the plan's own sensitivity to ``C``
contributes nothing at the optimum. Hence the loss is the transport cost
``<P*, C>`` evaluated with ``P*`` held fixed, and its gradient with respect to
the features is ``sum_ij P*_ij dC_ij/d(s, t)``, exactly the gradient of the
regularised OT value (``eps`` is also held fixed). The solver runs on
``stop_gradient(C)``; nothing is differentiated through the Sinkhorn loop,
so backward costs one elementwise product regardless of the iteration count.

Fixed budget. By default ``min_iterations == max_iterations``: OTT then runs the
iterations as a ``lax.scan`` of static length, which jits, vmaps and shards
with a predictable cost; the marginal error is measured once, at the end, and
``converged`` reports whether it is below ``threshold``. Pass
``min_iterations=0`` to stop early (a ``lax.while_loop``, still jit/vmap-safe);
then ``errors`` holds the error every ``inner_iterations`` iterations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

__all__ = [
    "SinkhornAlignmentResult",
    "label_mismatch",
    "semantic_cost_matrix",
    "sinkhorn_alignment",
]

_HIGHEST = jax.lax.Precision.HIGHEST
# Lower bound on the absolute epsilon: a batch of identical same-class pairs has
# mean cost 0 and would otherwise divide by zero inside the log-domain updates.
_MIN_EPSILON = 1e-6


class SinkhornAlignmentResult(NamedTuple):
  """Solution of the entropic OT problem (no gradients flow through any field)."""
  plan: jax.Array            # (n, m) optimal plan P*, rows sum to 1/n, columns to 1/m
  f: jax.Array               # (n,) dual potential of the student marginal constraint
  g: jax.Array               # (m,) dual potential of the teacher marginal constraint
  cost: jax.Array            # (n, m) cost matrix C
  epsilon: jax.Array         # absolute entropic regularisation, epsilon * mean(C)
  converged: jax.Array       # bool: final marginal error < threshold, no NaN
  n_iters: jax.Array         # int: Sinkhorn iterations run
  marginal_error: jax.Array  # max(||P 1 - a||_1, ||P^T 1 - b||_1) of the returned plan
  errors: jax.Array          # (max_iterations // inner_iterations,) OTT error history:
                             # error after (k+1)*inner_iterations iterations,
                             # inf = not measured, -1 = not run (stopped earlier)


def _l2_normalise(x: jax.Array) -> jax.Array:
  squared_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared_norm, 1e-24))


def label_mismatch(student_labels: jax.Array, teacher_labels: jax.Array) -> jax.Array:
  """(n, m) semantic mismatch: ``[y_i != y_j]``, or Jaccard distance for multi-hot.

  Args:
    student_labels: (n,) integer classes or (n, K) multi-hot labels.
    teacher_labels: (m,) or (m, K), same kind as ``student_labels``.
  """
  if student_labels.ndim != teacher_labels.ndim or student_labels.ndim not in (1, 2):
    raise ValueError(
        "labels must both be integer class ids (n,) or both multi-hot (n, K); got "
        f"shapes {student_labels.shape} and {teacher_labels.shape}.")
  if student_labels.ndim == 1:
    return (student_labels[:, None] != teacher_labels[None, :]).astype(jnp.float32)
  ys = student_labels.astype(jnp.float32)
  yt = teacher_labels.astype(jnp.float32)
  intersection = jnp.matmul(ys, yt.T, precision=_HIGHEST)
  union = ys.sum(-1)[:, None] + yt.sum(-1)[None, :] - intersection
  # Two empty label sets are identical: distance 0.
  return jnp.where(union > 0, 1.0 - intersection / jnp.maximum(union, 1.0), 0.0)


def semantic_cost_matrix(student: jax.Array,
                         teacher: jax.Array,
                         student_labels: jax.Array | None = None,
                         teacher_labels: jax.Array | None = None,
                         *,
                         semantic_weight: float = 1.0) -> jax.Array:
  """``C[i, j] = 1 - cos(s_i, t_j) + semantic_weight * mismatch(y_i, y_j)``.

  Args:
    student: (n, d) features.
    teacher: (m, d) features.
    student_labels, teacher_labels: optional labels (see :func:`label_mismatch`);
      both or neither.
    semantic_weight: ``lambda_sem``.

  Returns:
    (n, m) cost (at least float32), differentiable in the features.
  """
  if student.ndim != 2 or teacher.ndim != 2 or student.shape[1] != teacher.shape[1]:
    raise ValueError(
        "`student` and `teacher` must be (n, d) and (m, d) feature matrices of the "
        f"same width; got {student.shape} and {teacher.shape}.")
  if (student_labels is None) != (teacher_labels is None):
    raise ValueError("pass both `student_labels` and `teacher_labels`, or neither.")
  dtype = jnp.promote_types(jnp.result_type(student, teacher), jnp.float32)
  s = _l2_normalise(student.astype(dtype))
  t = _l2_normalise(teacher.astype(dtype))
  cost = 1.0 - jnp.matmul(s, t.T, precision=_HIGHEST)
  if student_labels is not None:
    mismatch = label_mismatch(student_labels, teacher_labels).astype(dtype)
    cost = cost + semantic_weight * mismatch
  return cost


def sinkhorn_alignment(
    student: jax.Array,
    teacher: jax.Array,
    *,
    student_labels: jax.Array | None = None,
    teacher_labels: jax.Array | None = None,
    epsilon: float = 0.05,
    semantic_weight: float = 1.0,
    max_iterations: int = 200,
    threshold: float = 1e-6,
    inner_iterations: int = 10,
    min_iterations: int | None = None,
) -> tuple[jax.Array, SinkhornAlignmentResult]:
  """Entropic OT alignment loss ``<P*, C>`` with envelope-theorem gradients.

  See the module docstring for the primal, the dual and the gradient.

  Args:
    student: (n, d) student features (through the adapters to the common width).
    teacher: (m, d) teacher features.
    student_labels: optional (n,) classes or (n, K) multi-hot labels.
    teacher_labels: optional labels of the teachers, same kind.
    epsilon: entropic regularisation relative to the mean cost.
    semantic_weight: ``lambda_sem``, the price of moving mass across classes.
    max_iterations: Sinkhorn iteration budget (a multiple of ``inner_iterations``).
    threshold: marginal error (L1) below which the solve counts as converged.
    inner_iterations: iterations between two error measurements.
    min_iterations: ``None`` (default) means ``max_iterations``: a static-length
      loop. ``0`` stops as soon as the error is below ``threshold``.

  Returns:
    ``(loss, result)``: the scalar transport cost ``<P*, C>`` and a
    :class:`SinkhornAlignmentResult`.
  """
  if max_iterations <= 0 or inner_iterations <= 0 or max_iterations % inner_iterations:
    raise ValueError(
        "`max_iterations` must be a positive multiple of `inner_iterations`; got "
        f"max_iterations={max_iterations}, inner_iterations={inner_iterations}.")
  if min_iterations is None:
    min_iterations = max_iterations
  if not 0 <= min_iterations <= max_iterations:
    raise ValueError(
        f"`min_iterations` must lie in [0, max_iterations={max_iterations}]; got "
        f"{min_iterations}.")
  if isinstance(epsilon, (int, float)) and epsilon <= 0:
    raise ValueError(f"`epsilon` must be positive; got {epsilon}.")

  cost = semantic_cost_matrix(student, teacher, student_labels, teacher_labels,
                              semantic_weight=semantic_weight)
  fixed_cost = jax.lax.stop_gradient(cost)
  absolute_epsilon = jnp.maximum(epsilon * jnp.mean(fixed_cost), _MIN_EPSILON)

  n, m = fixed_cost.shape
  a = jnp.full((n,), 1.0 / n, dtype=fixed_cost.dtype)
  b = jnp.full((m,), 1.0 / m, dtype=fixed_cost.dtype)
  problem = linear_problem.LinearProblem(
      geometry.Geometry(cost_matrix=fixed_cost, epsilon=absolute_epsilon), a, b)
  solver = sinkhorn.Sinkhorn(
      lse_mode=True,
      threshold=threshold,
      max_iterations=max_iterations,
      min_iterations=min_iterations,
      inner_iterations=inner_iterations,
      # The input is already stop-gradient'ed; no implicit/unrolled backward.
      implicit_diff=None,
  )
  output = solver(problem)
  plan = output.matrix

  loss = jnp.sum(plan * cost)  # gradient flows through C only: P* is a constant
  marginal_error = jnp.maximum(jnp.sum(jnp.abs(plan.sum(axis=1) - a)),
                               jnp.sum(jnp.abs(plan.sum(axis=0) - b)))
  result = SinkhornAlignmentResult(
      plan=plan,
      f=output.f,
      g=output.g,
      cost=fixed_cost,
      epsilon=absolute_epsilon,
      converged=jnp.asarray(output.converged),
      n_iters=jnp.asarray(output.n_iters, dtype=jnp.int32),
      marginal_error=marginal_error,
      errors=output.errors,
  )
  return loss, result
