"""The ``distill`` stage: training an RGB student from its matched MS teachers.

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

import json
import pathlib
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import matching
from sembridge_jax.alignment import AlignmentHead
from sembridge_jax.distill import losses
from sembridge_jax.distill.gallery import Gallery
from sembridge_jax.distill.step import Distiller, LossWeights, StepOptions, make_train_step, student_logits
from sembridge_jax.train import (checkpointing, classifier, inference, loop, metrics as metrics_lib,
                                 optimizers, sharding)
from sembridge_jax.train.state import TrainState, split_model


class DistillRun(NamedTuple):
  """One cell of the comparison: a method, alone or under SemBridge."""
  method: str
  sembridge: bool

  @property
  def name(self) -> str:
    return f"{self.method}+sembridge" if self.sembridge else self.method


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


def pairs_path(workdir: pathlib.Path) -> pathlib.Path:
  return workdir / "matching" / "pairs.npz"


def load_initial_pairs(path: pathlib.Path, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: run `sembridge-jax match` first")
  with np.load(path) as pairs:
    return pairs["student_id"], gallery.rows_for(pairs["teacher_id"])


def create_distiller(config: ml_collections.ConfigDict, run: DistillRun, benchmark, gallery: Gallery,
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
  method = losses.get_method(run.method)
  method_state = method.make_state(rngs) if method.make_state else None
  return Distiller(student, align, method_state)


def step_options(config: ml_collections.ConfigDict, run: DistillRun, steps_per_epoch: int
                 ) -> StepOptions:
  d = config.distill
  method = losses.get_method(run.method)
  if run.sembridge:
    weights = LossWeights(d.ce_weight, d.kd_weight, d.align_weight)
  else:
    weights = LossWeights(method.ce_weight, method.distill_weight, 0.0)
  return StepOptions(
      method=run.method, weights=weights,
      select_in_step=run.sembridge and d.use_sfm and config.matching.mode == "step",
      rematch_temperature=config.matching.temperature, steps_per_epoch=steps_per_epoch,
      align_kwargs=dict(coral_weight=d.coral_weight, ot_weight=d.ot_weight, epsilon=d.epsilon,
                        semantic_weight=d.semantic_weight, use_attention=d.use_attention,
                        use_ot=d.use_ot, sinkhorn_iterations=d.sinkhorn_iterations,
                        sinkhorn_threshold=d.sinkhorn_threshold))


def distill(config: ml_collections.ConfigDict, workdir: pathlib.Path, benchmark, gallery: Gallery,
            run: DistillRun, *, seed: int, rundir: pathlib.Path | None = None,
            stop_after_steps: int | None = None) -> dict[str, Any]:
  """Trains one student; returns its RGB test metrics. Resumes if interrupted.

  ``workdir`` holds the SFM pair table (``matching/pairs.npz``); the run's own outputs go
  to ``rundir`` (default ``workdir/distill/<run>/seed_<seed>``).
  """
  rundir = rundir or workdir / "distill" / run.name / f"seed_{seed}"
  hparams = config.distill
  mesh = sharding.make_mesh()
  per_host_batch = sharding.check_batch_size(hparams.batch_size, mesh)
  steps = classifier.steps_per_epoch(benchmark, "rgb_train", hparams.batch_size)
  options = step_options(config, run, steps)

  modeldef, params, model_state = split_model(create_distiller(config, run, benchmark, gallery, seed))
  tx = optimizers.make_optimizer(hparams.optimizer, steps * hparams.epochs)
  state = sharding.put_replicated(TrainState.create(params, model_state, tx), mesh)
  gallery_dtype = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}[config.matching.gallery_dtype]
  device_gallery = sharding.put_replicated(gallery.astype(gallery_dtype), mesh)
  jitted = make_train_step(modeldef, tx, mesh, options)
  train_step = lambda current, batch: jitted(current, batch, device_gallery)
  eval_step = classifier.make_eval_step(modeldef, benchmark.num_classes, mesh,
                                        logits_fn=student_logits)

  student_ids = benchmark.ids("rgb_train")
  if run.sembridge and config.distill.use_sfm:
    pair_ids, pair_rows = load_initial_pairs(pairs_path(workdir), gallery)
  else:
    labels = benchmark.labels("rgb_train")
    pair_ids, pair_rows = student_ids, random_same_class_pairs(labels, np.asarray(gallery.labels), seed)
  pairing = Pairing(pair_ids, pair_rows)
  rematch_epochs = set(config.matching.rematch_epochs) if (
      run.sembridge and config.distill.use_sfm and config.matching.mode == "epochs") else set()

  def prepare_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch = dict(batch)
    batch["teacher_row"] = pairing.lookup(batch["id"])
    return batch

  def on_epoch_start(epoch: int, current: TrainState) -> TrainState:
    if epoch in rematch_epochs:
      rows, report = rematch_students(config, modeldef, current, benchmark, gallery, mesh)
      pairing.set({"student_ids": report["student_ids"], "rows": rows})
      if jax.process_index() == 0:
        matching.write_match_report(report["report"], rundir / "matching", f"rematch_epoch_{epoch}")
        loop_print(f"[{run.name}] re-matched at epoch {epoch}: "
                   + matching.format_match_report(report["report"]).replace("\n", "; "))
    return current

  def evaluate_fn(current: TrainState) -> dict[str, float]:
    test_metrics, test_loss = classifier.evaluate(eval_step, current, benchmark, "rgb_test", config, mesh)
    return {"loss": test_loss, **test_metrics.as_dict()}

  iterator = iter(data_lib.make_loader(
      benchmark, "rgb_train", batch_size=per_host_batch, seed=seed, shuffle=True,
      num_epochs=hparams.epochs, drop_remainder=True, normalization=config.data.normalization,
      augment=bool(hparams.augment)))
  checkpointer = checkpointing.Checkpointer(rundir / "checkpoints", max_to_keep=config.checkpoint.max_to_keep)
  writer = metrics_lib.MetricWriter(rundir, "metrics")
  try:
    result = loop.fit(
        state=state, train_step=train_step, iterator=iterator, evaluate=evaluate_fn, mesh=mesh,
        num_epochs=hparams.epochs, steps_per_epoch=steps, global_batch_size=hparams.batch_size,
        checkpointer=checkpointer, writer=writer, checkpoint_every_steps=config.checkpoint.every_steps,
        hooks=loop.LoopHooks(prepare_batch=prepare_batch, on_epoch_start=on_epoch_start,
                             get_extras=pairing.get, set_extras=pairing.set),
        desc=f"{run.name} (seed {seed})", progress=config.progress, stop_after_steps=stop_after_steps)
  finally:
    writer.close()
    checkpointer.close()
  test_metrics, _ = classifier.evaluate(eval_step, result.state, benchmark, "rgb_test", config, mesh)
  classifier.write_test_metrics(rundir / "test_metrics.json", test_metrics, benchmark.class_names,
                                seconds=result.seconds)
  return {**test_metrics.as_dict(), "seconds": result.seconds, "state": result.state,
          "modeldef": modeldef}


def loop_print(message: str) -> None:
  from tqdm.auto import tqdm
  tqdm.write(message)


def rematch_students(config, modeldef, state: TrainState, benchmark, gallery: Gallery, mesh):
  """SFM part 3 for the whole student set: one batched forward pass + `rematch_by_kl`."""
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
