"""JAX vs plain PyTorch: images/s of the same SemBridge distillation step, interleaved.

  python bench/compare_pytorch.py [--steps 5] [--rounds 3] [--batch 64] [--size 64]
      [--pairs resnet34,mobilenet_v2] [--no-ot] [--dtype bfloat16] [--skip-compile]
      [--torch-threads N] [--json]

Per pair, the JAX steps of bench/distill_step.py and the PyTorch steps of
bench/pytorch_reference.py start from the same weights (the JAX ones, ported), the
same batch (64x64 RGB students, 10-band MS teachers, 10 classes) and the same gallery:

* JAX ``gallery`` / PyTorch ``precomputed`` (and ``compiled``, its ``torch.compile``):
  the matched teachers' logits, pooled features and tokens are read from memory;
* JAX ``teacher_inside`` / PyTorch ``no_grad``: the frozen teacher network runs on
  the matched MS images inside the step, without gradient;
* PyTorch ``teacher_grad``: as ``no_grad`` but back-propagating into the teacher, as
  the authors' code does (no JAX counterpart: the JAX teacher cannot get gradients).

``--dtype bfloat16`` runs the networks in bfloat16 on both sides (JAX
``config.model.dtype``, PyTorch ``torch.autocast``), parameters, optimiser and loss in
float32: the mixed precision a GPU user would choose. ``--skip-compile`` leaves out
``compiled``.

Every variant is compiled and warmed up by one step, then each of ``--rounds`` rounds
runs ``--steps`` steps of every variant, JAX and PyTorch alternating, so that a change
of machine load hits both; reported is the median over rounds. The PyTorch steps run in
a child process (which builds the same JAX pair with ``SEMBRIDGE_JAX_ONEDNN=0`` to port
its weights) and the JAX steps in this one, one at a time: each framework brings its own
OpenMP runtime, and two in one process slowed PyTorch's steps by about a fifth here. ``--pairs`` takes
architecture names (``resnet34`` means ResNet -> ResNet), ``teacher:student`` items,
or all / same / cross. Prints one Markdown table, or with ``--json`` one JSON object per
line and comparable pairing: ``{"pair", "jax_variant", "torch_variant", "jax_img_s",
"torch_img_s", "ratio"}`` (ratio = JAX / PyTorch images per second).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import NamedTuple

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import distill_step  # noqa: E402
from sembridge_jax.models.pairs import PAIR_SELECTIONS, pair_name, parse_pairs  # noqa: E402

# (framework, variant) in the order of one round: each JAX variant next to its PyTorch twin.
ROUND_ORDER = (("jax", "gallery"), ("torch", "precomputed"), ("torch", "compiled"),
               ("jax", "teacher_inside"), ("torch", "no_grad"), ("torch", "teacher_grad"))
PAIRINGS = (("gallery", "precomputed"), ("teacher_inside", "no_grad"))
FAILED = "failed"


class Runner(NamedTuple):
  """One variant of the step: ``warm_up() -> loss`` (compiles), ``seconds_per_step(n)``."""
  warm_up: Callable[[], float]
  seconds_per_step: Callable[[int], float]


def parse_pair_list(spec: str) -> tuple[tuple[str, str], ...]:
  """``resnet34,mobilenet_v2`` -> the same-architecture pairs; ``teacher:student`` items
  and all / same / cross as `sembridge_jax.models.pairs.parse_pairs`."""
  if spec in PAIR_SELECTIONS:
    return PAIR_SELECTIONS[spec]
  return parse_pairs(",".join(item if ":" in item else f"{item}:{item}"
                              for item in spec.split(",")))


def jax_runner(timed: distill_step.TimedStep) -> Runner:
  return Runner(lambda: float(timed.warm_up()["loss"]), timed.seconds_per_step)


def torch_runner(step, inputs, device) -> Runner:
  """A PyTorch variant (in the worker process): ``step(inputs)`` timed on ``device``."""
  import torch

  def synchronize():
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  def seconds_per_step(steps: int) -> float:
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
      step(inputs)
    synchronize()
    return (time.perf_counter() - start) / steps

  return Runner(lambda: float(step(inputs)), seconds_per_step)


def torch_worker(connection, teacher_name: str, student_name: str, options: dict) -> None:
  """The child process: ports the pair's JAX weights to every PyTorch variant, warms them
  up, sends ``("ready", info, losses)``, then times ``("time", variant, steps)`` requests
  until ``None``."""
  os.environ["SEMBRIDGE_JAX_ONEDNN"] = "0"  # before the first convolution: no 2nd OpenMP
  jax.config.update("jax_platforms", "cpu")  # the JAX pair only ports weights: leave the GPU
  import torch

  from bench import pytorch_reference as reference

  args = argparse.Namespace(**options)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  jax_pair = distill_step.build_pair(teacher_name, student_name, args.batch, args.size,
                                     use_ot=not args.no_ot, dtype=args.dtype)
  torch_pair = reference.port_pair(jax_pair.teacher, jax_pair.distiller, teacher_name,
                                   student_name, num_classes=distill_step.NUM_CLASSES,
                                   ms_channels=distill_step.MS_BANDS, device=device)
  settings = reference.LossSettings.from_step_options(jax_pair.options)
  gallery = reference.gallery_tensors(jax_pair.gallery, device)
  inputs = reference.step_inputs(jax_pair.batch, device)
  runners = {}
  for variant in torch_variants(args):
    copy = reference.fresh_copy(torch_pair)
    step = reference.make_train_step(variant, copy.student, copy.head, copy.teacher, gallery,
                                     settings, compute_dtype=getattr(torch, args.dtype))
    runners["torch", variant] = torch_runner(step, inputs, device)
  losses = warm_up(runners, [("torch", variant) for variant in torch_variants(args)])
  info = (f"PyTorch {torch.__version__}: {device}"
          f"{'' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}")
  connection.send(("ready", info, losses))
  while (request := connection.recv()) is not None:
    _, variant, steps = request
    try:
      connection.send(runners["torch", variant].seconds_per_step(steps))
    except Exception:  # noqa: BLE001 -- e.g. a torch.compile recompile or OOM: report it
      connection.send(traceback.format_exc(limit=3))


class TorchWorker:
  """The PyTorch variants of one pair, run in a spawned child process (see the module
  docstring); ``runners`` has the same interface as the in-process JAX ones."""

  def __init__(self, teacher_name: str, student_name: str, args):
    context = multiprocessing.get_context("spawn")
    self._connection, child = context.Pipe()
    self._process = context.Process(target=torch_worker, daemon=True,
                                    args=(child, teacher_name, student_name, vars(args)))
    self._process.start()
    try:
      _, self.info, self.losses = self._connection.recv()
    except EOFError:
      raise RuntimeError("the PyTorch worker process died while building the pair") from None

  def runner(self, variant: str) -> Runner:
    def seconds_per_step(steps: int) -> float:
      self._connection.send(("time", variant, steps))
      reply = self._connection.recv()
      if isinstance(reply, str):
        raise RuntimeError(f"torch/{variant} failed in the worker:\n{reply}")
      return reply
    return Runner(lambda: self.losses["torch", variant], seconds_per_step)

  def close(self) -> None:
    try:
      self._connection.send(None)
    except (BrokenPipeError, EOFError, OSError):
      pass  # the worker is already gone; its error was reported
    self._process.join(timeout=60)
    if self._process.is_alive():
      self._process.kill()


def torch_variants(args) -> list[str]:
  """The PyTorch variants to time, in ``ROUND_ORDER``: all, or all but ``compiled``."""
  return [variant for framework, variant in ROUND_ORDER if framework == "torch"
          and not (variant == "compiled" and args.skip_compile)]


def round_order(args) -> list[tuple[str, str]]:
  return [key for key in ROUND_ORDER if key[0] == "jax" or key[1] in torch_variants(args)]


def build_runners(teacher_name: str, student_name: str, args, worker: TorchWorker
                  ) -> dict[tuple[str, str], Runner]:
  """Every variant of ``round_order(args)`` for one pair: JAX here, PyTorch in ``worker``."""
  jax_pair = distill_step.build_pair(teacher_name, student_name, args.batch, args.size,
                                     use_ot=not args.no_ot, dtype=args.dtype)
  runners = {("jax", name): jax_runner(timed) for name, timed in jax_pair.steps.items()}
  for variant in torch_variants(args):
    runners["torch", variant] = worker.runner(variant)
  return runners


def warm_up(runners: dict[tuple[str, str], Runner], keys
            ) -> dict[tuple[str, str], float | str]:
  """The first-step loss of every variant in ``keys`` (compiling it), or FAILED (reported
  on stderr)."""
  losses = {}
  for key in keys:
    try:
      losses[key] = runners[key].warm_up()
    except Exception:  # noqa: BLE001 -- torch.compile may fail in many ways; report it.
      print(f"{'/'.join(key)} failed:\n{traceback.format_exc(limit=3)}", file=sys.stderr)
      losses[key] = FAILED
  return losses


def interleaved_medians(runners: dict[tuple[str, str], Runner], working: list[tuple[str, str]],
                        rounds: int, steps: int, batch: int) -> dict[tuple[str, str], float]:
  """Median images/s over ``rounds`` rounds, each running every variant in ``working``
  once for ``steps`` steps, in ``ROUND_ORDER``; a variant that fails is left out."""
  samples, failed = {key: [] for key in working}, set()
  for _ in range(rounds):
    for key in working:
      if key in failed:
        continue
      try:
        samples[key].append(batch / runners[key].seconds_per_step(steps))
      except (RuntimeError, EOFError) as error:  # reported; the other variants go on
        print(f"{'/'.join(key)} failed: {error}", file=sys.stderr)
        failed.add(key)
  return {key: statistics.median(values) for key, values in samples.items()
          if key not in failed}


def bench_pair(teacher_name: str, student_name: str, args, worker: TorchWorker) -> dict:
  runners = build_runners(teacher_name, student_name, args, worker)
  losses = warm_up(runners, round_order(args))  # PyTorch's: the worker's, already done
  working = [key for key in round_order(args) if losses[key] != FAILED]
  speeds = interleaved_medians(runners, working, args.rounds, args.steps, args.batch)
  return {"pair": pair_name((teacher_name, student_name)), "losses": losses,
          "img_s": {key: speeds.get(key, FAILED) for key in round_order(args)}}


def pairing_records(result: dict) -> list[dict]:
  """The JSON lines of one pair: one per comparable (JAX, PyTorch) pairing."""
  records = []
  for jax_variant, torch_variant in PAIRINGS:
    jax_speed, torch_speed = result["img_s"]["jax", jax_variant], result["img_s"]["torch", torch_variant]
    ratio = (jax_speed / torch_speed if FAILED not in (jax_speed, torch_speed) else FAILED)
    records.append({"pair": result["pair"], "jax_variant": jax_variant,
                    "torch_variant": torch_variant, "jax_img_s": jax_speed,
                    "torch_img_s": torch_speed, "ratio": ratio})
  return records


def _number(value, digits: int = 0, suffix: str = "") -> str:
  return value if value == FAILED else f"{value:.{digits}f}{suffix}"


def markdown_header(order: list[tuple[str, str]]) -> str:
  columns = [f"{framework} {variant}" for framework, variant in order]
  ratios = [f"{a} / {b}" for a, b in PAIRINGS]
  names = ["pair", *columns, *ratios, "step-1 loss JAX / torch"]
  return "| " + " | ".join(names) + " |\n|" + "---|" * len(names)


def markdown_row(result: dict) -> str:
  speeds = [_number(speed) for speed in result["img_s"].values()]  # in round order
  ratios = [_number(record["ratio"], 2, "x") for record in pairing_records(result)]
  losses = result["losses"]
  loss_check = (f"{_number(losses['jax', 'gallery'], 5)} / "
                f"{_number(losses['torch', 'precomputed'], 5)}")
  return "| " + " | ".join([result["pair"], *speeds, *ratios, loss_check]) + " |"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--pairs", default="resnet34,mobilenet_v2",
                      help="architectures (same-architecture pairs), teacher:student items, "
                           "or all / same / cross")
  parser.add_argument("--no-ot", action="store_true", help="without the OT term")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch.set_num_threads (default: PyTorch's choice)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="the networks' compute dtype: JAX config.model.dtype, PyTorch "
                           "torch.autocast (parameters, optimiser and loss stay float32)")
  parser.add_argument("--skip-compile", action="store_true",
                      help="leave out torch.compile (its first step compiles for minutes)")
  parser.add_argument("--json", action="store_true", help="JSON lines instead of the table")
  args = parser.parse_args()
  jax_devices = jax.devices()
  for index, (teacher_name, student_name) in enumerate(parse_pair_list(args.pairs)):
    worker = TorchWorker(teacher_name, student_name, args)
    if index == 0 and not args.json:
      print(f"JAX {jax.__version__}: {len(jax_devices)} x {jax_devices[0].device_kind} "
            f"({jax.default_backend()}); {worker.info}; PyTorch in its own process; "
            f"batch {args.batch}, {args.size}x{args.size}, OT {'off' if args.no_ot else 'on'}, "
            f"networks in {args.dtype}; median img/s of {args.rounds} rounds x {args.steps} "
            "steps\n")
      print(markdown_header(round_order(args)), flush=True)
    try:
      result = bench_pair(teacher_name, student_name, args, worker)
    finally:
      worker.close()
    if args.json:
      for record in pairing_records(result):
        print(json.dumps(record), flush=True)
    else:
      print(markdown_row(result), flush=True)

if __name__ == "__main__":
  main()
