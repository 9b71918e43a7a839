"""AlignmentHead: every width / token-count combination runs, wiring and switches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sembridge_jax.alignment import (
    AlignmentHead,
    FixedProjection,
    FrozenLinear,
    adaptive_avg_pool_tokens,
    attention_alignment_loss,
    coral,
    sinkhorn_alignment,
)

BATCH = 6


def _features(seed: int, tokens: int, width: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  return {"tokens": jnp.asarray(rng.normal(size=(BATCH, tokens, width)), jnp.float32),
          "pooled": jnp.asarray(rng.normal(size=(BATCH, 512)), jnp.float32)}


LABELS = jnp.asarray([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "teacher_width, student_width, teacher_tokens, student_tokens",
    [(1024, 512, 16, 4), (512, 1024, 4, 16)])
def test_head_runs_and_differentiates(teacher_width, student_width, teacher_tokens,
                                      student_tokens):
  head = AlignmentHead(teacher_token_dim=teacher_width, student_token_dim=student_width,
                       rngs=nnx.Rngs(0))
  student = _features(1, student_tokens, student_width)
  teacher = _features(2, teacher_tokens, teacher_width)

  @nnx.jit
  def step(head, student, teacher):
    def loss_fn(head, student, teacher):
      return head(student, teacher, LABELS, LABELS, sinkhorn_iterations=20)
    return nnx.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(head, student, teacher)

  (align, terms), (head_grads, student_grads, teacher_grads) = step(head, student, teacher)
  expected = 0.01 * (terms.coral_attention + terms.coral_pooled) + 0.1 * terms.ot
  np.testing.assert_allclose(align, expected, rtol=1e-6)
  assert np.isfinite(align) and float(terms.ot) > 0 and int(terms.sinkhorn_iters) == 20
  for leaf in jax.tree.leaves(nnx.state(head_grads, nnx.Param)):
    assert np.isfinite(leaf).all()
  assert np.abs(student_grads["pooled"]).max() > 0
  # The teacher's features are gallery constants.
  for leaf in jax.tree.leaves(teacher_grads):
    assert not np.any(leaf)


def test_adapters_exist_only_where_widths_differ_and_teacher_side_is_frozen():
  head = AlignmentHead(teacher_token_dim=1024, student_token_dim=1024, rngs=nnx.Rngs(0))
  assert isinstance(head.teacher_token_adapter, FrozenLinear)
  assert isinstance(head.student_token_adapter, nnx.Linear)
  assert head.teacher_pooled_adapter is None and head.student_pooled_adapter is None
  params = nnx.state(head, nnx.Param)
  assert "teacher_token_adapter" not in params and "student_token_adapter" in params
  assert "teacher_token_adapter" in nnx.state(head, FixedProjection)
  trainable = AlignmentHead(teacher_token_dim=1024, student_token_dim=512,
                            trainable_teacher_adapter=True, rngs=nnx.Rngs(0))
  assert isinstance(trainable.teacher_token_adapter, nnx.Linear)
  assert trainable.student_token_adapter is None


def test_frozen_projection_has_scaled_orthonormal_columns():
  projection = FrozenLinear(12, 4, rngs=nnx.Rngs(3))
  q = np.asarray(projection.kernel[...])
  np.testing.assert_allclose(q.T @ q, 3.0 * np.eye(4), atol=1e-5)


def test_head_terms_are_the_documented_compositions():
  head = AlignmentHead(teacher_token_dim=1024, student_token_dim=512, rngs=nnx.Rngs(0))
  student = _features(4, 4, 512)
  teacher = _features(5, 16, 1024)
  @nnx.jit
  def head_and_compositions(head, student, teacher):
    _, terms = head(student, teacher, LABELS, LABELS, sinkhorn_iterations=20,
                    semantic_weight=0.5, epsilon=0.1)
    projected = (adaptive_avg_pool_tokens(teacher["tokens"], 2)
                 @ head.teacher_token_adapter.kernel[...])
    attention = attention_alignment_loss(
        projected, student["tokens"], head.teacher_attention(projected),
        head.student_attention(student["tokens"]))
    ot, _ = sinkhorn_alignment(student["pooled"], teacher["pooled"],
                               student_labels=LABELS, teacher_labels=LABELS,
                               semantic_weight=0.5, epsilon=0.1, max_iterations=20)
    return terms, attention, coral(teacher["pooled"], student["pooled"]), ot

  terms, attention, pooled, ot = head_and_compositions(head, student, teacher)
  np.testing.assert_allclose(terms.coral_attention, attention, rtol=1e-5)
  np.testing.assert_allclose(terms.coral_pooled, pooled, rtol=1e-6)
  np.testing.assert_allclose(terms.ot, ot, rtol=1e-6)


def test_ablation_switches_drop_terms():
  head = AlignmentHead(teacher_token_dim=512, student_token_dim=512, rngs=nnx.Rngs(0))
  student, teacher = _features(6, 4, 512), _features(7, 4, 512)
  run = nnx.jit(lambda head, use_attention, use_ot: head(
      student, teacher, use_attention=use_attention, use_ot=use_ot, coral_weight=1.0,
      sinkhorn_iterations=10), static_argnums=(1, 2))
  align, terms = run(head, False, True)
  assert float(terms.coral_attention) == 0.0 and float(terms.coral_pooled) == 0.0
  assert float(terms.ot) > 0 and int(terms.sinkhorn_iters) == 10
  np.testing.assert_allclose(align, 0.1 * terms.ot, rtol=1e-6)
  align, terms = run(head, True, False)
  assert float(terms.ot) == 0.0 and int(terms.sinkhorn_iters) == 0
  np.testing.assert_allclose(align, terms.coral_attention + terms.coral_pooled, rtol=1e-6)


def test_rejects_feature_dicts_without_tokens():
  head = AlignmentHead(teacher_token_dim=512, student_token_dim=512, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="tokens"):
    head({"pooled": jnp.zeros((2, 512))}, _features(0, 4, 512))
