r"""eurosat_asym: the public EuroSAT archives, cut into disjoint MS and RGB scenes.

S2S_EU's settings (METHOD sections 2, 5): bands 1-7, 10, 11, 12, ResNet-34 teacher and
student, matcher 100 epochs, teacher 200 epochs (batch 256, Adam 1e-3), distillation with
re-matching at epochs 30, 60, 95, 135. The MS teacher and the RGB student never see the
same scene (``data.split_by=scene``, default) or even the same UTM zone
(``--config.data.split_by=region``). Without a manual_dir the two archives are downloaded
from their official location (`sembridge_jax.data.eurosat.OFFICIAL_URL`, about 2 GB):

  sembridge-jax pipeline --config configs/eurosat.py --workdir /tmp/eurosat
  sembridge-jax pipeline --config configs/eurosat.py --workdir /tmp/eurosat_region \
      --config.data.split_by=region
  # Already downloaded: a folder holding EuroSAT_MS/ and EuroSAT_RGB/ (or the two zips)
  sembridge-jax pipeline --config configs/eurosat.py --workdir /tmp/eurosat \
      --config.data.manual_dir=/data/eurosat

Expected: not measured yet (an accelerator-scale run). These are not the paper's S2S_EU
numbers: S2S_EU's RGB images come from another region and sensor.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data = config_base.dataset_config("eurosat_asym")  # channels, RGB size, true-colour bands
  c.data.split_by = "scene"
  c.matching.rematch_epochs = (30, 60, 95, 135)
  c.pipeline.seeds = (0, 1, 2)
  return c
