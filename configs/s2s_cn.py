r"""S2S_CN: Tiangong-2 MS (14 bands) teaches RGB from another region, 10 classes.

  sembridge-jax pipeline --config configs/s2s_cn.py --workdir /tmp/s2s_cn \
      --config.data.manual_dir=/data/ackd     # holds S2S_CN/MS/<class>/*.tif, S2S_CN/RGB/...

Re-matching at epochs 45, 60, 80, 105, 135 (METHOD section 2).
Expected: accelerator-scale run; not measured in this repository yet.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data = config_base.dataset_config("s2s_cn")  # channels, RGB size, true-colour bands
  c.matching.rematch_epochs = (45, 60, 80, 105, 135)
  c.pipeline.seeds = (0, 1, 2)
  return c
