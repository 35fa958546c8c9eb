#!/usr/bin/env python3
"""PyTorch CPU's linear + label-smoothed cross-entropy, forward and backward, for docs/BENCHMARKS.md:
`F.cross_entropy(F.linear(x, W, b), y, label_smoothing=0.1)` then `.backward()` for the gradients of x, W and b,
f32, on a given number of threads; the same input distribution as `lsmooth bench --linear` (x uniform in
[-1, 1), W uniform with standard deviation 1/sqrt(D)). Prints one JSON object per shape: median seconds over
the rounds and the peak resident memory of the process during one call (VmHWM after a reset).

    pip install torch numpy
    python3 scripts/bench_torch_linear.py --threads 2 4096x1024x32000 1024x2048x128000 16384x512x8192
"""
import argparse, json, re, time

import torch
import torch.nn.functional as F


def rss(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=0, help="rounds (default: about 30 s of calls, 3 to 50)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0x5EED)
    for shape in args.shapes:
        n, d, k = map(int, shape.lower().split("x"))
        x = (torch.rand(n, d, generator=g) * 2 - 1).requires_grad_()
        w = ((torch.rand(k, d, generator=g) * 2 - 1) * (3.0 / d) ** 0.5).requires_grad_()
        b = ((torch.rand(k, generator=g) * 2 - 1) * 0.1).requires_grad_()
        y = torch.randint(0, k, (n,), generator=g)

        def call():
            x.grad = w.grad = b.grad = None
            loss = F.cross_entropy(F.linear(x, w, b), y, label_smoothing=0.1)
            loss.backward()
            return loss.item()

        call()  # allocate the gradients once, as the Rust benchmark does before measuring its base
        base = rss("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        t = time.perf_counter()
        loss = call()
        probe = time.perf_counter() - t
        peak = rss("VmHWM")
        repeat = args.repeat or max(3, min(50, int(30 / probe)))
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        times.sort()
        med = times[len(times) // 2] if repeat % 2 else (times[repeat // 2 - 1] + times[repeat // 2]) / 2
        print(json.dumps(dict(n=n, d=d, k=k, threads=args.threads, torch=torch.__version__, repeat=repeat,
                              median_s=med, gflops=6 * n * d * k / med / 1e9, loss=loss, base_rss_bytes=base,
                              peak_rss_bytes=peak, scratch_bytes=peak - base)), flush=True)
        del x, w, b, y


if __name__ == "__main__":
    main()
