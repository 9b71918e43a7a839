"""The self-supervised MS/RGB matcher of SFM (METHOD section 2, step 1).

Two encoders (MS teacher-modality, RGB student-modality), each followed by its own
`ProjectionHead` to a shared 256-d space. Trained with `matcher_loss` (contrastive.py) on pairs of an
MS image and an RGB rendering of its own bands; its embeddings then drive the initial
matching (`nearest_teacher`, cosine similarity).
"""

from __future__ import annotations

import jax
from flax import nnx


class ProjectionHead(nnx.Module):
  """``LayerNorm(h + Dropout(W2 GELU(h)))`` with ``h = W1 x`` (METHOD: 512 -> 256).

  METHOD, read literally: ``Linear -> GELU -> Linear -> Dropout(0.1)``, plus a
  residual from the *first Linear's output* (``h``, already 256-d, so no extra
  projection is needed), then LayerNorm. This is the CLIP-style projection head. GELU
  is the exact (erf) form, as ``torch.nn.GELU()``'s default; LayerNorm epsilon 1e-5 as
  torch's. Dropout is active in `train()` mode and off after `.eval()`.
  """

  def __init__(self, in_features: int = 512, out_features: int = 256, *,
               dropout_rate: float = 0.1, rngs: nnx.Rngs):
    self.projection = nnx.Linear(in_features, out_features, rngs=rngs)
    self.hidden = nnx.Linear(out_features, out_features, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.norm = nnx.LayerNorm(out_features, epsilon=1e-5, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    projected = self.projection(x)
    residual_branch = self.dropout(self.hidden(jax.nn.gelu(projected, approximate=False)))
    return self.norm(projected + residual_branch)


class Matcher(nnx.Module):
  """MS and RGB encoders with one projection head each.

  An encoder is any module called on (B, H, W, C) images that returns
  ``(logits, features)`` with ``features["pooled"]`` of shape (B, embedding_dim), e.g.
  `sembridge_jax.models.create_model(...)`.

  Embeddings are the LayerNorm outputs, *not* L2-normalised: the loss uses them as
  they are (as the authors do); `nearest_teacher` normalises for the cosine.
  """

  def __init__(self, *, ms_encoder: nnx.Module, rgb_encoder: nnx.Module,
               embedding_dim: int = 512, projection_dim: int = 256,
               dropout_rate: float = 0.1, rngs: nnx.Rngs):
    self.ms_encoder = ms_encoder
    self.rgb_encoder = rgb_encoder
    self.ms_head = ProjectionHead(embedding_dim, projection_dim, dropout_rate=dropout_rate,
                                  rngs=rngs)
    self.rgb_head = ProjectionHead(embedding_dim, projection_dim, dropout_rate=dropout_rate,
                                   rngs=rngs)

  def embed_ms(self, ms_images: jax.Array) -> jax.Array:
    """(B, H, W, C_ms) -> (B, projection_dim)."""
    _, features = self.ms_encoder(ms_images)
    return self.ms_head(features["pooled"])

  def embed_rgb(self, rgb_images: jax.Array) -> jax.Array:
    """(B, H, W, 3) -> (B, projection_dim)."""
    _, features = self.rgb_encoder(rgb_images)
    return self.rgb_head(features["pooled"])

  def __call__(self, ms_images: jax.Array, rgb_images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(e_ms, e_rgb)``."""
    return self.embed_ms(ms_images), self.embed_rgb(rgb_images)
