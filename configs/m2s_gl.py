r"""M2S_GL: global MS patches (.mat, key ``msi``, 10 bands) teach RGB, 15 classes.

  sembridge-jax pipeline --config configs/m2s_gl.py --workdir /tmp/m2s_gl \
      --config.data.manual_dir=/data/ackd     # holds M2S_GL/MS/<class>/*.mat, M2S_GL/RGB/...

Re-matching at epochs 15, 45, 80, 120, 165 (METHOD section 2).
Expected: accelerator-scale run; not measured in this repository yet.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data = config_base.dataset_config("m2s_gl")  # channels, RGB size, true-colour bands
  c.matching.rematch_epochs = (15, 45, 80, 120, 165)
  c.pipeline.seeds = (0, 1, 2)
  return c
