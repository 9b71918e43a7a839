"""Where a SemBridge distillation step's time goes, by XLA operation (a profile).

  python bench/step_profile.py [--pair resnet34] [--batch 64] [--size 64] [--steps 3]
      [--variant gallery|teacher_inside] [--top 15] [--out DIR]

Builds the step of bench/distill_step.py for one teacher -> student pair, runs it under
`jax.profiler` for ``--steps`` steps and reads the trace's per-thunk events (XLA:CPU runs
one thunk per fused operation; on a GPU the kernels appear instead). Each thunk is looked
up in the compiled program's HLO and labelled by what it computes:

* ``conv forward``, ``conv input gradient``, ``conv weight gradient`` (from the JAX
  operation that produced it: ``jvp`` is the forward pass, ``transpose(jvp)`` the
  backward; a backward convolution whose output is the kernel is the weight gradient),
  and the same three marked ``(oneDNN)`` for the oneDNN custom calls of ``"auto"`` on CPU;
* ``matmul`` (dots: im2col convolutions, the alignment head, the classifier),
  ``layout copy`` (transposes and copies), ``elementwise / reduction`` (the rest).

Prints the time per step by label and the ``--top`` most expensive operations with
their output shapes; ``--out`` keeps the trace (TensorBoard / Perfetto) and the HLO.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import distill_step  # noqa: E402  (bench/distill_step.py)

# Profiler bookkeeping, not work: the executor's own spans and the Python frames.
NOT_WORK = re.compile(r"^(\$|Thunk|SlinkyThreadPool|PjitFunction|ThreadPool)")
HLO_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ")
OP_NAME = re.compile(r"op_name=\"([^\"]*)\"")
CUSTOM_CALL = re.compile(r"custom_call_target=\"([^\"]*)\"")
# The oneDNN convolutions' FFI targets (sembridge_jax/models/onednn.py) -> label.
ONEDNN_LABELS = {"sembridge_conv_fwd": "conv forward",
                 "sembridge_conv_bwd_data": "conv input gradient",
                 "sembridge_conv_bwd_weights": "conv weight gradient"}


def hlo_index(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name -> (output shape, the JAX operation's name) of a compiled module;
  a custom call's name is its target's."""
  index = {}
  for line in hlo_text.splitlines():
    match = HLO_LINE.match(line)
    if match:
      op_name = CUSTOM_CALL.search(line) or OP_NAME.search(line)
      index[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
  return index


def dims(shape: str) -> tuple[int, ...]:
  """``f32[64,3,3,64]{3,2,1,0}`` -> (64, 3, 3, 64)."""
  inside = shape.partition("[")[2].partition("]")[0]
  return tuple(int(d) for d in inside.split(",") if d.strip().isdigit())


def label(name: str, shape: str, op_name: str, kernel_shapes: set[tuple[int, ...]]) -> str:
  """What a thunk computes (see the module docstring)."""
  if op_name in ONEDNN_LABELS:
    return ONEDNN_LABELS[op_name] + " (oneDNN)"
  if "conv_general_dilated" in op_name:
    if "transpose(" not in op_name:
      return "conv forward"
    weight = tuple(sorted(dims(shape))) in kernel_shapes
    return "conv weight gradient" if weight else "conv input gradient"
  if "dot_general" in op_name:
    return "matmul"
  if name.startswith(("transpose", "copy")) or "transpose" in name:
    return "layout copy"
  return "elementwise / reduction"


def thunk_times(trace_dir: pathlib.Path) -> collections.Counter:
  """Total microseconds per thunk name in the newest Perfetto trace under ``trace_dir``."""
  trace = sorted(trace_dir.rglob("*.trace.json.gz"))[-1]
  events = json.load(gzip.open(trace))["traceEvents"]
  totals = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not NOT_WORK.match(event["name"]):
      totals[event["name"]] += event["dur"]
  return totals


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pair", default="resnet34",
                      help="an architecture (teacher = student) or teacher:student")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--variant", default="gallery", choices=("gallery", "teacher_inside"))
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--out", type=pathlib.Path, default=None,
                      help="keep the trace and the HLO here")
  args = parser.parse_args()
  teacher, _, student = args.pair.partition(":")
  pair = distill_step.build_pair(teacher, student or teacher, args.batch, args.size)
  timed = pair.steps[args.variant]
  timed.warm_up()
  timed.seconds_per_step(1)
  out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="step_profile_"))
  jax.profiler.start_trace(str(out), create_perfetto_trace=True)
  start = time.perf_counter()
  timed.seconds_per_step(args.steps)
  seconds = (time.perf_counter() - start) / args.steps
  jax.profiler.stop_trace()

  hlo = timed.step.lower(timed.state, *timed.args).compile().as_text()
  (out / "step.hlo.txt").write_text(hlo)
  index = hlo_index(hlo)
  # Backward convolutions whose output holds a kernel's dimensions (in any layout order).
  kernel_shapes = {tuple(sorted(leaf.shape)) for leaf in jax.tree.leaves(timed.state.params)
                   if getattr(leaf, "ndim", 0) == 4}
  totals = thunk_times(out)
  per_step = {name: micros / 1e3 / args.steps for name, micros in totals.items()}
  by_label: collections.Counter = collections.Counter()
  rows = []
  for name, ms in per_step.items():
    shape, op_name = index.get(name, ("?", ""))
    kind = label(name, shape, op_name, kernel_shapes)
    by_label[kind] += ms
    rows.append((ms, name, kind, shape.split("{")[0]))
  busy = sum(by_label.values())
  print(f"{args.pair} ({args.variant}), batch {args.batch}, {args.size} px, "
        f"{jax.devices()[0].device_kind}: {seconds * 1e3:.0f} ms per step "
        f"({args.batch / seconds:.0f} img/s), {busy:.0f} ms in XLA operations\n")
  print("| what | ms per step | share |\n|---|---:|---:|")
  for kind, ms in by_label.most_common():
    print(f"| {kind} | {ms:.1f} | {100 * ms / busy:.0f}% |")
  print(f"\n| top operations | what | output | ms per step |\n|---|---|---|---:|")
  for ms, name, kind, shape in sorted(rows, reverse=True)[:args.top]:
    print(f"| {name} | {kind} | {shape} | {ms:.1f} |")
  if args.out:
    print(f"\ntrace and HLO in {out}")


if __name__ == "__main__":
  main()
