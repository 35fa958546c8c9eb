"""The functional API: ``cross_entropy``, ``fast_reid_cross_entropy_loss`` and ``linear_cross_entropy``."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import _native, _options
from .. import _threads as _explicit_threads
from . import _cache, _composed

__all__ = ["CrossEntropyOutput", "cross_entropy", "fast_reid_cross_entropy_loss", "linear_cross_entropy"]


class CrossEntropyOutput(NamedTuple):
    """What :func:`cross_entropy` returns when any of its ``return_*`` flags is set (Liger-Kernel's
    ``CrossEntropyOutput``); the fields not asked for are ``None``."""

    #: The loss, the z-loss term included (differentiable).
    loss: torch.Tensor
    #: The z-loss term alone, reduced like the loss (detached, for logging).
    z_loss: Optional[torch.Tensor]
    #: The share of class-index rows not ignored whose arg-max is their label (a float32 scalar; 0 when there are
    #: none; ``None`` for probability targets).
    token_accuracy: Optional[torch.Tensor]
    #: Per row, the class of its largest logit (the first of equal ones), -1 for an ignored row (int64, in the
    #: target's shape).
    predicted_tokens: Optional[torch.Tensor]

_KERNEL_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_BACKENDS = (None, "auto", "kernel", "torch")


def _threads() -> int:
    return _explicit_threads(torch.get_num_threads())


def _numpy(t: torch.Tensor):
    """A zero-copy numpy view of a contiguous CPU tensor (bfloat16 as its int16 bits)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy()


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


def _empty_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised CPU tensor like ``t`` for a gradient the kernel overwrites: a buffer of the gradient
    cache (``_cache.py``) when one is free, else numpy memory, which numpy asks the OS to back with transparent
    huge pages (a fresh 256 MB gradient then costs a few milliseconds to touch, not the tens that 4 KiB page
    faults cost)."""
    a = _cache.CACHE.empty(tuple(t.shape), _NUMPY_DTYPES[t.dtype])
    out = torch.from_numpy(a)
    return out.view(torch.bfloat16) if t.dtype == torch.bfloat16 else out


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _choose_backend(backend: Optional[str], why_not: str) -> bool:
    """Whether to run the Rust kernel (``True``) or the torch composition; ``why_not`` is empty where the kernel
    can run, else the reason it cannot."""
    kernel_ok = not why_not
    if backend not in _BACKENDS:
        raise ValueError(f"backend: {backend!r} is not a valid value; expected 'auto', 'kernel' or 'torch'")
    if backend == "torch":
        return False
    if backend == "kernel":
        if not kernel_ok:
            raise ValueError(f"backend: the kernel cannot run this call: {why_not}")
        return True
    # Under torch.compile the composition is traced (and fused by the compiler); the kernel is opaque to it.
    return kernel_ok and not _is_compiling()


class _Options:
    """The options of one loss call, as the native function takes them."""

    __slots__ = ("k", "soft", "weight", "ignore_index", "reduction", "smoothing", "spread", "adaptive", "threads",
                 "grad_enabled", "z_loss", "softcap", "report", "predictions", "extras")

    def __init__(self, k, soft, weight, ignore_index, reduction, smoothing, spread, adaptive, z_loss=0.0,
                 softcap=None, report=False, predictions=False):
        self.k = k
        self.soft = soft
        # The class weights as a float32 numpy array (a copy of K values; the kernel reads them in f32).
        self.weight = None if weight is None else weight.detach().to("cpu", torch.float32).contiguous().numpy()
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.smoothing = smoothing
        self.spread = spread
        self.adaptive = adaptive
        self.threads = _threads()
        # Read here, at the call: inside an autograd function's forward grad mode is always off, and
        # ctx.needs_input_grad says True under torch.no_grad() too.
        self.grad_enabled = torch.is_grad_enabled()
        self.z_loss = z_loss
        self.softcap = softcap
        # The forward's z-loss term and predictions are wanted: the forward call keeps them in `extras`,
        # `(z_loss, predicted, correct, counted)`.
        self.report = report
        self.predictions = predictions
        self.extras = None

    def kwargs(self):
        return dict(
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction.replace("_", "-"),
            smoothing=self.smoothing,
            spread=self.spread,
            adaptive=self.adaptive,
            threads=self.threads,
        )


def _kernel_loss(logits, target, opts: _Options, grad=None, grad_scale=1.0, grad_rows=None, forward=False):
    """Calls the fused kernel on contiguous CPU tensors; returns the loss as a tensor in the logits' dtype. The
    forward call (``forward``) keeps the z-loss term and the predictions in ``opts.extras`` when asked for."""
    report = forward and opts.report
    out = _native.cross_entropy(
        _numpy(logits),
        _KERNEL_DTYPES[logits.dtype],
        opts.k,
        _numpy(target),
        opts.soft,
        grad=None if grad is None else _numpy(grad),
        grad_scale=grad_scale,
        grad_rows=None if grad_rows is None else _numpy(grad_rows),
        report=report,
        predictions=report and opts.predictions,
        z_loss=opts.z_loss,
        softcap=opts.softcap,
        **opts.kwargs(),
    )
    if not report:
        return _as_tensor(out, logits.dtype)
    loss, z_loss, predicted, correct, counted = out
    opts.extras = (_as_tensor(z_loss, logits.dtype), predicted, correct, counted)
    return _as_tensor(loss, logits.dtype)


def _as_tensor(loss, dtype):
    """A loss from the native call (a float, or a float32 array for ``none``) as a tensor of ``dtype``."""
    if isinstance(loss, np.ndarray):
        return torch.from_numpy(loss).to(dtype)
    return torch.tensor(loss, dtype=dtype)


class _KernelCrossEntropy(torch.autograd.Function):
    """The fused kernel as an autograd function.

    Reduced losses: the forward computes the loss and its gradient in one pass (upstream gradient 1) and the
    backward hands that gradient over (scaled when the upstream gradient is not 1), so ``loss.backward()`` costs
    no further pass over the logits. Reduction ``none``: the forward computes the loss alone and the backward
    runs the kernel with the per-row upstream gradient.
    """

    @staticmethod
    def forward(ctx, logits, target, opts):
        ctx.opts = opts
        ctx.precomputed = None
        needs_grad = ctx.needs_input_grad[0] and opts.grad_enabled
        if needs_grad:
            ctx.save_for_backward(logits, target)
        if needs_grad and opts.reduction != "none":
            grad = _empty_like(logits)
            loss = _kernel_loss(logits, target, opts, grad=grad, forward=True)
            ctx.precomputed = grad
            return loss
        return _kernel_loss(logits, target, opts, forward=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, target = ctx.saved_tensors
        opts = ctx.opts
        if opts.reduction == "none":
            grad = _empty_like(logits)
            rows = grad_loss.detach().to("cpu", torch.float32).contiguous()
            _kernel_loss(logits, target, opts, grad=grad, grad_rows=rows)
            return grad, None, None
        scale = float(grad_loss)
        grad, ctx.precomputed = ctx.precomputed, None
        if grad is None or (scale != 1.0 and logits.dtype != torch.float32):
            # A second backward (retain_graph) or a 16-bit gradient to scale: the kernel again, with the scale
            # applied in f32 before the gradient is rounded to the logits' type.
            grad = _empty_like(logits)
            _kernel_loss(logits, target, opts, grad=grad, grad_scale=scale)
        elif scale != 1.0:
            grad = grad.mul_(scale)
        # The precomputed buffer is handed over (not kept), so autograd may adopt it as the leaf's .grad.
        return grad, None, None


def _flatten(input: torch.Tensor, target: torch.Tensor, soft: bool):
    """``[N, K, d1, ...]`` (or ``[K]``) logits as ``[M, K]`` with class indices ``[M]`` or probabilities
    ``[M, K]``, and the per-row output shape."""
    if input.dim() == 1:
        return input.unsqueeze(0), (target.unsqueeze(0) if soft else target.reshape(1)), ()
    k = input.shape[1]
    if input.dim() == 2:
        return input, target, (input.shape[0],)
    out_shape = (input.shape[0],) + tuple(input.shape[2:])
    logits = input.movedim(1, -1).reshape(-1, k)
    target = target.movedim(1, -1).reshape(-1, k) if soft else target.reshape(-1)
    return logits, target, out_shape


def _check_target(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``target`` holds probabilities (else class indices); raises for a shape or dtype that fits
    neither."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"target: probability targets must have the input's shape {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
        return True
    if target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected class indices (an integer dtype) or probabilities, got {target.dtype}")
    expected = () if input.dim() == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target: class indices for input of shape {tuple(input.shape)} must have shape {expected}, "
            f"got {tuple(target.shape)}"
        )
    return False


def _check_weight(weight: Optional[torch.Tensor], k: int) -> Optional[torch.Tensor]:
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor or None, got {type(weight).__name__}")
    if tuple(weight.shape) != (k,):
        raise ValueError(f"weight: expected shape ({k},) (one per class), got {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight: expected a floating-point tensor, got {weight.dtype}")
    return weight


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    size_average: Optional[bool] = None,
    ignore_index: Optional[int] = -100,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    spread: str = "uniform",
    adaptive: Optional[float] = None,
    lse_square_scale: float = 0.0,
    softcap: Optional[float] = None,
    return_z_loss: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    backend: Optional[str] = None,
):
    """The label-smoothed cross-entropy between logits and targets: ``torch.nn.functional.cross_entropy`` with
    the same arguments, defaults and results, on the fused Rust kernel for CPU tensors; and Liger-Kernel's
    large-vocabulary options (``LigerCrossEntropyLoss``'s names and results).

    Args:
        input: logits ``[N, K]``, ``[K]`` or ``[N, K, d1, ...]``.
        target: class indices ``[N]`` (``[]``, ``[N, d1, ...]``) of any integer dtype, in ``[0, K)`` or equal
            to ``ignore_index``; or probabilities of the input's shape (each row summing to 1 within 1e-4).
        weight: class weights ``[K]`` (finite, non-negative), or ``None``.
        size_average, reduce: PyTorch's deprecated reduction flags (mapped to ``reduction`` as PyTorch does).
        ignore_index: class-index targets equal to it add nothing and are not counted by the mean; ``None``
            ignores nothing.
        reduction: ``"mean"`` (over the rows not ignored, or their summed class weights), ``"sum"``,
            ``"none"`` (one value per row, in the target's shape), or ``"mean_nonzero"`` (fast-reid's mean
            over the rows whose loss is non-zero).
        label_smoothing: the smoothing ``e`` in ``[0, 1]``.
        spread: ``"uniform"`` (PyTorch's: the label gets ``1-e+e/K``, every class ``e/K``) or ``"others"``
            (fast-reid's: the label ``1-e``, every other class ``e/(K-1)``).
        adaptive: fast-reid's adaptive smoothing: ``e_i = adaptive * p_i[label]`` per row, held constant for
            the gradient (``label_smoothing`` is then unused). Class indices only.
        lse_square_scale: the z-loss scale ``s >= 0`` (PaLM): ``s * logsumexp(row)^2`` is added to every row
            not ignored; for ``"mean"`` it is averaged over those rows (not over their class weights).
        softcap: soft-capping (Gemma 2): the logits become ``softcap * tanh(input / softcap)`` first; ``None``
            for none.
        return_z_loss, return_token_accuracy, return_predicted_tokens: return a :class:`CrossEntropyOutput`
            with the z-loss term, the token accuracy and the predicted classes (the arg-max of each row, read in
            one more pass over the logits) instead of the loss alone.
        backend: ``None``/``"auto"`` runs the kernel where it can (contiguous or not, float32, bfloat16 or
            float16 CPU tensors outside ``torch.compile``) and the torch composition elsewhere; ``"kernel"``
            insists on the kernel; ``"torch"`` forces the composition.

    Returns:
        A scalar tensor, or for ``reduction="none"`` one value per row, in the input's dtype; a
        :class:`CrossEntropyOutput` when a ``return_*`` flag is set.

    Differences from PyTorch: a mean over no counted rows (every row ignored, an empty batch) is 0 with a zero
    gradient, where PyTorch gives NaN; probability rows must sum to 1.

    >>> import torch, torch.nn.functional as F
    >>> from label_smoothing.torch import cross_entropy
    >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], requires_grad=True)
    >>> target = torch.tensor([0, 2])
    >>> loss = cross_entropy(logits, target, label_smoothing=0.1)
    >>> torch.allclose(loss, F.cross_entropy(logits, target, label_smoothing=0.1))
    True
    >>> loss.backward()
    >>> out = cross_entropy(logits, target, lse_square_scale=1e-4, return_z_loss=True, return_token_accuracy=True)
    >>> float(out.token_accuracy)
    1.0
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(input).__name__}")
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction

        reduction = _reduction.legacy_get_string(size_average, reduce)
    reduction = _options.reduction(reduction)
    spread = _options.spread(spread)
    smoothing = _options.unit_interval("label_smoothing", label_smoothing)
    alpha = _options.adaptive(adaptive)
    ignore_index = _options.ignore_index(ignore_index)
    z_loss = _options.z_loss(lse_square_scale)
    cap = _options.softcap(softcap)
    want_z, want_acc, want_pred = bool(return_z_loss), bool(return_token_accuracy), bool(return_predicted_tokens)
    report = want_z or want_acc or want_pred
    if input.dim() == 0:
        raise ValueError("input: expected logits of shape [N, K], [K] or [N, K, d1, ...], got a scalar")
    if not (input.is_floating_point()):
        raise TypeError(f"input: expected floating-point logits, got {input.dtype}")
    soft = _check_target(input, target)
    if soft and alpha is not None:
        raise ValueError("adaptive: adaptive smoothing needs class indices, not probability targets")
    k = input.shape[0] if input.dim() == 1 else input.shape[1]
    weight = _check_weight(weight, k)
    if target.device != input.device:
        raise ValueError(f"target: expected a tensor on {input.device}, got one on {target.device}")
    logits, flat_target, out_shape = _flatten(input, target, soft)

    why_not = ""
    if input.device.type != "cpu":
        why_not = f"the input is on {input.device}"
    elif input.dtype not in _KERNEL_DTYPES:
        why_not = f"the input's dtype is {input.dtype} (the kernel takes float32, bfloat16 or float16)"
    elif soft and target.requires_grad:
        why_not = "the probability target requires a gradient"
    use_kernel = _choose_backend(backend, why_not)

    if use_kernel:
        if k < 2:
            raise ValueError(f"input: expected at least 2 classes, got {k}")
        logits = logits.contiguous()
        if soft:
            flat_target = flat_target.detach().to(torch.float32).contiguous()
        else:
            flat_target = flat_target.detach().to(torch.int64).contiguous()
        opts = _Options(k, soft, weight, ignore_index, reduction, smoothing, spread, alpha, z_loss, cap, report,
                        want_acc or want_pred)
        loss = _KernelCrossEntropy.apply(logits, flat_target, opts)
        if report:
            z_value, predicted, correct, counted = opts.extras
            if predicted is not None:
                predicted = torch.from_numpy(predicted)
    else:
        if not soft:
            _check_labels_composed(flat_target, k, ignore_index)
        loss = _composed.cross_entropy(
            logits,
            flat_target if soft else flat_target.long(),
            soft=soft,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            smoothing=smoothing,
            spread=spread,
            adaptive=alpha,
            z_loss=z_loss,
            softcap=cap,
        )
        loss, z_value = loss
        predicted = correct = counted = None
        if want_acc or want_pred:
            predicted, correct, counted = _predictions(logits.detach(), flat_target, soft, ignore_index)
    if reduction == "none":
        loss = loss.reshape(out_shape)
    if not report:
        return loss
    return _output(loss, z_value, (predicted, correct, counted), (want_z, want_acc, want_pred), soft, reduction,
                   out_shape, input.device)


def _output(loss, z_value, predictions, wanted, soft, reduction, out_shape, device) -> CrossEntropyOutput:
    """The :class:`CrossEntropyOutput` of a call: ``predictions`` is ``(predicted, correct, counted)`` and
    ``wanted`` the ``return_*`` flags; per-row values in ``out_shape``."""
    (predicted, correct, counted), (want_z, want_acc, want_pred) = predictions, wanted
    if reduction == "none":
        z_value = z_value.reshape(out_shape)
    accuracy = None
    if want_acc and not soft:
        accuracy = torch.tensor(correct / counted if counted else 0.0, dtype=torch.float32)
    return CrossEntropyOutput(
        loss=loss,
        z_loss=z_value if want_z else None,
        token_accuracy=accuracy,
        predicted_tokens=predicted.reshape(out_shape).to(device) if want_pred else None,
    )


def _predictions(logits: torch.Tensor, target: torch.Tensor, soft: bool, ignore_index: Optional[int]):
    """The composition's predictions: each row's first arg-max (``torch.argmax``), -1 for ignored rows, and the
    accuracy's counts."""
    predicted = logits.argmax(dim=1)
    if soft:
        return predicted, 0, 0
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    predicted = torch.where(valid, predicted, torch.full_like(predicted, -1))
    correct = int(((predicted == target) & valid).sum())
    return predicted, correct, int(valid.sum())


def _check_labels_composed(labels: torch.Tensor, k: int, ignore_index: Optional[int]) -> None:
    """The kernel's label check for the composition (one device-to-host transfer of a flag). Skipped while
    ``torch.compile`` traces, where a data-dependent branch would break the graph."""
    if labels.numel() == 0 or _is_compiling():
        return
    bad = (labels < 0) | (labels >= k)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        label = int(labels[row])
        also = f" and is not the ignore index {ignore_index}" if ignore_index is not None else ""
        raise ValueError(f"target: label {label} at row {row} is out of range [0, {k}){also}")


def fast_reid_cross_entropy_loss(
    pred_class_outputs: torch.Tensor, gt_classes: torch.Tensor, eps: float, alpha: float = 0.2
) -> torch.Tensor:
    """fast-reid's ``cross_entropy_loss(pred_class_outputs, gt_classes, eps, alpha=0.2)``, same signature and
    result: spread ``others`` (the label gets ``1-eps``, every other class ``eps/(K-1)``), fixed ``eps`` when
    ``eps >= 0``, adaptive ``alpha * p(label)`` (held constant for the gradient) when ``eps < 0``, and the mean
    over the rows whose loss is non-zero. No label is ignored.

    Args:
        pred_class_outputs: logits ``[N, K]``.
        gt_classes: class indices ``[N]`` in ``[0, K)``.
        eps: the fixed smoothing in ``[0, 1]``, or any negative number for adaptive smoothing.
        alpha: the adaptive factor in ``[0, 1]``.
    """
    if eps >= 0:
        return cross_entropy(
            pred_class_outputs, gt_classes, ignore_index=None, reduction="mean_nonzero", label_smoothing=eps,
            spread="others",
        )
    return cross_entropy(
        pred_class_outputs, gt_classes, ignore_index=None, reduction="mean_nonzero", spread="others", adaptive=alpha,
    )


class _KernelLinearCrossEntropy(torch.autograd.Function):
    """The core's fused linear loss as an autograd function.

    Reduced losses: the forward computes the loss and the gradients of ``input``, ``linear_weight`` and
    ``linear_bias`` (those that need one) in one call, block by block, and the backward hands them over (scaled
    when the upstream gradient is not 1). Reduction ``none``: the forward computes the loss alone and the
    backward runs the fused loss again with the per-row upstream gradient.
    """

    @staticmethod
    def forward(ctx, x, w, b, target, opts):
        ctx.opts = opts
        ctx.precomputed = None
        needs = tuple(n and opts.grad_enabled for n in ctx.needs_input_grad[:3])
        if any(needs):
            ctx.save_for_backward(x, w, b, target)
        if any(needs) and opts.reduction != "none":
            grads = _linear_grads(x, w, b, needs)
            loss = _linear_kernel(x, w, b, target, opts, grads, forward=True)
            ctx.precomputed = grads
            return loss
        return _linear_kernel(x, w, b, target, opts, (None, None, None), forward=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        x, w, b, target = ctx.saved_tensors
        opts, needs = ctx.opts, ctx.needs_input_grad[:3]
        if opts.reduction == "none":
            grads = _linear_grads(x, w, b, needs)
            rows = grad_loss.detach().to("cpu", torch.float32).contiguous()
            _linear_kernel(x, w, b, target, opts, grads, grad_rows=rows)
            return grads + (None, None)
        scale = float(grad_loss)
        grads, ctx.precomputed = ctx.precomputed, None
        if grads is None:  # a second backward (retain_graph)
            grads = _linear_grads(x, w, b, needs)
            _linear_kernel(x, w, b, target, opts, grads, grad_scale=scale)
        elif scale != 1.0:
            grads = tuple(None if g is None else g.mul_(scale) for g in grads)
        return tuple(grads) + (None, None)


def _linear_grads(x, w, b, needs):
    return (
        _empty_like(x) if needs[0] else None,
        _empty_like(w) if needs[1] else None,
        _empty_like(b) if (b is not None and needs[2]) else None,
    )


def _linear_kernel(x, w, b, target, opts: _Options, grads, grad_scale=1.0, grad_rows=None, forward=False):
    """Calls the fused linear loss; the forward call (``forward``) keeps the z-loss term and the predictions in
    ``opts.extras`` when asked for, as :func:`_kernel_loss` does."""
    gx, gw, gb = grads
    report = forward and opts.report
    out = _native.linear_cross_entropy(
        _numpy(x),
        _numpy(w),
        _numpy(target),
        linear_bias=None if b is None else _numpy(b),
        grad_input=None if gx is None else _numpy(gx),
        grad_weight=None if gw is None else _numpy(gw),
        grad_bias=None if gb is None else _numpy(gb),
        grad_scale=grad_scale,
        grad_rows=None if grad_rows is None else _numpy(grad_rows),
        z_loss=opts.z_loss,
        softcap=opts.softcap,
        report=report,
        predictions=report and opts.predictions,
        **opts.kwargs(),
    )
    if not report:
        return _as_tensor(out, torch.float32)
    loss, z_loss, predicted, correct, counted = out
    opts.extras = (_as_tensor(z_loss, torch.float32), predicted, correct, counted)
    return _as_tensor(loss, torch.float32)


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    ignore_index: Optional[int] = None,
    label_smoothing: float = 0.0,
    spread: str = "uniform",
    adaptive: Optional[float] = None,
    lse_square_scale: float = 0.0,
    softcap: Optional[float] = None,
    return_z_loss: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    backend: Optional[str] = None,
):
    """The label-smoothed cross-entropy of a linear classifier, ``cross_entropy(F.linear(input, linear_weight,
    linear_bias), target, ...)``, with the argument names of ``torch.nn.functional.linear_cross_entropy``.

    On float32 CPU tensors with class-index targets it runs the core's fused linear loss: the ``[N, K]`` logits
    and their gradient never exist (scratch of at most 128 MiB, whatever ``K``), and the gradients of
    ``input``, ``linear_weight`` and ``linear_bias`` come from the same blocks. Elsewhere it composes
    ``F.linear`` with :func:`cross_entropy`.

    Args:
        input: hidden states ``[N, D]``, ``[D]`` or ``[..., D]``.
        linear_weight: the classifier's weight ``[K, D]`` (as ``nn.Linear`` stores it).
        target: class indices ``[N]`` (or of ``input``'s leading shape), or probabilities ``[N, K]``.
        linear_bias: the classifier's bias ``[K]``, or ``None``.
        weight, reduction, label_smoothing, spread, adaptive, backend: as for :func:`cross_entropy`.
        lse_square_scale, softcap, return_z_loss, return_token_accuracy, return_predicted_tokens: as for
            :func:`cross_entropy` (Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss`` options), on the logits
            ``F.linear(input, linear_weight, linear_bias)``; the fused loss finds the predicted classes in the
            same blocks.
        ignore_index: as for :func:`cross_entropy`; ``None`` (the default, as in PyTorch) means ``-100`` for
            class indices.

    Returns:
        As :func:`cross_entropy`: the loss, or a :class:`CrossEntropyOutput` when a ``return_*`` flag is set.

    >>> import torch
    >>> from label_smoothing.torch import linear_cross_entropy
    >>> x, w = torch.randn(4, 8), torch.randn(100, 8, requires_grad=True)
    >>> out = linear_cross_entropy(x, w, torch.tensor([3, 1, 4, 1]), label_smoothing=0.1, softcap=30.0,
    ...                            lse_square_scale=1e-4, return_z_loss=True, return_predicted_tokens=True)
    >>> out.loss.backward()
    >>> out.predicted_tokens.shape
    torch.Size([4])
    """
    for name, t in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if linear_weight.dim() != 2:
        raise ValueError(f"linear_weight: expected shape [K, D], got {tuple(linear_weight.shape)}")
    k, d = linear_weight.shape
    if input.dim() == 0 or input.shape[-1] != d:
        raise ValueError(
            f"input: expected hidden states [..., {d}] for linear_weight of shape [{k}, {d}], "
            f"got {tuple(input.shape)}"
        )
    if linear_bias is not None and tuple(linear_bias.shape) != (k,):
        raise ValueError(f"linear_bias: expected shape ({k},), got {tuple(linear_bias.shape)}")
    if ignore_index is None:
        ignore_index = -100
    z_loss, cap = _options.z_loss(lse_square_scale), _options.softcap(softcap)
    wanted = (bool(return_z_loss), bool(return_token_accuracy), bool(return_predicted_tokens))
    soft = target.is_floating_point()
    lead = tuple(input.shape[:-1])
    x2 = input.reshape(-1, d)
    kernel_why = ""
    tensors = [input, linear_weight] + ([linear_bias] if linear_bias is not None else [])
    if soft:
        kernel_why = "probability targets (the fused linear loss takes class indices)"
    elif any(t.device.type != "cpu" for t in tensors + [target]):
        kernel_why = "a tensor is not on the CPU"
    elif any(t.dtype != torch.float32 for t in tensors):
        kernel_why = "the fused linear loss takes float32 input, weight and bias"
    use_kernel = _choose_backend(backend, kernel_why)
    if not use_kernel:
        logits = _composed.linear_logits(x2, linear_weight, linear_bias)
        flat = target.reshape(-1, k) if soft else target.reshape(-1)
        out = cross_entropy(
            logits, flat, weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            spread=spread, adaptive=adaptive, lse_square_scale=z_loss, softcap=cap, return_z_loss=wanted[0],
            return_token_accuracy=wanted[1], return_predicted_tokens=wanted[2], backend="torch",
        )
        if _options.reduction(reduction) != "none":
            return out
        if not any(wanted):
            return out.reshape(lead)
        return CrossEntropyOutput(*(v if v is None or v.dim() == 0 else v.reshape(lead) for v in out))

    reduction = _options.reduction(reduction)
    opts = _Options(
        k, False, _check_weight(weight, k), _options.ignore_index(ignore_index), reduction,
        _options.unit_interval("label_smoothing", label_smoothing), _options.spread(spread),
        _options.adaptive(adaptive), z_loss, cap, any(wanted), wanted[1] or wanted[2],
    )
    if target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected class indices (an integer dtype), got {target.dtype}")
    if tuple(target.shape) != lead:
        raise ValueError(f"target: expected class indices of shape {lead} for input {tuple(input.shape)}, "
                         f"got {tuple(target.shape)}")
    labels = target.detach().reshape(-1).to(torch.int64).contiguous()
    bias = None if linear_bias is None else linear_bias.contiguous()
    loss = _KernelLinearCrossEntropy.apply(x2.contiguous(), linear_weight.contiguous(), bias, labels, opts)
    if reduction == "none":
        loss = loss.reshape(lead)
    if not any(wanted):
        return loss
    z_value, predicted, correct, counted = opts.extras
    predicted = None if predicted is None else torch.from_numpy(predicted)
    return _output(loss, z_value, (predicted, correct, counted), wanted, False, reduction, lead, input.device)
