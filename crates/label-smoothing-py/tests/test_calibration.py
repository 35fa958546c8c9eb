"""label_smoothing.calibration against torchmetrics, netcal and relplot (installed from PyPI in the test
environment), scipy for the temperature, and `lsmooth calibrate --json` for the whole report."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

from conftest import REPO
from label_smoothing import calibration


def predictions(n=2000, k=10, seed=0, scale=2.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * scale
    logits[np.arange(n), labels] += 2.0  # a classifier right about half the time, over-confident
    return logits.astype(np.float32), labels


def softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_against_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    z, y = predictions()
    r = calibration.calibrate(z, y, bins=15)
    p = torch.from_numpy(softmax(z))
    t = torch.from_numpy(y)
    ece = multiclass_calibration_error(p, t, num_classes=10, n_bins=15, norm="l1").item()
    mce = multiclass_calibration_error(p, t, num_classes=10, n_bins=15, norm="max").item()
    assert abs(r["ece"] - ece) < 1e-6
    assert abs(r["mce"] - mce) < 1e-6


def test_against_netcal():
    from netcal.metrics import ECE, MCE

    z, y = predictions(seed=1)
    r = calibration.calibrate(z, y, bins=10)
    p = softmax(z)
    assert abs(r["ece"] - ECE(bins=10).measure(p, y)) < 1e-6
    assert abs(r["mce"] - MCE(bins=10).measure(p, y)) < 1e-6


def test_against_relplot():
    import relplot

    z, y = predictions(seed=2)
    r = calibration.calibrate(z, y)
    p = softmax(z)
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    assert abs(r["smooth_ece"] - relplot.smECE(conf, correct)) < 1e-6


def test_metrics_against_numpy_definitions():
    z, y = predictions(seed=3)
    r = calibration.calibrate(z, y)
    p = softmax(z)
    n = len(y)
    assert r["n"] == n and r["k"] == 10
    assert abs(r["accuracy"] - (p.argmax(1) == y).mean()) < 1e-12
    assert abs(r["nll"] - (-np.log(p[np.arange(n), y])).mean()) < 1e-9
    onehot = np.eye(10)[y]
    assert abs(r["brier"] - ((p - onehot) ** 2).sum(1).mean()) < 1e-9
    assert sum(b["count"] for b in r["reliability"]) == n


def test_temperature_against_scipy():
    from scipy.optimize import minimize_scalar

    z, y = predictions(seed=4)

    def nll(t):
        return -np.log(softmax(z / t)[np.arange(len(y)), y]).mean()

    best = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-10}).x
    t = calibration.fit_temperature(z, y)
    assert abs(t - best) < 1e-4 * best
    assert nll(t) <= nll(best) + 1e-9


def test_vector_scaling_is_a_minimum():
    z, y = predictions(n=1000, seed=5)
    v = calibration.fit_vector_scaling(z, y)
    theta = torch.tensor(np.concatenate([v.weights, v.biases]), requires_grad=True)
    zt = torch.from_numpy(z).double()
    nll = torch.nn.functional.cross_entropy(zt * theta[:10] + theta[10:], torch.from_numpy(y))
    (g,) = torch.autograd.grad(nll, theta)
    assert g.abs().max().item() < 1e-4  # the NLL's gradient vanishes at the fit
    assert abs(nll.item() - v.nll) < 1e-9
    assert abs(v.biases.mean()) < 1e-9
    applied = v.apply(z)
    assert applied.dtype == np.float32 and applied.shape == z.shape


def test_bootstrap_intervals_and_scaled_reports():
    z, y = predictions(n=600, seed=6)
    val_z, val_y = predictions(n=600, seed=7)
    r = calibration.calibrate(z, y, bootstrap=200, bootstrap_seed=3, fit_temperature=(val_z, val_y),
                              fit_vector=(val_z, val_y))
    for name in ("accuracy", "nll", "brier", "ece", "smooth_ece", "debiased_l2_ce"):
        lo, hi = r[f"{name}_ci"]
        assert 0 <= lo <= hi, name
        if name in ("accuracy", "nll", "brier"):  # means of per-row scores: the estimate sits inside
            assert lo <= r[name] <= hi, name
    assert r["temperature"] == pytest.approx(calibration.fit_temperature(val_z, val_y))
    assert r["calibrated"]["ece"] < r["ece"]
    lo, hi = r["calibrated_ci"]["nll_ci"]
    assert lo <= r["calibrated"]["nll"] <= hi
    assert r["vector_scaling"]["weights"] == pytest.approx(list(calibration.fit_vector_scaling(val_z, val_y).weights))
    # Same seed, same intervals; torch tensors and lists read like numpy arrays.
    again = calibration.calibrate(torch.from_numpy(z), y.tolist(), bootstrap=200, bootstrap_seed=3,
                                  fit_temperature=(val_z, val_y), fit_vector=(val_z, val_y))
    assert again == r


def test_reliability_diagram_files(tmp_path):
    z, y = predictions(seed=8)
    svg = tmp_path / "rel.svg"
    png = tmp_path / "rel.png"
    r = calibration.reliability_diagram(svg, z, y, bootstrap=50)
    calibration.reliability_diagram(png, z, y)
    assert svg.read_text().startswith("<svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["ece"] > 0


def lsmooth_binary():
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "lsmooth"
        if p.exists():
            return p
    return None


def test_same_numbers_as_lsmooth_calibrate(tmp_path):
    exe = lsmooth_binary()
    if exe is None:
        if os.environ.get("LSMOOTH_REQUIRE_BINARY"):
            pytest.fail("target/*/lsmooth is missing (build it with cargo build -p lsmooth)")
        pytest.skip("no lsmooth binary under target/ (cargo build -p lsmooth)")
    z, y = predictions(n=400, seed=9)
    val_z, val_y = predictions(n=400, seed=10)
    paths = {}
    for name, a in (("z", z), ("y", y), ("vz", val_z), ("vy", val_y)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], a)
    cli = subprocess.run(
        [str(exe), "calibrate", "--logits", str(paths["z"]), "--labels", str(paths["y"]), "--bootstrap", "100",
         "--fit-temperature", str(paths["vz"]), str(paths["vy"]), "--fit-vector", str(paths["vz"]),
         str(paths["vy"]), "--json"],
        check=True, capture_output=True, text=True,
    )
    ours = calibration.calibrate(z, y, bootstrap=100, fit_temperature=(val_z, val_y), fit_vector=(val_z, val_y))
    assert ours == json.loads(cli.stdout)
