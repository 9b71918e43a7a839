"""A functional view of an NNX module and the state a trainer carries between steps.

Flax NNX modules are stateful Python objects; a jitted, sharded step wants pure
functions of pytrees. We split a module once into

* a static ``graphdef`` (structure + hyper-parameters; one per mode, because NNX keeps
  ``deterministic`` / ``use_running_average`` as static attributes),
* ``params`` (``nnx.Param`` leaves, what the optimizer updates),
* ``model_state`` (everything else: BatchNorm running statistics, dropout RNG counters),

and re-merge inside the step. `TrainState` bundles the pytrees; it is what gets
replicated over the mesh and checkpointed.
"""

from __future__ import annotations

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx


class ModelDef(NamedTuple):
  """Static structure of a module in training and in evaluation mode."""
  train: nnx.GraphDef
  eval: nnx.GraphDef

  def merge(self, params: nnx.State, model_state: nnx.State, *, training: bool) -> nnx.Module:
    # Rebuild the non-parameter Variables in the current trace: inside `jax.grad` the
    # module updates BatchNorm statistics, and NNX refuses to mutate Variables that were
    # created at an outer trace level (the jit trace the state arrived in).
    model_state = jax.tree.map(lambda x: x, model_state)
    return nnx.merge(self.train if training else self.eval, params, model_state)


def split_model(module: nnx.Module) -> tuple[ModelDef, nnx.State, nnx.State]:
  """Splits ``module`` into its two graphdefs, its parameters and its other state."""
  module.eval()
  eval_def, _, _ = nnx.split(module, nnx.Param, ...)
  module.train()
  train_def, params, model_state = nnx.split(module, nnx.Param, ...)
  return ModelDef(train=train_def, eval=eval_def), params, model_state


def model_state_after(module: nnx.Module) -> nnx.State:
  """The non-parameter state (e.g. updated BatchNorm statistics) of a merged module."""
  _, _, model_state = nnx.split(module, nnx.Param, ...)
  return model_state


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: nnx.State, model_state: nnx.State,
             tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
               opt_state=tx.init(params))

  def apply_gradients(self, grads: nnx.State, tx: optax.GradientTransformation,
                      model_state: nnx.State) -> "TrainState":
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        model_state=model_state, opt_state=opt_state)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
                         ) -> jax.Array:
  """Mean softmax cross-entropy over the rows where ``mask`` is True."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  if mask is None:
    return losses.mean()
  mask = mask.astype(jnp.float32)
  return (losses * mask).sum() / jnp.maximum(mask.sum(), 1.0)

