r"""The synthetic default with twice the student epochs (30): does the default's 15 suffice?

  sembridge-jax pipeline --config configs/synthetic_long.py --workdir /tmp/sembridge_synth_long

Everything as `configs/synthetic.py` except the students' schedule: 30 epochs (cosine
decay to 0) for the student alone and the distilled students, re-matching at epochs 10
and 20 (the default's 5 and 10, scaled). docs/synthetic_results.md compares the two
(the learning curves and the paired differences, same test images and seeds).
"""

import importlib.util
import pathlib


def _default():
  """configs/synthetic.py, loaded by path (config files are not a package)."""
  spec = importlib.util.spec_from_file_location(
      "configs_synthetic", pathlib.Path(__file__).with_name("synthetic.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = _default().get_config()
  c.student.epochs = 30
  c.distill.epochs = 30
  c.matching.rematch_epochs = (10, 20)
  return c
