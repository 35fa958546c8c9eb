"""Exact, fast label-smoothed cross-entropy for PyTorch and numpy, on fused Rust CPU kernels.

- :mod:`label_smoothing.torch`: ``cross_entropy`` (a drop-in for ``torch.nn.functional.cross_entropy`` with
  the spread, adaptive smoothing and the ``mean_nonzero`` reduction added), ``LabelSmoothingCrossEntropy``,
  fast-reid's ``fast_reid_cross_entropy_loss``, and ``linear_cross_entropy`` / ``LinearCrossEntropyLoss``
  (the loss of a linear classifier without its logits). Needs torch.
- :mod:`label_smoothing.numpy`: the same loss and its gradient on numpy arrays.
- :mod:`label_smoothing.calibration`: accuracy, NLL, Brier, ECE/MCE, smooth ECE, the debiased L2 calibration
  error, bootstrap intervals, temperature and vector scaling, and reliability diagrams.

The kernels run on their own thread pool: :func:`set_num_threads` sets its size; by default
:mod:`label_smoothing.torch` follows ``torch.get_num_threads()`` and the rest uses one thread per core. Results
are bit-identical for any number of threads.
"""
from __future__ import annotations

from typing import Optional

from . import _native

__version__: str = _native.__version__

__all__ = ["__version__", "set_num_threads", "get_num_threads", "instruction_set"]

_num_threads: Optional[int] = None


def set_num_threads(num_threads: Optional[int]) -> None:
    """Sets the number of threads the kernels run on (``None`` restores the default).

    The default follows ``torch.get_num_threads()`` for :mod:`label_smoothing.torch` and is one thread per core
    (or ``RAYON_NUM_THREADS``) elsewhere. The results do not depend on the number of threads, only the speed.

    >>> import label_smoothing
    >>> label_smoothing.set_num_threads(2)
    >>> label_smoothing.get_num_threads()
    2
    >>> label_smoothing.set_num_threads(None)
    """
    global _num_threads
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads: expected a positive integer or None, got {num_threads!r}")
    _num_threads = num_threads


def get_num_threads() -> int:
    """The number of threads the numpy and calibration functions use (the torch functions follow
    ``torch.get_num_threads()`` unless :func:`set_num_threads` was called)."""
    return _num_threads if _num_threads is not None else _native.default_num_threads()


def _threads(default: int = 0) -> int:
    """The pool size to pass to the native calls: the explicit setting, else ``default`` (0: one per core)."""
    return _num_threads if _num_threads is not None else default


def instruction_set() -> str:
    """The SIMD instruction set the kernels chose on this machine: ``avx512f``, ``avx2+fma`` or ``portable``."""
    return _native.INSTRUCTION_SET
