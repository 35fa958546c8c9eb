"""Gradient buffers kept for reuse between calls, as PyTorch's CUDA caching allocator keeps device memory.

Fresh memory costs its first touch: the kernel zeroes every page before the process may use it, so a fresh
256 MB gradient costs about as much as the fused kernel's whole pass over the logits. The cache keeps, per shape
and dtype, up to two numpy arrays and hands out views of them; an array is free again when no view of it is alive
(its reference count says so: a torch tensor made by ``torch.from_numpy`` holds its view, which holds the array),
so a buffer is never handed out twice while a gradient still uses it. Buffers under 1 MiB are not kept (malloc
reuses small blocks by itself). The cache holds at most ``limit`` bytes (default 1 GiB), oldest shapes dropped
first; :func:`label_smoothing.torch.empty_cache` releases it all and :func:`set_gradient_cache_limit` sets the
limit (0 turns it off).
"""
from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict

import numpy as np

_MIN_BYTES = 1 << 20
_PER_KEY = 2


class GradientCache:
    """Numpy arrays kept for reuse, by shape and dtype."""

    def __init__(self, limit: int = 1 << 30) -> None:
        self.limit = limit
        self._arrays: "OrderedDict[tuple, list]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``: a view of a kept array that no one uses, or new."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes < _MIN_BYTES or self.limit <= 0:
            return np.empty(shape, dtype)
        key = (shape, np.dtype(dtype).str)
        with self._lock:
            kept = self._arrays.get(key)
            if kept is not None:
                self._arrays.move_to_end(key)
                for i in range(len(kept)):
                    # Free when only the list and getrefcount's argument refer to it (no loop variable may hold
                    # it while counting).
                    if sys.getrefcount(kept[i]) == 2:
                        return kept[i].view()
            base = np.empty(shape, dtype)
            if nbytes <= self.limit and (kept is None or len(kept) < _PER_KEY):
                while self._bytes + nbytes > self.limit and self._arrays:
                    _, dropped = self._arrays.popitem(last=False)
                    self._bytes -= sum(a.nbytes for a in dropped)
                self._arrays.setdefault(key, []).append(base)
                self._bytes += nbytes
            return base.view()

    def clear(self) -> None:
        """Forgets every kept array (those still in use live on with their gradients)."""
        with self._lock:
            self._arrays.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """The bytes kept."""
        return self._bytes


CACHE = GradientCache()


def empty_cache() -> None:
    """Releases the gradient buffers kept for reuse (as ``torch.cuda.empty_cache`` does for device memory)."""
    CACHE.clear()


def set_gradient_cache_limit(limit_bytes: int) -> None:
    """Sets how many bytes of gradient buffers are kept for reuse (default 1 GiB; 0 keeps none)."""
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise ValueError(f"limit_bytes: expected a non-negative integer, got {limit_bytes!r}")
    CACHE.limit = limit_bytes
    if limit_bytes == 0:
        CACHE.clear()
