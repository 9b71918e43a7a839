"""Images/s of the full SemBridge distillation step for the paper's six pairs.

  python bench/distill_step.py [--batch 64] [--size 64] [--steps 10] [--rounds 1]
      [--pairs all] [--no-ot] [--dtype bfloat16] [--programs]

Two variants per pair (batch 64, 64x64 RGB, 10-band MS, 10 classes):
* gallery: the step as the project runs it -- the matched teachers' logits, pooled
  features and tokens are read from the precomputed teacher gallery;
* teacher inside: the same loss with the (frozen) teacher network run on the matched MS
  images inside every step, as the authors' code does.
Prints a Markdown table for the devices present.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import re
import statistics
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import synthetic  # noqa: E402
from sembridge_jax import config_base, sharding  # noqa: E402
from sembridge_jax.distill import distiller as distiller_lib, step as step_lib  # noqa: E402
from sembridge_jax.distill.gallery import Gallery  # noqa: E402
from sembridge_jax.runs import Run  # noqa: E402
from sembridge_jax.models.pairs import ALL_PAIRS, pair_name  # noqa: E402
from sembridge_jax.train import classifier, trainer  # noqa: E402

NUM_CLASSES, MS_BANDS, GALLERY = 10, 10, 2048


class Meta:
  num_classes = NUM_CLASSES
  ms_channels = MS_BANDS


def teacher_gallery(teacher_model, size: int) -> Gallery:
  """A gallery with the teacher's real output shapes (values random: speed only)."""
  teacher_model.eval()
  _, features = teacher_model(jnp.zeros((1, size, size, MS_BANDS)))
  rng = np.random.default_rng(0)
  n, d = features["tokens"].shape[1:]
  return Gallery(ids=np.arange(GALLERY, dtype=np.int32),
                 labels=(np.arange(GALLERY) % NUM_CLASSES).astype(np.int32),
                 logits=rng.normal(size=(GALLERY, NUM_CLASSES)).astype(np.float32),
                 pooled=rng.normal(size=(GALLERY, 512)).astype(np.float32),
                 tokens=rng.normal(size=(GALLERY, n, d)).astype(np.float32))


class TimedStep:
  """A jitted train step with its own state: ``warm_up()`` compiles it (one step),
  ``seconds_per_step(steps)`` times ``steps`` more, each call continuing the training."""

  def __init__(self, step, state, args):
    self.step, self.state, self.args = step, state, args

  def warm_up(self) -> dict:
    self.state, metrics = self.step(self.state, *self.args)
    return jax.block_until_ready(metrics)

  def seconds_per_step(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.state, metrics = self.step(self.state, *self.args)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


class PairBench(NamedTuple):
  """One teacher -> student pair, ready to time; the modules and arrays are the
  initial ones (no step has run), for building a twin elsewhere (bench/compare_pytorch.py)."""
  teacher: nnx.Module               # eval mode
  distiller: step_lib.Distiller     # student + alignment head
  gallery: Gallery                  # host arrays
  batch: dict[str, np.ndarray]      # host arrays, NHWC images
  options: step_lib.StepOptions
  steps: dict[str, TimedStep]       # "gallery", "teacher_inside"


def build_pair(teacher_name: str, student_name: str, batch: int, size: int, *,
               use_ot: bool = True, dtype: str = "float32") -> PairBench:
  """The two variants of the module docstring; ``use_ot=False`` drops the OT term
  (``config.distill.use_ot``); ``dtype`` is the networks' compute dtype
  (``config.model.dtype``: parameters, optimiser and loss stay float32)."""
  config = config_base.validate_config(synthetic.get_config())
  config.model.student = student_name
  config.model.dtype = dtype
  config.distill.use_ot = use_ot
  mesh = sharding.make_mesh()
  teacher = classifier.create_model(config, teacher_name, num_classes=NUM_CLASSES,
                                    in_channels=MS_BANDS, seed=0)
  gallery = teacher_gallery(teacher, size)
  run = Run("kd", True)
  distiller = distiller_lib.create_distiller(config, run, Meta, gallery, seed=0)
  options = distiller_lib.step_options(config, run, steps_per_epoch=100)
  modeldef, state, tx = trainer.create_train_state(distiller, config.distill.optimizer, mesh)
  # Each timed step donates its state: give each variant its own copy.
  fresh_state = lambda: sharding.put_replicated(jax.tree.map(jnp.array, state), mesh)
  rng = np.random.default_rng(0)
  labels = (np.arange(batch) % NUM_CLASSES).astype(np.int32)
  host_batch = {
      "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32), "label": labels,
      "mask": np.ones(batch, bool), "teacher_row": labels.copy(),
      "teacher_image": rng.normal(size=(batch, size, size, MS_BANDS)).astype(np.float32)}
  data = sharding.put_batch(host_batch, mesh)

  gallery_step = trainer.make_train_step(modeldef, tx, mesh, step_lib.make_distillation_loss(options))
  device_gallery = sharding.put_replicated(gallery, mesh)

  # The authors' way: run the frozen teacher on the matched MS images in every step.
  teacher_def, teacher_params, teacher_rest = nnx.split(teacher, nnx.Param, ...)
  teacher_vars = sharding.put_replicated((teacher_params, teacher_rest), mesh)

  def teacher_inside_loss(model, batch_data, context: trainer.StepContext):
    frozen = nnx.merge(teacher_def, *context.constants)
    logits, features = frozen(batch_data["teacher_image"])
    rows = jnp.arange(batch_data["label"].shape[0])
    per_batch = Gallery(ids=rows, labels=batch_data["label"], logits=logits,
                        pooled=features["pooled"], tokens=features["tokens"])
    epoch = context.step.astype(jnp.float32) / options.steps_per_epoch
    return step_lib.distillation_loss(model, dict(batch_data, teacher_row=rows), per_batch,
                                      epoch, options)

  inside = trainer.make_train_step(modeldef, tx, mesh, teacher_inside_loss)
  return PairBench(teacher, distiller, gallery, host_batch, options, {
      "gallery": TimedStep(gallery_step, fresh_state(), (data, device_gallery)),
      "teacher_inside": TimedStep(inside, fresh_state(), (data, teacher_vars))})


def program_summary(timed: TimedStep) -> str:
  """``fingerprint/kernels``: a hash of the step's lowered StableHLO (equal hashes: the
  same program) and how many fusions and custom calls (cuDNN, cuBLAS, oneDNN) XLA
  compiled it into, about the kernel launches of one step."""
  lowered = timed.step.lower(timed.state, *timed.args)
  fingerprint = hashlib.sha1(lowered.as_text().encode()).hexdigest()[:10]
  # One instruction per line; a multi-output fusion or a cuDNN / cuBLAS call returns a
  # tuple, whose type holds spaces.
  kernels = len(re.findall(r"^\s*(?:ROOT )?\S+ = .*? (?:fusion|custom-call)\(",
                           lowered.compile().as_text(), flags=re.M))
  return f"{fingerprint}/{kernels}"


def bench_pair(teacher_name: str, student_name: str, batch: int, size: int, steps: int, *,
               rounds: int = 1, use_ot: bool = True, dtype: str = "float32",
               programs: bool = False) -> dict[str, float | str]:
  """Images/s of the gallery and the teacher-inside step (median of ``rounds`` rounds,
  the two variants alternating), and with ``programs`` each step's `program_summary`."""
  pair = build_pair(teacher_name, student_name, batch, size, use_ot=use_ot, dtype=dtype)
  samples = {variant: [] for variant in pair.steps}
  for timed in pair.steps.values():
    timed.warm_up()
  for _ in range(rounds):
    for variant, timed in pair.steps.items():
      samples[variant].append(batch / timed.seconds_per_step(steps))
  result = {variant: statistics.median(values) for variant, values in samples.items()}
  if programs:
    result.update({f"{variant}_program": program_summary(timed)
                   for variant, timed in pair.steps.items()})
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--pairs", default="all", help="all, or e.g. 0,3 (indices into the six)")
  parser.add_argument("--no-ot", action="store_true", help="without the OT term")
  parser.add_argument("--dtype", default="float32", choices=classifier.DTYPES,
                      help="the networks' compute dtype (config.model.dtype)")
  parser.add_argument("--rounds", type=int, default=1,
                      help="rounds of both variants, alternating; the median is reported")
  parser.add_argument("--programs", action="store_true",
                      help="also each step's program: StableHLO hash / compiled kernels")
  args = parser.parse_args()
  pairs = ALL_PAIRS if args.pairs == "all" else [ALL_PAIRS[int(i)] for i in args.pairs.split(",")]
  devices = jax.devices()
  print(f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); "
        f"batch {args.batch}, {args.size}x{args.size}, {NUM_CLASSES} classes, {args.dtype}; "
        f"median of {args.rounds} round(s) x {args.steps} steps")
  columns = ["pair", "gallery step (img/s)", "teacher inside (img/s)", "speed-up"]
  if args.programs:
    columns += ["gallery program (hash/kernels)", "teacher-inside program"]
  print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
  for teacher, student in pairs:
    result = bench_pair(teacher, student, args.batch, args.size, args.steps, rounds=args.rounds,
                        use_ot=not args.no_ot, dtype=args.dtype, programs=args.programs)
    cells = [pair_name((teacher, student)), f"{result['gallery']:.0f}",
             f"{result['teacher_inside']:.0f}",
             f"{result['gallery'] / result['teacher_inside']:.2f}x"]
    if args.programs:
      cells += [result["gallery_program"], result["teacher_inside_program"]]
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
