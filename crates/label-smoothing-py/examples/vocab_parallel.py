"""Trains a 100,000-class linear head with its classes split across P gloo processes
(``vocab_parallel_cross_entropy``), then the same head in one process (``cross_entropy``), and prints both runs'
losses and their median time per step.

    python crates/label-smoothing-py/examples/vocab_parallel.py --procs 2 --steps 5

With slices at multiples of 2048 classes (the default split here) the losses are bit-identical to one process.
Under ``torchrun`` each process runs its rank and rank 0 prints the sharded run's losses:

    torchrun --nproc-per-node 2 crates/label-smoothing-py/examples/vocab_parallel.py --steps 5
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from label_smoothing.torch import cross_entropy
from label_smoothing.torch.distributed import vocab_parallel_cross_entropy

K, D, N, LR, SMOOTHING = 100_000, 64, 256, 0.5, 0.1


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(K, D, generator=g) * 0.05
    y = torch.randint(0, K, (N,), generator=g)
    return x, w, y


def split(world):
    """Rank r's classes: whole chunks of 2048 shared out, the last rank taking the rest."""
    chunks = K // 2048
    return [0] + [chunks * r // world * 2048 for r in range(1, world)] + [K]


def train(rank, world, steps):
    """SGD on rank ``rank``'s rows of the head; returns the losses and the step times."""
    x, w, y = problem()
    bounds = split(world)
    start, end = bounds[rank], bounds[rank + 1]
    w_r = w[start:end].clone().requires_grad_()
    losses, times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        logits = x @ w_r.t()
        if world == 1:
            loss = cross_entropy(logits, y, label_smoothing=SMOOTHING)
        else:
            loss = vocab_parallel_cross_entropy(logits, y, vocab_start=start, vocab_size=K,
                                                label_smoothing=SMOOTHING)
        loss.backward()
        with torch.no_grad():
            w_r -= LR * w_r.grad
            w_r.grad = None
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return losses, times


def _worker(rank, world, port, steps, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        result = train(rank, world, steps)
        if rank == 0:
            out.put(result)
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="processes (2 to 4 on a small machine)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if "RANK" in os.environ:  # under torchrun: this process is one rank
        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        losses, times = train(rank, world, args.steps)
        dist.destroy_process_group()
        if rank == 0:
            print("\n".join(f"{i:>4}  {loss:>16.9f}" for i, loss in enumerate(losses)))
            print(f"median time per step: {statistics.median(times) * 1e3:.1f} ms on {world} processes")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, args.procs, port, args.steps, out)) for r in range(args.procs)]
    for p in procs:
        p.start()
    sharded, sharded_times = out.get(timeout=600)
    for p in procs:
        p.join()
    torch.set_num_threads(1)
    single, single_times = train(0, 1, args.steps)
    print(f"{'step':>4}  {f'{args.procs} processes':>16}  {'one process':>16}")
    for i, (a, b) in enumerate(zip(sharded, single)):
        print(f"{i:>4}  {a:>16.9f}  {b:>16.9f}")
    print(f"identical: {sharded == single}")
    print(f"median time per step: {statistics.median(sharded_times) * 1e3:.1f} ms on {args.procs} processes, "
          f"{statistics.median(single_times) * 1e3:.1f} ms in one (1 thread each)")


if __name__ == "__main__":
    main()
