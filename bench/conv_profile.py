"""Where the convolution time of a training step goes: per layer, JAX against PyTorch.

  python bench/conv_profile.py [--models resnet34 mobilenet_v2] [--batch 64] [--size 64]
      [--rounds 3] [--steps 3] [--impls auto] [--torch-threads N] [--top N] [--json]

The convolution calls of one train-mode forward pass of each model on (batch, size,
size, 3) images are recorded (abstractly, by wrapping ``conv.conv2d``) and grouped
into unique layers (input shape, kernel, strides, padding, groups). Each layer is then
timed alone, jitted, on the current device: forward, input gradient (VJP with respect
to x only) and weight gradient (VJP with respect to the kernel only), with the
implementation the model's ``conv_impl="auto"`` resolves to (or each of ``--impls``);
and in PyTorch (if importable) as ``nn.Conv2d`` on NCHW input: forward under no_grad,
``autograd.grad`` into x only and into the weight only, on a retained graph. Each
timing is the fastest of ``--steps`` calls after warm-up; JAX and PyTorch alternate
over ``--rounds`` rounds and the median of the per-round minimums is reported. Once
per layer the two forward outputs (same weights) are compared to rtol 1e-3.

Prints per model a Markdown table sorted by JAX time x count: JAX and PyTorch fwd / dx
/ dw in ms, both totals x count and ratio = PyTorch / JAX (> 1: JAX faster), a totals
line and the three most expensive layers in one sentence; with ``--json`` one JSON
object per layer line instead.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sembridge_jax import models
from sembridge_jax.models import conv
from sembridge_jax.models.windows import normalize_padding

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # PyTorch columns stay empty
  torch = None

PARTS = ("fwd", "dx", "dw")
Layer = collections.namedtuple("Layer", "input_shape kernel_shape strides padding groups")


def record_layers(name: str, *, batch: int, size: int, conv_impl: str = "auto"
                  ) -> list[tuple[Layer, int, str]]:
  """(layer, count, resolved impl) of each unique convolution of a train-mode forward.

  Abstract (``nnx.eval_shape``): nothing is computed.
  """
  model = nnx.eval_shape(lambda: models.create_model(
    name, num_classes=10, in_channels=3, rngs=nnx.Rngs(params=0, dropout=1),
    conv_impl=conv_impl))
  model.train()
  counts, impls, original = collections.Counter(), {}, conv.conv2d

  def recorder(x, kernel, *, strides=(1, 1), padding=0, feature_group_count=1, impl="auto"):
    layer = Layer(tuple(x.shape), tuple(kernel.shape), tuple(strides),
                  normalize_padding(padding), feature_group_count)
    counts[layer] += 1
    impls[layer] = conv.resolve_conv_impl(
      impl, input_shape=x.shape, kernel_shape=kernel.shape, strides=strides,
      padding=padding, feature_group_count=feature_group_count)
    return original(x, kernel, strides=strides, padding=padding,
                    feature_group_count=feature_group_count, impl=impl)

  conv.conv2d = recorder
  try:
    nnx.eval_shape(lambda m, x: m(x), model,
                   jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
  finally:
    conv.conv2d = original
  return [(layer, count, impls[layer]) for layer, count in counts.items()]


def _best_ms(call, steps: int) -> float:
  times = []
  for _ in range(max(steps, 1)):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return 1e3 * min(times)


def jax_timer(layer: Layer, impl: str, x, kernel, dy):
  """``(steps) -> {part: ms}`` and the forward output; compiles and warms up all three."""
  def f(x, k):
    return conv.conv2d(x, k, strides=layer.strides, padding=layer.padding,
                       feature_group_count=layer.groups, impl=impl)

  fns = {"fwd": (jax.jit(f), (x, kernel)),
         "dx": (jax.jit(lambda x, k, g: jax.vjp(lambda x: f(x, k), x)[1](g)[0]), (x, kernel, dy)),
         "dw": (jax.jit(lambda x, k, g: jax.vjp(lambda k: f(x, k), kernel)[1](g)[0]),
                (x, kernel, dy))}
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
  def timer(steps):
    return {p: _best_ms(lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), steps)
            for p, (fn, args) in fns.items()}

  return timer, fns["fwd"][0](x, kernel)


def torch_timer(layer: Layer, x, kernel, dy):
  (top, bottom), (left, right) = layer.padding
  kh, kw, _, out = layer.kernel_shape
  symmetric = top == bottom and left == right
  module = torch.nn.Conv2d(layer.input_shape[-1], out, (kh, kw), layer.strides,
                           (top, left) if symmetric else 0, groups=layer.groups, bias=False)
  with torch.no_grad():
    module.weight.copy_(torch.from_numpy(np.array(kernel).transpose(3, 2, 0, 1)))
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  tdy = torch.from_numpy(np.asarray(dy).transpose(0, 3, 1, 2).copy())

  def forward(inp):
    return module(inp if symmetric else F.pad(inp, (left, right, top, bottom)))

  @torch.no_grad()
  def forward_no_grad():
    return forward(tx)

  y = forward_no_grad()
  module.weight.requires_grad_(False)
  x_grad = tx.clone().requires_grad_(True)
  y_dx = forward(x_grad)
  module.weight.requires_grad_(True)
  y_dw = forward(tx)
  calls = {"fwd": forward_no_grad,
           "dx": lambda: torch.autograd.grad(y_dx, x_grad, tdy, retain_graph=True),
           "dw": lambda: torch.autograd.grad(y_dw, module.weight, tdy, retain_graph=True)}
  for call in calls.values():
    call()
  return (lambda steps: {p: _best_ms(call, steps) for p, call in calls.items()}
          ), y.numpy().transpose(0, 2, 3, 1)


def label(layer: Layer) -> str:
  (_, h, w, c), (kh, kw, _, o) = layer.input_shape, layer.kernel_shape
  pads = layer.padding
  pad = pads[0][0] if len({p for pair in pads for p in pair}) == 1 else pads
  return f"{h}x{w} {c}->{o} {kh}x{kw} s{layer.strides[0]} p{pad} g{layer.groups}"


def profile_layer(layer: Layer, impl: str, *, rounds: int, steps: int) -> dict:
  keys = jax.random.split(jax.random.key(0), 3)
  fan_in = float(np.prod(layer.kernel_shape[:3]))
  x = jax.random.normal(keys[0], layer.input_shape)
  kernel = jax.random.normal(keys[1], layer.kernel_shape) / np.sqrt(fan_in)
  y_shape = jax.eval_shape(lambda x, k: conv.conv2d(
    x, k, strides=layer.strides, padding=layer.padding, feature_group_count=layer.groups,
    impl="xla"), x, kernel).shape
  dy = jax.random.normal(keys[2], y_shape)
  timers, agree = [jax_timer(layer, impl, x, kernel, dy)], None
  if torch is not None:
    timers.append(torch_timer(layer, x, kernel, dy))
    reference = timers[1][1]
    agree = bool(np.allclose(np.asarray(timers[0][1]), reference, rtol=1e-3,
                             atol=1e-3 * float(np.abs(reference).max())))
  per_round = [[timer(steps) for timer, _ in timers] for _ in range(rounds)]  # A, B, A, B
  medians = [{p: statistics.median(r[i][p] for r in per_round) for p in PARTS}
             for i in range(len(timers))]
  return {"jax_ms": medians[0], "torch_ms": medians[1] if torch is not None else None,
          "agree": agree}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", nargs="+", default=["resnet34", "mobilenet_v2"],
                      choices=models.MODEL_NAMES)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed calls per round (min taken)")
  parser.add_argument("--impls", nargs="+", default=["auto"], choices=models.CONV_IMPLS)
  parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
  parser.add_argument("--top", type=int, default=None, help="only the N most expensive layers")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  if torch is not None:
    torch.set_num_threads(args.torch_threads)
  if not args.json:
    device = jax.devices()[0]
    print(f"backend: {jax.default_backend()}, {device.device_kind}, batch {args.batch}, "
          f"{args.size}x{args.size}, PyTorch "
          f"{f'{torch.__version__}, {args.torch_threads} threads' if torch else 'missing'}, "
          f"median over {args.rounds} rounds of the best of {args.steps} calls\n")

  def fmt(ms):
    return "-" if ms is None else f"{ms:.2f}"

  for name in args.models:
    rows = []
    for layer, count, auto in record_layers(name, batch=args.batch, size=args.size):
      for impl in args.impls:
        resolved = auto if impl == "auto" else impl
        result = profile_layer(layer, resolved, rounds=args.rounds, steps=args.steps)
        jax_total = count * sum(result["jax_ms"].values())
        torch_total = count * sum(result["torch_ms"].values()) if result["torch_ms"] else None
        rows.append(dict(model=name, layer=label(layer), input_shape=layer.input_shape,
                         kernel_shape=layer.kernel_shape, strides=layer.strides,
                         padding=layer.padding, groups=layer.groups, count=count,
                         impl=f"auto ({auto})" if impl == "auto" else impl, **result,
                         jax_total_ms=jax_total, torch_total_ms=torch_total,
                         ratio=torch_total / jax_total if torch_total else None))
        if result["agree"] is False:
          print(f"WARNING: {name} {label(layer)} {impl}: JAX and PyTorch forward outputs "
                "differ beyond rtol 1e-3", flush=True)
    rows.sort(key=lambda row: row["jax_total_ms"], reverse=True)
    shown = rows[:args.top] if args.top else rows
    if args.json:
      for row in shown:
        print(json.dumps(row), flush=True)
      continue
    print(f"### {name}\n\n| layer | count | impl | JAX fwd | JAX dx | JAX dw | PT fwd | PT dx "
          "| PT dw | JAX ms x count | PT ms x count | PT / JAX |\n"
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in shown:
      pt = row["torch_ms"] or dict.fromkeys(PARTS)
      print(f"| {row['layer']} | {row['count']} | {row['impl']} | "
            + " | ".join(fmt(row["jax_ms"][p]) for p in PARTS) + " | "
            + " | ".join(fmt(pt[p]) for p in PARTS)
            + f" | {fmt(row['jax_total_ms'])} | {fmt(row['torch_total_ms'])} | "
            f"{fmt(row['ratio'])} |")
    for impl in args.impls:
      mine = [r for r in rows if r["impl"].split(" ")[0] == impl]
      jax_sum = sum(r["jax_total_ms"] for r in mine)
      torch_sum = sum(r["torch_total_ms"] or 0.0 for r in mine)
      print(f"\n{name}, {impl}: all {len(mine)} layers {jax_sum:.1f} ms in JAX, "
            + (f"{torch_sum:.1f} ms in PyTorch (PT / JAX {torch_sum / jax_sum:.2f})"
               if torch else "no PyTorch"))
    items = []
    for row in rows[:3]:
      worst = (min(PARTS, key=lambda p: row["torch_ms"][p] / row["jax_ms"][p])
               if row["torch_ms"] else None)
      items.append(f"{row['layer']} x{row['count']} [{row['impl']}] "
                   f"{row['jax_total_ms']:.1f} ms"
                   + (f", PT / JAX {row['ratio']:.2f}, worst part {worst} "
                      f"({row['torch_ms'][worst] / row['jax_ms'][worst]:.2f})" if worst else ""))
    print(f"Top 3 by JAX time: {'; '.join(items)}.\n", flush=True)


if __name__ == "__main__":
  main()
