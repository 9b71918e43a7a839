"""Raw images of a split's records by index, from the TFDS random-access source.

A `RecordReader` returns a batch of *undecoded-range* images: MS as uint16 (B, H, W, C),
RGB as uint8 (B, h, w, 3) at their stored size. It either decodes the requested records
on each call (streaming: zlib / JPEG per record) or, when the whole decoded split fits in
memory, decodes every record once and then serves batches by fancy indexing (cached).
The small benchmarks here (a few thousand 32-128 pixel images) always fit.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from sembridge_jax.data import preprocessing

# Decoded splits up to this size are cached in memory by default.
DEFAULT_CACHE_BYTES = 2 << 30


class RecordReader:
  """Reads raw images of one split; ``is_ms`` selects the ``ms_image`` or ``rgb_jpeg`` field."""

  def __init__(self, source: Sequence[dict[str, Any]], *, is_ms: bool,
               image_shape: tuple[int, ...], cache: bool):
    self.source = source
    self.is_ms = is_ms
    self.image_shape = tuple(image_shape)
    self.cache = cache
    self._decoded: np.ndarray | None = None
    self._lock = threading.Lock()

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.uint16 if self.is_ms else np.uint8)

  @property
  def decoded_bytes(self) -> int:
    return len(self.source) * int(np.prod(self.image_shape)) * self.dtype.itemsize

  def _decode(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
    if not records:
      return np.zeros((0, *self.image_shape), self.dtype)
    if self.is_ms:
      return np.stack([r["ms_image"] for r in records])
    return preprocessing.decode_jpegs([r["rgb_jpeg"] for r in records])

  def _read_records(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    getitems = getattr(self.source, "__getitems__", None)
    if getitems is not None:
      return list(getitems([int(i) for i in indices]))
    return [self.source[int(i)] for i in indices]

  def decoded(self) -> np.ndarray:
    """The whole split decoded, (N, *image_shape); computed once, then shared."""
    with self._lock:
      if self._decoded is None:
        chunk = 256
        parts = [self._decode(self._read_records(range(start, min(start + chunk,
                                                                  len(self.source)))))
                 for start in range(0, len(self.source), chunk)]
        self._decoded = (np.concatenate(parts) if parts
                         else np.zeros((0, *self.image_shape), self.dtype))
      return self._decoded

  def read(self, indices: np.ndarray) -> np.ndarray:
    """Raw images of records ``indices`` (int array), (len(indices), *image_shape)."""
    if self.cache:
      return self.decoded()[indices]
    return self._decode(self._read_records(indices))
