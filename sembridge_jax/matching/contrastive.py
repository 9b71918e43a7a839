"""The matcher's soft-target symmetric contrastive loss (METHOD section 2, step 1).

For a batch of B paired embeddings ``e_rgb``, ``e_ms`` (B, d) and temperature tau::

    logits  = e_rgb @ e_ms.T / tau                                   (B, B)
    targets = softmax_rows((e_ms @ e_ms.T + e_rgb @ e_rgb.T) / 2 * tau)
    rows_i    = -sum_j targets[i, j]   log_softmax_rows(logits)[i, j]      (RGB i over MS j)
    columns_j = -sum_i targets.T[j, i] log_softmax_rows(logits.T)[j, i]    (MS j over RGB i)
    loss = mean_k (rows_k + columns_k) / 2

* ``* tau`` in the targets is METHOD's literal formula (the CLIP-tutorial loss the
  authors adapted); with the default tau = 1 it makes no difference.
* The column term follows the standard CLIP-style soft-target implementation:
  cross-entropy of ``logits.T`` against ``targets.T`` -- i.e. the log-softmax runs over
  the RGB axis (axis 0 of ``logits``), and the targets are the transposed *row*
  softmax (the similarity matrix is symmetric, so its row softmax transposed equals
  its column softmax).
* No labels are used, and the embeddings are not L2-normalised (the LayerNorm outputs
  go in as they are). Gradients flow through the targets too (they are not detached,
  as in the reference implementation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-row ``-sum_j targets[i, j] log_softmax(logits)[i, j]``, shape (B,)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def matcher_loss(e_rgb: jax.Array, e_ms: jax.Array, tau: float = 1.0) -> jax.Array:
  """Symmetric soft-target contrastive loss between paired RGB and MS embeddings.

  Args:
    e_rgb: (B, d) RGB-branch embeddings; row i is paired with ``e_ms[i]``.
    e_ms: (B, d) MS-branch embeddings.
    tau: temperature (METHOD default 1.0).

  Returns:
    Scalar float32 loss (see the module docstring for the formula).
  """
  if e_rgb.shape != e_ms.shape or e_rgb.ndim != 2:
    raise ValueError(f"e_rgb and e_ms must both be (B, d) with the same shape, got "
                     f"{e_rgb.shape} and {e_ms.shape}.")
  e_rgb = e_rgb.astype(jnp.float32)
  e_ms = e_ms.astype(jnp.float32)
  logits = e_rgb @ e_ms.T / tau
  self_similarity = (e_ms @ e_ms.T + e_rgb @ e_rgb.T) / 2
  targets = jax.nn.softmax(self_similarity * tau, axis=-1)
  rgb_to_ms = soft_cross_entropy(logits, targets)
  ms_to_rgb = soft_cross_entropy(logits.T, targets.T)
  return jnp.mean((rgb_to_ms + ms_to_rgb) / 2)
