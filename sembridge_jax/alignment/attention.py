"""Attention-weighted token alignment (the token branch of SKA, METHOD section 3).

Notation: ``B`` batch, ``N`` last-stage spatial tokens, ``D`` token width, ``H``
heads. For each modality one multi-head self-attention (no qkv bias) scores its
own tokens:

    A[b, h, q, k] = softmax_k( <W_q x_q, W_k x_k>_h / sqrt(D / H) )
    w[b, k]       = mean_{h, q} A[b, h, q, k]

``w[b, k]`` is the attention token ``k`` *receives*, averaged over heads and
queries; each row of ``A`` sums to one, so ``sum_k w[b, k] = 1`` and
``mean_k w[b, k] = 1 / N``. Value and output projections do not influence ``A``,
so :class:`TokenAttention` has only the query and key projections.

Cross-modal weights. With teacher weights ``w_t`` (B, N_t) and student weights
``w_s`` (B, N_s), METHOD defines

    m[b, i, j]      = w_t[b, i] * w_s[b, j]                  (B, N_t, N_s)
    teacher_weights = mean(m, axis=-2) / mean(w_t)           (B, N_s)
    student_weights = mean(m, axis=-1) / mean(w_s)           (B, N_t)

Axis -2 is the *teacher* token axis, so ``mean(m, -2)[b, j] = mean_i(w_t[b, i]) *
w_s[b, j]``, and dividing by ``mean(w_t)`` leaves exactly ``w_s[b, j]``: the
teacher's tokens are re-weighted by what the *student* attends to, and the
student's tokens by what the *teacher* attends to (indices ``j`` and ``i`` run
over the other modality's tokens). We evaluate the formula as written (so it
stays correct for weights that do not sum to one) with ``mean(w)`` taken per
sample; for attention weights the per-sample and global means are both ``1/N``,
so this equals the batch-global reading, and it keeps samples independent
(no cross-device reduction under data parallelism).

Different token counts. The formula hands the teacher ``N_s`` weights for its
``N_t`` tokens, and CORAL needs the same flattened width on both sides, so
both token grids are first average-pooled to a common square grid, the smaller
of the two (``adaptive_avg_pool_tokens``: PyTorch's adaptive average pooling;
with stride-32 backbones 64x64 MS -> 2x2 and 128x128 RGB -> 4x4, pooled exactly
to 2x2 by 2x2 block means).

Energy-preserving re-weighting. ``x'[b, n] = weight[b, n] * x[b, n]`` is rescaled
per sample so that ``||mean_n x'[b]||^2 = ||mean_n x[b]||^2``: the weights change
which tokens dominate, not the overall magnitude. The result is flattened to
``(B, N * D)`` and compared with :func:`~sembridge_jax.alignment.coral`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sembridge_jax.alignment.coral import coral

__all__ = [
    "CrossModalWeights",
    "TokenAttention",
    "adaptive_avg_pool_tokens",
    "attention_alignment_loss",
    "cross_modal_weights",
    "energy_preserving_reweight",
    "token_attention_weights",
    "token_grid_side",
]

_HIGHEST = jax.lax.Precision.HIGHEST
# Floor for norms and divisions; far below any feature energy met in practice.
_TINY = 1e-12


class CrossModalWeights(NamedTuple):
  """Per-token weights for re-weighting each modality's own tokens."""
  teacher: jax.Array  # (B, N_s): applied to the teacher's tokens (N_t == N_s)
  student: jax.Array  # (B, N_t): applied to the student's tokens


def token_grid_side(num_tokens: int) -> int:
  """Side of the square token grid, ``sqrt(num_tokens)``."""
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(
        "tokens must come from a square spatial grid (N = side**2); got "
        f"N={num_tokens}.")
  return side


def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) averaging matrix of PyTorch's adaptive average pooling."""
  matrix = np.zeros((out_size, in_size), np.float32)
  for o in range(out_size):
    start = (o * in_size) // out_size
    stop = -((-(o + 1) * in_size) // out_size)  # ceil((o + 1) * in / out)
    matrix[o, start:stop] = 1.0 / (stop - start)
  return matrix


def adaptive_avg_pool_tokens(tokens: jax.Array, side: int) -> jax.Array:
  """Average-pools (B, S*S, D) tokens of a square grid to (B, side*side, D)."""
  batch, num_tokens, width = tokens.shape
  in_side = token_grid_side(num_tokens)
  if side == in_side:
    return tokens
  pool = jnp.asarray(_adaptive_pool_matrix(in_side, side))
  grid = tokens.reshape(batch, in_side, in_side, width)
  pooled = jnp.einsum("oh,pw,bhwd->bopd", pool, pool, grid, precision=_HIGHEST)
  return pooled.reshape(batch, side * side, width)


def token_attention_weights(queries: jax.Array, keys: jax.Array,
                            num_heads: int) -> jax.Array:
  """Attention received per token, averaged over heads and queries.

  Args:
    queries: (B, N, D) projected queries.
    keys: (B, N, D) projected keys.
    num_heads: ``H``; must divide ``D``.

  Returns:
    (B, N) weights (at least float32), each row summing to one.
  """
  batch, num_tokens, width = queries.shape
  if width % num_heads:
    raise ValueError(
        f"`num_heads` must divide the token width; got num_heads={num_heads} "
        f"and width {width}.")
  head_dim = width // num_heads
  dtype = jnp.promote_types(queries.dtype, jnp.float32)
  q = queries.astype(dtype).reshape(batch, num_tokens, num_heads, head_dim)
  k = keys.astype(dtype).reshape(batch, num_tokens, num_heads, head_dim)
  scores = jnp.einsum("bqhc,bkhc->bhqk", q, k, precision=_HIGHEST)
  attention = jax.nn.softmax(scores / math.sqrt(head_dim), axis=-1)
  return attention.mean(axis=(1, 2))


def cross_modal_weights(teacher_attention: jax.Array,
                        student_attention: jax.Array) -> CrossModalWeights:
  """METHOD's cross-modal token weights (see the module docstring for axes).

  Args:
    teacher_attention: ``w_t`` (B, N_t).
    student_attention: ``w_s`` (B, N_s).
  """
  dtype = jnp.promote_types(teacher_attention.dtype, jnp.float32)
  w_t = teacher_attention.astype(dtype)
  w_s = student_attention.astype(dtype)
  m = w_t[:, :, None] * w_s[:, None, :]
  teacher = m.mean(axis=-2) / jnp.maximum(w_t.mean(axis=-1, keepdims=True), _TINY)
  student = m.mean(axis=-1) / jnp.maximum(w_s.mean(axis=-1, keepdims=True), _TINY)
  return CrossModalWeights(teacher=teacher, student=student)


def _norm(x: jax.Array) -> jax.Array:
  # Norm with a finite gradient at zero (the plain sqrt has an infinite one).
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1), _TINY))


def energy_preserving_reweight(tokens: jax.Array, weights: jax.Array) -> jax.Array:
  """``weights * tokens`` rescaled so that ``||mean_tokens||^2`` is unchanged.

  Args:
    tokens: (B, N, D).
    weights: (B, N).

  Returns:
    (B, N, D), at least float32.
  """
  if weights.shape != tokens.shape[:2]:
    raise ValueError(
        f"`weights` must have shape (B, N) = {tokens.shape[:2]} to match the "
        f"tokens; got {weights.shape}.")
  tokens = tokens.astype(jnp.promote_types(tokens.dtype, jnp.float32))
  weighted = tokens * weights[:, :, None].astype(tokens.dtype)
  scale = _norm(tokens.mean(axis=1)) / _norm(weighted.mean(axis=1))
  return weighted * scale[:, None, None]


def attention_alignment_loss(teacher_tokens: jax.Array,
                             student_tokens: jax.Array,
                             teacher_attention: jax.Array,
                             student_attention: jax.Array) -> jax.Array:
  """CORAL between the cross-weighted, energy-preserved, flattened tokens.

  Args:
    teacher_tokens: (B, N, D) on the common grid and width.
    student_tokens: (B, N, D), same shape.
    teacher_attention: ``w_t`` (B, N) from the teacher's attention module.
    student_attention: ``w_s`` (B, N) from the student's attention module.
  """
  if teacher_tokens.shape != student_tokens.shape:
    raise ValueError(
        "`teacher_tokens` and `student_tokens` must share the (B, N, D) shape "
        "(pool to a common grid and project to a common width first); got "
        f"{teacher_tokens.shape} and {student_tokens.shape}.")
  weights = cross_modal_weights(teacher_attention, student_attention)
  teacher = energy_preserving_reweight(teacher_tokens, weights.teacher)
  student = energy_preserving_reweight(student_tokens, weights.student)
  batch = teacher.shape[0]
  return coral(teacher.reshape(batch, -1), student.reshape(batch, -1))


class TokenAttention(nnx.Module):
  """Multi-head self-attention scores of one modality's tokens -> (B, N) weights.

  Only the query and key projections exist (no bias, as in METHOD): the value and
  output projections of a full attention layer would never receive a gradient
  because only the attention map is used.
  """

  def __init__(self, dim: int, *, num_heads: int = 8, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(
          f"`num_heads` must divide `dim`; got num_heads={num_heads}, dim={dim}.")
    self.num_heads = num_heads
    self.query = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
    self.key = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """(B, N, dim) tokens -> (B, N) attention received per token."""
    return token_attention_weights(self.query(tokens), self.key(tokens),
                                   self.num_heads)
