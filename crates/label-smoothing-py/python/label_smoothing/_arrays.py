"""Numpy arrays from numpy arrays, torch tensors or nested lists, checked and named."""
from __future__ import annotations

import numpy as np


def _to_numpy(x, name: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (_torch_float32(), _torch_float64()):
            t = t.float()  # bfloat16 and float16, which numpy cannot hold (bfloat16) or compute well
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{name}: cannot be read as an array: {e}") from None


def _torch_float32():
    import torch

    return torch.float32


def _torch_float64():
    import torch

    return torch.float64


def floats_2d(x, name: str) -> np.ndarray:
    """A C-contiguous float32 ``[N, K]`` array (a view where ``x`` already is one)."""
    a = _to_numpy(x, name)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected floating-point values, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape [N, K], got {list(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def labels_1d(y, n: int, name: str = "labels") -> np.ndarray:
    """A C-contiguous int64 ``[n]`` array of class indices."""
    a = _to_numpy(y, name)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class indices, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape [{n}] (one per row), got {list(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.int64)
