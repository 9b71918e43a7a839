r"""The embedded default: the synthetic asymmetric benchmark, sized for a 2-core CPU.

Unpaired MS (10 bands) and RGB images of 10 classes from two synthetic "regions"
(see `sembridge_jax.data.synthetic`). No download needed.

  sembridge-jax pipeline --config configs/synthetic.py --workdir /tmp/sembridge_synth

Expected (2-core CPU, measured in the README): see README "Results".
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data.name = "synthetic"
  c.data.ms_channels = 10
  c.data.rgb_size = 32
  c.data.normalization = "per_image_max"
  c.eval_batch_size = 128

  c.model.teacher = "resnet34"
  c.model.student = "shufflenet_v2_x0_5"
  c.model.matcher = "shufflenet_v2_x0_5"

  c.teacher.epochs = 6
  c.teacher.batch_size = 64
  c.student.epochs = 12
  c.student.batch_size = 64
  c.matcher.epochs = 6
  c.matcher.batch_size = 64
  c.distill.epochs = 12
  c.distill.batch_size = 64
  c.matching.rematch_epochs = (4, 8)
  c.pipeline.seeds = (0, 1, 2)
  return c
