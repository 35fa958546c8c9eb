#!/usr/bin/env python3
"""Compares two lsmooth binaries bit for bit on `lsmooth loss`: every golden case and seeded synthetic problems
(wide rows over several 2048-class chunks, -inf chunks, NaN, weights, soft targets, adaptive smoothing, every
reduction, per-row upstream gradients), each on 1 and 3 threads, comparing the printed JSON and the bytes of the
gradient and loss files. For restructures and kernel changes that must not change a single bit.

    python3 scripts/bitcompare.py OLD_BINARY NEW_BINARY

Needs numpy. Exits 1 on the first difference."""
import json, os, subprocess, sys, tempfile

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def cases():
    golden = json.load(open(os.path.join(ROOT, "crates/label-smoothing/testdata/cross_entropy_cases.json")))["cases"]
    for c in golden:
        o = c["options"]
        yield dict(name=c["name"], logits=np.array(c["logits"], np.float32).reshape(c["n"], c["k"]),
                   labels=None if c["targets"] is None else np.array(c["targets"], np.int64),
                   soft=None if c["soft_targets"] is None else np.array(c["soft_targets"], np.float32).reshape(c["n"], c["k"]),
                   weights=None if o["weights"] is None else np.array(o["weights"], np.float32),
                   grad_output=None if c["grad_output"] is None else np.array(c["grad_output"], np.float32),
                   eps=o["eps"], alpha=o["alpha"], spread=o["spread"], reduction=o["reduction"],
                   ignore=o["ignore_index"])
    rng = np.random.default_rng(20261202)
    i = 0
    for n, k in [(1, 20000), (1, 70001), (3, 4100), (64, 751), (257, 10), (300, 3), (40, 2048), (16, 12), (5, 13), (2, 65536)]:
        for spread in ["others", "uniform"]:
            for variant in ["plain", "weights", "soft", "adaptive", "ignore", "none-go"]:
                i += 1
                logits = (rng.standard_normal((n, k)) * 3).astype(np.float32)
                if i % 4 == 0 and k > 4096:
                    logits[0, 2048:4096] = -np.inf
                if i % 7 == 0:
                    logits[-1, k // 2] = np.nan
                labels = rng.integers(0, k, n).astype(np.int64)
                c = dict(name=f"synthetic-{n}x{k}-{spread}-{variant}", logits=logits, labels=labels, soft=None, weights=None,
                         grad_output=None, eps=0.1, alpha=None, spread=spread, reduction="mean", ignore=None)
                if variant == "weights":
                    c["weights"] = rng.uniform(0, 2, k).astype(np.float32)
                    c["reduction"] = "sum"
                elif variant == "soft":
                    s = rng.uniform(0, 1, (n, k)).astype(np.float64)
                    c["soft"] = (s / s.sum(1, keepdims=True)).astype(np.float32)
                    c["labels"] = None
                elif variant == "adaptive":
                    c["alpha"] = 0.2
                    c["reduction"] = "mean-nonzero"
                elif variant == "ignore":
                    labels[::2] = -100
                    c["ignore"] = -100
                elif variant == "none-go":
                    c["reduction"] = "none"
                    c["grad_output"] = rng.uniform(-1, 1, n).astype(np.float32)
                yield c


def run(binary, c, d, threads):
    np.save(os.path.join(d, "l.npy"), c["logits"])
    args = [binary, "loss", "--logits", os.path.join(d, "l.npy"), "--spread", c["spread"], "--reduction", c["reduction"]]
    if c["labels"] is not None:
        np.save(os.path.join(d, "y.npy"), c["labels"])
        args += ["--targets", os.path.join(d, "y.npy")]
    else:
        np.save(os.path.join(d, "s.npy"), c["soft"])
        args += ["--soft-targets", os.path.join(d, "s.npy")]
    if c["weights"] is not None:
        np.save(os.path.join(d, "w.npy"), c["weights"])
        args += ["--weights", os.path.join(d, "w.npy")]
    if c["grad_output"] is not None:
        np.save(os.path.join(d, "go.npy"), c["grad_output"])
        args += ["--grad-output", os.path.join(d, "go.npy")]
    args += ["--adaptive", str(c["alpha"])] if c["alpha"] is not None else ["--smoothing", str(c["eps"])]
    if c["ignore"] is not None:
        args += ["--ignore-index", str(c["ignore"])]
    args += ["--grad-out", os.path.join(d, "g.npy"), "--loss-out", os.path.join(d, "lo.npy")]
    p = subprocess.run(args, capture_output=True, env=dict(os.environ, RAYON_NUM_THREADS=str(threads)))
    files = [open(os.path.join(d, f), "rb").read() if p.returncode == 0 else b"" for f in ("g.npy", "lo.npy")]
    for f in ("g.npy", "lo.npy"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    return p.returncode, p.stdout, p.stderr, files


def main():
    old, new = sys.argv[1], sys.argv[2]
    count = 0
    with tempfile.TemporaryDirectory() as d:
        for c in cases():
            for threads in (1, 3):
                a, b = run(old, c, d, threads), run(new, c, d, threads)
                if a != b:
                    print(f"DIFFERENT: {c['name']} on {threads} threads\n old: {a[:3]}\n new: {b[:3]}")
                    sys.exit(1)
                count += 1
    print(f"{count} runs ({count // 2} problems on 1 and 3 threads): identical")


if __name__ == "__main__":
    main()
