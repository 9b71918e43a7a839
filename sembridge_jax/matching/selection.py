"""Same-class top-k selection over a chunked, factorised affinity matrix.

Both selection rules of Student-Friendly Matching (METHOD section 2) score a
student ``i`` against a teacher ``j`` with an affinity that factorises as a matrix
product plus a per-teacher bias::

    A[i, j] = <q_i, t_j> + b_j          (higher is better)

* initial matching (cosine similarity): ``q = s / |s|``, ``t = e / |e|``, ``b = 0``;
* re-matching (negative KL divergence): ``q = log p_s``, ``t = p_t`` and
  ``b = -sum_c p_t log p_t``, so that ``A = -KL(p_t || p_s)``.

For every student we want the ``k`` best teachers *of its own class*
(``A[i, j] = -inf`` where the labels differ), best first, ties broken by the lowest
teacher index, so that the result is a pure function of the inputs and equals a
brute-force NumPy evaluation.

The full ``Ns x Nt`` matrix never exists: students are processed in chunks
(`jax.lax.map`), and for each student chunk a loop walks over teacher chunks keeping a
running top-k. Teachers are stably sorted by class first, so a student chunk only
visits the teacher chunks that hold its classes (students are class-sorted too, so a
chunk spans one or two classes): the work is ~``sum_c Ns_c * Nt_c`` instead of
``Ns * Nt``, and the peak extra memory is one ``(student_chunk, teacher_chunk)``
block per device. Stable sorting keeps the teachers of a class in index order, so
"lowest position first" within the sorted order is "lowest index first".

Students are split over a 1-D device mesh (`jax.shard_map`, teachers replicated);
on a single device the mesh has one entry and the same code runs.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from sembridge_jax.sharding import make_mesh

# No teacher (a class with fewer than k teachers, or a student without a class
# match in `select_*` functions that cannot raise inside `jit`).
NO_TEACHER = -1

DEFAULT_STUDENT_CHUNK_SIZE = 512
DEFAULT_TEACHER_CHUNK_SIZE = 1024


class Selection(NamedTuple):
  """Selected teachers per student, best first.

  Attributes:
    indices: (Ns, k) int32 indices into the teacher arrays; ``NO_TEACHER`` (-1)
      where the student's class has fewer than k teachers.
    scores: (Ns, k) float32 affinity of each selected pair (its meaning is given by
      the function that returned it); -inf where ``indices`` is -1.
  """

  indices: jax.Array
  scores: jax.Array


class Affinity(NamedTuple):
  """Factors of ``A[i, j] = <queries[i], keys[j]> + key_bias[j]``.

  Attributes:
    queries: (Ns, d) one row per student.
    keys: (Nt, d) one row per teacher.
    key_bias: (Nt,) additive per-teacher term.
  """

  queries: jax.Array
  keys: jax.Array
  key_bias: jax.Array


# ---------------------------------------------------------------------------
# Host-side validation (runs before any jitted work, so errors are clear).
# ---------------------------------------------------------------------------


def check_class_coverage(student_labels, teacher_labels) -> None:
  """Raises ValueError if a student class has no teacher of the same class.

  Call it once, host-side, before selecting inside a jitted step
  (`select_teacher_by_kl` cannot raise and returns -1 for such students).
  """
  student_labels = _as_labels("student_labels", student_labels)
  teacher_labels = _as_labels("teacher_labels", teacher_labels)
  missing = np.setdiff1d(np.unique(student_labels), np.unique(teacher_labels))
  if missing.size:
    counts = {int(c): int(np.sum(student_labels == c)) for c in missing[:10]}
    raise ValueError(
        "every student class must have at least one teacher of the same class; "
        f"teacher_labels has no sample of class(es) {missing[:10].tolist()}"
        f"{' ...' if missing.size > 10 else ''} (student counts per missing class: "
        f"{counts}); teacher classes present: {np.unique(teacher_labels)[:20].tolist()}.")


def _as_labels(name: str, labels) -> np.ndarray:
  labels = np.asarray(jax.device_get(labels))
  if labels.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of class ids, got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}.")
  return labels


def _check_positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")
  return int(value)


def check_selection_inputs(student_features, teacher_features, student_labels,
                           teacher_labels, *, feature_names=("student", "teacher")) -> None:
  """Shape checks shared by the public selectors: (N, d) features with one label each."""
  for name, label_name, features, labels in (
      (feature_names[0], "student_labels", student_features, student_labels),
      (feature_names[1], "teacher_labels", teacher_features, teacher_labels)):
    if np.ndim(features) != 2:
      raise ValueError(f"{name} must be 2-D (N, d), got shape {np.shape(features)}.")
    if np.shape(labels)[:1] != np.shape(features)[:1]:
      raise ValueError(
          f"{label_name} must hold one label per row of {name}: {name} has "
          f"{np.shape(features)[0]} rows, {label_name} has shape {np.shape(labels)}.")
  if np.shape(student_features)[1] != np.shape(teacher_features)[1]:
    raise ValueError(
        f"{feature_names[0]} and {feature_names[1]} must have the same width, got "
        f"{np.shape(student_features)[1]} and {np.shape(teacher_features)[1]}.")
  if np.shape(teacher_features)[0] == 0:
    raise ValueError(f"{feature_names[1]} is empty.")


# ---------------------------------------------------------------------------
# Blocks: one (students x teachers) tile of the masked affinity, and the merge of
# its top-k into a running top-k.
# ---------------------------------------------------------------------------


def masked_affinity_block(queries, query_labels, keys, key_bias, key_labels, key_valid,
                          *, precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """``A[i, j] = <q_i, k_j> + b_j`` where labels agree and the key is valid, else -inf."""
  scores = jnp.matmul(queries, keys.T, precision=precision) + key_bias[None, :]
  same_class = (query_labels[:, None] == key_labels[None, :]) & key_valid[None, :]
  return jnp.where(same_class, scores, -jnp.inf)


def merge_top_k(best_scores, best_indices, block_scores, block_indices, k: int):
  """Merges a score block into a running top-k, keeping the lowest index on ties.

  `best_*` are (n, k), best first; `block_scores` is (n, m) for teachers
  `block_indices` (m,), all of which are larger than every index already in `best_*`.
  """
  if k == 1:
    # argmax returns the first maximum; the strict `>` keeps the earlier (lower
    # index) incumbent on a tie.
    block_best = jnp.max(block_scores, axis=1)
    block_arg = block_indices[jnp.argmax(block_scores, axis=1)]
    better = block_best > best_scores[:, 0]
    return (jnp.where(better, block_best, best_scores[:, 0])[:, None],
            jnp.where(better, block_arg, best_indices[:, 0])[:, None])
  # `lax.top_k` puts the lower position first on ties; incumbents come first and
  # have lower teacher indices, and block columns are in increasing index order.
  scores = jnp.concatenate([best_scores, block_scores], axis=1)
  indices = jnp.concatenate(
      [best_indices, jnp.broadcast_to(block_indices, block_scores.shape)], axis=1)
  top_scores, where = jax.lax.top_k(scores, k)
  return top_scores, jnp.take_along_axis(indices, where, axis=1)


def top_k_dense(queries, query_labels, keys, key_bias, key_labels, *, k: int = 1,
                precision=jax.lax.Precision.HIGHEST) -> Selection:
  """Same-class top-k of one small batch against a whole gallery, in one block.

  Pure `jnp`, no host checks: meant to run inside a jitted training step (e.g. with a
  device-resident teacher gallery). Students without a same-class key get -1.
  """
  num_queries = queries.shape[0]
  scores = masked_affinity_block(queries, query_labels, keys, key_bias, key_labels,
                                 jnp.ones(keys.shape[:1], bool), precision=precision)
  init = (jnp.full((num_queries, k), -jnp.inf, scores.dtype),
          jnp.full((num_queries, k), NO_TEACHER, jnp.int32))
  top_scores, top_indices = merge_top_k(*init, scores,
                                        jnp.arange(keys.shape[0], dtype=jnp.int32), k)
  return Selection(jnp.where(jnp.isneginf(top_scores), NO_TEACHER, top_indices), top_scores)


# ---------------------------------------------------------------------------
# The chunked, class-sorted, sharded selector.
# ---------------------------------------------------------------------------


def top_k_within_class(affinity: Affinity, student_labels, teacher_labels, *, k: int = 1,
                       student_chunk_size: int = DEFAULT_STUDENT_CHUNK_SIZE,
                       teacher_chunk_size: int = DEFAULT_TEACHER_CHUNK_SIZE,
                       mesh: Mesh | None = None,
                       precision=jax.lax.Precision.HIGHEST) -> Selection:
  """For every student, the k same-class teachers of highest affinity, best first.

  Host-side wrapper: validates the arguments (raising ValueError for a student class
  without teachers), then runs the jitted chunked selection, students sharded over
  `mesh` (default: all devices, axis ``"data"``).

  A class with fewer than k teachers yields all of them followed by index -1 /
  score -inf.
  """
  k = _check_positive_int("k", k)
  student_chunk_size = _check_positive_int("student_chunk_size", student_chunk_size)
  teacher_chunk_size = _check_positive_int("teacher_chunk_size", teacher_chunk_size)
  student_labels = _as_labels("student_labels", student_labels)
  teacher_labels = _as_labels("teacher_labels", teacher_labels)
  check_class_coverage(student_labels, teacher_labels)
  mesh = make_mesh() if mesh is None else mesh
  if len(mesh.axis_names) != 1:
    raise ValueError(f"mesh must be 1-D, got axes {mesh.axis_names}.")

  num_students = student_labels.shape[0]
  num_shards = mesh.devices.size
  if num_students == 0:
    return Selection(jnp.zeros((0, k), jnp.int32), jnp.zeros((0, k), jnp.float32))
  # Never pad a tiny problem up to a huge chunk.
  student_chunk_size = min(student_chunk_size, math.ceil(num_students / num_shards))
  teacher_chunk_size = min(teacher_chunk_size, teacher_labels.shape[0])
  return _top_k_within_class(
      affinity, jnp.asarray(student_labels, jnp.int32), jnp.asarray(teacher_labels, jnp.int32),
      k=k, student_chunk_size=student_chunk_size, teacher_chunk_size=teacher_chunk_size,
      mesh=mesh, precision=precision)


@functools.partial(jax.jit, static_argnames=("k", "student_chunk_size",
                                             "teacher_chunk_size", "mesh", "precision"))
def _top_k_within_class(affinity: Affinity, student_labels, teacher_labels, *, k,
                        student_chunk_size, teacher_chunk_size, mesh, precision) -> Selection:
  queries = affinity.queries.astype(jnp.float32)
  keys = affinity.keys.astype(jnp.float32)
  key_bias = affinity.key_bias.astype(jnp.float32)
  num_students, num_teachers = queries.shape[0], keys.shape[0]
  num_shards = mesh.devices.size
  axis = mesh.axis_names[0]

  # Teachers: stable class sort (keeps index order within a class), then pad to whole
  # chunks with invalid entries.
  teacher_order = jnp.argsort(teacher_labels, stable=True).astype(jnp.int32)
  sorted_teacher_labels = teacher_labels[teacher_order]
  num_teacher_chunks = -(-num_teachers // teacher_chunk_size)
  teacher_pad = num_teacher_chunks * teacher_chunk_size - num_teachers
  pad_rows = lambda x, n: jnp.pad(x, [(0, n)] + [(0, 0)] * (x.ndim - 1))
  keys = pad_rows(keys[teacher_order], teacher_pad)
  key_bias = pad_rows(key_bias[teacher_order], teacher_pad)
  key_labels = pad_rows(sorted_teacher_labels, teacher_pad)
  key_valid = jnp.arange(keys.shape[0]) < num_teachers

  # Students: class sort too, so that a chunk spans few classes; pad to
  # num_shards * chunks_per_shard * student_chunk_size rows.
  student_order = jnp.argsort(student_labels, stable=True).astype(jnp.int32)
  chunks_per_shard = -(-num_students // (num_shards * student_chunk_size))
  num_chunks = num_shards * chunks_per_shard
  student_pad = num_chunks * student_chunk_size - num_students
  chunked = lambda x: pad_rows(x[student_order], student_pad).reshape(
      (num_chunks, student_chunk_size) + x.shape[1:])
  query_chunks = chunked(queries)
  query_label_chunks = chunked(student_labels)
  query_valid_chunks = chunked(jnp.ones((num_students,), bool))

  def select_shard(query_chunks, query_label_chunks, query_valid_chunks, keys, key_bias,
                   key_labels, key_valid, sorted_teacher_labels):

    def select_chunk(chunk):
      queries, labels, valid = chunk
      # The teachers of this chunk's classes are the contiguous sorted range
      # [first, last); visit only the teacher chunks overlapping it.
      info = jnp.iinfo(labels.dtype)
      lowest = jnp.min(jnp.where(valid, labels, info.max))
      highest = jnp.max(jnp.where(valid, labels, info.min))
      first = jnp.searchsorted(sorted_teacher_labels, lowest, side="left")
      last = jnp.searchsorted(sorted_teacher_labels, highest, side="right")
      first_chunk = first // teacher_chunk_size
      last_chunk = jnp.where(last > first, -(-last // teacher_chunk_size), first_chunk)

      def visit(c, best):
        start = c * teacher_chunk_size
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, teacher_chunk_size)
        block = masked_affinity_block(queries, labels, take(keys), take(key_bias),
                                      take(key_labels), take(key_valid),
                                      precision=precision)
        positions = start + jnp.arange(teacher_chunk_size, dtype=jnp.int32)
        return merge_top_k(*best, block, positions, k)

      init = (jnp.full((student_chunk_size, k), -jnp.inf, jnp.float32),
              jnp.full((student_chunk_size, k), NO_TEACHER, jnp.int32))
      # The running top-k differs per device (shard_map's "varying" type).
      init = jax.lax.pcast(init, axis, to="varying")
      return jax.lax.fori_loop(first_chunk, last_chunk, visit, init)

    return jax.lax.map(select_chunk, (query_chunks, query_label_chunks, query_valid_chunks))

  split, replicated = PartitionSpec(axis), PartitionSpec()
  best_scores, best_positions = jax.shard_map(
      select_shard, mesh=mesh,
      in_specs=(split, split, split) + (replicated,) * 5,
      out_specs=(split, split),
  )(query_chunks, query_label_chunks, query_valid_chunks, keys, key_bias, key_labels,
    key_valid, sorted_teacher_labels)

  best_scores = best_scores.reshape(-1, k)[:num_students]
  best_positions = best_positions.reshape(-1, k)[:num_students]
  found = ~jnp.isneginf(best_scores)
  teacher_indices = jnp.where(found, teacher_order[jnp.maximum(best_positions, 0)], NO_TEACHER)
  # Undo the student sort.
  unsort = lambda x: jnp.zeros_like(x).at[student_order].set(x)
  return Selection(unsort(teacher_indices), unsort(best_scores))
