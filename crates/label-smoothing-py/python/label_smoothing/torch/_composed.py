"""The loss of docs/SPEC.md composed of torch operations: what runs where the Rust kernel cannot (CUDA, MPS and
other devices, float64, probability targets that require a gradient, ``torch.compile``), and the reference the
tests compare the kernel with. Inputs are already flattened to ``[M, K]`` logits and ``[M]`` (or ``[M, K]``)
targets and checked."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # 16-bit logits are computed in float32, as the kernel does.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _hard_target(spread: str, e, k: int):
    """(off, on): the target mass of every other class and of the label for smoothing ``e``."""
    if spread == "others":
        return e / (k - 1), 1 - e
    return e / k, 1 - e + e / k


def _soft_target(spread: str, e: float, k: int):
    """(scale, offset): the smoothed soft target is ``scale * t + offset``."""
    if spread == "others":
        return 1 - e - e / (k - 1), e / (k - 1)
    return 1 - e, e / k


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    soft: bool,
    weight: Optional[torch.Tensor],
    ignore_index: Optional[int],
    reduction: str,
    smoothing: float,
    spread: str,
    adaptive: Optional[float],
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
):
    """The loss of ``[M, K]`` logits, differentiable by autograd (adaptive smoothing held constant), and its
    z-loss term (detached), reduced alike (SPEC.md, "Options for large vocabularies")."""
    m, k = logits.shape
    dtype = _compute_dtype(logits.dtype)
    x = logits.to(dtype)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    logp = F.log_softmax(x, dim=1)
    w = None if weight is None else weight.to(device=logits.device, dtype=dtype)
    if soft:
        scale, offset = _soft_target(spread, smoothing, k)
        q = scale * target.to(dtype) + offset
        if w is not None:
            q = q * w
        rows = -(q * logp).sum(dim=1)
        counted = torch.full((), m, dtype=dtype, device=logits.device)
        valid = torch.ones(m, dtype=torch.bool, device=logits.device)
    else:
        valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        y = torch.where(valid, target, torch.zeros_like(target))
        logp_y = logp.gather(1, y.unsqueeze(1)).squeeze(1)
        if w is not None:
            w_y = w[y]
            all_classes = (logp * w).sum(dim=1)
        else:
            w_y = torch.ones_like(logp_y)
            all_classes = logp.sum(dim=1)
        rows = hard_rows(logp_y, all_classes, w_y, valid, spread=spread, smoothing=smoothing, adaptive=adaptive, k=k)
        counted = (w_y * valid).sum() if w is not None else valid.sum().to(dtype)
    lse = torch.logsumexp(x, dim=1) if z_loss != 0.0 else None
    z_count = valid.sum().to(dtype) if (w is not None and not soft) else counted
    return reduce(rows, lse, valid, (counted, z_count), z_loss=z_loss, reduction=reduction, out_dtype=logits.dtype)


def hard_rows(logp_y, all_classes, w_y, valid, *, spread: str, smoothing: float, adaptive: Optional[float], k: int):
    """Each row's loss for class indices from the label's log-probability ``logp_y``, the weighted sum of the
    row's log-probabilities ``all_classes`` (``sum_c w_c log p_c``) and the label's weight ``w_y``; 0 where
    not ``valid`` (ignored)."""
    e = adaptive * logp_y.detach().exp() if adaptive is not None else smoothing
    off, on = _hard_target(spread, e, k)
    rows = -(off * all_classes + (on - off) * w_y * logp_y)
    return torch.where(valid, rows, torch.zeros_like(rows))


def reduce(rows, lse, valid, counts, *, z_loss: float, reduction: str, out_dtype):
    """The reduced loss and its z-loss term (detached) from the rows' losses, their log-sum-exp ``lse`` (for the
    z-loss; ``None`` without), which rows count, and ``counts = (D, D_z)``: the cross-entropy's and the z-loss's
    denominators for ``"mean"``."""
    (counted, z_count), dtype = counts, rows.dtype
    if z_loss != 0.0:
        zs = torch.where(valid, z_loss * lse * lse, torch.zeros_like(lse))
    else:
        zs = torch.zeros_like(rows)
    if reduction == "none":
        return (rows + zs).to(out_dtype), zs.detach().to(out_dtype)
    total, z_total = rows.sum(), zs.sum()
    if reduction == "sum":
        out, z_out = total + z_total, z_total
    elif reduction == "mean":
        # A mean over no counted rows is 0 with a zero gradient (SPEC.md), where PyTorch gives NaN. The z-loss is
        # over the rows counted, not their weights (Liger-Kernel's rule).
        tiny = torch.finfo(dtype).tiny
        z_out = torch.where(counted > 0, z_total / torch.clamp(z_count, min=tiny), z_total * 0)
        out = torch.where(counted > 0, total / torch.clamp(counted, min=tiny), total * 0) + z_out
    else:  # mean_nonzero: fast-reid's count of non-zero rows, a constant for the gradient
        nonzero = ((rows + zs).detach() != 0).sum().clamp(min=1)
        out, z_out = (total + z_total) / nonzero, z_total / nonzero
    return out.to(out_dtype), z_out.detach().to(out_dtype)


def linear_logits(input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: Optional[torch.Tensor]):
    """``input @ linear_weight.T + linear_bias``."""
    return F.linear(input, linear_weight, linear_bias)
