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
  go in as they are).
* ``normalize=True`` (the project's default, `config.matcher.normalize_embeddings`)
  L2-normalises both embeddings first and uses the temperature the CLIP way in both
  places: ``logits = u_rgb @ u_ms.T / tau``, ``targets = softmax((u_ms @ u_ms.T +
  u_rgb @ u_rgb.T) / 2 / tau)``. Why: LayerNorm outputs have norm ``sqrt(d) = 16``, so
  the literal logits span +-256; any pair the matcher gets wrong costs hundreds of nats,
  and the cheapest state is the collapsed one. With unit embeddings the logits live in
  ``[-1/tau, 1/tau]``. (``* tau`` in the literal targets is harmless at tau = 1 and
  would make the targets uniform at a CLIP-like tau = 0.1.)
* ``soft_target_weight`` ``w`` mixes the soft targets with the identity (each RGB
  rendering's own MS image): ``targets = w * soft + (1 - w) * I``. With encoders trained
  from scratch (the authors' CLIP-tutorial loss assumed pretrained ones) the
  self-similarities carry no meaning at first, the purely soft targets (``w = 1``) follow
  the embeddings as they drift together, and training settles at the collapsed fixed
  point (uniform targets, uniform logits). The identity part is a fixed, non-trivial
  target from the first step; the soft part still lets look-alike images share mass.
* ``detach_targets`` (default True) stops gradients through the targets. The reference
  implementation lets them flow, and then the loss has a degenerate minimiser: identical
  embeddings make both the logits and the targets uniform, for a loss of ``log B`` that
  needs no alignment at all. On the synthetic benchmark the literal loss collapsed to
  exactly that (validation loss ``log 64``, one teacher per class chosen for every
  student); with detached targets the targets are fixed soft labels and the only way
  down is to align each RGB rendering with its own MS image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-row ``-sum_j targets[i, j] log_softmax(logits)[i, j]``, shape (B,)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def matcher_loss(e_rgb: jax.Array, e_ms: jax.Array, tau: float = 1.0, *,
                 detach_targets: bool = True, normalize: bool = False,
                 soft_target_weight: float = 1.0) -> jax.Array:
  """Symmetric soft-target contrastive loss between paired RGB and MS embeddings.

  Args:
    e_rgb: (B, d) RGB-branch embeddings; row i is paired with ``e_ms[i]``.
    e_ms: (B, d) MS-branch embeddings.
    tau: temperature (METHOD default 1.0).
    detach_targets: no gradient through the soft targets (see the module docstring;
      False reproduces the reference implementation and its collapse).
    normalize: cosine similarities at temperature tau instead of raw dot products
      (see the module docstring). False with tau = 1 is the literal METHOD formula.
    soft_target_weight: ``w`` in ``targets = w * soft + (1 - w) * I``; 1 is METHOD's
      purely soft targets, 0 is CLIP's InfoNCE (see the module docstring).

  Returns:
    Scalar float32 loss (see the module docstring for the formula).
  """
  if e_rgb.shape != e_ms.shape or e_rgb.ndim != 2:
    raise ValueError(f"e_rgb and e_ms must both be (B, d) with the same shape, got "
                     f"{e_rgb.shape} and {e_ms.shape}.")
  e_rgb = e_rgb.astype(jnp.float32)
  e_ms = e_ms.astype(jnp.float32)
  if normalize:
    unit = lambda e: e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    e_rgb, e_ms = unit(e_rgb), unit(e_ms)
  logits = e_rgb @ e_ms.T / tau
  self_similarity = (e_ms @ e_ms.T + e_rgb @ e_rgb.T) / 2
  targets = jax.nn.softmax(self_similarity / tau if normalize else self_similarity * tau, axis=-1)
  if soft_target_weight != 1.0:
    targets = soft_target_weight * targets + (1.0 - soft_target_weight) * jnp.eye(
        targets.shape[0], dtype=targets.dtype)
  if detach_targets:
    targets = jax.lax.stop_gradient(targets)
  rgb_to_ms = soft_cross_entropy(logits, targets)
  ms_to_rgb = soft_cross_entropy(logits.T, targets.T)
  return jnp.mean((rgb_to_ms + ms_to_rgb) / 2)
