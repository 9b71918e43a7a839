"""Throughput of the three architectures, per convolution implementation.

For each model, input size and ``conv_impl`` this times a jitted Adam train step
(forward + backward + update, BatchNorm in train mode) and a jitted eval forward
pass on (batch, size, size, 3) images, 10 classes, and prints a markdown table
of images/s (best of several timed steps after warm-up). ``auto`` is what the models
use by default: on CPU it routes depthwise and small-map convolutions through
im2col GEMMs (see ``sembridge_jax/models/conv.py``); on GPU/TPU it is ``xla``.

  python bench/models.py [--batch 64] [--sizes 64 32] [--impls xla auto im2col]
                         [--models resnet34 ...] [--steps 5] [--budget-s 20]
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import optax
from flax import nnx

from sembridge_jax import models

NUM_CLASSES = 10
IN_CHANNELS = 3


class Throughput(NamedTuple):
  train_images_per_s: float
  eval_images_per_s: float
  compile_s: float


def _best_seconds(step, args, steps: int, budget_s: float) -> float:
  """Fastest of ``steps`` timed calls (at least 2; fewer than ``steps`` once ``budget_s`` is spent).

  The minimum, not the mean: on a shared CPU the other processes only ever add time.
  """
  times = []
  while len(times) < max(steps, 2) and (len(times) < 2 or sum(times) < budget_s):
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def measure(
  name: str, conv_impl: str, *, batch: int, size: int, steps: int, budget_s: float
) -> Throughput:
  model = models.create_model(
    name,
    num_classes=NUM_CLASSES,
    in_channels=IN_CHANNELS,
    rngs=nnx.Rngs(params=0, dropout=1),
    conv_impl=conv_impl,
  )
  images = jax.random.normal(jax.random.key(2), (batch, size, size, IN_CHANNELS))
  labels = jax.random.randint(jax.random.key(3), (batch,), 0, NUM_CLASSES)
  tx = optax.adam(1e-3)

  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, rest, opt_state, images, labels):
    def loss_fn(params, rest):
      # copy=True: fresh Variables at this trace level, so BatchNorm may update them.
      module = nnx.merge(graphdef, params, rest, copy=True)
      logits, _ = module(images)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, nnx.state(module, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  model.eval()
  eval_graphdef, eval_params, eval_rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def eval_step(params, rest, images):
    logits, features = nnx.merge(eval_graphdef, params, rest)(images)
    return logits, features["pooled"]

  start = time.perf_counter()
  train_args = (params, rest, opt_state, images, labels)
  jax.block_until_ready(train_step(*train_args))
  eval_args = (eval_params, eval_rest, images)
  jax.block_until_ready(eval_step(*eval_args))
  compile_s = time.perf_counter() - start
  # One more warm-up call each (first-run allocations), then the timed steps.
  jax.block_until_ready(train_step(*train_args))
  jax.block_until_ready(eval_step(*eval_args))
  train_s = _best_seconds(train_step, train_args, steps, budget_s)
  eval_s = _best_seconds(eval_step, eval_args, steps, budget_s)
  return Throughput(batch / train_s, batch / eval_s, compile_s)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32])
  parser.add_argument("--impls", nargs="+", default=["xla", "auto"], choices=models.CONV_IMPLS)
  parser.add_argument("--models", nargs="+", default=list(models.MODEL_NAMES),
                      choices=models.MODEL_NAMES)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--budget-s", type=float, default=20.0,
                      help="stop timing a step after this many seconds (min 2 steps)")
  args = parser.parse_args()

  device = jax.devices()[0]
  print(f"backend: {jax.default_backend()}, devices: {jax.device_count()} x "
        f"{device.device_kind}, batch {args.batch}, {IN_CHANNELS} channels, "
        f"{NUM_CLASSES} classes, Adam, best of up to {args.steps} steps\n")
  header = "| model | size | conv_impl | train img/s | eval img/s | compile s |"
  print(header)
  print("|---|---|---|---:|---:|---:|")
  for size in args.sizes:
    for name in args.models:
      baseline = None
      for impl in args.impls:
        result = measure(name, impl, batch=args.batch, size=size, steps=args.steps,
                         budget_s=args.budget_s)
        speedup = ""
        if baseline is None:
          baseline = result
        else:
          speedup = (f" ({result.train_images_per_s / baseline.train_images_per_s:.1f}x,"
                     f" {result.eval_images_per_s / baseline.eval_images_per_s:.1f}x)")
        print(f"| {name} | {size} | {impl}{speedup} | {result.train_images_per_s:.0f} | "
              f"{result.eval_images_per_s:.0f} | {result.compile_s:.1f} |", flush=True)


if __name__ == "__main__":
  main()
