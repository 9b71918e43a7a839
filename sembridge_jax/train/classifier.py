"""Supervised training of one classifier: the MS teacher, or an RGB student trained alone.

This is the generic trainer of the project (Flax-examples style):
`create_train_state`, `make_train_step`, `make_eval_step`, `evaluate` and
`train_and_evaluate`. Steps are jitted and data-parallel over every device of a 1-D
mesh (see `sembridge_jax.train.sharding`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import models
from sembridge_jax.train import checkpointing, loop, metrics as metrics_lib, optimizers, sharding
from sembridge_jax.train.state import ModelDef, TrainState, masked_cross_entropy, model_state_after, split_model


class Role(NamedTuple):
  """What a trained classifier sees: its modality, its splits and its config keys."""
  name: str
  train_split: str
  test_split: str
  model_key: str     # key under config.model naming the architecture
  hparams_key: str   # key of the config section with epochs, batch_size, optimizer


ROLES: dict[str, Role] = {
    "teacher": Role("teacher", "ms_train", "ms_test", "teacher", "teacher"),
    "student": Role("student", "rgb_train", "rgb_test", "student", "student"),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def in_channels_for(split: str, benchmark: data_lib.Benchmark) -> int:
  return benchmark.ms_channels if split.startswith("ms") else 3


def create_model(config: ml_collections.ConfigDict, name: str, *, num_classes: int,
                 in_channels: int, seed: int) -> nnx.Module:
  """Builds a zoo model with the compute dtype and conv implementation of the config."""
  return models.create_model(name, num_classes=num_classes, in_channels=in_channels,
                             rngs=nnx.Rngs(seed), dtype=DTYPES[config.model.dtype],
                             conv_impl=config.model.conv_impl)


def create_train_state(config: ml_collections.ConfigDict, role: Role, benchmark: data_lib.Benchmark,
                       mesh: jax.sharding.Mesh, seed: int, total_steps: int = 0
                       ) -> tuple[ModelDef, TrainState, optax.GradientTransformation]:
  hparams = config[role.hparams_key]
  model = create_model(config, config.model[role.model_key], num_classes=benchmark.num_classes,
                       in_channels=in_channels_for(role.train_split, benchmark), seed=seed)
  modeldef, params, model_state = split_model(model)
  tx = optimizers.make_optimizer(hparams.optimizer, total_steps)
  state = TrainState.create(params, model_state, tx)
  return modeldef, sharding.put_replicated(state, mesh), tx


def make_train_step(modeldef: ModelDef, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh):
  """A jitted step: cross-entropy, one optimizer update; state replicated, batch sharded."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    def loss_fn(params):
      model = modeldef.merge(params, state.model_state, training=True)
      logits, _ = model(batch["image"])
      loss = masked_cross_entropy(logits, batch["label"], batch["mask"])
      return loss, (logits, model_state_after(model))

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = ((logits.argmax(-1) == batch["label"]) * batch["mask"]).sum() / jnp.maximum(
        batch["mask"].sum(), 1)
    return state.apply_gradients(grads, tx, model_state), {"loss": loss, "accuracy": accuracy}

  replicated = sharding.replicated(mesh)
  return jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=0)


def classifier_logits(model: nnx.Module, images: jax.Array) -> jax.Array:
  return model(images)[0]


def make_eval_step(modeldef: ModelDef, num_classes: int, mesh: jax.sharding.Mesh,
                   logits_fn: Callable[[nnx.Module, jax.Array], jax.Array] = classifier_logits):
  """A jitted step returning the summed loss, the count and the confusion matrix.

  ``logits_fn(module, images)`` picks the classifier out of the merged module (the
  distillation stage evaluates the student inside its student+alignment container).
  """

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    model = modeldef.merge(state.params, state.model_state, training=False)
    logits = logits_fn(model, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    mask = batch["mask"]
    confusion = metrics_lib.confusion_matrix(batch["label"], logits.argmax(-1), mask, num_classes)
    return (losses * mask).sum(), mask.sum(), confusion

  return jax.jit(eval_step, out_shardings=sharding.replicated(mesh))


def evaluate(eval_step, state: TrainState, benchmark: data_lib.Benchmark, split: str,
             config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
             ) -> tuple[metrics_lib.ClassificationMetrics, float]:
  """Metrics of ``state`` on a whole split (padded last batch masked out)."""
  loader = data_lib.make_loader(
      benchmark, split, batch_size=sharding.check_batch_size(config.eval_batch_size, mesh),
      seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
      normalization=config.data.normalization)
  loss_sum, count = 0.0, 0
  confusion = np.zeros((benchmark.num_classes,) * 2, np.int64)
  for batch in loader:
    batch_loss, batch_count, batch_confusion = eval_step(state, sharding.put_batch(batch, mesh))
    loss_sum += float(batch_loss)
    count += int(batch_count)
    confusion += np.asarray(batch_confusion)
  return metrics_lib.metrics_from_confusion(confusion), loss_sum / max(count, 1)


def steps_per_epoch(benchmark: data_lib.Benchmark, split: str, global_batch_size: int) -> int:
  num_records = len(benchmark.sources[split])
  if num_records < global_batch_size:
    raise ValueError(f"split {split!r} has {num_records} records, fewer than batch_size="
                     f"{global_batch_size}; lower the batch size")
  return num_records // global_batch_size


class TrainResult(NamedTuple):
  metrics: metrics_lib.ClassificationMetrics
  state: TrainState
  modeldef: ModelDef
  seconds: float


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       role_name: str, *, seed: int | None = None,
                       benchmark: data_lib.Benchmark | None = None,
                       stop_after_steps: int | None = None) -> TrainResult:
  """Trains the teacher (``role_name="teacher"``) or a student alone (``"student"``).

  Writes ``metrics.jsonl``, TensorBoard events, checkpoints and ``test_metrics.json``
  (OA, macro precision/recall/F1, confusion matrix) under ``workdir``. Resumes from the
  latest checkpoint there if one exists.
  """
  role = ROLES[role_name]
  seed = config.seed if seed is None else seed
  workdir = pathlib.Path(workdir)
  benchmark = benchmark or data_lib.load_benchmark(config.data, data_dir=config.data.data_dir)
  mesh = sharding.make_mesh()
  hparams = config[role.hparams_key]
  per_host_batch = sharding.check_batch_size(hparams.batch_size, mesh)

  steps = steps_per_epoch(benchmark, role.train_split, hparams.batch_size)
  modeldef, state, tx = create_train_state(config, role, benchmark, mesh, seed,
                                           total_steps=steps * hparams.epochs)
  train_step = make_train_step(modeldef, tx, mesh)
  eval_step = make_eval_step(modeldef, benchmark.num_classes, mesh)
  iterator = iter(data_lib.make_loader(
      benchmark, role.train_split, batch_size=per_host_batch, seed=seed, shuffle=True,
      num_epochs=hparams.epochs, drop_remainder=True, normalization=config.data.normalization,
      augment=bool(hparams.get("augment", False))))

  def evaluate_fn(current: TrainState) -> dict[str, float]:
    test_metrics, test_loss = evaluate(eval_step, current, benchmark, role.test_split, config, mesh)
    return {"loss": test_loss, **test_metrics.as_dict()}

  checkpointer = checkpointing.Checkpointer(workdir / "checkpoints",
                                            max_to_keep=config.checkpoint.max_to_keep)
  writer = metrics_lib.MetricWriter(workdir, "metrics")
  try:
    result = loop.fit(
        state=state, train_step=train_step, iterator=iterator, evaluate=evaluate_fn, mesh=mesh,
        num_epochs=hparams.epochs, steps_per_epoch=steps,
        global_batch_size=hparams.batch_size, checkpointer=checkpointer, writer=writer,
        checkpoint_every_steps=config.checkpoint.every_steps, desc=f"{role_name} (seed {seed})",
        progress=config.progress, stop_after_steps=stop_after_steps)
  finally:
    writer.close()
    checkpointer.close()
  test_metrics, _ = evaluate(eval_step, result.state, benchmark, role.test_split, config, mesh)
  write_test_metrics(workdir / "test_metrics.json", test_metrics, benchmark.class_names,
                     seconds=result.seconds)
  return TrainResult(test_metrics, result.state, modeldef, result.seconds)


def write_test_metrics(path: pathlib.Path, test_metrics: metrics_lib.ClassificationMetrics,
                       class_names: list[str], **extra: Any) -> None:
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({**test_metrics.as_dict(), "class_names": list(class_names),
                              "confusion": test_metrics.confusion.tolist(), **extra}, indent=2))


def load_trained(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, role_name: str,
                 benchmark: data_lib.Benchmark, *, seed: int | None = None
                 ) -> tuple[ModelDef, TrainState]:
  """The final (latest) TrainState of a finished ``train_and_evaluate`` run in ``workdir``."""
  role = ROLES[role_name]
  seed = config.seed if seed is None else seed
  mesh = sharding.make_mesh()
  modeldef, template, _ = create_train_state(config, role, benchmark, mesh, seed)
  checkpointer = checkpointing.Checkpointer(pathlib.Path(workdir) / "checkpoints")
  try:
    restored = checkpointer.restore_latest(template)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no {role_name} checkpoint under {workdir}: run "
                            f"`sembridge-jax train-{role_name}` first")
  return modeldef, sharding.put_replicated(restored.state, mesh)
