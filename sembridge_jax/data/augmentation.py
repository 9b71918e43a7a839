"""Optional RGB augmentation (off by default, as in the paper).

* `augment_rgb`: flips and colour jitter of model-range images;
* `random_camera`: images a linear true-colour rendering through a randomly drawn
  consumer camera, so that the SFM matcher's RGB encoder learns features that survive
  the sensor gap (exposure, white balance, crosstalk, haze, blur, tone curve, noise).

`augment_rgb` works on a batch of model-range images (B, H, W, 3) in [-1, 1] with an
explicit NumPy generator, so a batch's augmentation depends only on (seed, step, shard),
never on thread timing. Per sample: horizontal flip and vertical flip with probability 1/2 each,
then, in [0, 1] space, brightness ``x * b``, contrast ``mean + c (x - mean)`` and
saturation ``grey + s (x - grey)`` with b, c, s ~ U(1 - j, 1 + j), clipped to [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

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


class CameraRanges(NamedTuple):
  """Ranges of the randomised camera (each image draws its own camera from them).

  Generic consumer-camera effects, relative to a rendering stretched to its maximum:
  an automatic exposure rarely puts the brightest pixel at full scale (under- or
  over-exposure, with clipping), white balance leaves a colour cast, colour filters leak
  into their neighbours, the atmosphere adds a bluish veil, the optics blur, the tone
  curve ranges from linear (a stretched reflectance product) to sRGB-like, and the
  sensor adds noise before 8-bit quantisation.
  """
  exposure: tuple[float, float] = (0.3, 1.5)        # log-uniform gain on the stretch
  colour_cast_sigma: float = 0.05                   # log-normal per-channel gain
  crosstalk: tuple[float, float] = (0.0, 0.15)      # fraction leaked to the other channels
  haze: tuple[float, float] = (0.0, 0.05)           # added veil (blue strongest)
  blur: tuple[float, float] = (0.0, 0.5)            # weight of the 4-neighbour mean
  gamma: tuple[float, float] = (1.0, 2.6)           # display encoding x ** (1 / gamma)
  noise_sigma: tuple[float, float] = (0.0, 0.01)    # additive, after the tone curve


_HAZE_COLOUR = np.array([0.7, 0.85, 1.0], np.float32)  # Rayleigh scattering: blue most.


def random_camera(linear: np.ndarray, rng: np.random.Generator,
                  ranges: CameraRanges = CameraRanges()) -> np.ndarray:
  """Images linear renderings (B, H, W, 3) in [0, 1] through one random camera each.

  Per image, with every parameter drawn from ``ranges``::

    x = M (e * c * linear) + h          exposure e, cast c, crosstalk M, haze h
    x = (1 - w) x + w * mean_4(x)       optical blur (4-neighbour mean, wrapped)
    y = round(255 * clip(clip(x, 0, 1) ** (1 / g) + n, 0, 1)) / 255

  where ``M = (1 - k) I + k (J - I) / 2`` leaks a fraction ``k`` of each channel into
  the other two and ``n`` is Gaussian noise. Returns display values in [0, 1] (like
  ``jpeg / 255``), float32, same shape.
  """
  batch = linear.shape[0]
  uniform = lambda bounds, shape=(batch,): rng.uniform(*bounds, shape).astype(np.float32)
  per_image = lambda v: v.reshape((batch, 1, 1, -1))
  exposure = np.exp(uniform(np.log(ranges.exposure)))
  cast = np.exp(rng.normal(0.0, ranges.colour_cast_sigma, (batch, 3))).astype(np.float32)
  x = linear.astype(np.float32) * per_image(exposure[:, None] * cast)
  leak = uniform(ranges.crosstalk)[:, None, None]
  mixing = (1 - leak) * np.eye(3, dtype=np.float32) + leak * (1 - np.eye(3, dtype=np.float32)) / 2
  x = np.einsum("bhwc,bdc->bhwd", x, mixing)
  x = x + per_image(uniform(ranges.haze)[:, None] * _HAZE_COLOUR)
  neighbours = (np.roll(x, 1, 1) + np.roll(x, -1, 1) + np.roll(x, 1, 2) + np.roll(x, -1, 2)) / 4
  w = per_image(uniform(ranges.blur))
  x = (1 - w) * x + w * neighbours
  x = np.clip(x, 0.0, 1.0) ** per_image(1.0 / uniform(ranges.gamma))
  x = x + rng.standard_normal(x.shape).astype(np.float32) * per_image(uniform(ranges.noise_sigma))
  return (np.rint(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
