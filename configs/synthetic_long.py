r"""The synthetic default with twice the student epochs (30): does the default's 15 suffice?

  sembridge-jax pipeline --config configs/synthetic_long.py --workdir /tmp/sembridge_synth_long

Everything as `configs/synthetic.py` except the students' schedule: 30 epochs (cosine
decay to 0) for the student alone and the distilled students, re-matching at epochs 10
and 20 (the default's 5 and 10, scaled). About 20 minutes on the 2-core CPU.

Expected (dataset 1.2.0, seeds 0-2, RGB test OA): student alone 55.21 ± 0.84, KD
55.54 ± 0.81, SemBridge 55.59 ± 0.60, all plateaued (< 0.5 point over the last quarter
of the epochs); paired: SemBridge vs KD +0.05 [-0.85, +0.94], no detectable
difference. docs/kd_diagnosis.md compares it with the default's 15 epochs.
"""

import pathlib

from sembridge_jax import config_base


def get_config():
  c = config_base.config_from_file(pathlib.Path(__file__).with_name("synthetic.py"))
  c.student.epochs = 30
  c.distill.epochs = 30
  c.matching.rematch_epochs = (10, 20)
  return c
