"""Vocabulary-parallel label smoothing over ``torch.distributed``: each rank holds the logits of a contiguous range
of the classes (tensor parallelism of the output layer, as in Megatron-LM), and every rank gets the loss of the
whole row and the gradient of its own slice.

On float32 CPU logits the exact mode runs the Rust kernel; on other devices and dtypes (CUDA with NCCL) the same
definition runs as torch operations with the same single exchange (see ``backend``).

The exact mode runs the core's class-sharded protocol (``label_smoothing::shard`` in Rust): each rank reduces its
slice of every row to a record of per-piece softmax statistics (a few ``float64`` values per row and per chunk of
2048 classes), the records are exchanged with one ``all_gather``, and every rank folds them in class order: the
loss is the same on every rank, and where the slices start at multiples of 2048 classes the loss and every
gradient entry are bit-identical to :func:`label_smoothing.torch.cross_entropy` on the concatenated logits in one
process. ``mode="megatron"`` reproduces Megatron-LM's formula instead, which is wrong (see
:func:`vocab_parallel_cross_entropy`).

Every rank must call with the same ``target``, options and ``vocab_size``; before any exchange of statistics the
ranks agree on their inputs (one ``all_gather_object``), so a bad input on one rank raises the same
``ValueError`` on every rank instead of leaving the others waiting.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import _native, _options
from ._composed import hard_rows, reduce
from .functional import _choose_backend, _numpy, _threads

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_MODES = ("exact", "megatron")
# The kernel's chunk of classes: the pieces of the records.
_CHUNK = _native.CHUNK


def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    group=None,
    *,
    vocab_start: int,
    vocab_size: int,
    label_smoothing: float = 0.0,
    spread: str = "uniform",
    weight: Optional[torch.Tensor] = None,
    ignore_index: Optional[int] = -100,
    reduction: str = "mean",
    adaptive: Optional[float] = None,
    lse_square_scale: float = 0.0,
    softcap: Optional[float] = None,
    mode: str = "exact",
    backend: Optional[str] = None,
) -> torch.Tensor:
    """The label-smoothed cross-entropy of logits split by classes across the ranks of ``group``.

    Args:
        logits_shard: this rank's logits ``[N, K_r]`` (or ``[..., K_r]``): classes ``vocab_start`` to
            ``vocab_start + K_r`` of every row, floating point on any device (see ``backend``). The ranks'
            slices, in rank order, must tile ``[0, vocab_size)``.
        target: class indices ``[N]`` (or the logits' leading shape) in ``[0, vocab_size)`` or ``ignore_index``,
            the same on every rank.
        group: the process group (``None``: the default group).
        vocab_start, vocab_size: where this rank's classes start, and the number of classes ``K`` of the whole
            row.
        label_smoothing, spread, weight, ignore_index, reduction, adaptive, lse_square_scale, softcap: as for
            :func:`label_smoothing.torch.cross_entropy`, over all ``K`` classes (``weight`` is the ``[K]`` class
            weights, the same on every rank).
        mode: ``"exact"`` (the definition) or ``"megatron"``: Megatron-LM's ``vocab_parallel_cross_entropy``,
            which smooths with the rank's class count ``K_r`` (``smoothing = label_smoothing * K_r / (K_r - 1)``)
            and the mean of the log-probabilities over the rank's classes only, so its loss and gradients differ
            from rank to rank and from the definition whenever there is more than one rank (Megatron-LM issues
            #737 and #7464). Use it only to match an existing run. It takes ``label_smoothing``, ``reduction``
            (``"none"``, ``"sum"`` or ``"mean"`` over the rows) and nothing else.
        backend: ``None``/``"auto"`` runs the Rust kernel on float32 CPU logits and torch operations elsewhere
            (CUDA with NCCL, float64, 16-bit); ``"kernel"`` insists on the kernel; ``"torch"`` forces the torch
            operations. Both exchange per-piece statistics once and fold them in class order; the torch operations
            agree with one process within SPEC.md's tolerances.

    Returns:
        The loss: a scalar, or one value per row for ``reduction="none"``; the same on every rank in exact mode.
        Its gradient flows to ``logits_shard`` (this rank's slice).

    Rank ``r`` of ``P`` with ``K = 100_000`` classes typically holds ``vocab_start = r * K // P``; slices that
    start at multiples of 2048 make the result bit-identical to one process.
    """
    local = _LocalCall(logits_shard, target, vocab_start, vocab_size, weight, mode)
    local.logits = None if local.error else logits_shard.reshape(-1, local.width)
    opts, ranges, rank, group_size = _agree_on_inputs(local, group, backend, mode, dict(
        reduction=reduction, label_smoothing=label_smoothing, spread=spread, adaptive=adaptive,
        ignore_index=ignore_index, lse_square_scale=lse_square_scale, softcap=softcap))
    if mode == "megatron":
        loss = _Megatron.apply(local.logits, local.labels, opts, group, ranges[rank][0])
    elif not local.use_kernel:
        loss = _composed_loss(local.logits, local.labels, opts, group, ranges, rank, vocab_size)
    else:
        shard = _native.VocabShard(ranges, rank, vocab_size, **opts.kwargs())
        loss = _Exact.apply(local.logits, local.labels, shard, opts, group, group_size)
    return loss.reshape(local.lead) if opts.reduction == "none" else loss


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    weight_shard: torch.Tensor,
    target: torch.Tensor,
    group=None,
    *,
    bias_shard: Optional[torch.Tensor] = None,
    vocab_start: int,
    vocab_size: int,
    label_smoothing: float = 0.0,
    spread: str = "uniform",
    weight: Optional[torch.Tensor] = None,
    ignore_index: Optional[int] = -100,
    reduction: str = "mean",
    adaptive: Optional[float] = None,
    lse_square_scale: float = 0.0,
    softcap: Optional[float] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """:func:`vocab_parallel_cross_entropy` of a linear classifier whose rows are split across the ranks: the
    loss of ``F.linear(input, W, b)`` where this rank holds ``weight_shard = W[vocab_start:vocab_start + K_r]``
    and ``bias_shard``, and every rank the same hidden states ``input``.

    Args:
        input: hidden states ``[N, D]`` (or ``[..., D]``), the same on every rank.
        weight_shard: this rank's rows of the classifier weight, ``[K_r, D]``.
        target, group, vocab_start, vocab_size, label_smoothing, spread, weight, ignore_index, reduction,
            adaptive, lse_square_scale, softcap, backend: as for :func:`vocab_parallel_cross_entropy`.
        bias_shard: this rank's part of the bias, ``[K_r]``, or ``None``.

    Returns:
        The loss, the same on every rank. The gradients: ``weight_shard``'s and ``bias_shard``'s for this rank's
        classes, and ``input``'s summed over the ranks (in rank order, the same on every rank). Every rank must
        call ``backward``: the backward pass sums ``input``'s gradient with one more ``all_gather``.

    On float32 CPU tensors it runs the core's fused linear loss per rank (the rank's ``[N, K_r]`` logits are
    never held, a block of rows at a time), within SPEC.md's tolerances of the single-process
    :func:`label_smoothing.torch.linear_cross_entropy`; elsewhere it composes ``F.linear`` with the torch
    operations of :func:`vocab_parallel_cross_entropy`.
    """
    try:
        local = _linear_call(input, weight_shard, bias_shard, target, vocab_start, vocab_size, weight)
    except (TypeError, ValueError) as e:
        local = _LocalCall.failed(str(e))
    opts, ranges, rank, group_size = _agree_on_inputs(local, group, backend, "exact", dict(
        reduction=reduction, label_smoothing=label_smoothing, spread=spread, adaptive=adaptive,
        ignore_index=ignore_index, lse_square_scale=lse_square_scale, softcap=softcap))
    x = input.reshape(-1, input.shape[-1])
    if not local.use_kernel:
        logits = F.linear(_SumOverRanks.apply(x, group), weight_shard, bias_shard)
        loss = _composed_loss(logits, local.labels, opts, group, ranges, rank, vocab_size)
    else:
        shard = _native.VocabShard(ranges, rank, vocab_size, **opts.kwargs())
        b = None if bias_shard is None else bias_shard.contiguous()
        loss = _ExactLinear.apply(x.contiguous(), weight_shard.contiguous(), b, local.labels, shard, opts, group)
    return loss.reshape(local.lead) if opts.reduction == "none" else loss


def _linear_call(input, weight_shard, bias_shard, target, vocab_start, vocab_size, weight):
    """The checks of the linear variant: shapes, then :class:`_LocalCall`'s on the logits' shape."""
    for name, t in (("input", input), ("weight_shard", weight_shard)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if weight_shard.dim() != 2:
        raise ValueError(f"weight_shard: expected shape [K_r, D], got {tuple(weight_shard.shape)}")
    k_r, d = weight_shard.shape
    if input.dim() == 0 or input.shape[-1] != d:
        raise ValueError(f"input: expected hidden states [..., {d}] for weight_shard of shape [{k_r}, {d}], "
                         f"got {tuple(input.shape)}")
    if bias_shard is not None and (not isinstance(bias_shard, torch.Tensor) or tuple(bias_shard.shape) != (k_r,)):
        raise ValueError(f"bias_shard: expected shape ({k_r},) or None")
    shape = torch.empty(tuple(input.shape[:-1]) + (k_r,), device="meta", dtype=weight_shard.dtype)
    local = _LocalCall(shape, target, vocab_start, vocab_size, weight, "exact", what="weight_shard")
    tensors = [input, weight_shard] + ([bias_shard] if bias_shard is not None else [])
    local.kernel_why = next((f"{t.dtype} on {t.device} (the kernel takes float32 CPU tensors)" for t in tensors
                             if t.device.type != "cpu" or t.dtype != torch.float32), "")
    # Whether input's gradient is summed in the backward pass: every rank must agree, or one would wait.
    local.extra = bool(torch.is_grad_enabled() and input.requires_grad)
    return local


def _agree_on_inputs(local, group, backend, mode, options):
    """Checks the options, then agrees with the other ranks on everyone's inputs (one ``all_gather_object``):
    returns ``(options, every rank's (start, len), rank, ranks)``, or raises the same ``ValueError`` on every
    rank when any rank's inputs are wrong or do not fit together."""
    if mode not in _MODES and local.error is None:
        local.error = f"mode: {mode!r} is not a valid value; expected 'exact' or 'megatron'"
    group_size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if local.error is None and mode == "exact":
        try:
            local.use_kernel = _choose_backend(backend, local.kernel_why)
        except ValueError as e:
            local.error = str(e)
    opts = None
    if local.error is None and mode in _MODES:
        try:
            opts = _ShardOptions(
                reduction=_options.reduction(options["reduction"]),
                smoothing=_options.unit_interval("label_smoothing", options["label_smoothing"]),
                spread=_options.spread(options["spread"]),
                adaptive=_options.adaptive(options["adaptive"]),
                ignore_index=_options.ignore_index(options["ignore_index"]),
                z_loss=_options.z_loss(options["lse_square_scale"]),
                softcap=_options.softcap(options["softcap"]),
                weight=local.weight,
                mode=mode,
            )
            if mode == "megatron":
                opts.check_megatron()
            local.check_labels(opts.ignore_index if mode == "exact" else None)
        except (TypeError, ValueError) as e:
            local.error = str(e)
    # Agree on the inputs before exchanging statistics: every rank raises the same error, or none does.
    infos = [None] * group_size
    dist.all_gather_object(infos, local.info(opts), group=group)
    return opts, _agree(infos, rank), rank, group_size


class _ShardOptions:
    """The options of one call, checked."""

    def __init__(self, reduction, smoothing, spread, adaptive, ignore_index, z_loss, softcap, weight, mode):
        self.reduction, self.smoothing, self.spread, self.adaptive = reduction, smoothing, spread, adaptive
        self.ignore_index, self.z_loss, self.softcap, self.weight, self.mode = (
            ignore_index, z_loss, softcap, weight, mode)
        self.threads = _threads()
        self.grad_enabled = torch.is_grad_enabled()

    def check_megatron(self):
        unsupported = [
            name for name, on in [
                ("weight", self.weight is not None), ("adaptive", self.adaptive is not None),
                ("lse_square_scale", self.z_loss != 0.0), ("softcap", self.softcap is not None),
                ("reduction='mean_nonzero'", self.reduction == "mean_nonzero"),
            ] if on
        ]
        if unsupported:
            raise ValueError(f"mode: 'megatron' reproduces Megatron-LM's formula, which has no {unsupported[0]}")

    def kwargs(self):
        return dict(
            weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction.replace("_", "-"),
            smoothing=self.smoothing, spread=self.spread, adaptive=self.adaptive, z_loss=self.z_loss,
            softcap=self.softcap,
        )

    def fingerprint(self):
        w = None if self.weight is None else zlib.crc32(self.weight.tobytes())
        return (self.reduction, self.smoothing, self.spread, self.adaptive, self.ignore_index, self.z_loss,
                self.softcap, w, self.mode)


class _LocalCall:
    """This rank's inputs, checked without any exchange; ``error`` is the first problem found, if any."""

    def __init__(self, logits, target, vocab_start, vocab_size, weight, mode, what="logits_shard"):
        self._defaults(vocab_start, vocab_size, what)
        try:
            self._check(logits, target, weight, mode)
        except (TypeError, ValueError) as e:
            self.error = str(e)

    def _defaults(self, vocab_start, vocab_size, what):
        self.what, self.error, self.extra = what, None, None
        self.logits = self.labels = self.weight = None
        self.use_kernel, self.kernel_why = True, ""
        self.lead = ()
        self.vocab_start, self.vocab_size, self.width, self.rows, self.crc = vocab_start, vocab_size, 0, 0, 0

    @classmethod
    def failed(cls, error: str):
        """A rank whose inputs failed a check before this class's own."""
        local = cls.__new__(cls)
        local._defaults(None, None, "input")
        local.error = error
        return local

    def _check(self, logits, target, weight, mode):
        for name, value in (("vocab_start", self.vocab_start), ("vocab_size", self.vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size: expected at least 2 classes, got {self.vocab_size}")
        if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError(f"{self.what} and target: expected torch.Tensor")
        if logits.dim() == 0:
            raise ValueError(f"{self.what}: expected [N, K_r] logits, got a scalar")
        if not logits.is_floating_point():
            raise TypeError(f"{self.what}: expected floating-point values, got {logits.dtype}")
        if logits.device.type != "cpu" or logits.dtype != torch.float32:
            self.kernel_why = f"the logits are {logits.dtype} on {logits.device} (the kernel takes float32 CPU logits)"
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target: expected class indices (an integer dtype), got {target.dtype}")
        self.lead = tuple(logits.shape[:-1])
        if tuple(target.shape) != self.lead:
            raise ValueError(f"target: expected class indices of shape {self.lead} for logits "
                             f"{tuple(logits.shape)}, got {tuple(target.shape)}")
        self.width = logits.shape[-1]
        if self.width == 0 or self.vocab_start + self.width > self.vocab_size:
            raise ValueError(f"{self.what}: classes [{self.vocab_start}, {self.vocab_start + self.width}) are not "
                             f"a non-empty part of [0, {self.vocab_size})")
        if mode == "megatron" and self.width < 2:
            raise ValueError(f"{self.what}: Megatron's formula needs at least 2 classes on every rank")
        self.labels = target.detach().reshape(-1).to(torch.int64).contiguous()
        self.rows = self.labels.numel()
        self.crc = zlib.crc32(self.labels.cpu().numpy().tobytes())
        if weight is not None:
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (self.vocab_size,):
                raise ValueError(f"weight: expected a tensor of shape ({self.vocab_size},) or None")
            self.weight = weight.detach().to("cpu", torch.float32).contiguous().numpy()
            if not (np.isfinite(self.weight).all() and (self.weight >= 0).all()):
                raise ValueError("weight: expected finite, non-negative class weights")

    def check_labels(self, ignore: Optional[int]):
        y = self.labels.cpu().numpy()
        bad = (y < 0) | (y >= self.vocab_size)
        if ignore is not None:
            bad &= y != ignore
        if bad.any():
            row = int(np.argmax(bad))
            also = f" and is not the ignore index {ignore}" if ignore is not None else ""
            raise ValueError(f"target: label {int(y[row])} at row {row} is out of range [0, {self.vocab_size}){also}")

    def info(self, opts):
        """What the ranks compare before the exchange."""
        fingerprint = None if opts is None else opts.fingerprint() + (self.extra,)
        return (self.error, self.vocab_start, self.width, self.vocab_size, self.rows, self.crc, fingerprint)


def _agree(infos, rank):
    """Every rank's ``(start, len)``, after checking that the ranks' inputs fit together; raises the same
    ``ValueError`` on every rank otherwise."""
    for r, info in enumerate(infos):
        if info[0] is not None:
            raise ValueError(f"rank {r}: {info[0]}")
    first = infos[0]
    for r, info in enumerate(infos):
        for what, i in (("vocab_size", 3), ("the number of rows", 4), ("target", 5), ("the options", 6)):
            if info[i] != first[i]:
                raise ValueError(f"rank {r}: {what} differs from rank 0's (every rank must pass the same)")
    expect = 0
    for r, info in enumerate(infos):
        if info[1] != expect:
            raise ValueError(f"rank {r}: vocab_start is {info[1]}, but the ranks before it end at class {expect}: "
                             f"the slices must tile [0, {first[3]}) in rank order")
        expect = info[1] + info[2]
    if expect != first[3]:
        raise ValueError(f"the ranks' slices cover [0, {expect}), not [0, {first[3]}) (vocab_size)")
    return [(info[1], info[2]) for info in infos]


def _all_gather_records(record: np.ndarray, lens, group, group_size):
    """Every rank's record (``float64``, ``lens[r]`` values), gathered on every rank."""
    width = max(lens)
    mine = torch.zeros(width, dtype=torch.float64)
    mine[: record.size] = torch.from_numpy(record)
    out = [torch.empty(width, dtype=torch.float64) for _ in range(group_size)]
    dist.all_gather(out, mine, group=group)
    return [out[r][: lens[r]].numpy() for r in range(group_size)]


class _Exact(torch.autograd.Function):
    """The sharded loss: forward exchanges the records once; reduced losses compute the rank's gradient in the
    forward (upstream gradient 1) and the backward scales it, as the single-process kernel does; reduction
    ``none`` combines the gathered records again with the per-row upstream gradient in the backward (no
    further exchange)."""

    @staticmethod
    def forward(ctx, logits, labels, shard, opts, group, group_size):
        z = logits.contiguous()
        n = labels.numel()
        lens = [n * shard.record_len(r) for r in range(group_size)]
        record = np.empty(lens[dist.get_rank(group)], dtype=np.float64)
        shard.local_stats(_numpy(z), _numpy(labels), record, threads=opts.threads)
        records = _all_gather_records(record, lens, group, group_size)
        state = shard.combine(_numpy(labels), records, threads=opts.threads)
        needs = ctx.needs_input_grad[0] and opts.grad_enabled
        ctx.precomputed = None
        if needs:
            ctx.save_for_backward(z, labels)
            ctx.shard, ctx.records, ctx.opts = shard, records, opts
            if opts.reduction != "none":
                grad = torch.empty_like(z)
                shard.local_grad(state, _numpy(z), _numpy(grad), threads=opts.threads)
                ctx.precomputed = grad
        loss = state.loss()
        if isinstance(loss, np.ndarray):
            return torch.from_numpy(loss)
        return torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        z, labels = ctx.saved_tensors
        shard, opts = ctx.shard, ctx.opts
        if opts.reduction == "none":
            rows = grad_loss.detach().to("cpu", torch.float32).contiguous()
            state = shard.combine(_numpy(labels), ctx.records, grad_rows=_numpy(rows), threads=opts.threads)
            grad = torch.empty_like(z)
            shard.local_grad(state, _numpy(z), _numpy(grad), threads=opts.threads)
            return grad, None, None, None, None, None
        scale = float(grad_loss)
        grad, ctx.precomputed = ctx.precomputed, None
        if grad is None:  # a second backward (retain_graph)
            state = shard.combine(_numpy(labels), ctx.records, grad_scale=scale, threads=opts.threads)
            grad = torch.empty_like(z)
            shard.local_grad(state, _numpy(z), _numpy(grad), threads=opts.threads)
        elif scale != 1.0:
            grad = grad.mul_(scale)
        return grad, None, None, None, None, None


def _pieces(start: int, width: int):
    """A slice's pieces, ``(begin, end)`` offsets in the slice: its parts of the chunks of 2048 classes of the
    whole row (the pieces of the kernel's records)."""
    cuts = [start] + list(range((start // _CHUNK + 1) * _CHUNK, start + width, _CHUNK)) + [start + width]
    return [(a - start, b - start) for a, b in zip(cuts, cuts[1:])]


def _composed_loss(logits, labels, opts, group, ranges, rank, vocab_size):
    """The exact loss of torch operations on any device, by the kernel's protocol: each rank's per-piece
    statistics (the log-sum-exp and the weighted sum of the logits of its part of each chunk of 2048 classes) and
    its label statistics, gathered once (detached) and folded in class order into every row's log-sum-exp,
    weighted sum and label logit, the same on every rank; then the loss of ``_composed`` from them. The rank's own
    statistics enter through ``global + (local - local.detach())`` terms, whose value is exactly the global one
    and whose gradient is the true one for this rank's logits (``p_c`` of the whole row through the
    log-sum-exp), so autograd writes the rank's slice of the gradient without a second exchange."""
    start, width = ranges[rank]
    dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
    x = logits.to(dtype)
    if opts.softcap is not None:
        x = opts.softcap * torch.tanh(x / opts.softcap)
    labels = labels.to(x.device)
    valid = labels != opts.ignore_index if opts.ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    y = torch.where(valid, labels, torch.zeros_like(labels))
    here = valid & (y >= start) & (y < start + width)
    at = (y - start).clamp(0, width - 1).unsqueeze(1)
    w_all = None if opts.weight is None else torch.from_numpy(opts.weight).to(device=x.device, dtype=dtype)
    w = None if w_all is None else w_all[start:start + width]
    pieces = _pieces(start, width)
    lse_p = torch.stack([torch.logsumexp(x[:, a:b], dim=1) for a, b in pieces], dim=1)  # [N, pieces]
    xw = x * w if w is not None else x
    sum_p = torch.stack([xw[:, a:b].sum(dim=1) for a, b in pieces], dim=1)
    y_r = torch.where(here, x.gather(1, at).squeeze(1), torch.zeros_like(lse_p[:, 0]))
    wy_r = torch.where(here, w[at.squeeze(1)], torch.zeros_like(y_r)) if w is not None else here.to(dtype)
    # One record per rank, padded to the most pieces of any rank (-inf and 0 add nothing).
    most = max(len(_pieces(a, n)) for a, n in ranges)
    pad = most - len(pieces)
    mine = torch.cat([
        F.pad(lse_p.detach(), (0, pad), value=float("-inf")), F.pad(sum_p.detach(), (0, pad)),
        y_r.detach().unsqueeze(1), wy_r.detach().unsqueeze(1),
    ], dim=1).contiguous()
    gathered = [torch.empty_like(mine) for _ in range(len(ranges))]
    dist.all_gather(gathered, mine, group=group)
    every = torch.stack(gathered, dim=1)  # [N, ranks, 2 most + 2]: ranks, then pieces, in class order
    n = every.shape[0]
    lse_g = torch.logsumexp(every[:, :, :most].reshape(n, -1), dim=1)
    lse = lse_g + (torch.exp(lse_p.detach() - lse_g.unsqueeze(1)) * (lse_p - lse_p.detach())).sum(dim=1)
    weighted = every[:, :, most:2 * most].reshape(n, -1).sum(dim=1) + (sum_p - sum_p.detach()).sum(dim=1)
    logit_y = every[:, :, 2 * most].sum(dim=1) + (y_r - y_r.detach())
    w_y = every[:, :, 2 * most + 1].sum(dim=1) if w is not None else torch.ones_like(lse_g)
    total_weight = w_all.sum() if w_all is not None else float(vocab_size)
    rows = hard_rows(logit_y - lse, weighted - lse * total_weight, w_y, valid, spread=opts.spread,
                     smoothing=opts.smoothing, adaptive=opts.adaptive, k=vocab_size)
    counted = (w_y * valid).sum() if w is not None else valid.sum().to(dtype)
    z_count = valid.sum().to(dtype) if w is not None else counted
    z_lse = lse if opts.z_loss != 0.0 else None
    loss, _ = reduce(rows, z_lse, valid, (counted, z_count), z_loss=opts.z_loss, reduction=opts.reduction,
                     out_dtype=logits.dtype)
    return loss


def _sum_over_ranks(t: torch.Tensor, group) -> torch.Tensor:
    """The sum of every rank's ``t``, added in rank order in float64: the same bits on every rank."""
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, t.contiguous(), group=group)
    total = gathered[0].double()
    for g in gathered[1:]:
        total += g.double()
    return total.to(t.dtype)


class _SumOverRanks(torch.autograd.Function):
    """The identity, whose backward sums the gradient over the ranks (hidden states replicated on every rank)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _sum_over_ranks(grad, ctx.group), None


class _ExactLinear(torch.autograd.Function):
    """The sharded fused linear loss: one exchange of the records in the forward, and one of ``input``'s
    gradient parts (summed in rank order) wherever that gradient is computed; otherwise as :class:`_Exact`."""

    @staticmethod
    def forward(ctx, x, w, b, labels, shard, opts, group):
        n, ranks = labels.numel(), dist.get_world_size(group)
        lens = [n * shard.record_len(r) for r in range(ranks)]
        record = np.empty(lens[dist.get_rank(group)], dtype=np.float64)
        arrays = (_numpy(x), _numpy(w), None if b is None else _numpy(b), _numpy(labels))
        shard.linear_local_stats(*arrays, record, threads=opts.threads)
        records = _all_gather_records(record, lens, group, ranks)
        state = shard.combine(_numpy(labels), records, threads=opts.threads)
        needs = tuple(bool(f) and opts.grad_enabled for f in ctx.needs_input_grad[:3])
        ctx.precomputed = None
        if any(needs):
            ctx.save_for_backward(x, w, b, labels)
            ctx.shard, ctx.records, ctx.opts, ctx.group, ctx.needs = shard, records, opts, group, needs
            if opts.reduction != "none":
                ctx.precomputed = _ExactLinear.grads(ctx, state, x, w, b, labels)
        loss = state.loss()
        return torch.from_numpy(loss) if isinstance(loss, np.ndarray) else torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    def grads(ctx, state, x, w, b, labels):
        gx, gw, gb = (torch.empty_like(t) if (t is not None and need) else None
                      for t, need in zip((x, w, b), ctx.needs))
        out = [None if g is None else _numpy(g) for g in (gx, gw, gb)]
        shard = ctx.shard
        shard.linear_local_grads(state, _numpy(x), _numpy(w), None if b is None else _numpy(b), _numpy(labels),
                                 *out, threads=ctx.opts.threads)
        if gx is not None:
            gx = _sum_over_ranks(gx, ctx.group)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        x, w, b, labels = ctx.saved_tensors
        none = (None, None, None, None)
        if ctx.opts.reduction == "none":
            rows = grad_loss.detach().to("cpu", torch.float32).contiguous()
            state = ctx.shard.combine(_numpy(labels), ctx.records, grad_rows=_numpy(rows), threads=ctx.opts.threads)
            return _ExactLinear.grads(ctx, state, x, w, b, labels) + none
        scale = float(grad_loss)
        grads, ctx.precomputed = ctx.precomputed, None
        if grads is None:  # a second backward (retain_graph)
            state = ctx.shard.combine(_numpy(labels), ctx.records, grad_scale=scale, threads=ctx.opts.threads)
            return _ExactLinear.grads(ctx, state, x, w, b, labels) + none
        if scale != 1.0:
            grads = tuple(None if g is None else g.mul_(scale) for g in grads)
        return tuple(grads) + none


class _Megatron(torch.autograd.Function):
    """Megatron-LM's ``_VocabParallelCrossEntropy`` with label smoothing, written out: the global log-sum-exp
    (two all-reduces) and the label's logit (one all-reduce), then ``smoothing = a K_r / (K_r - 1)`` and the mean
    of the log-probabilities over this rank's ``K_r`` classes; its backward is Megatron's: ``softmax -
    (1 - smoothing) onehot - smoothing / K_r`` on this rank's classes, times the upstream gradient."""

    @staticmethod
    def forward(ctx, logits, labels, opts, group, vocab_start):
        z = logits.detach()
        kr = z.shape[-1]
        m = z.max(dim=-1).values
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        shifted = z - m.unsqueeze(-1)
        exp = shifted.exp()
        sum_exp = exp.sum(dim=-1)
        dist.all_reduce(sum_exp, group=group)
        local = (labels >= vocab_start) & (labels < vocab_start + kr)
        idx = (labels - vocab_start).clamp(0, kr - 1)
        picked = torch.where(local, shifted.gather(-1, idx.unsqueeze(-1)).squeeze(-1), torch.zeros_like(m))
        dist.all_reduce(picked, group=group)
        nll = sum_exp.log() - picked
        softmax = exp / sum_exp.unsqueeze(-1)
        a = opts.smoothing
        smoothing = a * kr / (kr - 1)
        if a > 0:
            mean_log_probs = softmax.log().mean(dim=-1)
            loss = (1.0 - smoothing) * nll - smoothing * mean_log_probs
        else:
            loss = nll
        ctx.save_for_backward(softmax, idx, local)
        ctx.smoothing, ctx.kr, ctx.reduction, ctx.rows = (smoothing if a > 0 else 0.0), kr, opts.reduction, z.shape[0]
        if opts.reduction == "sum":
            return loss.sum()
        if opts.reduction == "mean":
            return loss.mean() if loss.numel() else loss.sum()
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        softmax, idx, local = ctx.saved_tensors
        grad = softmax.clone()
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, idx] -= (1.0 - ctx.smoothing) * local.to(grad.dtype)
        if ctx.smoothing:
            grad -= ctx.smoothing / ctx.kr
        if ctx.reduction == "none":
            grad *= grad_loss.unsqueeze(-1)
        elif ctx.reduction == "mean":
            grad *= grad_loss / max(ctx.rows, 1)
        else:
            grad *= grad_loss
        return grad, None, None, None, None
