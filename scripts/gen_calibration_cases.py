#!/usr/bin/env python3
"""Writes crates/label-smoothing/tests/data/calibration_cases.json: smooth ECE computed by Apple's relplot and the
debiased L2 calibration error computed by Kumar et al.'s `uncertainty-calibration` package, on synthetic
top-label confidences and correctness, with the inputs.

Reproduce (the versions the committed file was made with are recorded in it):
    python3 -m venv /tmp/relenv && /tmp/relenv/bin/pip install relplot uncertainty-calibration
    /tmp/relenv/bin/python scripts/gen_calibration_cases.py
"""
import importlib.metadata as md
import json
import pathlib

import numpy as np
import relplot
from calibration import utils as kumar

rng = np.random.default_rng(20231)


def case(name, conf, correct, bins=15):
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    sm, width = relplot.smECE(conf, correct, return_width=True)
    deb = kumar.lower_bound_scaling_ce(conf, correct.astype(np.int64), p=2, debias=True, num_bins=bins,
                                       mode="top-label")
    return {
        "name": name,
        "bins": bins,
        "confidence": [float(c) for c in conf],
        "correct": [bool(c) for c in correct],
        "smooth_ece": float(sm),
        "smooth_ece_bandwidth": float(width),
        "smooth_ece_at_0.05": float(relplot.smECE_sigma(conf, correct, 0.05)),
        "debiased_l2_ce": float(deb),
    }


def draw(n, lo, hi, gap):
    """Confidences uniform in [lo, hi); each correct with probability clip(c - gap)."""
    c = rng.uniform(lo, hi, n)
    return c, rng.uniform(0, 1, n) < np.clip(c - gap, 0, 1)


cases = []
c, a = draw(2000, 0.5, 1.0, 0.0)
cases.append(case("calibrated, 2000 rows", c, a))
c, a = draw(2000, 0.5, 1.0, 0.1)
cases.append(case("over-confident by 0.1, 2000 rows", c, a))
c, a = draw(1000, 0.3, 0.9, -0.15)
cases.append(case("under-confident by 0.15, 1000 rows", c, a))
c, a = draw(300, 0.9, 1.0, 0.02)
cases.append(case("peaked near 1, 300 rows, 10 bins", c, a, bins=10))
c = rng.beta(5, 2, 500)
a = rng.uniform(0, 1, 500) < c ** 2
cases.append(case("beta(5, 2) confidences, accuracy c^2, 500 rows", c, a))
c = np.round(rng.uniform(0.4, 1.0, 400), 2)
a = rng.uniform(0, 1, 400) < c
cases.append(case("confidences on a 0.01 grid (ties), 400 rows", c, a))
c, a = draw(7, 0.2, 1.0, 0.0)
cases.append(case("seven rows", c, a, bins=3))

out = {
    "generator": "scripts/gen_calibration_cases.py",
    "relplot": md.version("relplot"),
    "uncertainty-calibration": md.version("uncertainty-calibration"),
    "numpy": np.__version__,
    "cases": cases,
}
path = pathlib.Path(__file__).resolve().parent.parent / "crates/label-smoothing/tests/data/calibration_cases.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}: {len(cases)} cases")
for c in cases:
    print(f"  {c['name']}: smECE {c['smooth_ece']:.6f} (sigma {c['smooth_ece_bandwidth']:.5f}), "
          f"debiased L2 {c['debiased_l2_ce']:.6f}")
