"""Resizing (PIL-exact), normalisation schemes and augmentation of batches."""

import numpy as np
import pytest
from PIL import Image

from sembridge_jax.data import BandStats, augmentation, preprocessing


@pytest.mark.parametrize("size_in,size_out", [(32, 64), (64, 32), (128, 64), (13, 7), (7, 13),
                                              (64, 50), (16, 16)])
def test_resize_equals_pil_bilinear(size_in, size_out):
  rng = np.random.default_rng(size_in * 100 + size_out)
  images = rng.uniform(0, 1, (2, size_in, size_in, 3)).astype(np.float32)
  ours = preprocessing.resize(images, size_out)
  for b in range(2):
    for c in range(3):
      pil = Image.fromarray(images[b, ..., c], mode="F").resize((size_out, size_out),
                                                                 Image.BILINEAR)
      np.testing.assert_allclose(ours[b, ..., c], np.asarray(pil), atol=1e-5)


def test_normalizers_follow_their_formulas():
  rng = np.random.default_rng(0)
  ms = rng.integers(0, 5000, (3, 4, 4, 5)).astype(np.uint16)
  stats = BandStats(mean=rng.uniform(1000, 2000, 5), std=rng.uniform(100, 500, 5),
                    max=np.full(5, 5000.0))
  per_image = preprocessing.NORMALIZERS["per_image_max"](ms, stats)
  for b in range(3):
    np.testing.assert_allclose(per_image[b], ms[b] / ms[b].max() * 2 - 1, atol=1e-6)
  band = preprocessing.NORMALIZERS["band_stats"](ms, stats)
  np.testing.assert_allclose(band, (ms - stats.mean) / stats.std, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="normalization='minmax' is unknown"):
    preprocessing.get_normalizer("minmax")


def test_rgb_to_model_range():
  rgb = np.array([0, 255, 51], np.uint8).reshape(1, 1, 1, 3)
  np.testing.assert_allclose(preprocessing.rgb_to_model(rgb, 1).ravel(), [-1, 1, -0.6],
                             rtol=1e-6)


def test_augmentation_flips_and_jitters_within_range():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (64, 6, 6, 3)).astype(np.float32)
  out = augmentation.augment_rgb(images, np.random.default_rng(1))
  again = augmentation.augment_rgb(images, np.random.default_rng(1))
  np.testing.assert_array_equal(out, again)
  assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
  # Without jitter only flips remain: each output is one of the four flips of its input.
  flipped = augmentation.augment_rgb(images, np.random.default_rng(2), jitter=0.0)
  candidates = [images, images[:, ::-1], images[:, :, ::-1], images[:, ::-1, ::-1]]
  matches = np.stack([np.isclose(flipped, c, atol=1e-6).all(axis=(1, 2, 3))
                      for c in candidates])
  assert matches.any(0).all() and matches.sum(1).min() > 0  # Every kind of flip occurs.


def test_random_camera_follows_its_formula():
  rng = np.random.default_rng(0)
  linear = rng.uniform(0, 1, (5, 6, 6, 3)).astype(np.float32)
  # A camera with every effect switched off but its tone curve: 8-bit x ** (1 / 2).
  identity = augmentation.CameraRanges(exposure=(1.0, 1.0), colour_cast_sigma=0.0,
                                       crosstalk=(0.0, 0.0), haze=(0.0, 0.0), blur=(0.0, 0.0),
                                       gamma=(2.0, 2.0), noise_sigma=(0.0, 0.0))
  np.testing.assert_allclose(augmentation.random_camera(linear, rng, identity),
                             np.rint(np.sqrt(linear) * 255) / 255, atol=1e-6)
  # Crosstalk k leaks k / 2 of a pure red image into green and blue; haze adds its veil.
  red = np.zeros((1, 4, 4, 3), np.float32)
  red[..., 0] = 0.8
  leaky = identity._replace(crosstalk=(0.2, 0.2), gamma=(1.0, 1.0))
  np.testing.assert_allclose(augmentation.random_camera(red, rng, leaky)[0, 0, 0],
                             np.rint(np.array([0.64, 0.08, 0.08]) * 255) / 255, atol=1e-6)
  hazy = identity._replace(haze=(0.1, 0.1), gamma=(1.0, 1.0))
  np.testing.assert_allclose(augmentation.random_camera(red, rng, hazy)[0, 0, 0],
                             np.rint(np.array([0.87, 0.085, 0.1]) * 255) / 255, atol=1e-6)
  # Blur w mixes in the 4-neighbour mean (wrapped at the border).
  dot = np.zeros((1, 5, 5, 3), np.float32)
  dot[0, 2, 2] = 1.0
  blurred = augmentation.random_camera(dot, rng, identity._replace(blur=(0.4, 0.4),
                                                                   gamma=(1.0, 1.0)))
  np.testing.assert_allclose(blurred[0, 2, 1:4, 0], np.rint(np.array([0.1, 0.6, 0.1]) * 255) / 255,
                             atol=1e-6)
  # The default camera: seeded, 8-bit values in [0, 1], a different camera per image.
  out = augmentation.random_camera(linear, np.random.default_rng(3))
  np.testing.assert_array_equal(out, augmentation.random_camera(linear, np.random.default_rng(3)))
  assert out.min() >= 0 and out.max() <= 1
  np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-4)
  same = augmentation.random_camera(np.repeat(linear[:1], 5, 0), np.random.default_rng(4))
  assert np.ptp(same.mean(axis=(1, 2, 3))) > 0.02


def test_rendering_rejects_a_non_positive_gamma():
  with pytest.raises(ValueError, match="gamma must be positive"):
    preprocessing.true_colour_rendering(np.ones((1, 4, 4, 5)), (3, 2, 1), 4, gamma=0.0)
