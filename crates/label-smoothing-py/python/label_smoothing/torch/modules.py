"""``nn.Module`` wrappers: ``LabelSmoothingCrossEntropy`` (as ``nn.CrossEntropyLoss``) and
``LinearCrossEntropyLoss`` (as ``nn.LinearCrossEntropyLoss``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import _options
from .functional import cross_entropy, linear_cross_entropy

__all__ = ["LabelSmoothingCrossEntropy", "LinearCrossEntropyLoss"]


class LabelSmoothingCrossEntropy(nn.Module):
    """``nn.CrossEntropyLoss`` on the fused kernel, with the project's options: ``spread="others"``,
    ``adaptive=alpha`` and ``reduction="mean_nonzero"``, and Liger-Kernel's ``lse_square_scale`` (z-loss) and
    ``softcap``. The options are checked here, at construction.

    >>> import torch
    >>> from label_smoothing.torch import LabelSmoothingCrossEntropy
    >>> criterion = LabelSmoothingCrossEntropy(label_smoothing=0.1)
    >>> loss = criterion(torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,)))
    >>> loss.backward()
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing", "spread", "adaptive", "lse_square_scale",
                     "softcap"]

    def __init__(
        self,
        weight: Optional[torch.Tensor] = None,
        size_average=None,
        ignore_index: Optional[int] = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        spread: str = "uniform",
        adaptive: Optional[float] = None,
        lse_square_scale: float = 0.0,
        softcap: Optional[float] = None,
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            from torch.nn import _reduction

            reduction = _reduction.legacy_get_string(size_average, reduce)
        self.reduction = _options.reduction(reduction)
        self.ignore_index = _options.ignore_index(ignore_index)
        self.label_smoothing = _options.unit_interval("label_smoothing", label_smoothing)
        self.spread = _options.spread(spread)
        self.adaptive = _options.adaptive(adaptive)
        self.lse_square_scale = _options.z_loss(lse_square_scale)
        self.softcap = _options.softcap(softcap)
        if weight is not None and (not isinstance(weight, torch.Tensor) or weight.dim() != 1):
            raise ValueError("weight: expected a 1-D tensor of class weights or None")
        self.register_buffer("weight", weight)
        self.weight: Optional[torch.Tensor]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of logits ``input`` against ``target`` (see :func:`cross_entropy`)."""
        return cross_entropy(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, spread=self.spread, adaptive=self.adaptive,
            lse_square_scale=self.lse_square_scale, softcap=self.softcap,
        )

    def extra_repr(self) -> str:
        adaptive = f", adaptive={self.adaptive}" if self.adaptive is not None else ""
        z_loss = f", lse_square_scale={self.lse_square_scale}" if self.lse_square_scale else ""
        softcap = f", softcap={self.softcap}" if self.softcap is not None else ""
        return (f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, spread={self.spread}{adaptive}{z_loss}{softcap}")


class LinearCrossEntropyLoss(nn.Module):
    """A linear classifier and its label-smoothed cross-entropy, as ``nn.LinearCrossEntropyLoss``: holds
    ``self.linear`` (an ``nn.Linear(in_features, num_classes, bias=bias)``) and computes
    :func:`linear_cross_entropy` of its input without the ``[N, K]`` logits, with the options of
    :class:`LabelSmoothingCrossEntropy` (``lse_square_scale`` and ``softcap`` included).

    >>> import torch
    >>> from label_smoothing.torch import LinearCrossEntropyLoss
    >>> head = LinearCrossEntropyLoss(16, 1000, label_smoothing=0.1)
    >>> loss = head(torch.randn(4, 16), torch.randint(0, 1000, (4,)))
    >>> loss.backward()
    >>> head.linear.weight.grad.shape
    torch.Size([1000, 16])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: Optional[torch.Tensor] = None,
        ignore_index: Optional[int] = None,
        label_smoothing: float = 0.0,
        spread: str = "uniform",
        adaptive: Optional[float] = None,
        lse_square_scale: float = 0.0,
        softcap: Optional[float] = None,
    ) -> None:
        super().__init__()
        if weight is not None and (not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (num_classes,)):
            raise ValueError(f"weight: expected a tensor of shape ({num_classes},) or None")
        self.num_classes = num_classes
        self.reduction = _options.reduction(reduction)
        self.ignore_index = _options.ignore_index(ignore_index)
        self.label_smoothing = _options.unit_interval("label_smoothing", label_smoothing)
        self.spread = _options.spread(spread)
        self.adaptive = _options.adaptive(adaptive)
        self.lse_square_scale = _options.z_loss(lse_square_scale)
        self.softcap = _options.softcap(softcap)
        self.register_buffer("weight", weight)
        self.weight: Optional[torch.Tensor]
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of ``self.linear(input)`` against ``target``."""
        return linear_cross_entropy(
            input, self.linear.weight, target, linear_bias=self.linear.bias, weight=self.weight,
            reduction=self.reduction, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            spread=self.spread, adaptive=self.adaptive, lse_square_scale=self.lse_square_scale, softcap=self.softcap,
        )

    def extra_repr(self) -> str:
        z_loss = f", lse_square_scale={self.lse_square_scale}" if self.lse_square_scale else ""
        softcap = f", softcap={self.softcap}" if self.softcap is not None else ""
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"bias={self.linear.bias is not None}, reduction={self.reduction}, "
                f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, spread={self.spread}"
                f"{z_loss}{softcap}")
