#!/usr/bin/env python3
"""Peak resident memory of `lsmooth calibrate` and `lsmooth loss --grad-out` against the size of the logits file,
for docs/BENCHMARKS.md.

Writes seeded float32 logits and int64 labels with numpy into a temporary folder, runs the release binary on
them under GNU time (`/usr/bin/time -f %M`: the peak RSS the kernel recorded for it; measured from this Python
process instead, a child would inherit the parent's high-water mark at fork). Needs numpy and GNU time.

    cargo build --release -p lsmooth
    python3 scripts/measure_memory.py            # [500, 131072] and [100000, 100]
    python3 scripts/measure_memory.py --shapes 64x1000
"""
import argparse
import pathlib
import subprocess
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def peak_rss(cmd, out):
    """Runs `cmd` under GNU time; returns its peak resident set in bytes (it must succeed)."""
    proc = subprocess.run(["/usr/bin/time", "-o", out, "-f", "%M", *map(str, cmd)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {proc.stderr.decode()}")
    return int(pathlib.Path(out).read_text().split()[-1]) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="500x131072,100000x100")
    ap.add_argument("--binary", default=str(ROOT / "target/release/lsmooth"))
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| logits | file | command | peak RSS | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        for shape in args.shapes.split(","):
            n, k = map(int, shape.split("x"))
            logits, labels = d / "logits.npy", d / "labels.npy"
            np.save(logits, (rng.standard_normal((n, k), dtype=np.float32) * 3))
            np.save(labels, rng.integers(0, k, n))
            size = logits.stat().st_size
            runs = {
                "calibrate": ["calibrate", "--logits", logits, "--labels", labels],
                f"calibrate --bootstrap {args.bootstrap}": [
                    "calibrate", "--logits", logits, "--labels", labels, "--bootstrap", str(args.bootstrap)],
                "loss --grad-out": [
                    "loss", "--logits", logits, "--targets", labels, "--smoothing", "0.1", "--grad-out",
                    d / "grad.npy"],
            }
            for name, cmd in runs.items():
                rss = peak_rss([args.binary, *cmd], d / "time.txt")
                print(f"| [{n}, {k}] f32 | {size / 1e6:.0f} MB | `{name}` | {rss / 1e6:.0f} MB | {rss / size:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
