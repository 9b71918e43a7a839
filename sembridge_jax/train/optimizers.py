"""Optimizers by name, from the config (a registry, not an if-chain)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": lambda learning_rate, weight_decay: optax.adam(learning_rate)
    if not weight_decay else optax.chain(optax.add_decayed_weights(weight_decay),
                                         optax.adam(learning_rate)),
    "adamw": lambda learning_rate, weight_decay: optax.adamw(learning_rate,
                                                             weight_decay=weight_decay),
    "sgd": lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=0.9)),
}


SCHEDULES: dict[str, Callable[[float, int], optax.ScalarOrSchedule]] = {
    "constant": lambda learning_rate, total_steps: learning_rate,
    "cosine": lambda learning_rate, total_steps: optax.cosine_decay_schedule(
        learning_rate, decay_steps=max(total_steps, 1)),
}


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int = 0
                   ) -> optax.GradientTransformation:
  """``config`` has ``name``, ``learning_rate``, ``weight_decay`` and ``schedule``.

  The learning rate is an injected hyper-parameter, so a stage can change it between
  epochs (reduce-on-plateau, with ``schedule="constant"``) and the change is part of the
  checkpointed optimizer state. ``schedule="cosine"`` decays it to 0 over ``total_steps``.
  """
  if config.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={config.name!r} is unknown; choose one of "
                     f"{sorted(OPTIMIZERS)}")
  schedule = config.get("schedule", "constant")
  if schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule={schedule!r} is unknown; choose one of "
                     f"{sorted(SCHEDULES)}")
  return optax.inject_hyperparams(OPTIMIZERS[config.name], static_args=("weight_decay",))(
      learning_rate=SCHEDULES[schedule](config.learning_rate, total_steps),
      weight_decay=config.weight_decay)


def get_learning_rate(opt_state: optax.OptState) -> float:
  return float(opt_state.hyperparams["learning_rate"])


def set_learning_rate(opt_state: optax.OptState, value: float) -> optax.OptState:
  hyperparams = dict(opt_state.hyperparams)
  current = hyperparams["learning_rate"]
  hyperparams["learning_rate"] = jax.device_put(jnp.asarray(value, current.dtype), current.sharding)
  return opt_state._replace(hyperparams=hyperparams)
