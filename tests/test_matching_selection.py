"""nearest_teacher / rematch_by_kl / select_teacher_by_kl against brute-force NumPy.

The references loop over students, score every same-class teacher in float64 with
`math.fsum` (so duplicated rows score *exactly* alike) and sort by (-score, index):
best first, lowest index on ties.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from sembridge_jax.matching import (centre_per_class, check_class_coverage, nearest_teacher,
                                    nearest_teacher_with_scores, rematch_by_kl,
                                    rematch_by_kl_with_divergences, select_teacher_by_kl)


def brute_force_top_k(score_fn, num_students, student_labels, teacher_labels, k):
  """(indices, scores) of the k highest-scoring same-class teachers; -1 / nan padded."""
  indices = np.full((num_students, k), -1)
  scores = np.full((num_students, k), np.nan)
  for i in range(num_students):
    candidates = np.flatnonzero(teacher_labels == student_labels[i])
    candidate_scores = np.array([score_fn(i, j) for j in candidates])
    order = np.lexsort((candidates, -candidate_scores))[:k]
    indices[i, :order.size] = candidates[order]
    scores[i, :order.size] = candidate_scores[order]
  return indices, scores


def brute_force_cosine(student_emb, teacher_emb, student_labels, teacher_labels, k=1):
  s = np.asarray(student_emb, np.float64)
  t = np.asarray(teacher_emb, np.float64)
  s = s / np.sqrt([math.fsum(row * row) for row in s])[:, None]
  t = t / np.sqrt([math.fsum(row * row) for row in t])[:, None]
  return brute_force_top_k(lambda i, j: math.fsum(s[i] * t[j]), len(s), student_labels,
                           teacher_labels, k)


def log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(axis=1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def brute_force_kl(student_logits, teacher_logits, student_labels, teacher_labels, T=3.0):
  """argmin_j KL(softmax(t_j/T) || softmax(s_i/T)) over same-class j, and the KL."""
  log_ps = log_softmax64(np.asarray(student_logits) / T)
  log_pt = log_softmax64(np.asarray(teacher_logits) / T)
  kl = lambda i, j: math.fsum(np.exp(log_pt[j]) * (log_pt[j] - log_ps[i]))
  indices, neg_kl = brute_force_top_k(lambda i, j: -kl(i, j), len(log_ps), student_labels,
                                      teacher_labels, 1)
  return indices[:, 0], -neg_kl[:, 0]


def random_problem(seed, num_students, num_teachers, dim, labels=(0, 1, 2, 3)):
  """Random features and labels, with exact duplicate teacher rows to create ties."""
  rng = np.random.default_rng(seed)
  student = rng.standard_normal((num_students, dim)).astype(np.float32)
  teacher = rng.standard_normal((num_teachers, dim)).astype(np.float32)
  student_labels = rng.choice(labels, num_students)
  teacher_labels = rng.choice(labels, num_teachers)
  teacher_labels[:len(labels)] = labels  # Every class has a teacher.
  # Ties: copy some teachers (with their class) to later rows, and make some students
  # identical to a teacher so that copies are the unique best.
  sources = rng.choice(num_teachers // 2, 8, replace=False)
  copies = num_teachers // 2 + rng.choice(num_teachers - num_teachers // 2, 8, replace=False)
  teacher[copies], teacher_labels[copies] = teacher[sources], teacher_labels[sources]
  student[:8], student_labels[:8] = teacher[sources], teacher_labels[sources]
  return student, teacher, student_labels, teacher_labels


# Teacher chunks of 5 put tied copies in different chunks (the running top-k merge);
# one whole block puts them in the same one (the in-block top-k).
@pytest.mark.parametrize("k, chunks", [(1, (16, 5)), (3, (16, 5)), (1, (61, 97)), (3, (61, 97))])
def test_nearest_teacher_equals_brute_force(k, chunks):
  student, teacher, ys, yt = random_problem(0, 61, 97, 8, labels=(5, -2, 9, 0))
  expected_indices, expected_scores = brute_force_cosine(student, teacher, ys, yt, k)
  selection = nearest_teacher_with_scores(student, teacher, ys, yt, k=k,
                                          student_chunk_size=chunks[0],
                                          teacher_chunk_size=chunks[1])
  np.testing.assert_array_equal(selection.indices, expected_indices)
  np.testing.assert_allclose(selection.scores, expected_scores, atol=1e-5)
  np.testing.assert_array_equal(nearest_teacher(student, teacher, ys, yt, k=k), expected_indices)


def test_ties_go_to_the_lowest_index():
  # Teachers 0, 2 and 3 are the same direction (3 is a scaled copy); 1 is of another
  # class and would win without the class constraint.
  teacher = np.array([[1., 0.], [1., 0.], [1., 0.], [1., 0.], [0., 1.]], np.float32)
  teacher_labels = np.array([0, 1, 0, 0, 0])
  student = np.array([[1., 0.1], [0., 1.]], np.float32)
  student_labels = np.array([0, 0])
  np.testing.assert_array_equal(
      nearest_teacher(student, teacher, student_labels, teacher_labels, k=4,
                      teacher_chunk_size=2),
      [[0, 2, 3, 4], [4, 0, 2, 3]])


def test_single_sample_classes_and_k_larger_than_class():
  rng = np.random.default_rng(1)
  teacher = rng.standard_normal((6, 5)).astype(np.float32)
  teacher_labels = np.array([0, 0, 0, 0, 1, 2])  # classes 1 and 2 have one teacher
  student = rng.standard_normal((4, 5)).astype(np.float32)
  student_labels = np.array([1, 2, 0, 3 - 3])  # ... and class 2 one student
  selection = nearest_teacher_with_scores(student, teacher, student_labels, teacher_labels,
                                          k=3, teacher_chunk_size=4)
  expected, _ = brute_force_cosine(student, teacher, student_labels, teacher_labels, k=3)
  np.testing.assert_array_equal(selection.indices, expected)
  np.testing.assert_array_equal(selection.indices[:2], [[4, -1, -1], [5, -1, -1]])
  assert np.all(np.isneginf(np.asarray(selection.scores)[:2, 1:]))


def test_absent_student_class_raises_clear_error():
  student, teacher, ys, yt = random_problem(2, 10, 20, 4, labels=(0, 1))
  ys[3] = 7
  with pytest.raises(ValueError, match=r"teacher_labels has no sample of class\(es\) \[7\]"):
    nearest_teacher(student, teacher, ys, yt)
  with pytest.raises(ValueError, match=r"no sample of class\(es\) \[7\]"):
    rematch_by_kl(student, teacher, ys, yt)
  with pytest.raises(ValueError, match=r"\[7\]"):
    check_class_coverage(ys, yt)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be a positive integer"),
    (dict(student_chunk_size=0), "student_chunk_size must be a positive integer"),
    (dict(teacher_chunk_size=2.5), "teacher_chunk_size must be a positive integer"),
])
def test_invalid_arguments_raise(kwargs, message):
  student, teacher, ys, yt = random_problem(3, 10, 20, 4, labels=(0, 1))
  with pytest.raises(ValueError, match=message):
    nearest_teacher(student, teacher, ys, yt, **kwargs)


def test_invalid_shapes_raise():
  student, teacher, ys, yt = random_problem(3, 10, 20, 4, labels=(0, 1))
  with pytest.raises(ValueError, match="same width"):
    nearest_teacher(student, teacher[:, :3], ys, yt)
  with pytest.raises(ValueError, match="student_labels must hold one label per row of student_emb"):
    nearest_teacher(student, teacher, ys[:-1], yt)
  with pytest.raises(ValueError, match="integer class ids"):
    nearest_teacher(student, teacher, ys.astype(np.float32), yt)


@pytest.mark.parametrize("k, chunks", [(1, (9, 13)), (2, (1, 7)), (2, (50, 100))])
def test_chunked_equals_unchunked(k, chunks):
  student, teacher, ys, yt = random_problem(4, 83, 131, 16, labels=tuple(range(6)))
  whole = nearest_teacher_with_scores(student, teacher, ys, yt, k=k,
                                      student_chunk_size=83, teacher_chunk_size=131)
  chunked = nearest_teacher_with_scores(student, teacher, ys, yt, k=k,
                                        student_chunk_size=chunks[0],
                                        teacher_chunk_size=chunks[1])
  np.testing.assert_array_equal(chunked.indices, whole.indices)
  np.testing.assert_allclose(chunked.scores, whole.scores, atol=1e-6)


def kl_problem(seed, num_students=57, num_teachers=89, num_classes=5):
  student, teacher, ys, yt = random_problem(seed, num_students, num_teachers, num_classes,
                                            labels=tuple(range(num_classes)))
  return 3 * student, 3 * teacher, ys, yt  # Logits of a realistic spread.


def test_centre_per_class_equals_numpy_loop():
  rng = np.random.default_rng(7)
  # Class 1 is absent, class 3 has a single member (it becomes the zero vector).
  labels = np.array([0, 2, 0, 3, 2, 2, 0])
  embeddings = rng.normal(size=(7, 5)).astype(np.float32)
  expected = np.empty_like(embeddings, dtype=np.float64)
  for i, label in enumerate(labels):
    expected[i] = embeddings[i] - np.mean(embeddings[labels == label].astype(np.float64), axis=0)
  centred = np.asarray(centre_per_class(embeddings, labels))
  np.testing.assert_allclose(centred, expected, atol=1e-6)
  np.testing.assert_array_equal(centred[3], 0.0)


def test_centred_matching_ignores_per_class_offsets():
  """Class prototypes that differ between the two sets (a shared part plus each region's
  own) send the plain cosine selection to a few hub teachers; the class-centred
  selection does not see them at all."""
  rng = np.random.default_rng(8)
  student_labels, teacher_labels = rng.integers(0, 3, 60), np.repeat(np.arange(3), 20)
  students, teachers = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
  shared = 3.0 * rng.normal(size=(3, 16))
  shifted_students = students + (shared + rng.normal(size=(3, 16)))[student_labels]
  shifted_teachers = teachers + (shared + rng.normal(size=(3, 16)))[teacher_labels]

  def select(s, t, centre):
    if centre:
      s, t = centre_per_class(s, student_labels), centre_per_class(t, teacher_labels)
    return np.asarray(nearest_teacher(s, t, student_labels, teacher_labels))[:, 0]

  centred = select(shifted_students, shifted_teachers, True)
  np.testing.assert_array_equal(centred, select(students, teachers, True))
  plain = select(shifted_students, shifted_teachers, False)
  assert np.mean(plain != select(students, teachers, False)) > 0.5
  assert len(np.unique(plain)) < 0.75 * len(np.unique(centred))


@pytest.mark.parametrize("embeddings, labels, message", [
    (np.zeros((4, 3)), np.zeros(3, int), "labels"),
    (np.zeros(4), np.zeros(4, int), "labels"),
    (np.zeros((2, 3)), np.array([0, -1]), "non-negative integer"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "non-negative integer"),
])
def test_centre_per_class_rejects_malformed_inputs(embeddings, labels, message):
  with pytest.raises(ValueError, match=message):
    centre_per_class(embeddings, labels)


def test_rematch_by_kl_equals_brute_force():
  student_logits, teacher_logits, ys, yt = kl_problem(5)
  expected_indices, expected_kl = brute_force_kl(student_logits, teacher_logits, ys, yt)
  rematch = rematch_by_kl_with_divergences(student_logits, teacher_logits, ys, yt,
                                           student_chunk_size=10, teacher_chunk_size=4)
  np.testing.assert_array_equal(rematch.indices, expected_indices)
  np.testing.assert_allclose(rematch.divergences, expected_kl, atol=1e-5)
  np.testing.assert_array_equal(rematch_by_kl(student_logits, teacher_logits, ys, yt),
                                expected_indices)
  # Students copied from teachers have a zero-KL partner: the lowest-index copy.
  assert np.all(np.asarray(rematch.divergences)[:8] < 1e-5)


def test_rematch_by_kl_temperature_and_chunking():
  student_logits, teacher_logits, ys, yt = kl_problem(6)
  expected, _ = brute_force_kl(student_logits, teacher_logits, ys, yt, T=1.0)
  for student_chunk, teacher_chunk in [(57, 89), (4, 11), (30, 40)]:
    np.testing.assert_array_equal(
        rematch_by_kl(student_logits, teacher_logits, ys, yt, temperature=1.0,
                      student_chunk_size=student_chunk, teacher_chunk_size=teacher_chunk),
        expected)
  with pytest.raises(ValueError, match="temperature must be positive"):
    rematch_by_kl(student_logits, teacher_logits, ys, yt, temperature=0.0)


def test_select_teacher_by_kl_inside_jit_equals_brute_force():
  student_logits, gallery_logits, ys, gallery_labels = kl_problem(7, num_students=16)
  expected, _ = brute_force_kl(student_logits, gallery_logits, ys, gallery_labels)
  select = jax.jit(select_teacher_by_kl, static_argnames="temperature")
  np.testing.assert_array_equal(
      select(student_logits, ys, gallery_logits, gallery_labels), expected)
  # A class absent from the gallery cannot raise under jit: it yields -1.
  ys = ys.copy()
  ys[0] = 99
  assert select(student_logits, ys, gallery_logits, gallery_labels)[0] == -1


_EIGHT_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import Mesh
    from sembridge_jax.matching import nearest_teacher_with_scores, rematch_by_kl
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((203, 12)), rng.standard_normal((150, 12))
    ys, yt = rng.integers(0, 5, 203), rng.integers(0, 5, 150)
    t[100:110] = t[:10]; yt[100:110] = yt[:10]  # ties across teacher chunks
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    eight = Mesh(np.asarray(jax.devices()), ("data",))
    for k, chunks in [(3, (5, 17))]:
      a = nearest_teacher_with_scores(s, t, ys, yt, k=k, mesh=one, student_chunk_size=chunks[0],
                                      teacher_chunk_size=chunks[1])
      b = nearest_teacher_with_scores(s, t, ys, yt, k=k, student_chunk_size=chunks[0],
                                      teacher_chunk_size=chunks[1])  # default mesh: all 8
      assert len(b.indices.sharding.device_set) in (1, 8)
      np.testing.assert_array_equal(a.indices, b.indices)
      np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(rematch_by_kl(s, t, ys, yt, mesh=one),
                                  rematch_by_kl(s, t, ys, yt, mesh=eight))
    print("OK")
""")


def test_sharded_over_eight_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
