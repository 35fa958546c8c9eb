"""Calibration of a classifier's predictions: the metrics, bootstrap intervals, temperature and vector scaling,
and the reliability diagram of ``lsmooth calibrate``, computed by the same Rust code (same numbers).

Inputs are numpy arrays, torch tensors (any device, any float dtype; copied to float32 on the CPU) or nested
lists: logits (or probabilities) ``[N, K]`` and integer labels ``[N]``. Outputs are plain Python and numpy.

>>> import numpy as np
>>> from label_smoothing.calibration import calibrate
>>> rng = np.random.default_rng(0)
>>> logits = rng.normal(size=(500, 10)).astype(np.float32)
>>> labels = rng.integers(0, 10, 500)
>>> report = calibrate(logits, labels, bootstrap=200)
>>> sorted(k for k in report if k.endswith("_ci"))
['accuracy_ci', 'brier_ci', 'debiased_l2_ce_ci', 'ece_ci', 'nll_ci', 'smooth_ece_ci']
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from . import _native, _threads
from ._arrays import floats_2d, labels_1d

__all__ = ["calibrate", "reliability_diagram", "fit_temperature", "fit_vector_scaling", "VectorScaling"]


def _held_out(pair, k: int, name: str):
    if pair is None:
        return None
    try:
        logits, labels = pair
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (logits, labels)") from None
    z = floats_2d(logits, f"{name} (logits)")
    if z.shape[1] != k:
        raise ValueError(f"{name} (logits): expected {k} classes like the predictions, got {z.shape[1]}")
    return z, labels_1d(labels, z.shape[0], f"{name} (labels)")


def _positive_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def calibrate(
    logits=None,
    labels=None,
    *,
    probs=None,
    bins: int = 15,
    bootstrap: Optional[int] = None,
    bootstrap_seed: int = 0,
    level: float = 0.95,
    fit_temperature: Optional[Tuple] = None,
    fit_vector: Optional[Tuple] = None,
    plot: Optional[str] = None,
) -> dict:
    """Every calibration metric of a classifier's predictions: ``lsmooth calibrate --json`` as a dict.

    Args:
        logits: ``[N, K]`` logits (or give ``probs``).
        labels: ``[N]`` class indices in ``[0, K)``.
        probs: ``[N, K]`` probabilities, rows summing to 1 (instead of ``logits``).
        bins: equal-width bins of ECE and MCE (and equal-mass bins of adaptive ECE and the debiased L2 error).
        bootstrap: resamples for percentile intervals (``*_ci: [lo, hi]``), or ``None``.
        bootstrap_seed, level: the resampling's seed and the intervals' coverage in ``(0, 1)``.
        fit_temperature: held-out ``(logits, labels)``: fit a temperature on them and report the metrics after
            scaling under ``calibrated`` (the temperature under ``temperature``).
        fit_vector: held-out ``(logits, labels)``: fit vector scaling and report ``vector_calibrated`` (the
            parameters under ``vector_scaling``).
        plot: write the reliability diagram (after temperature scaling when fitted, else after vector scaling
            when fitted) to this ``.svg`` or ``.png`` path, replaced atomically.

    Returns:
        A dict: ``n``, ``k``, ``bins``, ``accuracy``, ``top5_accuracy``, ``nll``, ``brier``, ``ece``, ``mce``,
        ``adaptive_ece``, ``classwise_ece``, ``smooth_ece``, ``smooth_ece_bandwidth``, ``debiased_l2_ce``,
        ``reliability`` (the bins: ``lower``, ``upper``, ``count``, ``confidence``, ``accuracy``), and the
        optional parts named above.
    """
    if (logits is None) == (probs is None):
        raise ValueError("give exactly one of logits and probs")
    is_probs = probs is not None
    values = floats_2d(probs if is_probs else logits, "probs" if is_probs else "logits")
    n, k = values.shape
    if n == 0:
        raise ValueError(f"{'probs' if is_probs else 'logits'}: no rows")
    if labels is None:
        raise ValueError("labels: required")
    y = labels_1d(labels, n)
    if is_probs and (fit_temperature is not None or fit_vector is not None):
        raise ValueError("fit_temperature and fit_vector rescale logits: give logits, not probs")
    bins = _positive_int(bins, "bins", 1)
    if bootstrap is not None:
        bootstrap = _positive_int(bootstrap, "bootstrap", 2)
    if plot is not None:
        plot = os.fspath(plot)
    out = _native.calibrate(
        values, y, k, probs=is_probs, bins=bins, bootstrap=bootstrap, bootstrap_seed=int(bootstrap_seed),
        level=float(level), fit_temperature=_held_out(fit_temperature, k, "fit_temperature"),
        fit_vector=_held_out(fit_vector, k, "fit_vector"), plot=plot, threads=_threads(),
    )
    return json.loads(out)


def reliability_diagram(path, logits=None, labels=None, *, probs=None, bins: int = 15,
                        bootstrap: Optional[int] = None, bootstrap_seed: int = 0, level: float = 0.95) -> dict:
    """Writes the reliability diagram of the predictions (bins, the smoothed curve, and its bootstrap band when
    ``bootstrap`` is given) to ``path`` (``.svg`` or ``.png``), and returns :func:`calibrate`'s dict."""
    return calibrate(logits, labels, probs=probs, bins=bins, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
                     level=level, plot=path)


def fit_temperature(logits, labels) -> float:
    """The temperature ``T > 0`` minimising the mean NLL of ``softmax(logits / T)`` on held-out data (it never
    changes the arg-max). Apply it as ``logits / T``."""
    z = floats_2d(logits, "logits")
    return _native.fit_temperature(z, labels_1d(labels, z.shape[0]), z.shape[1], _threads())


@dataclass(frozen=True)
class VectorScaling:
    """Per-class weights and biases, ``z'_k = weights[k] * z_k + biases[k]``, fitted by minimising the NLL."""

    weights: np.ndarray
    """``[K]`` float64."""
    biases: np.ndarray
    """``[K]`` float64, with mean zero (the only part the data determine)."""
    nll: float
    """The mean NLL on the data it was fitted on."""
    iterations: int
    """The optimiser's iterations."""

    def apply(self, logits) -> np.ndarray:
        """The scaled logits (float32, computed in float64 as the Rust code does)."""
        z = floats_2d(logits, "logits")
        if z.shape[1] != self.weights.shape[0]:
            raise ValueError(f"logits: expected {self.weights.shape[0]} classes, got {z.shape[1]}")
        return (self.weights * z.astype(np.float64) + self.biases).astype(np.float32)


def fit_vector_scaling(logits, labels) -> VectorScaling:
    """Vector scaling fitted on held-out logits and labels (convex in the parameters; L-BFGS)."""
    z = floats_2d(logits, "logits")
    w, b, nll, it = _native.fit_vector_scaling(z, labels_1d(labels, z.shape[0]), z.shape[1], _threads())
    return VectorScaling(weights=w, biases=b, nll=nll, iterations=it)
