"""What every model returns: ``(logits, features)``.

``features["tokens"]`` are the last stage's spatial feature vectors, one token
per pixel of the final (h, w) map in row-major order, shape (B, h*w, D);
``features["pooled"]`` is the (B, 512) embedding the classifier reads. Both
are float32 whatever the compute dtype, so losses on them are computed in
full precision.
"""

from __future__ import annotations

from typing import TypeAlias, TypedDict

import jax
import jax.numpy as jnp


class Features(TypedDict):
  tokens: jax.Array  # (B, h*w, D) float32
  pooled: jax.Array  # (B, 512) float32


ModelOutput: TypeAlias = tuple[jax.Array, Features]


def global_average_pool(feature_map: jax.Array) -> jax.Array:
  """(B, h, w, D) -> (B, D) mean over pixels, accumulated in float32."""
  return jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))


def model_output(logits: jax.Array, feature_map: jax.Array, pooled: jax.Array) -> ModelOutput:
  """Packs logits (B, K), the last map (B, h, w, D) and the embedding (B, E), in float32."""
  batch, height, width, depth = feature_map.shape
  tokens = feature_map.reshape(batch, height * width, depth)
  return logits.astype(jnp.float32), Features(
    tokens=tokens.astype(jnp.float32), pooled=pooled.astype(jnp.float32)
  )
