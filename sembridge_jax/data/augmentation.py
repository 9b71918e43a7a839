"""Optional RGB augmentation (off by default, as in the paper): flips and colour jitter.

Works on a batch of model-range images (B, H, W, 3) in [-1, 1] with an explicit NumPy
generator, so a batch's augmentation depends only on (seed, step, shard), never on
thread timing. Per sample: horizontal flip and vertical flip with probability 1/2 each,
then, in [0, 1] space, brightness ``x * b``, contrast ``mean + c (x - mean)`` and
saturation ``grey + s (x - grey)`` with b, c, s ~ U(1 - j, 1 + j), clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np

COLOUR_JITTER = 0.1
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's "L" mode.


def augment_rgb(images: np.ndarray, rng: np.random.Generator,
                jitter: float = COLOUR_JITTER) -> np.ndarray:
  batch = images.shape[0]
  out = images.copy()
  flip_h = rng.random(batch) < 0.5
  flip_v = rng.random(batch) < 0.5
  out[flip_h] = out[flip_h, :, ::-1]
  out[flip_v] = out[flip_v, ::-1]
  brightness, contrast, saturation = (
      rng.uniform(1 - jitter, 1 + jitter, (3, batch, 1, 1, 1)).astype(np.float32))
  x = np.clip(out * 0.5 + 0.5, 0.0, 1.0) * brightness
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  x = mean + contrast * (x - mean)
  grey = (x @ _LUMA)[..., None]
  x = np.clip(grey + saturation * (x - grey), 0.0, 1.0)
  return ((x - 0.5) / 0.5).astype(np.float32)
