"""Checks of the options every loss function takes, with errors naming the argument."""
from __future__ import annotations

import math
from typing import Optional

REDUCTIONS = ("none", "mean", "sum", "mean_nonzero")
SPREADS = ("uniform", "others")


def reduction(value: str) -> str:
    """The reduction's canonical name (``mean-nonzero`` is accepted for ``mean_nonzero``)."""
    if not isinstance(value, str):
        raise TypeError(f"reduction: expected a string, got {type(value).__name__}")
    canonical = value.replace("-", "_")
    if canonical not in REDUCTIONS:
        raise ValueError(f"reduction: {value!r} is not a valid value; expected one of {', '.join(REDUCTIONS)}")
    return canonical


def spread(value: str) -> str:
    """The spread, ``uniform`` (PyTorch's ``e/K``) or ``others`` (fast-reid's ``e/(K-1)``)."""
    if value not in SPREADS:
        raise ValueError(f"spread: {value!r} is not a valid value; expected 'uniform' or 'others'")
    return value


def unit_interval(name: str, value) -> float:
    """A finite number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a number, got {type(value).__name__}") from None
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
    return value


def adaptive(value) -> Optional[float]:
    """``None`` (fixed smoothing) or the adaptive factor ``alpha`` in ``[0, 1]``."""
    return None if value is None else unit_interval("adaptive", value)


def ignore_index(value) -> Optional[int]:
    """``None`` (no row ignored) or an integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import operator

            return operator.index(value)
        except TypeError:
            raise TypeError(f"ignore_index: expected an integer or None, got {type(value).__name__}") from None
    return value


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a number, got {type(value).__name__}") from None
    return float(value)


def z_loss(value) -> float:
    """The z-loss scale ``lse_square_scale``: a finite number ``>= 0`` (0 turns it off)."""
    value = _number("lse_square_scale", value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"lse_square_scale: expected a finite number >= 0, got {value}")
    return value


def softcap(value) -> Optional[float]:
    """``None`` (no soft-capping) or the cap: a finite number ``> 0``."""
    if value is None:
        return None
    value = _number("softcap", value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"softcap: expected a finite number > 0 or None, got {value}")
    return value
