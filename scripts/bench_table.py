#!/usr/bin/env python3
"""The main table of docs/BENCHMARKS.md: `lsmooth bench --json` over the issue's shapes, both modes.

Usage: scripts/bench_table.py [--lsmooth PATH] [--threads T] [--runs R] [--small-runs R] [SHAPE ...]

Each (shape, mode) is run R times (3 for the small shapes), the invocations interleaved round by round so that a
slow minute of this shared machine lands on every row; the row printed is the invocation in the middle by
`fraction_of_copy`, and "runs" lists every invocation's fraction. Prints the markdown table.
"""

import argparse
import json
import subprocess

LARGE = ["8192x1000", "2048x32000", "512x128000", "1x1048576"]
SMALL = ["4096x10", "64x751"]


def run(lsmooth, shape, threads, forward):
    cmd = [lsmooth, "bench", "--shape", shape, "--threads", str(threads), "--json"]
    if forward:
        cmd.append("--forward-only")
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def seconds(s):
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lsmooth", default="target/release/lsmooth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small-runs", type=int, default=3)
    ap.add_argument("shapes", nargs="*", default=LARGE + SMALL)
    a = ap.parse_args()

    cases = [(s, f) for s in a.shapes for f in (False, True)]
    runs = {c: [] for c in cases}
    for r in range(a.runs):
        for c in cases:
            if c[0] in SMALL and r >= a.small_runs:
                continue
            runs[c].append(run(a.lsmooth, c[0], a.threads, c[1]))

    print("| shape | mode | median | GB/s | copy GB/s (same rounds) | of copy (quartiles) | runs "
          "| loss / read time | ns per row | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (shape, forward) in cases:
        rs = sorted(runs[(shape, forward)], key=lambda d: d["fraction_of_copy"])
        d = rs[len(rs) // 2]
        q1, q3 = d["fraction_of_copy_quartiles"]
        fr = " ".join(f"{100 * x['fraction_of_copy']:.0f}" for x in rs)
        n, k = shape.split("x")
        print(f"| {n} x {k} | {'forward' if forward else 'fwd+bwd'} | {seconds(d['median_s'])} "
              f"| {d['gbps']:.1f} | {d['copy_gbps']:.1f} "
              f"| {100 * d['fraction_of_copy']:.0f}% ({100 * q1:.0f}-{100 * q3:.0f}) | {fr} "
              f"| {d['ratio_to_read']:.1f}x | {d['ns_per_row']:.0f} "
              f"| {d['peak_rss_bytes'] / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
