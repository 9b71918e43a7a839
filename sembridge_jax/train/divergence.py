"""Noticing a run that diverged: non-finite losses, gradients, parameters or evaluations.

The jitted step reports `all_finite` flags (device scalars, read lazily so steps stay
asynchronous); `FiniteCheck` reads them before the trainer logs, evaluates or saves
anything, and raises `TrainingDiverged` at the first non-finite step, naming the step,
what went non-finite and the config keys to look at. Nothing computed from that state is
ever written.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class TrainingDiverged(RuntimeError):
  """A training step's loss or gradients were not finite; the message says which step,
  which loss terms and which config keys to look at."""


def all_finite(tree: Any) -> jax.Array:
  """True iff every floating-point entry of ``tree`` is finite (a device scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class FiniteCheck:
  """Collects each step's ``finite`` flag (a device scalar, read lazily so that steps
  stay asynchronous) and raises `TrainingDiverged` at the first non-finite one."""

  def __init__(self, desc: str, steps_per_epoch: int, suspects: tuple[str, ...]):
    self.desc, self.steps_per_epoch, self.suspects = desc, steps_per_epoch, suspects
    self.pending: list[tuple[int, dict[str, jax.Array], int]] = []  # (last step, metrics, count)
    self.last_saved: int | None = None

  def add(self, step: int, metrics: dict[str, jax.Array], count: int = 1) -> None:
    """Metrics of the step that ended at ``step``, or of the ``count`` steps ending there
    (stacked along a leading axis by one dispatch of several steps)."""
    self.pending.append((step, metrics, count))

  def check(self) -> None:
    pending, self.pending = self.pending, []
    flags = jax.device_get([metrics["finite"] for _, metrics, _ in pending])
    for (last, metrics, count), finite in zip(pending, flags):
      for i, ok in enumerate(np.reshape(finite, (-1,))):
        if not ok:
          values = jax.device_get(metrics)
          if count > 1:
            values = {key: value[i] for key, value in values.items()}
          self._raise(last - count + 1 + i, values)

  def check_evaluation(self, step: int, metrics: dict[str, float]) -> None:
    """Finite training steps can still leave a model whose outputs overflow in
    evaluation mode (e.g. huge weights with BatchNorm's running statistics)."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      self._raise(step, {}, f"the evaluation after it gave non-finite {', '.join(bad)} (the "
                  "model's outputs overflow)")

  def _raise(self, step: int, metrics: dict[str, Any], what: str | None = None) -> None:
    terms = [k for k, v in metrics.items()
             if not k.startswith("finite") and np.ndim(v) == 0 and not np.isfinite(v)]
    if what is None and terms:
      what = f"the loss terms {', '.join(terms)} went non-finite"
    elif what is None and not metrics["finite_gradients"]:
      what = "the gradients went non-finite (the loss was finite)"
    elif what is None:
      what = ("the updated parameters or BatchNorm statistics went non-finite (loss and "
              "gradients were finite)")
    saved = (f"the last checkpoint is step {self.last_saved}" if self.last_saved is not None
             else "no checkpoint was written")
    raise TrainingDiverged(
        f"{self.desc}: training diverged at step {step} (epoch "
        f"{(step - 1) // self.steps_per_epoch + 1}): {what}; nothing from that state was "
        f"saved ({saved}). Look at {', '.join(self.suspects)}")


def divergence_suspects(task, config) -> tuple[str, ...]:
  """The config keys (with their values) a divergence of ``task`` (a `trainer.Task`) most
  likely comes from."""
  optimizer = task.hparams.optimizer
  prefix = f"config.{task.config_key}." if task.config_key else ""
  suspects = [f"{prefix}optimizer.learning_rate={optimizer.learning_rate}",
              f"{prefix}batch_size={task.hparams.batch_size}"]
  if config.model.dtype != "float32":
    suspects.append(f"config.model.dtype={config.model.dtype!r}")
  return (*suspects, *task.suspects)
