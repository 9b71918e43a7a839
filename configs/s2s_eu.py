r"""S2S_EU: EuroSAT Sentinel-2 MS (13 bands, 10 used) teaches RGB from another region.

The paper's setting (METHOD sections 2, 5): ResNet-34 teacher and student, matcher
100 epochs, teacher 200 epochs (batch 256, Adam 1e-3), distillation with re-matching at
epochs 30, 60, 95, 135. Needs the downloaded benchmark:

  sembridge-jax pipeline --config configs/s2s_eu.py --workdir /tmp/s2s_eu \
      --config.data.manual_dir=/data/ackd     # holds S2S_EU/MS/<class>/*.tif, S2S_EU/RGB/...

Expected: accelerator-scale run; not measured in this repository yet.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data = config_base.dataset_config("s2s_eu")  # channels, RGB size, true-colour bands
  c.matching.rematch_epochs = (30, 60, 95, 135)
  c.pipeline.seeds = (0, 1, 2)
  return c
