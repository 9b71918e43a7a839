"""The image classifiers of SemBridge: ResNet-34, MobileNetV2, ShuffleNetV2 x0.5.

``create_model(name, num_classes=..., in_channels=..., rngs=...)`` builds one;
calling it on (B, H, W, C) images returns ``(logits, {"tokens", "pooled"})``.
"""

# Importing the architecture modules registers them.
from sembridge_jax.models import mobilenet_v2 as _mobilenet_v2  # noqa: F401
from sembridge_jax.models import resnet as _resnet  # noqa: F401
from sembridge_jax.models import shufflenet_v2 as _shufflenet_v2  # noqa: F401
from sembridge_jax.models.conv import CONV_IMPLS, Conv, ConvImpl, conv2d
from sembridge_jax.models.outputs import Features, ModelOutput
from sembridge_jax.models.registry import (
  MODEL_REGISTRY,
  count_params,
  create_model,
  register_model,
)

MODEL_NAMES: tuple[str, ...] = tuple(sorted(MODEL_REGISTRY))

__all__ = [
  "CONV_IMPLS",
  "MODEL_NAMES",
  "MODEL_REGISTRY",
  "Conv",
  "ConvImpl",
  "Features",
  "ModelOutput",
  "conv2d",
  "count_params",
  "create_model",
  "register_model",
]
