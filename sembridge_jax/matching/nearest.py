"""Initial matching (SFM part 2): each student's most similar same-class teachers.

Similarity is cosine, ``cos(s_i, t_j) = <s_i, t_j> / (|s_i| |t_j|)``, between matcher
embeddings (RGB student images vs MS teacher images), restricted to pairs with the same
class label. The selection is the chunked, sharded top-k of `selection.py` with the
factorisation ``q = s / |s|``, ``t = e / |e|``, ``b = 0``.

`centre_per_class` optionally moves each set's class means to the origin first, so the
cosine compares how a student and a teacher depart from *their own* class's average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sembridge_jax.matching.selection import (DEFAULT_STUDENT_CHUNK_SIZE,
                                              DEFAULT_TEACHER_CHUNK_SIZE, Affinity,
                                              Selection, check_selection_inputs,
                                              top_k_within_class)

# Norm floor for the cosine (as torch.nn.functional.normalize): a zero embedding has
# cosine 0 with everything instead of NaN.
_NORM_EPSILON = 1e-12


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """``x / max(|x|, 1e-12)`` along `axis`."""
  squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared_norm, _NORM_EPSILON**2))


def centre_per_class(embeddings, labels) -> jax.Array:
  """``e_i - mean{e_j : y_j = y_i}``: every embedding minus the mean of its class (one set).

  Applied to the student and the teacher set separately before `nearest_teacher`, it
  removes what each class of one set has in common against the other set (the two
  regions' different class prototypes, a sensor's offset), which otherwise decides the
  cosine: every student of a class then lands near the few teachers that lie towards the
  student set's class mean (hubs). What is left is how an image departs from its class's
  average, and a student that is, say, greener than its class is paired with a teacher
  that is greener than *its* class. The selection becomes invariant to adding a
  per-class vector to either set.

  Args:
    embeddings: (N, d) one set's embeddings.
    labels: (N,) non-negative integer class ids.

  Returns:
    (N, d) float32, each class's rows with zero mean.
  """
  embeddings = jnp.asarray(embeddings, jnp.float32)
  labels = np.asarray(labels)
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(f"embeddings must be (N, d) and labels (N,); got {embeddings.shape} "
                     f"and {labels.shape}")
  if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
    raise ValueError("labels must be non-negative integer class ids")
  num_classes = int(labels.max()) + 1 if labels.size else 0
  labels = jnp.asarray(labels, jnp.int32)
  sums = jax.ops.segment_sum(embeddings, labels, num_segments=num_classes)
  counts = jax.ops.segment_sum(jnp.ones(labels.shape, jnp.float32), labels,
                               num_segments=num_classes)
  return embeddings - (sums / jnp.maximum(counts, 1.0)[:, None])[labels]


def cosine_affinity(student_emb: jax.Array, teacher_emb: jax.Array) -> Affinity:
  """Factors of the cosine-similarity matrix ``A = normalize(S) @ normalize(T).T``."""
  student_emb = jnp.asarray(student_emb, jnp.float32)
  teacher_emb = jnp.asarray(teacher_emb, jnp.float32)
  return Affinity(queries=l2_normalize(student_emb), keys=l2_normalize(teacher_emb),
                  key_bias=jnp.zeros(teacher_emb.shape[:1], jnp.float32))


def nearest_teacher_with_scores(student_emb, teacher_emb, student_labels, teacher_labels,
                                *, k: int = 1,
                                student_chunk_size: int = DEFAULT_STUDENT_CHUNK_SIZE,
                                teacher_chunk_size: int = DEFAULT_TEACHER_CHUNK_SIZE,
                                mesh: Mesh | None = None) -> Selection:
  """The k same-class teachers of highest cosine similarity for every student.

  Args:
    student_emb: (Ns, d) student embeddings (e.g. RGB matcher embeddings).
    teacher_emb: (Nt, d) teacher embeddings (e.g. MS matcher embeddings).
    student_labels: (Ns,) integer class ids.
    teacher_labels: (Nt,) integer class ids.
    k: number of teachers per student.
    student_chunk_size, teacher_chunk_size: block shape of the chunked computation
      (results do not depend on them); memory is O(student_chunk * teacher_chunk) per
      device on top of the inputs.
    mesh: 1-D device mesh over which students are split; default all devices.

  Returns:
    `Selection(indices, scores)`, both (Ns, k), best first: teacher indices and their
    cosine similarities. Ties go to the lowest teacher index. If a class has fewer
    than k teachers, the missing entries are index -1 with score -inf.

  Raises:
    ValueError: on malformed inputs, or if a student's class has no teacher.
  """
  check_selection_inputs(student_emb, teacher_emb, student_labels, teacher_labels,
                         feature_names=("student_emb", "teacher_emb"))
  return top_k_within_class(cosine_affinity(student_emb, teacher_emb), student_labels,
                            teacher_labels, k=k, student_chunk_size=student_chunk_size,
                            teacher_chunk_size=teacher_chunk_size, mesh=mesh)


def nearest_teacher(student_emb, teacher_emb, student_labels, teacher_labels, *, k: int = 1,
                    student_chunk_size: int = DEFAULT_STUDENT_CHUNK_SIZE,
                    teacher_chunk_size: int = DEFAULT_TEACHER_CHUNK_SIZE,
                    mesh: Mesh | None = None) -> jax.Array:
  """(Ns, k) int32 indices of the k most cosine-similar same-class teachers.

  See `nearest_teacher_with_scores` (this returns its `indices`).
  """
  return nearest_teacher_with_scores(
      student_emb, teacher_emb, student_labels, teacher_labels, k=k,
      student_chunk_size=student_chunk_size, teacher_chunk_size=teacher_chunk_size,
      mesh=mesh).indices
