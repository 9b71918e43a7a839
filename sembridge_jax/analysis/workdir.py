"""The read side of a pipeline workdir, for analysis: students, pairs, features, images.

`AnalysisWorkdir.open(DIR)` reads what `sembridge-jax pipeline` (or the single stages)
wrote (see `sembridge_jax.workdir.Workdir`) and serves the notebook, the
distillation figures and the transport-cost analysis:

* **students** (`StudentSnapshot`): ``"initial"`` is the student *before* distillation,
  i.e. the exact initialisation every distillation run of that seed starts from
  (`distiller.create_distiller` with the same seed), with its BatchNorm running statistics
  estimated on the RGB train images (forward passes in training mode, no gradient step).
  Freshly initialised statistics (mean 0, variance 1) make ShuffleNet's and MobileNet's
  evaluation-mode outputs almost independent of the input, so without this step the
  "before" features would measure BatchNorm's initial state rather than the network's
  initial weights. A run name (``"kd"``,
  ``"kd+sembridge"``) is that run's final checkpoint, together with the pair table it
  ended with (SemBridge re-matches during training);
* **pairs**: the initial SFM table (``matching/pairs.npz``) and the random same-class
  pairs a run *alone* trains with (`distiller.random_same_class_pairs`, same seed);
* **features** in the *alignment space*: the pooled embeddings the OT term of ALIGN
  compares. Student: ``features["pooled"]`` through the student's learned pooled
  adapter; teacher: the gallery's pooled features through the fixed teacher adapter
  (`sembridge_jax.alignment.AlignmentHead`). Both adapters are the identity when the
  pooled width equals ``distill.common_dim`` (every model's pooled width is 512, as is
  the default common width), so for a run without an alignment head (KD alone) the
  raw pooled features are used, and differing widths are an error;
* **raw images** of any split by record id (for the matched-pairs grid).

Nothing here writes to the workdir.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import sharding, workdir as workdir_lib
from sembridge_jax.config_base import load_benchmark
from sembridge_jax.distill.distiller import (Pairing, create_distiller, load_initial_pairs,
                                             random_same_class_pairs)
from sembridge_jax.distill.gallery import Gallery
from sembridge_jax.distill.step import Distiller
from sembridge_jax.runs import Run
from sembridge_jax.train import checkpointing, inference, trainer
from sembridge_jax.train.state import ModelDef, TrainState, model_state_after
from sembridge_jax.workdir import Workdir

__all__ = ["AlignmentBatch", "AnalysisWorkdir", "FeatureSet", "INITIAL", "StudentSnapshot"]

INITIAL = "initial"


class StudentSnapshot(NamedTuple):
  """A student (inside its `Distiller`) at one point of its training."""
  name: str                   # "initial" or the run name
  run: Run                    # the Distiller's structure (with or without alignment head)
  seed: int
  modeldef: ModelDef
  params: nnx.State
  model_state: nnx.State
  pairing: Pairing | None     # student id -> gallery row at the end of the run, if saved


class FeatureSet(NamedTuple):
  """Student outputs over a split, rows in ascending record id order."""
  ids: np.ndarray      # (N,) record ids of the images the student saw
  labels: np.ndarray   # (N,) classes
  pooled: np.ndarray   # (N, d) pooled features in the alignment space
  logits: np.ndarray   # (N, K)


class AlignmentBatch(NamedTuple):
  """One batch of students and their matched teachers, as the OT term sees it."""
  student: np.ndarray          # (B, d) student features (alignment space)
  teacher: np.ndarray          # (B, d) matched teachers' features (alignment space)
  student_labels: np.ndarray   # (B,)
  teacher_labels: np.ndarray   # (B,)
  student_ids: np.ndarray      # (B,) rgb_train record ids
  teacher_ids: np.ndarray      # (B,) ms_train record ids


def _pooled_adapters(distiller: Distiller):
  """(student adapter, teacher adapter); None = identity."""
  if distiller.align is None:
    return None, None
  return distiller.align.student_pooled_adapter, distiller.align.teacher_pooled_adapter


def _student_outputs(distiller: Distiller, images: jax.Array) -> dict[str, jax.Array]:
  logits, features = distiller.student(images)
  adapter, _ = _pooled_adapters(distiller)
  pooled = features["pooled"].astype(jax.numpy.float32)
  return {"logits": logits, "pooled": pooled if adapter is None else adapter(pooled)}


@dataclasses.dataclass
class AnalysisWorkdir:
  """A pipeline workdir opened for reading (see the module docstring)."""
  workdir: Workdir
  config: ml_collections.ConfigDict
  benchmark: Any
  gallery: Gallery
  _predict_fns: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def open(cls, workdir: str | pathlib.Path,
           config: ml_collections.ConfigDict | None = None) -> "AnalysisWorkdir":
    """Opens ``workdir``; ``config`` defaults to the one saved in ``results.json``."""
    layout = Workdir(pathlib.Path(workdir))
    if not layout.root.is_dir():
      raise FileNotFoundError(f"workdir {layout.root} does not exist")
    if config is None:
      results = layout.results
      if not results.exists():
        raise FileNotFoundError(f"{results} not found: pass the run's config explicitly (the "
                                "config is saved there only by the `pipeline` and `evaluate` "
                                "stages)")
      config = ml_collections.ConfigDict(json.loads(results.read_text())["config"])
      if config.data.data_dir and not pathlib.Path(config.data.data_dir).exists():
        config.data.data_dir = ""  # the workdir was moved: use its own tfds/ folder
    config = copy.deepcopy(config)  # load_benchmark fills in data.data_dir
    benchmark = load_benchmark(config, layout)
    if not layout.gallery.exists():
      raise FileNotFoundError(f"{layout.gallery} not found: run `sembridge-jax "
                              "train-teacher` and `distill` (which builds the gallery) first")
    return cls(workdir=layout, config=config, benchmark=benchmark,
               gallery=Gallery.load(layout.gallery))

  @property
  def path(self) -> pathlib.Path:
    return self.workdir.root

  # -- names ---------------------------------------------------------------------------

  @property
  def method(self) -> str:
    return str(self.config.distill.method)

  @property
  def sembridge_run(self) -> str:
    return Run(self.method, True).name

  @property
  def baseline_run(self) -> str:
    return Run(self.method, False).name

  def default_seed(self) -> int:
    return int(tuple(self.config.pipeline.seeds)[0])

  # -- students --------------------------------------------------------------------------

  def _fresh(self, run: Run, seed: int) -> tuple[ModelDef, TrainState]:
    distiller = create_distiller(self.config, run, self.benchmark, self.gallery, seed)
    modeldef, state, _ = trainer.create_train_state(distiller, self.config.distill.optimizer,
                                                    sharding.make_mesh())
    return modeldef, state

  def student(self, name: str, seed: int | None = None) -> StudentSnapshot:
    """``"initial"`` (before distillation) or a finished run (its final checkpoint)."""
    seed = self.default_seed() if seed is None else int(seed)
    mesh = sharding.make_mesh()
    if name == INITIAL:
      # Same structure as the SemBridge run, so the initial adapters are its initial ones.
      run = Run(self.method, True, seed)
      modeldef, state = self._fresh(run, seed)
      model_state = self._batch_norm_statistics(modeldef, state.params, state.model_state, seed)
      return StudentSnapshot(INITIAL, run, seed, modeldef, state.params, model_state, None)
    run = Run.parse(name, seed)
    modeldef, template = self._fresh(run, seed)
    restored = checkpointing.restore(
        workdir_lib.checkpoints(self.workdir.run(run)), template,
        what=f"run {name!r} (seed {seed}; run `sembridge-jax distill` for it first)")
    extras = restored.meta.get("extras")
    pairing = None
    if extras:
      pairing = Pairing(np.asarray(extras["student_ids"]), np.asarray(extras["rows"]))
    state = sharding.put_replicated(restored.state, mesh)
    return StudentSnapshot(run.name, run, seed, modeldef, state.params, state.model_state, pairing)

  def _batch_norm_statistics(self, modeldef: ModelDef, params: nnx.State,
                             model_state: nnx.State, seed: int, *, steps: int = 40
                             ) -> nnx.State:
    """``model_state`` after ``steps`` training-mode forward passes over shuffled
    ``rgb_train`` batches: each pass moves the running statistics towards the batch's by
    PyTorch's momentum 0.1, so 40 passes leave ``0.9**40 < 2%`` of the initial values."""
    mesh = sharding.make_mesh()
    num_records = len(self.benchmark.ids("rgb_train"))
    batch_size = min(int(self.config.distill.batch_size), num_records)
    batch_size -= batch_size % mesh.devices.size
    epochs = -(-steps // (num_records // batch_size))

    @jax.jit
    def update(params, model_state, images):
      model = modeldef.merge(params, model_state, training=True)
      model.student(images)
      return model_state_after(model)

    loader = data_lib.make_loader(
        self.benchmark, "rgb_train", batch_size=sharding.check_batch_size(batch_size, mesh),
        seed=seed, shuffle=True, num_epochs=epochs, drop_remainder=True,
        normalization=self.config.data.normalization)
    for _, batch in zip(range(steps), loader):
      images = sharding.put_batch({"image": batch["image"]}, mesh)["image"]
      model_state = update(params, model_state, images)
    return model_state

  # -- pairs -----------------------------------------------------------------------------

  def sfm_pairing(self) -> Pairing:
    """The initial SFM pair table (matcher embeddings, same class)."""
    return Pairing(*load_initial_pairs(self.workdir.pairs, self.gallery))

  def random_pairing(self, seed: int | None = None) -> Pairing:
    """The random same-class pairs a run alone trains with (same seed -> same pairs)."""
    seed = self.default_seed() if seed is None else int(seed)
    return Pairing(self.benchmark.ids("rgb_train"), random_same_class_pairs(
        self.benchmark.labels("rgb_train"), np.asarray(self.gallery.labels), seed))

  def pairing_for(self, snapshot: StudentSnapshot) -> Pairing:
    """The teachers ``snapshot`` is matched with: its run's final table if it has one
    (SemBridge after re-matching, or random pairs for a run alone), else the SFM table."""
    if snapshot.pairing is not None:
      return snapshot.pairing
    if snapshot.name != INITIAL and not snapshot.run.sembridge:
      return self.random_pairing(snapshot.seed)
    return self.sfm_pairing()

  # -- features --------------------------------------------------------------------------

  def _predict_fn(self, snapshot: StudentSnapshot):
    # One compiled function per Distiller structure ("initial" shares the SemBridge one).
    key = snapshot.run._replace(seed=0)
    if key not in self._predict_fns:
      self._predict_fns[key] = inference.make_predict_fn(snapshot.modeldef, _student_outputs,
                                                         sharding.make_mesh())
    return self._predict_fns[key]

  def student_features(self, snapshot: StudentSnapshot, split: str = "rgb_train") -> FeatureSet:
    """The student's outputs on ``split``.

    ``rgb_*`` splits: the RGB images. ``ms_*`` splits: the true-colour RGB renderings of
    the MS images (``data.rgb_bands``), i.e. the RGB view of the *same scenes* the
    teacher sees (the paired, SCKD setting).
    """
    is_ms = self.benchmark.is_ms(split)
    outputs = inference.predict_split(
        self._predict_fn(snapshot), snapshot.params, snapshot.model_state, self.benchmark, split,
        batch_size=self.config.eval_batch_size, normalization=self.config.data.normalization,
        mesh=sharding.make_mesh(), loader_kwargs={"with_rgb_rendering": True} if is_ms else None,
        image_key="rgb_rendering" if is_ms else "image")
    return FeatureSet(ids=outputs.ids, labels=outputs.labels,
                      pooled=np.asarray(outputs.outputs["pooled"], np.float32),
                      logits=np.asarray(outputs.outputs["logits"], np.float32))

  def teacher_features(self, snapshot: StudentSnapshot, rows: np.ndarray | None = None
                       ) -> np.ndarray:
    """Gallery pooled features (rows ``rows``, default all) in ``snapshot``'s alignment
    space; raises if no adapter brings them to the student's width."""
    pooled = np.asarray(self.gallery.pooled, np.float32)
    if rows is not None:
      pooled = pooled[np.asarray(rows)]
    distiller = snapshot.modeldef.merge(snapshot.params, snapshot.model_state, training=False)
    _, adapter = _pooled_adapters(distiller)
    if adapter is not None:
      pooled = np.asarray(adapter(jax.numpy.asarray(pooled)), np.float32)
    student_adapter, _ = _pooled_adapters(distiller)
    student_width = (distiller.student.embed_dim if student_adapter is None
                     else distiller.align.common_dim)
    if pooled.shape[-1] != student_width:
      raise ValueError(
          f"student {snapshot.name!r} has no alignment adapter and its pooled width "
          f"{student_width} differs from the teacher's {pooled.shape[-1]}: there is no common "
          "feature space to compare them in")
    return pooled

  def alignment_batch(self, snapshot: StudentSnapshot, features: FeatureSet | None = None, *,
                      pairing: Pairing | None = None, batch_size: int | None = None,
                      seed: int = 0) -> AlignmentBatch:
    """A random batch of ``rgb_train`` students (``distill.batch_size`` by default) and
    their teachers under ``pairing`` (default: `pairing_for` the snapshot), in the
    alignment space."""
    features = features or self.student_features(snapshot, "rgb_train")
    size = min(int(batch_size or self.config.distill.batch_size), len(features.ids))
    picked = np.sort(np.random.default_rng(seed).permutation(len(features.ids))[:size])
    rows = (pairing or self.pairing_for(snapshot)).lookup(features.ids[picked])
    return AlignmentBatch(
        student=features.pooled[picked], teacher=self.teacher_features(snapshot, rows),
        student_labels=features.labels[picked],
        teacher_labels=np.asarray(self.gallery.labels)[rows],
        student_ids=features.ids[picked], teacher_ids=np.asarray(self.gallery.ids)[rows])

  # -- images ----------------------------------------------------------------------------

  def raw_images(self, split: str, ids: np.ndarray) -> np.ndarray:
    """Stored images of records ``ids``: uint8 RGB or uint16 MS digital numbers."""
    return self.benchmark.reader(split).read(self.benchmark.index_of(split, np.asarray(ids)))
