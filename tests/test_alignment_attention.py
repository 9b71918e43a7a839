"""Attention-weighted token alignment against direct NumPy evaluations."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from sembridge_jax.alignment import (
    TokenAttention,
    adaptive_avg_pool_tokens,
    attention_alignment_loss,
    cross_modal_weights,
    energy_preserving_reweight,
    token_attention_weights,
)


def _softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _numpy_attention_weights(q: np.ndarray, k: np.ndarray, heads: int) -> np.ndarray:
  batch, tokens, width = q.shape
  dh = width // heads
  weights = np.zeros((batch, tokens))
  for b in range(batch):
    for h in range(heads):
      qh, kh = q[b, :, h * dh:(h + 1) * dh], k[b, :, h * dh:(h + 1) * dh]
      attention = _softmax(qh @ kh.T / np.sqrt(dh))  # rows: queries, columns: keys
      weights[b] += attention.mean(axis=0) / heads
  return weights


def _numpy_reweight(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  weighted = x * w[:, :, None]
  scale = (np.linalg.norm(x.mean(1), axis=-1) / np.linalg.norm(weighted.mean(1), axis=-1))
  return weighted * scale[:, None, None]


def _numpy_coral(x: np.ndarray, y: np.ndarray) -> float:
  d = x.shape[1]
  xc, yc = x - x.mean(0), y - y.mean(0)
  return float(np.mean((xc.T @ xc - yc.T @ yc) ** 2) / (4 * d))


def _numpy_adaptive_pool(tokens: np.ndarray, side: int) -> np.ndarray:
  batch, n, width = tokens.shape
  s = int(round(np.sqrt(n)))
  grid = tokens.reshape(batch, s, s, width)
  out = np.zeros((batch, side, side, width))
  for i in range(side):
    for j in range(side):
      r0, r1 = (i * s) // side, int(np.ceil((i + 1) * s / side))
      c0, c1 = (j * s) // side, int(np.ceil((j + 1) * s / side))
      out[:, i, j] = grid[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out.reshape(batch, side * side, width)


def test_token_attention_weights_match_numpy_and_sum_to_one():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(3, 5, 8)).astype(np.float32)
  k = rng.normal(size=(3, 5, 8)).astype(np.float32)
  weights = token_attention_weights(q, k, num_heads=4)
  np.testing.assert_allclose(weights, _numpy_attention_weights(q, k, 4), rtol=1e-5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_cross_modal_weights_follow_the_formula_axes():
  rng = np.random.default_rng(1)
  w_t = rng.uniform(0.1, 1.0, size=(2, 4))   # N_t = 4
  w_s = rng.uniform(0.1, 1.0, size=(2, 6))   # N_s = 6
  weights = cross_modal_weights(w_t, w_s)
  m = w_t[:, :, None] * w_s[:, None, :]
  np.testing.assert_allclose(weights.teacher, m.mean(-2) / w_t.mean(-1, keepdims=True),
                             rtol=1e-6)
  np.testing.assert_allclose(weights.student, m.mean(-1) / w_s.mean(-1, keepdims=True),
                             rtol=1e-6)
  assert weights.teacher.shape == (2, 6) and weights.student.shape == (2, 4)


def test_for_attention_weights_the_formula_swaps_modalities():
  # Rows summing to one: per-sample and global means agree, and the teacher's
  # tokens get the student's attention and vice versa.
  rng = np.random.default_rng(2)
  w_t = _softmax(rng.normal(size=(3, 4)))
  w_s = _softmax(rng.normal(size=(3, 4)))
  weights = cross_modal_weights(w_t, w_s)
  m = w_t[:, :, None] * w_s[:, None, :]
  np.testing.assert_allclose(weights.teacher, m.mean(-2) / w_t.mean(), rtol=1e-5)
  np.testing.assert_allclose(weights.teacher, w_s, rtol=1e-5)
  np.testing.assert_allclose(weights.student, w_t, rtol=1e-5)


def test_energy_preserving_reweight():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 5, 3)).astype(np.float32)
  w = rng.uniform(0.0, 1.0, size=(2, 5)).astype(np.float32)
  out = np.asarray(energy_preserving_reweight(x, w))
  np.testing.assert_allclose(out, _numpy_reweight(x, w), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out.mean(1), axis=-1),
                             np.linalg.norm(x.mean(1), axis=-1), rtol=1e-5)
  with pytest.raises(ValueError, match="weights"):
    energy_preserving_reweight(x, w[:, :3])


@pytest.mark.parametrize("in_side, side", [(4, 2), (3, 2), (2, 1), (2, 2)])
def test_adaptive_pool_matches_numpy(in_side, side):
  tokens = np.random.default_rng(4).normal(size=(2, in_side * in_side, 3)).astype(np.float32)
  np.testing.assert_allclose(adaptive_avg_pool_tokens(tokens, side),
                             _numpy_adaptive_pool(tokens, side), rtol=1e-5, atol=1e-6)


def test_pool_rejects_non_square_grids():
  with pytest.raises(ValueError, match="square"):
    adaptive_avg_pool_tokens(np.zeros((1, 6, 2), np.float32), 1)


def test_attention_alignment_loss_matches_numpy_end_to_end():
  rng = np.random.default_rng(5)
  batch, tokens, width, heads = 6, 4, 8, 2
  teacher_tokens = rng.normal(size=(batch, tokens, width)).astype(np.float32)
  student_tokens = rng.normal(size=(batch, tokens, width)).astype(np.float32)
  teacher_attention = TokenAttention(width, num_heads=heads, rngs=nnx.Rngs(0))
  student_attention = TokenAttention(width, num_heads=heads, rngs=nnx.Rngs(1))

  loss = attention_alignment_loss(teacher_tokens, student_tokens,
                                  teacher_attention(teacher_tokens),
                                  student_attention(student_tokens))

  def numpy_weights(module, x):
    wq, wk = np.asarray(module.query.kernel[...]), np.asarray(module.key.kernel[...])
    return _numpy_attention_weights(x @ wq, x @ wk, heads)

  w_t = numpy_weights(teacher_attention, teacher_tokens.astype(np.float64))
  w_s = numpy_weights(student_attention, student_tokens.astype(np.float64))
  m = w_t[:, :, None] * w_s[:, None, :]
  teacher = _numpy_reweight(teacher_tokens, m.mean(-2) / w_t.mean()).reshape(batch, -1)
  student = _numpy_reweight(student_tokens, m.mean(-1) / w_s.mean()).reshape(batch, -1)
  np.testing.assert_allclose(loss, _numpy_coral(teacher, student), rtol=1e-4)


def test_attention_alignment_gradients_reach_both_attention_modules():
  rng = np.random.default_rng(6)
  x_t = rng.normal(size=(4, 4, 8)).astype(np.float32)
  x_s = rng.normal(size=(4, 4, 8)).astype(np.float32)
  modules = (TokenAttention(8, num_heads=2, rngs=nnx.Rngs(0)),
             TokenAttention(8, num_heads=2, rngs=nnx.Rngs(1)))

  def loss_fn(modules):
    return attention_alignment_loss(x_t, x_s, modules[0](x_t), modules[1](x_s))

  grads = nnx.jit(nnx.grad(loss_fn))(modules)
  leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
  assert len(leaves) == 4
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in leaves)
