"""Data parallelism with `jax.jit`, a 1-D device `Mesh` and `NamedSharding`.

Every trainer in the project uses the same recipe (the successor of `jax.pmap`):
parameters and optimizer state are *replicated* over the mesh, the global batch is
*sharded* along its leading axis over the mesh axis ``"data"``. `jax.jit` then
partitions the step automatically; cross-device reductions (the batch-mean of the
loss, BatchNorm statistics, gradients) are inserted by XLA, so a step on N devices
computes the same numbers as on one device holding the whole batch.

On several hosts (`jax.distributed.initialize()`), each host's input pipeline reads
its own slice of the global batch (`jax.process_index()`), and
`jax.make_array_from_process_local_data` stitches the slices into one global array.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name ``"data"``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the ``"data"`` axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Returns the per-host batch size; raises if the batch does not split evenly."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
        f"batch_size={global_batch_size} must be divisible by the number of "
        f"devices ({num_devices}); choose e.g. "
        f"{max(num_devices, global_batch_size // num_devices * num_devices)}.")
  return global_batch_size // jax.process_count()


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places this host's slice of a global batch onto the mesh, sharded by batch."""
  sharding = batch_sharded(mesh)
  return {
      key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
      for key, value in batch.items()
  }


def put_batches(batches: list[dict[str, np.ndarray]], mesh: Mesh) -> dict[str, jax.Array]:
  """One batch as `put_batch`; k > 1 batches stacked as ``(k, per-host batch, ...)``
  with the second axis split over the devices (one step per leading index, for
  ``config.steps_per_dispatch``)."""
  if len(batches) == 1:
    return put_batch(batches[0], mesh)
  sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
  return {key: jax.make_array_from_process_local_data(
              sharding, np.stack([np.asarray(batch[key]) for batch in batches]))
          for key in batches[0]}


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Replicates a pytree (parameters, optimizer state, a gallery) on every device."""
  return jax.device_put(tree, replicated(mesh))
