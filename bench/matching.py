"""Student-Friendly Matching speed: batched selection and re-matching vs one at a time.

(a) Selection alone. For ``Ns`` students against ``Nt`` teachers in ``C`` classes:
    * ``nearest_teacher`` on d-dimensional embeddings (cosine, initial matching);
    * ``rematch_by_kl`` on C-class logits (KL, re-matching);
    batched (chunked matrix products, jitted) versus a per-sample NumPy loop (one
    student at a time against its own class's gallery -- already vectorised over the
    gallery, so a generous baseline). Above ``--loop-subset`` students the loop is timed
    on the first ``--loop-subset`` students and extrapolated linearly (marked "~").
    Each case runs in a fresh process so that its peak resident memory
    (``getrusage``) is its own; "RSS before" is that process after building the
    inputs (JAX runtime + data), so the difference bounds the selection's working
    memory. The dense ``Ns x Nt`` float32 matrix is listed for comparison.

(b) Whole re-matching of a student set (METHOD section 2 step 4): the student's
    forward pass over its training images plus the KL selection against a
    precomputed teacher gallery, batched (jitted forward at ``--batch-size``, then
    ``rematch_by_kl``) versus one image at a time as the authors' code did (jitted
    forward at batch size 1, then a per-sample NumPy selection), the latter timed on
    ``--rematch-loop-subset`` images and extrapolated.

Times are medians of ``--repeats`` runs after a warm-up (compilation reported
separately). This machine's cores are shared, so numbers are noisy.

  python bench/matching.py [--parts a b] [--sizes 2000x3000 27000x27000]
                           [--rematch-students 2000] [--rematch-gallery 3000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from typing import Callable, NamedTuple

import numpy as np

GIB = 2**30


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _current_rss_bytes() -> int:
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * resource.getpagesize()


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# ---------------------------------------------------------------------------
# Per-sample NumPy baselines: one student at a time against its class gallery.
# ---------------------------------------------------------------------------


def _class_members(labels: np.ndarray) -> dict[int, np.ndarray]:
  return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def loop_nearest_teacher(student_emb, teacher_emb, student_labels, teacher_labels, count):
  members = _class_members(teacher_labels)
  teacher_unit = teacher_emb / np.linalg.norm(teacher_emb, axis=1, keepdims=True)
  # Each class's gallery sliced once, so that the loop body is one matrix-vector product.
  class_gallery = {c: np.ascontiguousarray(teacher_unit[m]) for c, m in members.items()}
  chosen = np.empty(count, np.int64)
  for i in range(count):
    label = int(student_labels[i])
    student_unit = student_emb[i] / np.linalg.norm(student_emb[i])
    chosen[i] = members[label][np.argmax(class_gallery[label] @ student_unit)]
  return chosen


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class ClassGalleries(NamedTuple):
  """Per class: gallery indices, probabilities p_t and sum_c p_t log p_t (sliced once)."""
  members: dict[int, np.ndarray]
  probs: dict[int, np.ndarray]
  negative_entropy: dict[int, np.ndarray]


def class_galleries(teacher_logits, teacher_labels, temperature=3.0) -> ClassGalleries:
  members = _class_members(teacher_labels)
  log_probs = _log_softmax(teacher_logits / temperature)
  probs = np.exp(log_probs)
  negative_entropy = np.sum(probs * log_probs, axis=1)
  return ClassGalleries(members, {c: np.ascontiguousarray(probs[m]) for c, m in members.items()},
                        {c: negative_entropy[m] for c, m in members.items()})


def loop_kl_select(student_logits, label, galleries: ClassGalleries, temperature=3.0):
  """One student: argmin_j KL(p_t[j] || p_s) = sum p_t log p_t - p_t . log p_s over its class."""
  student_log_probs = _log_softmax(student_logits / temperature)
  kl = galleries.negative_entropy[label] - galleries.probs[label] @ student_log_probs
  return galleries.members[label][np.argmin(kl)]


def loop_rematch_by_kl(student_logits, teacher_logits, student_labels, teacher_labels, count,
                       temperature=3.0):
  galleries = class_galleries(teacher_logits, teacher_labels, temperature)
  chosen = np.empty(count, np.int64)
  for i in range(count):
    chosen[i] = loop_kl_select(student_logits[i], int(student_labels[i]), galleries, temperature)
  return chosen


# ---------------------------------------------------------------------------
# (a) Selection alone.
# ---------------------------------------------------------------------------


class SelectionTiming(NamedTuple):
  rule: str
  num_students: int
  num_teachers: int
  width: int
  compile_s: float
  batched_s: float
  loop_s: float
  loop_extrapolated: bool
  agreement: float  # fraction of loop-timed students where both pick the same teacher
  rss_before_gib: float
  peak_rss_gib: float


def time_selection(rule: str, num_students: int, num_teachers: int, *, num_classes: int = 10,
                   embedding_dim: int = 256, loop_subset: int = 2000, repeats: int = 3,
                   seed: int = 0) -> SelectionTiming:
  """Times one selection rule ("nearest_teacher" or "rematch_by_kl")."""
  import jax
  from sembridge_jax import matching

  rng = np.random.default_rng(seed)
  width = embedding_dim if rule == "nearest_teacher" else num_classes
  scale = 1.0 if rule == "nearest_teacher" else 3.0  # logits of a realistic spread
  student = (scale * rng.standard_normal((num_students, width))).astype(np.float32)
  teacher = (scale * rng.standard_normal((num_teachers, width))).astype(np.float32)
  student_labels = rng.integers(0, num_classes, num_students)
  teacher_labels = rng.integers(0, num_classes, num_teachers)
  batched_fn = {"nearest_teacher": lambda: matching.nearest_teacher(
                    student, teacher, student_labels, teacher_labels)[:, 0],
                "rematch_by_kl": lambda: matching.rematch_by_kl(
                    student, teacher, student_labels, teacher_labels)}[rule]
  loop_fn = {"nearest_teacher": loop_nearest_teacher, "rematch_by_kl": loop_rematch_by_kl}[rule]

  rss_before = _current_rss_bytes()
  start = time.perf_counter()
  batched = np.asarray(jax.block_until_ready(batched_fn()))
  first_s = time.perf_counter() - start
  batched_s = _median_seconds(lambda: jax.block_until_ready(batched_fn()), repeats)

  count = min(num_students, loop_subset)
  start = time.perf_counter()
  looped = loop_fn(student, teacher, student_labels, teacher_labels, count)
  loop_s = (time.perf_counter() - start) * num_students / count
  return SelectionTiming(
      rule=rule, num_students=num_students, num_teachers=num_teachers, width=width,
      compile_s=max(first_s - batched_s, 0.0), batched_s=batched_s, loop_s=loop_s,
      loop_extrapolated=count < num_students,
      agreement=float(np.mean(batched[:count] == looped)),
      rss_before_gib=rss_before / GIB, peak_rss_gib=_peak_rss_bytes() / GIB)


def print_selection_table(rows: list[SelectionTiming]) -> None:
  print("| rule | students x teachers | width | batched (s) | compile (s) | per-sample loop (s) "
        "| speed-up | agree | RSS before (GiB) | peak RSS (GiB) | dense matrix (GiB) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    approx = "~" if r.loop_extrapolated else ""
    dense = r.num_students * r.num_teachers * 4 / GIB
    print(f"| {r.rule} | {r.num_students:,} x {r.num_teachers:,} | {r.width} | {r.batched_s:.3f} "
          f"| {r.compile_s:.2f} | {approx}{r.loop_s:.2f} | {approx}{r.loop_s / r.batched_s:.0f}x "
          f"| {r.agreement:.2%} | {r.rss_before_gib:.2f} | {r.peak_rss_gib:.2f} | {dense:.2f} |")


# ---------------------------------------------------------------------------
# (b) Whole re-matching: student forward pass + selection.
# ---------------------------------------------------------------------------


class RematchTiming(NamedTuple):
  model_name: str
  num_students: int
  gallery_size: int
  image_size: int
  batch_size: int
  compile_s: float
  forward_s: float  # batched forward over all student images
  select_s: float  # rematch_by_kl on the resulting logits
  one_at_a_time_s: float  # extrapolated from `loop_count` images
  loop_count: int
  agreement: float


def time_rematching(*, model_name: str = "shufflenet_v2_x0_5", num_students: int = 2000,
                    gallery_size: int = 3000, image_size: int = 64, num_classes: int = 10,
                    batch_size: int = 256, loop_subset: int = 300, repeats: int = 3,
                    seed: int = 0) -> RematchTiming:
  """Times one whole re-matching of `num_students` RGB images, batched vs batch size 1.

  The teacher gallery (frozen-teacher logits of every MS train image) is computed once
  before distillation and is not part of a re-matching; random logits stand in for it.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from sembridge_jax import matching, models

  student = models.create_model(model_name, num_classes=num_classes, in_channels=3,
                                rngs=nnx.Rngs(seed))
  student.eval()
  graphdef, state = nnx.split(student)

  @jax.jit
  def predict(state, images_uint8):
    images = (images_uint8.astype(jnp.float32) / 255.0 - 0.5) / 0.5  # METHOD's RGB normalisation
    return nnx.merge(graphdef, state)(images)[0]

  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_students, image_size, image_size, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, num_students)
  gallery_logits = (3 * rng.standard_normal((gallery_size, num_classes))).astype(np.float32)
  gallery_labels = rng.integers(0, num_classes, gallery_size)

  def batched_logits():
    padded = -(-num_students // batch_size) * batch_size
    padded_images = np.concatenate(
        [images, np.zeros((padded - num_students,) + images.shape[1:], np.uint8)])
    outputs = [predict(state, padded_images[start:start + batch_size])
               for start in range(0, padded, batch_size)]
    return jnp.concatenate(outputs)[:num_students]

  def batched_rematch(logits):
    return matching.rematch_by_kl(logits, gallery_logits, labels, gallery_labels)

  start = time.perf_counter()
  batched = np.asarray(jax.block_until_ready(batched_rematch(batched_logits())))
  predict(state, images[:1]).block_until_ready()
  compile_and_first_s = time.perf_counter() - start
  logits = jax.block_until_ready(batched_logits())
  forward_s = _median_seconds(lambda: jax.block_until_ready(batched_logits()), repeats)
  select_s = _median_seconds(lambda: jax.block_until_ready(batched_rematch(logits)), repeats)

  galleries = class_galleries(gallery_logits, gallery_labels)
  count = min(num_students, loop_subset)
  chosen = np.empty(count, np.int64)
  start = time.perf_counter()
  for i in range(count):
    student_logits = np.asarray(predict(state, images[i:i + 1]))[0]
    chosen[i] = loop_kl_select(student_logits, int(labels[i]), galleries)
  one_at_a_time_s = (time.perf_counter() - start) * num_students / count
  return RematchTiming(
      model_name=model_name, num_students=num_students, gallery_size=gallery_size,
      image_size=image_size, batch_size=batch_size,
      compile_s=max(compile_and_first_s - forward_s - select_s, 0.0), forward_s=forward_s,
      select_s=select_s, one_at_a_time_s=one_at_a_time_s, loop_count=count,
      agreement=float(np.mean(batched[:count] == chosen)))


def print_rematch_table(rows: list[RematchTiming]) -> None:
  print("| student | images x gallery | batch | forward (s) | select (s) | batched total (s) "
        "| compile (s) | batch size 1 (s) | speed-up | agree |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    total = r.forward_s + r.select_s
    approx = "~" if r.loop_count < r.num_students else ""
    print(f"| {r.model_name} {r.image_size}px | {r.num_students:,} x {r.gallery_size:,} "
          f"| {r.batch_size} | {r.forward_s:.2f} | {r.select_s:.3f} | {total:.2f} "
          f"| {r.compile_s:.1f} | {approx}{r.one_at_a_time_s:.1f} "
          f"| {approx}{r.one_at_a_time_s / total:.1f}x | {r.agreement:.1%} |")


def _in_fresh_process(fn, **kwargs):
  """Runs `fn(**kwargs)` in a new interpreter, so that its peak memory is its own."""
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(fn, kwds=kwargs)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", nargs="+", choices=["a", "b"], default=["a", "b"])
  parser.add_argument("--sizes", nargs="+", default=["2000x3000", "27000x27000"],
                      help="STUDENTSxTEACHERS for part (a)")
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--dim", type=int, default=256, help="embedding width for nearest_teacher")
  parser.add_argument("--loop-subset", type=int, default=2000)
  parser.add_argument("--rematch-students", type=int, default=2000)
  parser.add_argument("--rematch-gallery", type=int, default=3000)
  parser.add_argument("--rematch-loop-subset", type=int, default=300)
  parser.add_argument("--model", default="shufflenet_v2_x0_5")
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  if "a" in args.parts:
    rows = []
    for size in args.sizes:
      num_students, num_teachers = (int(n) for n in size.lower().split("x"))
      for rule in ("nearest_teacher", "rematch_by_kl"):
        rows.append(_in_fresh_process(
            time_selection, rule=rule, num_students=num_students, num_teachers=num_teachers,
            num_classes=args.classes, embedding_dim=args.dim, loop_subset=args.loop_subset,
            repeats=args.repeats))
    print(f"\n### (a) Selection alone ({args.classes} classes)\n")
    print_selection_table(rows)
  if "b" in args.parts:
    row = _in_fresh_process(
        time_rematching, model_name=args.model, num_students=args.rematch_students,
        gallery_size=args.rematch_gallery, image_size=args.image_size,
        num_classes=args.classes, batch_size=args.batch_size,
        loop_subset=args.rematch_loop_subset, repeats=args.repeats)
    print("\n### (b) Whole re-matching (student forward + KL selection)\n")
    print_rematch_table([row])


if __name__ == "__main__":
  main()
