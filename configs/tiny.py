r"""A tiny variant of the synthetic benchmark for tests and smoke runs (seconds per stage).

  sembridge-jax pipeline --config configs/tiny.py --workdir /tmp/sembridge_tiny

Expected: every stage runs and writes its outputs; the numbers mean nothing.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.progress = False
  c.data.ms_channels = 5
  c.data.synthetic.num_classes = 3
  c.data.synthetic.ms_bands = 5
  c.data.synthetic.image_size = 32
  c.data.synthetic.ms_per_class = 10
  c.data.synthetic.rgb_per_class = 10
  c.data.synthetic.extra_rgb_test_per_class = 5
  c.eval_batch_size = 16

  c.model.teacher = "shufflenet_v2_x0_5"
  c.model.student = "shufflenet_v2_x0_5"
  c.model.matcher = "shufflenet_v2_x0_5"
  for section in (c.teacher, c.student, c.matcher, c.distill):
    section.epochs = 2
    section.batch_size = 8
  c.matching.rematch_epochs = (1,)
  c.matching.chunk_size = 16
  c.distill.sinkhorn_iterations = 20
  c.pipeline.seeds = (0,)
  return c
