"""Supervised training of one classifier: the MS teacher, or an RGB student trained alone.

A `sembridge_jax.train.trainer.Task` with a cross-entropy loss; everything else (the
sharded state, the jitted step, the loop, checkpoints, metrics) is the trainer's.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import models, sharding, workdir as workdir_lib
from sembridge_jax.train import (checkpointing, evaluation, metrics as metrics_lib,
                                 trainer)
from sembridge_jax.train.state import ModelDef, TrainState, masked_cross_entropy


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


def create_classifier(config: ml_collections.ConfigDict, role: Role,
                      benchmark: data_lib.Benchmark, seed: int) -> nnx.Module:
  return create_model(config, config.model[role.model_key], num_classes=benchmark.num_classes,
                      in_channels=in_channels_for(role.train_split, benchmark), seed=seed)


def cross_entropy_loss(model: nnx.Module, batch: dict[str, jax.Array],
                       context: trainer.StepContext) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Masked cross-entropy, and the batch accuracy for the log."""
  del context
  logits, _ = model(batch["image"])
  loss = masked_cross_entropy(logits, batch["label"], batch["mask"])
  accuracy = ((logits.argmax(-1) == batch["label"]) * batch["mask"]).sum() / jnp.maximum(
      batch["mask"].sum(), 1)
  return loss, {"accuracy": accuracy}


class TrainResult(NamedTuple):
  metrics: metrics_lib.ClassificationMetrics
  state: TrainState
  modeldef: ModelDef
  seconds: float


def train_and_evaluate(config: ml_collections.ConfigDict, rundir: str | pathlib.Path,
                       role_name: str, *, seed: int | None = None,
                       benchmark: data_lib.Benchmark | None = None,
                       stop_after_steps: int | None = None) -> TrainResult:
  """Trains the teacher (``role_name="teacher"``) or a student alone (``"student"``).

  Writes ``metrics.jsonl``, TensorBoard events, checkpoints and ``test_metrics.json``
  (OA, macro precision/recall/F1, confusion matrix) under ``rundir``; resumes from the
  latest checkpoint there if one exists.
  """
  role = ROLES[role_name]
  seed = config.seed if seed is None else seed
  rundir = pathlib.Path(rundir)
  benchmark = benchmark or data_lib.load_benchmark(config.data, data_dir=config.data.data_dir)
  hparams = config[role.hparams_key]
  evaluator = evaluation.ClassificationEvaluator(benchmark, role.test_split, config)
  task = trainer.Task(
      name=f"{role_name} (seed {seed})", model=create_classifier(config, role, benchmark, seed),
      loss_fn=cross_entropy_loss, hparams=hparams, split=role.train_split,
      make_evaluate=evaluator, loader_options={"augment": bool(hparams.get("augment", False))},
      config_key=role.hparams_key)
  trained = trainer.train(task, config, rundir, benchmark, seed=seed,
                          stop_after_steps=stop_after_steps)
  test_metrics = evaluator.finish(trained.state, rundir, seconds=trained.seconds,
                                  history=trained.history, label=task.name)
  return TrainResult(test_metrics, trained.state, trained.modeldef, trained.seconds)


def load_trained(config: ml_collections.ConfigDict, rundir: str | pathlib.Path, role_name: str,
                 benchmark: data_lib.Benchmark, *, seed: int | None = None
                 ) -> tuple[ModelDef, TrainState]:
  """The final (latest) TrainState of a finished `train_and_evaluate` run in ``rundir``."""
  role = ROLES[role_name]
  seed = config.seed if seed is None else seed
  mesh = sharding.make_mesh()
  modeldef, template, _ = trainer.create_train_state(
      create_classifier(config, role, benchmark, seed), config[role.hparams_key].optimizer, mesh)
  restored = checkpointing.restore(workdir_lib.checkpoints(pathlib.Path(rundir)), template,
                                   what=f"the {role_name} (`sembridge-jax train-{role_name}`)")
  return modeldef, sharding.put_replicated(restored.state, mesh)
