"""Training an RGB student from its matched MS teachers: a task of the one trainer.

Two ways to run a distillation method (`sembridge_jax.distill.losses`):

* **alone** (``sembridge=False``): ``ce * CE + distill * D`` with the method's own
  weights and random same-class teacher pairs, fixed for the run (SCKD practice);
* **under SemBridge** (``sembridge=True``): SFM pairs from the ``match`` stage,
  re-matched by KL at the scheduled epochs (or per batch in ``step`` mode), plus the
  ALIGN terms; the method's term takes KD's place in ``0.3 CE + 0.4 D + 0.3 ALIGN``.

Ablations are config switches: ``distill.use_sfm=False`` (random same-class pairs),
``distill.use_ot=False``, ``distill.use_attention=False`` (no CORAL terms).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from sembridge_jax import matching, sharding, workdir as workdir_lib
from sembridge_jax.alignment import AlignmentHead
from sembridge_jax.distill import methods
from sembridge_jax.distill.gallery import Gallery
from sembridge_jax.distill.step import (Distiller, LossWeights, StepOptions,
                                        make_distillation_loss, student_logits)
from sembridge_jax.runs import Run
from sembridge_jax.train import classifier, evaluation, inference, trainer
from sembridge_jax.train.state import TrainState


def random_same_class_pairs(student_labels: np.ndarray, gallery_labels: np.ndarray,
                            seed: int) -> np.ndarray:
  """Gallery rows: for each student, a uniformly random teacher of its class."""
  matching.check_class_coverage(student_labels, gallery_labels)
  rng = np.random.default_rng(seed)
  rows = np.empty(len(student_labels), np.int32)
  for label in np.unique(student_labels):
    candidates = np.flatnonzero(gallery_labels == label)
    students = np.flatnonzero(student_labels == label)
    rows[students] = rng.choice(candidates, size=len(students))
  return rows


class Pairing:
  """Student record id -> gallery row, replaceable between epochs (checkpointed)."""

  def __init__(self, student_ids: np.ndarray, rows: np.ndarray):
    order = np.argsort(student_ids)
    self.student_ids = np.asarray(student_ids)[order]
    self.rows = np.asarray(rows, np.int32)[order]

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    position = np.searchsorted(self.student_ids, ids)
    position = np.clip(position, 0, len(self.student_ids) - 1)
    if not np.array_equal(self.student_ids[position], ids):
      raise KeyError("student ids without a matched teacher in the pair table")
    return self.rows[position]

  def get(self) -> dict[str, Any]:
    return {"student_ids": self.student_ids.tolist(), "rows": self.rows.tolist()}

  def set(self, saved: dict[str, Any]) -> None:
    self.__init__(np.asarray(saved["student_ids"]), np.asarray(saved["rows"]))


def load_initial_pairs(path: pathlib.Path, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
  """(student ids, gallery rows) of the SFM pair table written by the ``match`` stage."""
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: run `sembridge-jax match` first")
  with np.load(path) as pairs:
    return pairs["student_id"], gallery.rows_for(pairs["teacher_id"])


def create_distiller(config: ml_collections.ConfigDict, run: Run, benchmark, gallery: Gallery,
                     seed: int) -> Distiller:
  student = classifier.create_model(config, config.model.student, num_classes=benchmark.num_classes,
                                    in_channels=3, seed=seed)
  rngs = nnx.Rngs(seed + 1000)
  align = None
  if run.sembridge and (config.distill.use_attention or config.distill.use_ot):
    align = AlignmentHead(teacher_token_dim=gallery.tokens.shape[-1],
                          student_token_dim=student.token_dim,
                          teacher_pooled_dim=gallery.pooled.shape[-1],
                          student_pooled_dim=student.embed_dim,
                          common_dim=config.distill.common_dim, num_heads=config.distill.num_heads,
                          rngs=rngs)
  method = methods.get_method(run.method)
  method_state = method.make_state(rngs) if method.make_state else None
  return Distiller(student, align, method_state)


def step_options(config: ml_collections.ConfigDict, run: Run, steps_per_epoch: int
                 ) -> StepOptions:
  d = config.distill
  method = methods.get_method(run.method)
  if run.sembridge:
    weights = LossWeights(d.ce_weight, d.kd_weight, d.align_weight)
  else:
    weights = LossWeights(method.ce_weight, method.distill_weight, 0.0)
  return StepOptions(
      method=run.method, weights=weights,
      select_in_step=run.sembridge and d.use_sfm and config.matching.mode == "step",
      rematch_temperature=config.matching.temperature, steps_per_epoch=steps_per_epoch,
      kd_temperature=d.temperature,
      align_kwargs=dict(coral_weight=d.coral_weight, ot_weight=d.ot_weight, epsilon=d.epsilon,
                        semantic_weight=d.semantic_weight, use_attention=d.use_attention,
                        use_ot=d.use_ot, sinkhorn_iterations=d.sinkhorn_iterations,
                        sinkhorn_threshold=d.sinkhorn_threshold))


def initial_pairing(config: ml_collections.ConfigDict, run: Run, benchmark, gallery: Gallery,
                    pairs_path: pathlib.Path) -> Pairing:
  """SFM pairs under SemBridge (unless ``distill.use_sfm=False``), else random
  same-class pairs drawn with the run's seed."""
  if run.sembridge and config.distill.use_sfm:
    return Pairing(*load_initial_pairs(pairs_path, gallery))
  return Pairing(benchmark.ids("rgb_train"), random_same_class_pairs(
      benchmark.labels("rgb_train"), np.asarray(gallery.labels), run.seed))


def distill(config: ml_collections.ConfigDict, benchmark, gallery: Gallery, run: Run, *,
            rundir: pathlib.Path, pairs_path: pathlib.Path,
            stop_after_steps: int | None = None) -> dict[str, Any]:
  """Trains one student in ``rundir``; returns its RGB test metrics. Resumes if
  interrupted. ``pairs_path`` is the SFM pair table (``match`` stage)."""
  hparams = config.distill
  steps = trainer.steps_per_epoch(benchmark, "rgb_train", hparams.batch_size)
  options = step_options(config, run, steps)
  pairing = initial_pairing(config, run, benchmark, gallery, pairs_path)
  rematch_epochs = set(config.matching.rematch_epochs) if (
      run.sembridge and config.distill.use_sfm and config.matching.mode == "epochs") else set()

  def prepare_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, "teacher_row": pairing.lookup(batch["id"])}

  def on_epoch_start(epoch: int, current: TrainState, modeldef) -> TrainState:
    if epoch in rematch_epochs:
      rows, report = rematch_students(config, modeldef, current, benchmark, gallery)
      pairing.set({"student_ids": report["student_ids"], "rows": rows})
      if jax.process_index() == 0:
        matching.write_match_report(report["report"], workdir_lib.rematch_reports(rundir),
                                    f"rematch_epoch_{epoch}")
        tqdm_write(f"[{run.name}] re-matched at epoch {epoch}: "
                   + matching.format_match_report(report["report"]).replace("\n", "; "))
    return current

  evaluator = evaluation.ClassificationEvaluator(benchmark, "rgb_test", config, student_logits)
  gallery_dtype = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}[config.matching.gallery_dtype]
  task = trainer.Task(
      name=f"{run.name} (seed {run.seed})",
      model=create_distiller(config, run, benchmark, gallery, run.seed),
      loss_fn=make_distillation_loss(options), hparams=hparams, split="rgb_train",
      make_evaluate=evaluator, loader_options={"augment": bool(hparams.augment)},
      constants=gallery.astype(gallery_dtype),
      hooks=trainer.Hooks(prepare_batch=prepare_batch, on_epoch_start=on_epoch_start,
                          get_extras=pairing.get, set_extras=pairing.set),
      config_key="distill", suspects=divergence_suspects(config, run))
  trained = trainer.train(task, config, rundir, benchmark, seed=run.seed,
                          stop_after_steps=stop_after_steps)
  test_metrics = evaluator.finish(trained.state, rundir, seconds=trained.seconds,
                                  history=trained.history, label=task.name)
  return {**test_metrics.as_dict(), "seconds": trained.seconds, "state": trained.state,
          "modeldef": trained.modeldef}


def divergence_suspects(config: ml_collections.ConfigDict, run: Run) -> tuple[str, ...]:
  """The distillation settings a non-finite loss most likely comes from."""
  d = config.distill
  keys = (["temperature"] if run.method == "kd" else []) + (["ce_weight", "kd_weight", "align_weight", "coral_weight",
                             "ot_weight", "epsilon", "semantic_weight"] if run.sembridge else [])
  return tuple(f"config.distill.{key}={d[key]}" for key in keys)


def tqdm_write(message: str) -> None:
  from tqdm.auto import tqdm
  tqdm.write(message)


def rematch_students(config, modeldef, state: TrainState, benchmark, gallery: Gallery):
  """SFM part 3 for the whole student set: one batched forward pass + `rematch_by_kl`."""
  mesh = sharding.make_mesh()
  predict = inference.make_predict_fn(modeldef, lambda m, x: {"logits": student_logits(m, x)}, mesh)
  students = inference.predict_split(predict, state.params, state.model_state, benchmark, "rgb_train",
                                     batch_size=config.eval_batch_size,
                                     normalization=config.data.normalization, mesh=mesh)
  selection = matching.rematch_by_kl_with_divergences(
      students.outputs["logits"], np.asarray(gallery.logits, np.float32), students.labels,
      np.asarray(gallery.labels), temperature=config.matching.temperature,
      student_chunk_size=config.matching.chunk_size, mesh=mesh)
  rows = np.asarray(selection.indices).reshape(-1)
  report = matching.match_report(np.asarray(selection.divergences), rows, gallery.size,
                                 score_name="KL(teacher || student)")
  return rows, {"student_ids": students.ids, "report": report}
