r"""The embedded default: the synthetic asymmetric benchmark, sized for a 2-core CPU.

Unpaired MS (10 bands) and RGB images of 10 classes from two synthetic "regions"
(see `sembridge_jax.data.synthetic`). No download needed.

  sembridge-jax pipeline --config configs/synthetic.py --workdir /tmp/sembridge_synth

Expected (2-core CPU, about 7 minutes with oneDNN's convolutions; dataset 1.2.0, 5,040
RGB test images; RGB test OA, mean ± std over seeds 0, 1, 2): teacher (MS) 100.0;
student alone 53.49 ± 1.60; KD with random same-class pairs 53.17 ± 1.16; SemBridge
53.58 ± 0.41. Paired vs the student alone (95% interval): KD -0.32 [-1.20, +0.55],
SemBridge +0.09 [-3.78, +3.96], both "no detectable difference" (13 seeds: every
interval under one point wide on each side). The match report: SFM's pairs are 30%
closer than random same-class pairs in relative scene colour (0.0940 vs 0.1339), 290 of
960 MS images used as teachers; the gallery's KD-target spread is 0.048 within a class.
CPU convolutions differ in their last bits between oneDNN and XLA (and between CPUs), so
other machines give other seeds' noise, not other conclusions.
docs/synthetic_results.md says what these numbers can and cannot tell.
"""

from sembridge_jax import config_base


def get_config():
  c = config_base.base_config()
  c.data = config_base.dataset_config("synthetic")   # 10 bands, 32 px, 10 classes
  c.eval_batch_size = 128

  c.model.teacher = "resnet34"
  c.model.student = "shufflenet_v2_x0_5"
  c.model.matcher = "shufflenet_v2_x0_5"

  c.teacher.epochs = 6
  c.teacher.batch_size = 64
  c.matcher.epochs = 12
  c.matcher.batch_size = 64
  # The two synthetic regions' class prototypes differ by construction (semantic_overlap
  # 0.5), so METHOD's plain cosine sends most students of a class to the few MS images
  # nearest the RGB region's class mean (hubs); comparing scenes relative to their own
  # set's class mean removes that offset (see docs/matcher_study.md).
  c.matching.centre_embeddings = True
  # Short runs: a cosine decay to 0 makes the final epoch's accuracy a stable number
  # (a constant Adam rate leaves it jumping by several points from epoch to epoch).
  for section in (c.teacher, c.student, c.distill):
    section.optimizer.schedule = "cosine"
  c.student.epochs = 15
  c.student.batch_size = 64
  c.distill.epochs = 15
  c.distill.batch_size = 64
  c.matching.rematch_epochs = (5, 10)
  c.pipeline.seeds = (0, 1, 2)
  return c
