"""The SKA alignment head: everything SemBridge trains besides the student.

    ALIGN = coral_weight * (CORAL(attn_t, attn_s) + CORAL(pooled_t, pooled_s))
            + ot_weight * OT(pooled_s, pooled_t)

(METHOD section 3). Features are the dicts the models return,
``{"tokens": (B, N, D), "pooled": (B, 512)}``; the teacher's come from the
frozen gallery and are wrapped in ``stop_gradient``. Token grids of different
sizes are first average-pooled to the smaller grid (see
:mod:`sembridge_jax.alignment.attention`).

Adapters to the common width. METHOD asks for learned linear adapters where
token widths differ (ShuffleNet's 1024). We learn the *student-side* adapter
and make the *teacher-side* one a fixed, seeded random projection with
orthonormal columns scaled by ``sqrt(D_t / common_dim)`` (norm-preserving in
expectation); where a width already equals ``common_dim`` the adapter is the
identity, as in the authors' 512-wide setting. Why not learn both sides: every
term of ALIGN can then be driven to its minimum without moving the student.
CORAL is homogeneous of degree 4 in a joint rescaling of the two adapters, so
shrinking both towards zero always lowers it; and two adapters that map every
feature onto one direction make all cosines 1, leaving OT only its semantic
term. A fixed teacher side keeps the target of the alignment fixed, which is
what distillation means. ``trainable_teacher_adapter=True`` restores the
literal reading.

Default weights. ``coral_weight=0.01`` is METHOD's. METHOD leaves ``w_ot`` open;
we default to ``ot_weight=0.1``: the OT term is a transport cost in
``[0, 2 + lambda_sem]`` (about 1 for unaligned features, a few tenths once
same-class pairs agree), so 0.1 keeps it a fraction of the KD term it sits
next to in ``L = 0.3 CE + 0.4 KD + 0.3 ALIGN`` instead of letting it dominate
the classification signal. ``semantic_weight=1.0`` prices a cross-class move
like an orthogonal same-class one; with ``epsilon = 0.05 * mean(C)`` (about 0.1)
that scales cross-class kernel entries by about e^-10 relative to in-class ones.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax.alignment.attention import (
    TokenAttention,
    adaptive_avg_pool_tokens,
    attention_alignment_loss,
    token_grid_side,
)
from sembridge_jax.alignment.coral import coral
from sembridge_jax.alignment.sinkhorn import sinkhorn_alignment

__all__ = [
    "AlignmentHead",
    "AlignmentTerms",
    "DEFAULT_CORAL_WEIGHT",
    "DEFAULT_OT_WEIGHT",
    "DEFAULT_SEMANTIC_WEIGHT",
    "FixedProjection",
    "FrozenLinear",
]

DEFAULT_CORAL_WEIGHT = 0.01
DEFAULT_OT_WEIGHT = 0.1
DEFAULT_SEMANTIC_WEIGHT = 1.0


class AlignmentTerms(NamedTuple):
  """Unweighted ALIGN terms and Sinkhorn diagnostics (disabled terms read 0)."""
  coral_attention: jax.Array
  coral_pooled: jax.Array
  ot: jax.Array
  sinkhorn_iters: jax.Array      # int32; 0 when the OT term is off
  sinkhorn_converged: jax.Array  # bool; True when the OT term is off
  sinkhorn_marginal_error: jax.Array


class FixedProjection(nnx.Variable):
  """Model state that is never trained (not an ``nnx.Param``)."""


class FrozenLinear(nnx.Module):
  """``x @ Q`` with a fixed random ``Q`` (in_dim, out_dim) of orthonormal columns.

  ``Q`` is scaled by ``sqrt(in_dim / out_dim)`` so that ``E ||x Q||^2 = ||x||^2``
  for isotropic ``x``.
  """

  def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
    if out_dim > in_dim:
      raise ValueError(
          f"a frozen projection needs out_dim <= in_dim to have orthonormal "
          f"columns; got in_dim={in_dim}, out_dim={out_dim}.")
    init = jax.nn.initializers.orthogonal(scale=math.sqrt(in_dim / out_dim))
    self.kernel = FixedProjection(init(rngs.params(), (in_dim, out_dim), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.matmul(x.astype(jnp.float32), self.kernel[...],
                      precision=jax.lax.Precision.HIGHEST)


def _adapter(in_dim: int, out_dim: int, *, trainable: bool,
             rngs: nnx.Rngs) -> nnx.Module | None:
  """None (identity) for equal widths, else a learned or a frozen linear map."""
  if in_dim == out_dim:
    return None
  if trainable:
    return nnx.Linear(in_dim, out_dim, use_bias=False, rngs=rngs)
  return FrozenLinear(in_dim, out_dim, rngs=rngs)


def _apply(adapter: nnx.Module | None, x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x if adapter is None else adapter(x)


def _feature(features: Mapping[str, jax.Array], key: str, owner: str) -> jax.Array:
  if key not in features:
    raise ValueError(
        f"`{owner}_features` must be the models' feature dict with keys 'tokens' "
        f"and 'pooled'; got keys {sorted(features)}.")
  return features[key]


class AlignmentHead(nnx.Module):
  """Token/pooled adapters, one token-attention module per modality, and ALIGN."""

  def __init__(self,
               *,
               teacher_token_dim: int,
               student_token_dim: int,
               teacher_pooled_dim: int = 512,
               student_pooled_dim: int = 512,
               common_dim: int = 512,
               num_heads: int = 8,
               trainable_teacher_adapter: bool = False,
               rngs: nnx.Rngs):
    self.common_dim = common_dim
    self.teacher_token_adapter = _adapter(
        teacher_token_dim, common_dim, trainable=trainable_teacher_adapter, rngs=rngs)
    self.student_token_adapter = _adapter(
        student_token_dim, common_dim, trainable=True, rngs=rngs)
    self.teacher_pooled_adapter = _adapter(
        teacher_pooled_dim, common_dim, trainable=trainable_teacher_adapter, rngs=rngs)
    self.student_pooled_adapter = _adapter(
        student_pooled_dim, common_dim, trainable=True, rngs=rngs)
    self.teacher_attention = TokenAttention(common_dim, num_heads=num_heads, rngs=rngs)
    self.student_attention = TokenAttention(common_dim, num_heads=num_heads, rngs=rngs)

  def attention_coral(self, student_tokens: jax.Array,
                      teacher_tokens: jax.Array) -> jax.Array:
    """CORAL of the attention-re-weighted tokens (both pooled to a common grid)."""
    side = min(token_grid_side(student_tokens.shape[1]),
               token_grid_side(teacher_tokens.shape[1]))
    teacher = _apply(self.teacher_token_adapter,
                     adaptive_avg_pool_tokens(teacher_tokens, side))
    student = _apply(self.student_token_adapter,
                     adaptive_avg_pool_tokens(student_tokens, side))
    return attention_alignment_loss(teacher, student, self.teacher_attention(teacher),
                                    self.student_attention(student))

  def __call__(
      self,
      student_features: Mapping[str, jax.Array],
      teacher_features: Mapping[str, jax.Array],
      student_labels: jax.Array | None = None,
      teacher_labels: jax.Array | None = None,
      *,
      coral_weight: float = DEFAULT_CORAL_WEIGHT,
      ot_weight: float = DEFAULT_OT_WEIGHT,
      epsilon: float = 0.05,
      semantic_weight: float = DEFAULT_SEMANTIC_WEIGHT,
      use_attention: bool = True,
      use_ot: bool = True,
      sinkhorn_iterations: int = 200,
      sinkhorn_threshold: float = 1e-6,
  ) -> tuple[jax.Array, AlignmentTerms]:
    """ALIGN loss and its terms.

    Args:
      student_features: ``{"tokens": (B, N_s, D_s), "pooled": (B, P_s)}``.
      teacher_features: the matched teachers' ``{"tokens": (B, N_t, D_t),
        "pooled": (B, P_t)}``; treated as constants.
      student_labels, teacher_labels: labels for the OT semantic term (both or
        neither; see :func:`~sembridge_jax.alignment.label_mismatch`).
      coral_weight, ot_weight: weights of the CORAL terms and of OT.
      epsilon: Sinkhorn regularisation relative to the mean cost.
      semantic_weight: ``lambda_sem`` of the OT cost.
      use_attention: the "no CORAL/attention" ablation switch (static): False
        skips both CORAL terms, which then read 0.
      use_ot: the "no OT" ablation switch (static).
      sinkhorn_iterations: fixed Sinkhorn budget.
      sinkhorn_threshold: marginal error counted as converged.

    Returns:
      ``(align_loss, AlignmentTerms)``.
    """
    teacher_tokens = jax.lax.stop_gradient(_feature(teacher_features, "tokens", "teacher"))
    teacher_pooled = jax.lax.stop_gradient(_feature(teacher_features, "pooled", "teacher"))
    zero = jnp.zeros((), jnp.float32)

    student = _apply(self.student_pooled_adapter,
                     _feature(student_features, "pooled", "student"))
    teacher = _apply(self.teacher_pooled_adapter, teacher_pooled)

    coral_attention = coral_pooled = zero
    if use_attention:
      coral_attention = self.attention_coral(
          _feature(student_features, "tokens", "student"), teacher_tokens)
      coral_pooled = coral(teacher, student)

    ot = marginal_error = zero
    iterations, converged = jnp.zeros((), jnp.int32), jnp.ones((), bool)
    if use_ot:
      ot, solution = sinkhorn_alignment(
          student, teacher,
          student_labels=student_labels, teacher_labels=teacher_labels,
          epsilon=epsilon, semantic_weight=semantic_weight,
          max_iterations=sinkhorn_iterations,
          inner_iterations=math.gcd(sinkhorn_iterations, 10),
          threshold=sinkhorn_threshold)
      iterations, converged = solution.n_iters, solution.converged
      marginal_error = solution.marginal_error

    align = coral_weight * (coral_attention + coral_pooled) + ot_weight * ot
    return align, AlignmentTerms(
        coral_attention=coral_attention,
        coral_pooled=coral_pooled,
        ot=ot,
        sinkhorn_iters=iterations,
        sinkhorn_converged=converged,
        sinkhorn_marginal_error=marginal_error,
    )
