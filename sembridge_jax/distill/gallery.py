"""The teacher gallery: the frozen teacher's outputs for every MS train image.

Computed once, in batches, after the teacher is trained. Distillation then reads its
matched teachers' logits, pooled features and last-stage tokens from here, so the
teacher network never runs (and can never receive gradients) during distillation.
Dynamic re-matching (SFM part 3) searches the same gallery's logits.

Row ``i`` belongs to MS record ``ids[i]`` (ids sorted ascending).
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sembridge_jax import sharding
from sembridge_jax.train import classifier, inference


class Gallery(NamedTuple):
  ids: np.ndarray | jax.Array      # (Ng,) int32, ascending
  labels: np.ndarray | jax.Array   # (Ng,) int32
  logits: np.ndarray | jax.Array   # (Ng, K)
  pooled: np.ndarray | jax.Array   # (Ng, 512)
  tokens: np.ndarray | jax.Array   # (Ng, N, D)

  @property
  def size(self) -> int:
    return int(self.ids.shape[0])

  def rows_for(self, teacher_ids: np.ndarray) -> np.ndarray:
    """Gallery rows of the given MS record ids (raises on an unknown id)."""
    ids = np.asarray(self.ids)
    teacher_ids = np.asarray(teacher_ids)
    rows = np.searchsorted(ids, teacher_ids)
    rows = np.clip(rows, 0, len(ids) - 1)
    bad = ids[rows] != teacher_ids
    if bad.any():
      raise KeyError(f"teacher ids not in the gallery: {teacher_ids[bad][:10].tolist()}")
    return rows.astype(np.int32)

  def astype(self, dtype) -> "Gallery":
    """Feature storage in another dtype (e.g. bfloat16 to halve device memory)."""
    return self._replace(logits=jnp.asarray(self.logits, dtype), pooled=jnp.asarray(self.pooled, dtype),
                         tokens=jnp.asarray(self.tokens, dtype))

  def save(self, path: str | pathlib.Path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "V" or str(
        np.asarray(v).dtype) == "bfloat16" else np.asarray(v) for k, v in self._asdict().items()})
    tmp.replace(path)

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "Gallery":
    with np.load(path) as f:
      return cls(**{k: f[k] for k in cls._fields})


def build_gallery(config, teacher_dir: pathlib.Path, benchmark, path: pathlib.Path) -> Gallery:
  """Runs the trained teacher in ``teacher_dir`` once over ``ms_train``; saves to ``path``."""
  if path.exists():
    return Gallery.load(path)
  modeldef, state = classifier.load_trained(config, teacher_dir, "teacher", benchmark)
  mesh = sharding.make_mesh()

  def outputs(model, images):
    logits, features = model(images)
    return {"logits": logits, "pooled": features["pooled"], "tokens": features["tokens"]}

  predict = inference.make_predict_fn(modeldef, outputs, mesh)
  split = inference.predict_split(predict, state.params, state.model_state, benchmark, "ms_train",
                                  batch_size=config.eval_batch_size,
                                  normalization=config.data.normalization, mesh=mesh)
  gallery = Gallery(ids=split.ids.astype(np.int32), labels=split.labels.astype(np.int32),
                    logits=split.outputs["logits"], pooled=split.outputs["pooled"],
                    tokens=split.outputs["tokens"])
  if jax.process_index() == 0:
    gallery.save(path)
  return gallery
