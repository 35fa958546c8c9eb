"""Label-smoothed cross-entropy for PyTorch on the fused Rust CPU kernels.

``from label_smoothing.torch import cross_entropy`` replaces ``torch.nn.functional.cross_entropy``: same
arguments, defaults and results, plus ``spread="others"`` (fast-reid's ``e/(K-1)``), ``adaptive=alpha`` and
``reduction="mean_nonzero"``. On float32, bfloat16 and float16 CPU tensors the fused kernel runs on the
tensors' own memory (the GIL released, the gradient computed in the forward's pass); on other devices and
dtypes the same definition runs as torch operations, so code moves to a GPU unchanged.
"""
from ._cache import empty_cache, set_gradient_cache_limit
from .functional import CrossEntropyOutput, cross_entropy, fast_reid_cross_entropy_loss, linear_cross_entropy
from .modules import LabelSmoothingCrossEntropy, LinearCrossEntropyLoss

__all__ = [
    "CrossEntropyOutput",
    "cross_entropy",
    "fast_reid_cross_entropy_loss",
    "linear_cross_entropy",
    "LabelSmoothingCrossEntropy",
    "LinearCrossEntropyLoss",
    "empty_cache",
    "set_gradient_cache_limit",
]
