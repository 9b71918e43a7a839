"""Dynamic re-matching (SFM part 3): the same-class teacher closest to the student in KL.

With ``p_s = softmax(s / T)`` (student) and ``p_t = softmax(t / T)`` (a gallery of
frozen-teacher logits), the new teacher of student ``i`` is::

    argmin_{j : y_j = y_i} KL(p_t[j] || p_s[i]),
    KL[i, j] = sum_c p_t[j, c] log p_t[j, c]  -  sum_c p_t[j, c] log p_s[i, c].

The second term is a matrix product, so ``-KL`` is the factorised affinity
``<log p_s[i], p_t[j]> + H(p_t[j])`` (``H`` the entropy) and the argmin is the top-1
of `selection.py`: chunked and sharded for a whole student set (`rematch_by_kl`), or
one dense block for a batch inside a jitted step (`select_teacher_by_kl`). Ties go to
the lowest gallery index in both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sembridge_jax.matching.selection import (DEFAULT_STUDENT_CHUNK_SIZE,
                                              DEFAULT_TEACHER_CHUNK_SIZE, Affinity,
                                              check_selection_inputs, top_k_dense,
                                              top_k_within_class)

DEFAULT_TEMPERATURE = 3.0


class Rematch(NamedTuple):
  """Re-matching result.

  Attributes:
    indices: (Ns,) int32 gallery index of each student's new teacher.
    divergences: (Ns,) float32 ``KL(softmax(t/T) || softmax(s/T))`` of that pair.
  """

  indices: jax.Array
  divergences: jax.Array


def negative_kl_affinity(student_logits, teacher_logits, *,
                         temperature: float = DEFAULT_TEMPERATURE) -> Affinity:
  """Factors of ``A[i, j] = -KL(softmax(t_j / T) || softmax(s_i / T))``."""
  student_log_probs = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature)
  teacher_log_probs = jax.nn.log_softmax(jnp.asarray(teacher_logits, jnp.float32) / temperature)
  teacher_probs = jnp.exp(teacher_log_probs)
  teacher_entropy = -jnp.sum(teacher_probs * teacher_log_probs, axis=-1)
  return Affinity(queries=student_log_probs, keys=teacher_probs, key_bias=teacher_entropy)


def _check_temperature(temperature) -> float:
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature!r}.")
  return float(temperature)


def rematch_by_kl_with_divergences(student_logits, teacher_logits, student_labels,
                                   teacher_labels, *,
                                   temperature: float = DEFAULT_TEMPERATURE,
                                   student_chunk_size: int = DEFAULT_STUDENT_CHUNK_SIZE,
                                   teacher_chunk_size: int = DEFAULT_TEACHER_CHUNK_SIZE,
                                   mesh: Mesh | None = None) -> Rematch:
  """Each student's same-class teacher of minimal ``KL(p_t || p_s)``, with that KL.

  Args:
    student_logits: (Ns, C) student logits.
    teacher_logits: (Nt, C) teacher-gallery logits.
    student_labels, teacher_labels: (Ns,), (Nt,) integer class ids.
    temperature: softmax temperature T (METHOD: 3).
    student_chunk_size, teacher_chunk_size, mesh: as in `nearest_teacher`.

  Raises:
    ValueError: on malformed inputs, or if a student's class has no teacher.
  """
  check_selection_inputs(student_logits, teacher_logits, student_labels, teacher_labels,
                         feature_names=("student_logits", "teacher_logits"))
  temperature = _check_temperature(temperature)
  selection = top_k_within_class(
      negative_kl_affinity(student_logits, teacher_logits, temperature=temperature),
      student_labels, teacher_labels, k=1, student_chunk_size=student_chunk_size,
      teacher_chunk_size=teacher_chunk_size, mesh=mesh)
  return Rematch(indices=selection.indices[:, 0], divergences=-selection.scores[:, 0])


def rematch_by_kl(student_logits, teacher_logits, student_labels, teacher_labels, *,
                  temperature: float = DEFAULT_TEMPERATURE,
                  student_chunk_size: int = DEFAULT_STUDENT_CHUNK_SIZE,
                  teacher_chunk_size: int = DEFAULT_TEACHER_CHUNK_SIZE,
                  mesh: Mesh | None = None) -> jax.Array:
  """(Ns,) int32: argmin over same-class teachers of ``KL(softmax(t/T) || softmax(s/T))``.

  See `rematch_by_kl_with_divergences` (this returns its `indices`).
  """
  return rematch_by_kl_with_divergences(
      student_logits, teacher_logits, student_labels, teacher_labels,
      temperature=temperature, student_chunk_size=student_chunk_size,
      teacher_chunk_size=teacher_chunk_size, mesh=mesh).indices


def select_teacher_by_kl(student_logits: jax.Array, student_labels: jax.Array,
                         gallery_logits: jax.Array, gallery_labels: jax.Array, *,
                         temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
  """Per-batch re-matching inside a jitted step: (B,) int32 gallery indices.

  The same rule as `rematch_by_kl` for one batch of B students against a
  device-resident gallery (G, C), in one (B, G) block; pure `jnp` and jit-safe, with
  no host-side checks. A student whose class is absent from the gallery gets -1:
  call `check_class_coverage(train_labels, gallery_labels)` once beforehand.
  The result carries no gradient (selection is a discrete choice).
  """
  affinity = negative_kl_affinity(jax.lax.stop_gradient(student_logits), gallery_logits,
                                  temperature=temperature)
  return top_k_dense(affinity.queries, student_labels, affinity.keys, affinity.key_bias,
                     gallery_labels, k=1).indices[:, 0]
