r"""Timing at S2S_EU's size: where an accelerator run's wall time goes (issue #18).

The synthetic generator at the size of S2S_EU (27,000 MS and 27,000 RGB images of 64 px,
10 classes), the paper's ResNet-34 teacher, matcher and student, batch 256, 5 epochs for
the students (teacher and matcher 1 epoch each: they only have to exist). A speed
measurement, not an accuracy benchmark:

  sembridge-jax pipeline --config configs/synthetic_s2s_size.py --workdir /tmp/s2s_size
  python bench/phase_report.py /tmp/s2s_size     # compile / steps / input / evaluation ...

bench/gpu/check.sh (stage `timing`) runs its student alone and its SemBridge run on a lent
GPU, stage by stage. Building the dataset takes about 9 ms per MS and 4 ms per RGB image
on this repository's 2-core CPU, about 6 minutes for the 54,000: the classes render in
parallel processes (about a third of that time, so it shrinks with the cores; a worker's
start costs 2-3 s), then worker processes read every file back while the main process
compresses and writes the records (serial: about half of what remains; the build prints
its time).

Expected: not measured on an accelerator yet (no GPU was lent). The target of issue #18:
the training steps take at least 80% of each run's wall time after its first epoch
(`time/steps_share_after_first_epoch` in the run's metrics.jsonl).
"""

import pathlib

from sembridge_jax import config_base


def get_config():
  c = config_base.config_from_file(pathlib.Path(__file__).with_name("synthetic.py"))
  s = c.data.synthetic
  s.image_size = 64
  s.ms_per_class = 2_700
  s.rgb_per_class = 2_700
  s.extra_rgb_test_per_class = 0     # the stratified test split is large enough here
  c.model.teacher = c.model.student = c.model.matcher = "resnet34"
  c.eval_batch_size = 1024
  for section, epochs in ((c.teacher, 1), (c.matcher, 1), (c.student, 5), (c.distill, 5)):
    section.epochs = epochs
    section.batch_size = 256
  c.matching.rematch_epochs = (3,)
  c.pipeline.seeds = (0,)
  c.reports = ()
  return c
