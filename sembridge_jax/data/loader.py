"""`make_loader`: deterministic, checkpointable, host-sharded batches of one split (Grain).

Order. Epoch ``e`` visits the split's records in the permutation
``default_rng([seed, 0, e]).permutation(N)`` (identity when ``shuffle=False``). That
order is cut into *global* batches of ``batch_size * shard_count`` records; host
``shard_index`` takes rows ``[shard_index * batch_size, (shard_index + 1) * batch_size)``
of each global batch. The hosts therefore partition every epoch, and the global batch
(the concatenation over hosts, in host order) is the same whatever the host count.
With ``drop_remainder=False`` the last global batch is padded: padding rows have
``mask=False``, ``id=-1``, ``label=-1`` and zero images, so shapes never change.

Pipeline. ``grain.MapDataset.range(num_steps).map(assemble_batch)`` decodes and
normalises whole batches (vectorised), prefetched by Grain threads; then, in the
consumer's thread at hand-out, the pairing (if any) adds ``teacher_id`` (and optionally
the teacher's images): a `PairTable` updated between epochs applies to the very next
batch. The iterator is Grain's, so ``get_state()`` / ``set_state()`` checkpoint and
restore the position exactly; batch ``t`` is a pure function of (config, ``t``).

Batch fields (NumPy): ``image`` float32 (B, H, W, C), ``label`` int32, ``id`` int32,
``mask`` bool; with ``pairing``: ``teacher_id`` int32 (and ``teacher_image`` with
``teacher_split``); with ``with_rgb_rendering`` (MS splits): ``rgb_rendering`` float32
(B, S, S, 3).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import grain
import numpy as np

from sembridge_jax.data import augmentation, preprocessing
from sembridge_jax.data.benchmark import Benchmark
from sembridge_jax.data.pairing import PairTable

Batch = dict[str, np.ndarray]
PADDING_ID = -1
_EPOCH_STREAM, _AUGMENT_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """Which records (and padding) host ``shard_index`` reads at each step."""
  num_records: int
  batch_size: int
  num_epochs: int
  seed: int
  shuffle: bool
  drop_remainder: bool
  shard_index: int = 0
  shard_count: int = 1

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size={self.batch_size} is invalid; expected a positive "
                       "per-host batch size")
    if not 0 <= self.shard_index < self.shard_count:
      raise ValueError(f"shard_index={self.shard_index} is invalid; expected 0 <= "
                       f"shard_index < shard_count={self.shard_count}")
    if self.num_epochs < 1:
      raise ValueError(f"num_epochs={self.num_epochs} is invalid; expected >= 1")
    if self.drop_remainder and self.num_records < self.global_batch_size:
      raise ValueError(
          f"batch_size={self.batch_size} x {self.shard_count} host(s) = "
          f"{self.global_batch_size} exceeds the split's {self.num_records} records with "
          "drop_remainder=True (no batch at all); lower batch_size")

  @property
  def global_batch_size(self) -> int:
    return self.batch_size * self.shard_count

  @property
  def steps_per_epoch(self) -> int:
    full, rest = divmod(self.num_records, self.global_batch_size)
    return full + (1 if rest and not self.drop_remainder else 0)

  @property
  def num_steps(self) -> int:
    return self.steps_per_epoch * self.num_epochs

  @functools.lru_cache(maxsize=4)
  def order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_records)
    return np.random.default_rng([self.seed, _EPOCH_STREAM, epoch]).permutation(
        self.num_records)

  def rows(self, step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(record indices (B,), valid mask (B,), epoch) of this host's rows at ``step``;
    padding rows point at record 0."""
    if not 0 <= step < self.num_steps:
      raise IndexError(f"step {step} is outside [0, {self.num_steps})")
    epoch, in_epoch = divmod(step, self.steps_per_epoch)
    start = in_epoch * self.global_batch_size + self.shard_index * self.batch_size
    positions = start + np.arange(self.batch_size)
    valid = positions < self.num_records
    indices = np.where(valid, self.order(epoch)[np.minimum(positions, self.num_records - 1)],
                       0)
    return indices, valid, epoch


class _BatchAssembler:
  """step -> batch without teacher fields (runs in Grain's prefetch threads)."""

  def __init__(self, benchmark: Benchmark, split: str, plan: EpochPlan, *,
               normalization: str, augment: bool, with_rgb_rendering: bool,
               rendering_gamma: float, random_camera: bool, colour_jitter: float,
               cache: bool | None):
    self.is_ms = benchmark.is_ms(split)
    self.reader = benchmark.reader(split, cache)
    self.ids = benchmark.ids(split)
    self.labels = benchmark.labels(split)
    self.plan = plan
    self.normalize = preprocessing.get_normalizer(normalization)
    self.stats = benchmark.ms_stats
    self.rgb_size = benchmark.image_size
    self.rgb_bands = benchmark.rgb_bands
    self.augment = augment
    self.colour_jitter = colour_jitter
    self.with_rgb_rendering = with_rgb_rendering
    self.rendering_gamma = rendering_gamma
    self.random_camera = random_camera

  def __call__(self, step: int) -> Batch:
    indices, valid, _ = self.plan.rows(int(step))
    raw = self.reader.read(indices)
    batch: Batch = {}
    rng = (np.random.default_rng([self.plan.seed, _AUGMENT_STREAM, int(step),
                                  self.plan.shard_index]) if self.augment else None)
    if self.is_ms:
      batch["image"] = self.normalize(raw, self.stats)
      if self.with_rgb_rendering and self.augment and self.random_camera:
        display = augmentation.random_camera(
            preprocessing.true_colour_linear(raw, self.rgb_bands), rng)
        batch["rgb_rendering"] = preprocessing.unit_to_model_range(
            preprocessing.resize(display, self.rgb_size))
      elif self.with_rgb_rendering:
        batch["rgb_rendering"] = preprocessing.true_colour_rendering(
            raw, self.rgb_bands, self.rgb_size, self.rendering_gamma)
    else:
      batch["image"] = preprocessing.rgb_to_model(raw, self.rgb_size)
    if self.augment:
      key = "rgb_rendering" if self.is_ms else "image"
      batch[key] = augmentation.augment_rgb(batch[key], rng, self.colour_jitter)
    for key in ("image", "rgb_rendering"):
      if key in batch:
        batch[key][~valid] = 0.0
    batch["label"] = np.where(valid, self.labels[indices], PADDING_ID).astype(np.int32)
    batch["id"] = np.where(valid, self.ids[indices], PADDING_ID).astype(np.int32)
    batch["mask"] = valid
    return batch


class _TeacherAttacher:
  """Adds ``teacher_id`` (and ``teacher_image``) when a batch is handed out."""

  def __init__(self, pairing: PairTable, benchmark: Benchmark, teacher_split: str | None,
               normalization: str, cache: bool | None):
    self.pairing = pairing
    self.benchmark = benchmark
    self.teacher_split = teacher_split
    if teacher_split is not None:
      if not benchmark.is_ms(teacher_split):
        raise ValueError(f"teacher_split={teacher_split!r} is invalid; expected an MS split")
      self.reader = benchmark.reader(teacher_split, cache)
      self.normalize = preprocessing.get_normalizer(normalization)

  def __call__(self, batch: Batch) -> Batch:
    valid = batch["mask"]
    teacher_ids = np.full(valid.shape, PADDING_ID, np.int64)
    teacher_ids[valid] = self.pairing.lookup(batch["id"][valid])
    batch = dict(batch, teacher_id=teacher_ids.astype(np.int32))
    if self.teacher_split is not None:
      positions = np.zeros(valid.shape, np.int64)
      positions[valid] = self.benchmark.index_of(self.teacher_split, teacher_ids[valid])
      images = self.normalize(self.reader.read(positions), self.benchmark.ms_stats)
      images[~valid] = 0.0
      batch["teacher_image"] = images
    return batch


@dataclasses.dataclass(frozen=True, eq=False)
class Loader:
  """Iterable over the batches of a split; each ``iter()`` starts a Grain iterator with
  ``get_state()`` / ``set_state()``."""
  dataset: grain.IterDataset
  plan: EpochPlan
  split: str

  @property
  def steps_per_epoch(self) -> int:
    return self.plan.steps_per_epoch

  def __len__(self) -> int:
    return self.plan.num_steps

  def __iter__(self) -> Iterator[Batch]:
    return iter(self.dataset)


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  return int(shard_index), int(shard_count)


def make_loader(benchmark: Benchmark, split: str, *, batch_size: int, seed: int,
                shuffle: bool, num_epochs: int = 1, drop_remainder: bool,
                normalization: str, augment: bool = False,
                colour_jitter: float = augmentation.COLOUR_JITTER,
                pairing: PairTable | None = None, teacher_split: str | None = None,
                with_rgb_rendering: bool = False, rendering_gamma: float = 1.0,
                random_camera: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                cache: bool | None = None, num_threads: int = 2,
                prefetch: int = 4) -> Loader:
  """Batches of ``split`` (see the module docstring for order, padding and fields).

  Args:
    benchmark: from `load_benchmark`.
    split: ``ms_train``, ``ms_test``, ``rgb_train`` or ``rgb_test``.
    batch_size: rows per batch on this host (the global batch is ``batch_size *
      shard_count``).
    seed: seeds the per-epoch shuffles and the augmentation.
    shuffle: a fresh permutation every epoch; otherwise source (id) order.
    num_epochs: passes over the split.
    drop_remainder: drop the last partial global batch instead of padding it.
    normalization: ``per_image_max`` or ``band_stats`` (MS images).
    augment: RGB flips and colour jitter on ``image`` (RGB splits) or on
      ``rgb_rendering`` (MS splits); never on MS images.
    colour_jitter: the augmentation's brightness/contrast/saturation range (0: flips only).
    pairing: student id -> teacher id; adds ``teacher_id``.
    teacher_split: with ``pairing``, also add the teachers' images from this MS split.
    with_rgb_rendering: on an MS split, add each image's true-colour rendering.
    rendering_gamma: display gamma of that rendering (`preprocessing.true_colour_rendering`).
    random_camera: with ``augment``, image each rendering through a randomly drawn camera
      (`augmentation.random_camera`, its own tone curve instead of ``rendering_gamma``)
      before the flips and jitter.
    shard_index, shard_count: this host's shard; default ``jax.process_index()`` /
      ``jax.process_count()``.
    cache: decode the whole split into memory once (default: when it fits in
      ``benchmark.cache_bytes``).
    num_threads, prefetch: Grain prefetch threads and buffered batches.
  """
  is_ms = benchmark.is_ms(split)
  if with_rgb_rendering and not is_ms:
    raise ValueError(f"with_rgb_rendering=True needs an MS split; got split={split!r}")
  if random_camera and not with_rgb_rendering:
    raise ValueError("random_camera=True images the RGB rendering of an MS split; "
                     "pass with_rgb_rendering=True")
  if teacher_split is not None and pairing is None:
    raise ValueError("teacher_split is set but pairing is None; pass the PairTable too")
  preprocessing.get_normalizer(normalization)  # Fail early on an unknown name.
  shard_index, shard_count = _default_shard(shard_index, shard_count)
  plan = EpochPlan(num_records=len(benchmark.sources[split]), batch_size=int(batch_size),
                   num_epochs=int(num_epochs), seed=int(seed), shuffle=bool(shuffle),
                   drop_remainder=bool(drop_remainder), shard_index=shard_index,
                   shard_count=shard_count)
  assemble = _BatchAssembler(benchmark, split, plan, normalization=normalization,
                             augment=augment, with_rgb_rendering=with_rgb_rendering,
                             rendering_gamma=float(rendering_gamma),
                             random_camera=bool(random_camera),
                             colour_jitter=float(colour_jitter), cache=cache)
  dataset = grain.MapDataset.range(plan.num_steps).map(assemble).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if pairing is not None:
    dataset = dataset.map(_TeacherAttacher(pairing, benchmark, teacher_split, normalization,
                                           cache))
  return Loader(dataset=dataset, plan=plan, split=split)
