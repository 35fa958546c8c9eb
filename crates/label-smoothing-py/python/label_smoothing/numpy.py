"""The label-smoothed cross-entropy and its gradient on numpy arrays (float32, or float16), for code without
torch. Same options as :func:`label_smoothing.torch.cross_entropy`.

>>> import numpy as np
>>> from label_smoothing.numpy import cross_entropy
>>> logits = np.array([[2.0, 0.5, -1.0, 0.0, 1.0, -0.5]], dtype=np.float32)
>>> loss, grad = cross_entropy(logits, np.array([0]), label_smoothing=0.1, spread="others",
...                            reduction="mean_nonzero", return_grad=True)
>>> round(loss, 5), grad.shape
(0.81962, (1, 6))
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _native, _options, _threads

__all__ = ["cross_entropy"]


def cross_entropy(
    input: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray] = None,
    ignore_index: Optional[int] = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    spread: str = "uniform",
    adaptive: Optional[float] = None,
    lse_square_scale: float = 0.0,
    softcap: Optional[float] = None,
    return_grad: bool = False,
    grad_output=None,
):
    """The loss of logits ``input`` ``[N, K]`` (float32 or float16) against class indices ``[N]`` or
    probabilities ``[N, K]``; with ``return_grad=True`` also ``dLoss/dinput`` (the input's dtype), scaled by
    ``grad_output`` (a number, or ``[N]`` values for ``reduction="none"``). ``lse_square_scale`` (z-loss) and
    ``softcap`` as in :func:`label_smoothing.torch.cross_entropy`.

    Returns the loss (a float, or a float32 ``[N]`` array for ``reduction="none"``), or ``(loss, grad)``.

    >>> import numpy as np
    >>> from label_smoothing.numpy import cross_entropy
    >>> z = np.array([[2.0, 0.5, -1.0]], dtype=np.float32)
    >>> lse = float(np.log(np.exp(z.astype(np.float64)).sum()))
    >>> plain = cross_entropy(z, np.array([0]))
    >>> abs(cross_entropy(z, np.array([0]), lse_square_scale=1e-2) - (plain + 1e-2 * lse**2)) < 1e-6
    True
    """
    z = np.asarray(input)
    if z.dtype not in (np.float32, np.float16):
        raise TypeError(f"input: expected float32 or float16 logits, got dtype {z.dtype}")
    if z.ndim != 2:
        raise ValueError(f"input: expected shape [N, K], got {list(z.shape)}")
    z = np.ascontiguousarray(z)
    t = np.asarray(target)
    soft = np.issubdtype(t.dtype, np.floating)
    if soft:
        if t.shape != z.shape:
            raise ValueError(f"target: probability targets must have the input's shape {list(z.shape)}, "
                             f"got {list(t.shape)}")
        t = np.ascontiguousarray(t, dtype=np.float32)
    else:
        if not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"target: expected class indices or probabilities, got dtype {t.dtype}")
        if t.shape != (z.shape[0],):
            raise ValueError(f"target: expected shape [{z.shape[0]}], got {list(t.shape)}")
        t = np.ascontiguousarray(t, dtype=np.int64)
    w = None
    if weight is not None:
        w = np.ascontiguousarray(weight, dtype=np.float32)
        if w.shape != (z.shape[1],):
            raise ValueError(f"weight: expected shape [{z.shape[1]}] (one per class), got {list(w.shape)}")
    reduction = _options.reduction(reduction)
    grad = np.empty_like(z) if return_grad else None
    scale, rows = 1.0, None
    if grad_output is not None:
        g = np.asarray(grad_output, dtype=np.float32)
        if g.ndim == 0:
            scale = float(g)
        else:
            rows = np.ascontiguousarray(g)
    loss = _native.cross_entropy(
        z, str(z.dtype), z.shape[1], t, soft, weight=w, ignore_index=_options.ignore_index(ignore_index),
        reduction=reduction.replace("_", "-"), smoothing=_options.unit_interval("label_smoothing", label_smoothing),
        spread=_options.spread(spread), adaptive=_options.adaptive(adaptive), grad=grad, grad_scale=scale,
        grad_rows=rows, threads=_threads(), z_loss=_options.z_loss(lse_square_scale),
        softcap=_options.softcap(softcap),
    )
    return (loss, grad) if return_grad else loss
