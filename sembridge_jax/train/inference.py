"""Batched, data-parallel inference over a whole split (no per-sample loops).

Used for the teacher gallery (teacher outputs for every MS train image), for the
matcher's embeddings and for whole-set re-matching. Records come back in the order of
their ``id`` field, so row ``i`` of every output belongs to ``ids[i]``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from flax import nnx

from sembridge_jax import data as data_lib
from sembridge_jax import sharding
from sembridge_jax.train.state import ModelDef


class SplitOutputs(NamedTuple):
  ids: np.ndarray                  # (N,) int, sorted ascending
  labels: np.ndarray               # (N,) int
  outputs: dict[str, np.ndarray]   # name -> (N, ...) arrays, row i belongs to ids[i]


def make_predict_fn(modeldef: ModelDef, outputs_fn: Callable[[nnx.Module, jax.Array], dict],
                    mesh: jax.sharding.Mesh):
  """Jits ``outputs_fn(eval-mode module, images) -> dict of (B, ...) arrays``."""

  def predict(params, model_state, images, passthrough):
    model = modeldef.merge(params, model_state, training=False)
    return outputs_fn(model, images), passthrough

  # Replicated outputs: on several hosts every process reads the whole global batch.
  return jax.jit(predict, out_shardings=sharding.replicated(mesh))


def predict_split(predict_fn, params, model_state, benchmark: data_lib.Benchmark, split: str, *,
                  batch_size: int, normalization: str, mesh: jax.sharding.Mesh,
                  loader_kwargs: dict[str, Any] | None = None,
                  image_key: str = "image", dtype: Any = None) -> SplitOutputs:
  """Runs ``predict_fn`` over every record of ``split``; padding rows are dropped."""
  loader = data_lib.make_loader(benchmark, split, batch_size=sharding.check_batch_size(batch_size, mesh),
                                seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
                                normalization=normalization, **(loader_kwargs or {}))
  chunks: dict[str, list[np.ndarray]] = {}
  ids, labels = [], []
  for batch in loader:
    on_device = sharding.put_batch({k: batch[k] for k in (image_key, "id", "label", "mask")}, mesh)
    passthrough = {k: on_device[k] for k in ("id", "label", "mask")}
    out, passthrough = jax.device_get(predict_fn(params, model_state, on_device[image_key],
                                                 passthrough))
    mask = np.asarray(passthrough["mask"], bool)
    for key, value in out.items():
      value = np.asarray(value)[mask]
      chunks.setdefault(key, []).append(value.astype(dtype) if dtype is not None else value)
    ids.append(np.asarray(passthrough["id"])[mask])
    labels.append(np.asarray(passthrough["label"])[mask])
  ids_arr = np.concatenate(ids)
  order = np.argsort(ids_arr, kind="stable")
  return SplitOutputs(ids=ids_arr[order], labels=np.concatenate(labels)[order],
                      outputs={k: np.concatenate(v)[order] for k, v in chunks.items()})
