"""bench/conv_profile.py records every convolution of a forward pass, with its impl.

On ShuffleNetV2 x0.5 (32x32, batch 2) the recorded unique layers' counts add up to the
number of ``Conv`` modules in the model (each is called once per forward pass), every
layer resolves to a concrete implementation, and ``conv.conv2d`` is restored afterwards.
Abstract (``nnx.eval_shape``): nothing is computed or timed.
"""

from __future__ import annotations

import importlib.util

from conftest import REPO
from flax import nnx

from sembridge_jax import models
from sembridge_jax.models import conv


def load_conv_profile():
  spec = importlib.util.spec_from_file_location("conv_profile", REPO / "bench" / "conv_profile.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_recorded_layers_cover_every_conv():
  original = conv.conv2d
  layers = load_conv_profile().record_layers("shufflenet_v2_x0_5", batch=2, size=32)
  assert conv.conv2d is original
  model = nnx.eval_shape(lambda: models.create_model(
    "shufflenet_v2_x0_5", num_classes=10, in_channels=3, rngs=nnx.Rngs(params=0, dropout=1)))
  num_convs = sum(isinstance(node, conv.Conv) for _, node in nnx.iter_graph(model))
  assert num_convs > 0
  assert sum(count for _, count, _ in layers) == num_convs
  assert len({layer for layer, _, _ in layers}) == len(layers)
  for layer, count, impl in layers:
    assert count >= 1
    assert impl in ("xla", "im2col", "xla_gemm_grad", "onednn"), (layer, impl)
    assert layer.input_shape[0] == 2
