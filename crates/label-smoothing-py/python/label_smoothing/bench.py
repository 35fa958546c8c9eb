"""Times :func:`label_smoothing.torch.cross_entropy` and :func:`~label_smoothing.torch.linear_cross_entropy`
against PyTorch's own CPU losses, forward and backward, in one process with alternating rounds.

    python -m label_smoothing.bench --threads 2                      # the table of docs/BENCHMARKS.md
    python -m label_smoothing.bench --shapes 2048x32000 --rounds 30 --json

For each ``N x K`` shape (seeded logits uniform in ``[-4, 4)``, uniform labels, ``label_smoothing=0.1``) every
round times, one after the other (the order rotated from round to round) and each after an untimed call of its
own: ``ours`` (``cross_entropy`` then
``.backward()``), ``torch`` (``F.cross_entropy`` then ``.backward()``) and ``native`` (the Rust kernel called
directly on preallocated numpy buffers: the Rust-level time, without autograd or allocation). It prints the
medians, ``torch / ours`` and the binding's cost ``ours / native - 1``.

For each ``N x D x K`` linear shape it times ``linear_cross_entropy`` against
``F.linear_cross_entropy(label_smoothing=0.1)`` (with a bias, gradients of input, weight and bias) the same way and
reports each one's peak scratch memory: the rise of the process's peak resident memory (``VmHWM``, reset before
the call) above its resident memory before the call, with the gradients already allocated.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import label_smoothing
from label_smoothing import _native
from label_smoothing.torch import cross_entropy, linear_cross_entropy

DEFAULT_SHAPES = ["4096x10", "64x751", "8192x1000", "2048x32000", "512x128000"]
DEFAULT_LINEAR = ["4096x1024x32000"]


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1)) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _timed(fn) -> float:
    fn()  # untimed: each call finds the caches as its own back-to-back calls leave them
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _alternate(candidates: dict, times: dict, rounds: int) -> None:
    """``rounds`` rounds of one timed call of each candidate, the order rotated every round: torch's OpenMP
    threads spin for a while after its parallel regions, so whichever call follows torch's shares the cores."""
    names = list(candidates)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_timed(candidates[name]))


def _rounds_for(probe: float, rounds: int) -> int:
    return rounds or max(5, min(200, int(20.0 / max(probe, 1e-6))))


def bench_loss(n: int, k: int, threads: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0x5EED)
    x = (torch.rand(n, k, generator=g) * 8 - 4).requires_grad_()
    y = torch.randint(0, k, (n,), generator=g)
    xn, yn = x.detach().numpy(), y.numpy()
    gn = np.empty_like(xn)

    def ours():
        x.grad = None
        cross_entropy(x, y, label_smoothing=0.1).backward()

    def theirs():
        x.grad = None
        F.cross_entropy(x, y, label_smoothing=0.1).backward()

    def native():
        _native.cross_entropy(xn, "float32", k, yn, False, smoothing=0.1, spread="uniform", grad=gn,
                              threads=threads)

    # The three agree before anything is timed.
    ours()
    g_ours = x.grad.clone()
    theirs()
    assert torch.allclose(g_ours, x.grad, atol=1e-6), "the gradients differ from PyTorch's"
    candidates = {"ours": ours, "torch": theirs, "native": native}
    times = {name: [] for name in candidates}
    total = _rounds_for(_timed(theirs), rounds)
    _alternate(candidates, times, total)
    med = {name: statistics.median(v) for name, v in times.items()}
    return dict(shape=f"{n}x{k}", n=n, k=k, rounds=total, ours_s=med["ours"], torch_s=med["torch"],
                native_s=med["native"], speedup=med["torch"] / med["ours"],
                binding_cost=med["ours"] / med["native"] - 1.0, gbps_native=8 * n * k / med["native"] / 1e9)


def bench_linear(n: int, d: int, k: int, threads: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0x5EED)
    x = (torch.rand(n, d, generator=g) * 2 - 1).requires_grad_()
    w = ((torch.rand(k, d, generator=g) * 2 - 1) * (3.0 / d) ** 0.5).requires_grad_()
    b = ((torch.rand(k, generator=g) * 2 - 1) * 0.1).requires_grad_()
    y = torch.randint(0, k, (n,), generator=g)

    def run(fn):
        def call():
            x.grad = w.grad = b.grad = None
            fn(x, w, y, linear_bias=b, label_smoothing=0.1).backward()
        return call

    candidates = {"ours": run(linear_cross_entropy), "torch": run(F.linear_cross_entropy)}
    scratch = {}
    for name, call in candidates.items():
        call()  # the gradients allocated once, then measured with them in place
        grads = [t.grad for t in (x, w, b)]
        base = _rss("VmRSS")
        _reset_peak()
        x.grad = w.grad = b.grad = None
        call()
        scratch[name] = _rss("VmHWM") - base
        del grads
    times = {name: [] for name in candidates}
    total = _rounds_for(_timed(candidates["torch"]), rounds)
    _alternate(candidates, times, total)
    med = {name: statistics.median(v) for name, v in times.items()}
    return dict(shape=f"{n}x{d}x{k}", n=n, d=d, k=k, rounds=total, ours_s=med["ours"], torch_s=med["torch"],
                speedup=med["torch"] / med["ours"], ours_scratch_bytes=scratch["ours"],
                torch_scratch_bytes=scratch["torch"], scratch_ratio=scratch["ours"] / max(scratch["torch"], 1))


def _fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m label_smoothing.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch's and the kernels' threads (default 2)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per shape (default: about 20 s, 5 to 200)")
    ap.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, metavar="NxK")
    ap.add_argument("--linear", nargs="*", default=DEFAULT_LINEAR, metavar="NxDxK")
    ap.add_argument("--json", action="store_true", help="one JSON object per shape")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    label_smoothing.set_num_threads(args.threads)
    header = dict(torch=torch.__version__, label_smoothing=label_smoothing.__version__, threads=args.threads,
                  instruction_set=label_smoothing.instruction_set(), machine=platform.machine())
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in header.items()))
        print(f"{'shape':>16} {'ours':>10} {'torch':>10} {'native':>10} {'torch/ours':>11} {'binding':>8}")
    for shape in args.shapes:
        n, k = (int(v) for v in shape.lower().split("x"))
        r = bench_loss(n, k, args.threads, args.rounds)
        if args.json:
            print(json.dumps({**header, **r}), flush=True)
        else:
            print(f"{r['shape']:>16} {_fmt_time(r['ours_s']):>10} {_fmt_time(r['torch_s']):>10} "
                  f"{_fmt_time(r['native_s']):>10} {r['speedup']:>10.1f}x {100 * r['binding_cost']:>7.0f}%",
                  flush=True)
    for shape in args.linear:
        n, d, k = (int(v) for v in shape.lower().split("x"))
        r = bench_linear(n, d, k, args.threads, args.rounds)
        if args.json:
            print(json.dumps({**header, **r}), flush=True)
        else:
            print(f"{r['shape']:>16} {_fmt_time(r['ours_s']):>10} {_fmt_time(r['torch_s']):>10} {'':>10} "
                  f"{r['speedup']:>10.2f}x  scratch {r['ours_scratch_bytes'] / 2**20:.0f} MiB vs "
                  f"{r['torch_scratch_bytes'] / 2**20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
