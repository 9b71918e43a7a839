"""SFM part 1: training the self-supervised MS/RGB matcher (the ``train-matcher`` stage).

Each training pair is an MS train image and the true-colour rendering of its own bands,
brought to the RGB student's size and normalisation (METHOD section 2, step 1); no
labels enter the loss (`sembridge_jax.matching.matcher_loss`). The validation loss is
computed on held-out MS images (``ms_test`` with their renderings); the learning rate is
halved when it has not improved for ``plateau_patience`` epochs, and the best
checkpoint (lowest validation loss) is the one the ``match`` stage uses -- both of which
the authors' scheduler and checkpointing intended but never did.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import matching, sharding, workdir as workdir_lib
from sembridge_jax.train import checkpointing, classifier, inference, optimizers, trainer
from sembridge_jax.train.state import ModelDef, TrainState


def create_matcher(config: ml_collections.ConfigDict, benchmark: data_lib.Benchmark, seed: int
                   ) -> nnx.Module:
  make = lambda channels, offset: classifier.create_model(
      config, config.model.matcher, num_classes=benchmark.num_classes, in_channels=channels,
      seed=seed + offset)
  return matching.Matcher(ms_encoder=make(benchmark.ms_channels, 0), rgb_encoder=make(3, 1),
                          rngs=nnx.Rngs(seed + 2))


def make_matcher_loss(hparams: ml_collections.ConfigDict) -> trainer.LossFn:
  """`matching.matcher_loss` of the MS images and their own renderings (no labels)."""

  def loss_fn(model, batch, context):
    del context
    e_ms, e_rgb = model(batch["image"], batch["rgb_rendering"])
    return matching.matcher_loss(
        e_rgb, e_ms, hparams.temperature, detach_targets=hparams.detach_targets,
        normalize=hparams.normalize_embeddings,
        soft_target_weight=hparams.soft_target_weight), {}

  return loss_fn


def validation_evaluator(config: ml_collections.ConfigDict, benchmark: data_lib.Benchmark,
                         loss_fn: trainer.LossFn):
  """``make_evaluate`` of the matcher: the loss on fixed, full held-out batches (the
  contrastive loss depends on the batch), and the current learning rate."""
  hparams = config.matcher
  loader_options = rendering_options(config)

  def make_evaluate(modeldef: ModelDef, mesh: jax.sharding.Mesh):
    num_devices = mesh.devices.size
    held_out = len(benchmark.sources["ms_test"])
    # Smaller than the training batch if the held-out split is small.
    val_batch = min(hparams.batch_size, held_out // num_devices * num_devices)
    if val_batch < 2:
      raise ValueError("the held-out MS split is too small to validate the matcher "
                       f"({held_out} images for {num_devices} devices)")
    eval_step = jax.jit(
        lambda state, batch: loss_fn(modeldef.merge(state.params, state.model_state,
                                                    training=False), batch, None)[0],
        out_shardings=sharding.replicated(mesh))

    def evaluate(state: TrainState) -> dict[str, float]:
      losses = [float(eval_step(state, sharding.put_batch(batch, mesh)))
                for batch in data_lib.make_loader(
                    benchmark, "ms_test", batch_size=sharding.check_batch_size(val_batch, mesh),
                    seed=0, shuffle=False, num_epochs=1, drop_remainder=True,
                    normalization=config.data.normalization, **loader_options)]
      return {"val_loss": float(np.mean(losses)),
              "learning_rate": optimizers.get_learning_rate(state.opt_state)}

    return evaluate

  return make_evaluate


def rendering_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Loader options that add each MS image's own RGB rendering to the batch."""
  return {"with_rgb_rendering": True, "rendering_gamma": config.matcher.rendering_gamma}


class Plateau:
  """Halves (``factor``) the learning rate after ``patience`` epochs without improvement."""

  def __init__(self, patience: int, factor: float):
    self.patience, self.factor = patience, factor
    self.best, self.bad_epochs = float("inf"), 0

  def __call__(self, epoch: int, state: TrainState, eval_metrics: dict[str, float]) -> TrainState:
    value = eval_metrics.get("val_loss")
    if value is None:
      return state
    if value < self.best - 1e-6:
      self.best, self.bad_epochs = value, 0
      return state
    self.bad_epochs += 1
    if self.bad_epochs < self.patience:
      return state
    self.bad_epochs = 0
    new_lr = optimizers.get_learning_rate(state.opt_state) * self.factor
    if jax.process_index() == 0:
      print(f"[train-matcher] validation loss has not improved for {self.patience} epochs: "
            f"learning rate -> {new_lr:.3g}", flush=True)
    return state.replace(opt_state=optimizers.set_learning_rate(state.opt_state, new_lr))

  def get(self) -> dict[str, Any]:
    return {"best": self.best, "bad_epochs": self.bad_epochs}

  def set(self, saved: dict[str, Any]) -> None:
    self.best, self.bad_epochs = float(saved["best"]), int(saved["bad_epochs"])


def train_matcher(config: ml_collections.ConfigDict, rundir: pathlib.Path,
                  benchmark: data_lib.Benchmark, *, stop_after_steps: int | None = None
                  ) -> dict[str, Any]:
  """Trains the matcher in ``rundir``; the best checkpoint is the lowest validation loss."""
  hparams = config.matcher
  plateau = Plateau(hparams.plateau_patience, hparams.plateau_factor)
  loss_fn = make_matcher_loss(hparams)
  task = trainer.Task(
      name="matcher", model=create_matcher(config, benchmark, config.seed), loss_fn=loss_fn,
      hparams=hparams, split="ms_train",
      make_evaluate=validation_evaluator(config, benchmark, loss_fn),
      loader_options=dict(augment=bool(hparams.augment_rendering),
                          colour_jitter=hparams.rendering_colour_jitter,
                          random_camera=bool(hparams.rendering_random_camera),
                          **rendering_options(config)),
      hooks=trainer.Hooks(on_epoch_end=plateau, get_extras=plateau.get, set_extras=plateau.set),
      best=trainer.BestRule("val_loss", "min"), scheduled=False, config_key="matcher",
      suspects=(f"config.matcher.temperature={hparams.temperature}",))
  trained = trainer.train(task, config, rundir, benchmark, seed=config.seed,
                          stop_after_steps=stop_after_steps)
  return {"best_val_loss": trained.best["value"], "best_epoch": trained.best["epoch"],
          "seconds": trained.seconds}


def load_best_matcher(config: ml_collections.ConfigDict, rundir: pathlib.Path,
                      benchmark: data_lib.Benchmark) -> tuple[ModelDef, TrainState]:
  mesh = sharding.make_mesh()
  modeldef, template, _ = trainer.create_train_state(
      create_matcher(config, benchmark, config.seed), config.matcher.optimizer, mesh)
  restored = checkpointing.restore(workdir_lib.checkpoints(rundir), template, which="best",
                                   what="the matcher (`sembridge-jax train-matcher`)")
  return modeldef, sharding.put_replicated(restored.state, mesh)


def embed_splits(config: ml_collections.ConfigDict, rundir: pathlib.Path,
                 benchmark: data_lib.Benchmark):
  """Matcher embeddings (its best checkpoint in ``rundir``) of every MS train image and
  every RGB train image."""
  modeldef, state = load_best_matcher(config, rundir, benchmark)
  mesh = sharding.make_mesh()
  embed_ms = inference.make_predict_fn(modeldef, lambda m, x: {"embedding": m.embed_ms(x)}, mesh)
  embed_rgb = inference.make_predict_fn(modeldef, lambda m, x: {"embedding": m.embed_rgb(x)}, mesh)
  common = dict(batch_size=config.eval_batch_size, normalization=config.data.normalization, mesh=mesh)
  ms = inference.predict_split(embed_ms, state.params, state.model_state, benchmark, "ms_train", **common)
  rgb = inference.predict_split(embed_rgb, state.params, state.model_state, benchmark, "rgb_train",
                                **common)
  return ms, rgb
