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
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import matching
from sembridge_jax.train import checkpointing, classifier, loop, metrics as metrics_lib, optimizers, sharding
from sembridge_jax.train.state import ModelDef, TrainState, model_state_after, split_model


def create_matcher(config: ml_collections.ConfigDict, benchmark: data_lib.Benchmark, seed: int
                   ) -> nnx.Module:
  make = lambda channels, offset: classifier.create_model(
      config, config.model.matcher, num_classes=benchmark.num_classes, in_channels=channels,
      seed=seed + offset)
  return matching.Matcher(ms_encoder=make(benchmark.ms_channels, 0), rgb_encoder=make(3, 1),
                          rngs=nnx.Rngs(seed + 2))


def make_steps(modeldef: ModelDef, tx: optax.GradientTransformation, temperature: float,
               mesh: jax.sharding.Mesh, *, detach_targets: bool = True, normalize: bool = True,
               soft_target_weight: float = 0.5):
  """Jitted train and validation steps of the matcher."""

  def loss_of(model, batch):
    e_ms, e_rgb = model(batch["image"], batch["rgb_rendering"])
    return matching.matcher_loss(e_rgb, e_ms, temperature, detach_targets=detach_targets,
                                 normalize=normalize, soft_target_weight=soft_target_weight)

  def train_step(state: TrainState, batch):
    def loss_fn(params):
      model = modeldef.merge(params, state.model_state, training=True)
      return loss_of(model, batch), model_state_after(model)

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, tx, model_state), {"loss": loss}

  def eval_step(state: TrainState, batch):
    return loss_of(modeldef.merge(state.params, state.model_state, training=False), batch)

  replicated = sharding.replicated(mesh)
  return (jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=0),
          jax.jit(eval_step, out_shardings=replicated))


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


def train_matcher(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  benchmark: data_lib.Benchmark, *, stop_after_steps: int | None = None
                  ) -> dict[str, Any]:
  hparams = config.matcher
  mesh = sharding.make_mesh()
  modeldef, params, model_state = split_model(create_matcher(config, benchmark, config.seed))
  tx = optimizers.make_optimizer(hparams.optimizer)
  state = sharding.put_replicated(TrainState.create(params, model_state, tx), mesh)
  train_step, eval_step = make_steps(modeldef, tx, hparams.temperature, mesh,
                                     detach_targets=hparams.detach_targets,
                                     normalize=hparams.normalize_embeddings,
                                     soft_target_weight=hparams.soft_target_weight)
  loader_kwargs = dict(normalization=config.data.normalization, with_rgb_rendering=True,
                       rendering_gamma=config.matcher.rendering_gamma)
  per_host_batch = sharding.check_batch_size(hparams.batch_size, mesh)
  iterator = iter(data_lib.make_loader(
      benchmark, "ms_train", batch_size=per_host_batch, seed=config.seed, shuffle=True,
      num_epochs=hparams.epochs, drop_remainder=True,
      augment=bool(hparams.augment_rendering), colour_jitter=hparams.rendering_colour_jitter,
      random_camera=bool(hparams.rendering_random_camera),
      **loader_kwargs))

  # The contrastive loss depends on the batch: validate on fixed, full batches (smaller
  # than the training batch if the held-out split is small).
  num_devices = mesh.devices.size
  val_batch = min(hparams.batch_size, len(benchmark.sources["ms_test"]) // num_devices * num_devices)
  if val_batch < 2:
    raise ValueError("the held-out MS split is too small to validate the matcher "
                     f"({len(benchmark.sources['ms_test'])} images for {num_devices} devices)")

  def validate(current: TrainState) -> dict[str, float]:
    losses = [float(eval_step(current, sharding.put_batch(batch, mesh)))
              for batch in data_lib.make_loader(
                  benchmark, "ms_test", batch_size=sharding.check_batch_size(val_batch, mesh),
                  seed=0, shuffle=False,
                  num_epochs=1, drop_remainder=True, **loader_kwargs)]
    return {"val_loss": float(np.mean(losses)),
            "learning_rate": optimizers.get_learning_rate(current.opt_state)}

  plateau = Plateau(hparams.plateau_patience, hparams.plateau_factor)
  checkpointer = checkpointing.Checkpointer(workdir / "matcher" / "checkpoints",
                                            max_to_keep=config.checkpoint.max_to_keep)
  writer = metrics_lib.MetricWriter(workdir / "matcher", "metrics")
  try:
    result = loop.fit(
        state=state, train_step=train_step, iterator=iterator, evaluate=validate, mesh=mesh,
        num_epochs=hparams.epochs,
        steps_per_epoch=classifier.steps_per_epoch(benchmark, "ms_train", hparams.batch_size),
        global_batch_size=hparams.batch_size, checkpointer=checkpointer, writer=writer,
        best_metric="val_loss", best_mode="min",
        checkpoint_every_steps=config.checkpoint.every_steps, desc="matcher",
        hooks=loop.LoopHooks(on_epoch_end=plateau, get_extras=plateau.get, set_extras=plateau.set),
        progress=config.progress, stop_after_steps=stop_after_steps)
  finally:
    writer.close()
    checkpointer.close()
  return {"best_val_loss": result.best["value"], "best_epoch": result.best["epoch"],
          "seconds": result.seconds}


def load_best_matcher(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                      benchmark: data_lib.Benchmark) -> tuple[ModelDef, TrainState]:
  mesh = sharding.make_mesh()
  modeldef, params, model_state = split_model(create_matcher(config, benchmark, config.seed))
  template = TrainState.create(params, model_state, optimizers.make_optimizer(config.matcher.optimizer))
  checkpointer = checkpointing.Checkpointer(workdir / "matcher" / "checkpoints")
  try:
    restored = checkpointer.restore_best(template)
  except FileNotFoundError as error:
    raise FileNotFoundError(f"{error} (`sembridge-jax train-matcher`)") from None
  finally:
    checkpointer.close()
  return modeldef, sharding.put_replicated(restored.state, mesh)


def embed_splits(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                 benchmark: data_lib.Benchmark):
  """Matcher embeddings of every MS train image and every RGB train image."""
  from sembridge_jax.train import inference
  modeldef, state = load_best_matcher(config, workdir, benchmark)
  mesh = sharding.make_mesh()
  embed_ms = inference.make_predict_fn(modeldef, lambda m, x: {"embedding": m.embed_ms(x)}, mesh)
  embed_rgb = inference.make_predict_fn(modeldef, lambda m, x: {"embedding": m.embed_rgb(x)}, mesh)
  common = dict(batch_size=config.eval_batch_size, normalization=config.data.normalization, mesh=mesh)
  ms = inference.predict_split(embed_ms, state.params, state.model_state, benchmark, "ms_train", **common)
  rgb = inference.predict_split(embed_rgb, state.params, state.model_state, benchmark, "rgb_train",
                                **common)
  return ms, rgb
