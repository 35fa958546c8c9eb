"""``label_smoothing.torch.distributed.vocab_parallel_cross_entropy`` across 1 to 4 processes on gloo: the exact
mode bit-identical to the single-process ``cross_entropy`` where the slices start at multiples of 2048 classes
(within 1e-5 elsewhere), the Megatron mode equal to Megatron-LM's formula written out in float64 here, and a bad
input on one rank the same ``ValueError`` on every rank. Each test is bounded in time."""
import os
import queue
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from label_smoothing.torch import cross_entropy
from label_smoothing.torch.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

TIMEOUT = 120.0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, init, fn, args, results):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    try:
        import datetime

        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        try:
            results.put((rank, "ok", _plain(fn(rank, world, *args))))
        finally:
            dist.destroy_process_group()
    except Exception as e:  # sent back to the test, which fails with it
        results.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _plain(value):
    """Tensors as numpy arrays (a queue would share their memory with a process about to exit)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().numpy().copy())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _tensors(value):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "tensor":
        return torch.from_numpy(value[1])
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors(v) for v in value)
    return value


def run(world, fn, *args):
    """Runs ``fn(rank, world, *args)`` in ``world`` processes on gloo; returns the results by rank, or fails the
    test (with the first error) when a process raises, dies or is still running after ``TIMEOUT`` seconds."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    init = f"tcp://127.0.0.1:{_free_port()}"
    procs = [ctx.Process(target=_worker, args=(r, world, init, fn, args, results), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    out = {}
    try:
        while len(out) < world:
            try:
                rank, status, value = results.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"{world} processes still running after {TIMEOUT} s: a deadlock?")
            out[rank] = (status, _tensors(value))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [out[r] for r in range(world)]


def _problem(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    # Logits rising across the classes, as a trained model's over its frequent classes.
    logits = torch.randn(n, k, generator=g) * 2 + torch.linspace(0, 6, k)
    target = torch.randint(0, k, (n,), generator=g)
    target[1] = -100
    return logits, target


CONFIGS = [
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.1, spread="others", reduction="mean_nonzero"),
    dict(adaptive=0.2, spread="others", reduction="none"),
    dict(label_smoothing=0.05, reduction="sum", lse_square_scale=1e-3, softcap=20.0),
    dict(label_smoothing=0.1, weight="w"),
]


def _versus_one_process(rank, world, k, slices, seed, backend, dtypes):
    """Every configuration's loss and this rank's gradient, sharded and in one process, on ``backend`` (both
    sides) for each of ``dtypes``."""
    logits, target = _problem(6, k, seed)
    weight = torch.rand(k, generator=torch.Generator().manual_seed(5)) + 0.5
    start, end = slices[rank], slices[rank + 1]
    got = []
    for cfg in CONFIGS:
        cfg = {key: (weight if v == "w" else v) for key, v in cfg.items()}
        for dtype in dtypes:
            shard = logits[:, start:end].to(dtype).clone().requires_grad_()
            loss = vocab_parallel_cross_entropy(shard, target, vocab_start=start, vocab_size=k, backend=backend,
                                                **cfg)
            upstream = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.dim() else torch.tensor(0.7)
            loss.backward(upstream.to(dtype))
            whole = logits.to(dtype).clone().requires_grad_()
            want = cross_entropy(whole, target, backend=backend, **cfg)
            want.backward(upstream.to(dtype))
            got.append((loss.detach(), want.detach(), shard.grad, whole.grad[:, start:end]))
    return got


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_chunk_aligned_slices_are_bit_identical_to_one_process(world):
    k = 4 * 2048 + 300
    # Slices at multiples of 2048: the four whole chunks shared out, the last rank also taking the partial one.
    bounds = [0] + [4 * r // world * 2048 for r in range(1, world)] + [k]
    assert len(bounds) == world + 1
    for status, value in run(world, _versus_one_process, k, bounds, 1, "kernel", (torch.float32,)):
        assert status == "ok", value
        for i, (loss, want, grad, want_grad) in enumerate(value):
            assert torch.equal(loss, want), (i, loss, want)
            assert torch.equal(grad, want_grad), (i, (grad - want_grad).abs().max())


@pytest.mark.parametrize("world", [2, 3])
def test_unaligned_slices_agree_within_tolerance(world):
    k = 3001
    bounds = [r * k // world for r in range(world)] + [k]
    for status, value in run(world, _versus_one_process, k, bounds, 2, "kernel", (torch.float32,)):
        assert status == "ok", value
        for i, (loss, want, grad, want_grad) in enumerate(value):
            torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6, msg=f"config {i}")
            torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6, msg=f"config {i}")


@pytest.mark.parametrize("world", [1, 3])
def test_the_torch_operations_agree_with_one_process(world):
    # The path of CUDA shards (and of float64), forced on the CPU: within 1e-5 of one process, the same loss on
    # every rank.
    k = 3001
    bounds = [r * k // world for r in range(world)] + [k]
    results = run(world, _versus_one_process, k, bounds, 6, "torch", (torch.float32, torch.float64))
    for status, value in results:
        assert status == "ok", value
        for i, (loss, want, grad, want_grad) in enumerate(value):
            torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6, msg=f"config {i}")
            torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6, msg=f"config {i}")
    for status, value in results[1:]:
        assert all(torch.equal(a[0], b[0]) for a, b in zip(value, results[0][1])), "the same loss on every rank"


def _megatron(rank, world, k, a):
    logits, target = _problem(5, k, 3)
    target[1] = 7
    start, end = rank * k // world, (rank + 1) * k // world
    shard = logits[:, start:end].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(shard, target, vocab_start=start, vocab_size=k, label_smoothing=a,
                                        reduction="none", mode="megatron")
    loss.backward(torch.ones_like(loss))
    exact = vocab_parallel_cross_entropy(logits[:, start:end], target, vocab_start=start, vocab_size=k,
                                         label_smoothing=a, spread="others", reduction="none")
    return loss.detach(), shard.grad, exact, (start, end)


def _megatron_f64(logits, target, start, end, a):
    """Megatron-LM's formula on one rank in float64: the global log-sum-exp, the rank's K_r in the smoothing
    and the mean over the rank's classes; its backward softmax - (1 - s) onehot - s / K_r on the rank's classes."""
    z = logits.double()
    lse = z.logsumexp(-1)
    nll = lse - z.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    kr = end - start
    s = a * kr / (kr - 1)
    mean_log_probs = (z[:, start:end] - lse.unsqueeze(-1)).mean(-1)
    loss = (1 - s) * nll - s * mean_log_probs
    grad = (z[:, start:end] - lse.unsqueeze(-1)).exp() - s / kr
    for i, y in enumerate(target.tolist()):
        if start <= y < end:
            grad[i, y - start] -= 1 - s
    return loss, grad


@pytest.mark.parametrize("world", [1, 2, 4])
def test_megatron_mode_is_megatrons_formula(world):
    k, a = 2000, 0.1
    logits, target = _problem(5, k, 3)
    target[1] = 7
    results = run(world, _megatron, k, a)
    exact_loss = None
    for status, value in results:
        assert status == "ok", value
        loss, grad, exact, (start, end) = value
        want, want_grad = _megatron_f64(logits, target, start, end, a)
        torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), want_grad, rtol=1e-5, atol=1e-6)
        exact_loss = exact if exact_loss is None else exact_loss
        assert torch.equal(exact, exact_loss), "the exact mode is the same on every rank"
    if world > 1:
        # Megatron's loss differs from rank to rank and from the definition (the exact mode's).
        losses = [value[0] for _, value in results]
        assert any(not torch.allclose(losses[0], l, rtol=1e-4) for l in losses[1:])
        assert not torch.allclose(losses[0], exact_loss, rtol=1e-4)
    else:
        torch.testing.assert_close(results[0][1][0], exact_loss, rtol=1e-5, atol=1e-6)


def _bad(rank, world, what):
    logits, target = _problem(4, 100, 4)
    start, end = rank * 50, (rank + 1) * 50
    shard = logits[:, start:end]
    kwargs = dict(vocab_start=start, vocab_size=100, label_smoothing=0.1)
    if what == "label" and rank == 1:
        target = target.clone()
        target[2] = 100
    if what == "start" and rank == 1:
        kwargs["vocab_start"] = 40
    if what == "option" and rank == 0:
        kwargs["label_smoothing"] = 1.5
    if what == "mode" and rank == 1:
        kwargs["mode"] = "megatronn"
    if what == "target" and rank == 0:
        target = target.clone()
        target[0] = (int(target[0]) + 1) % 100
    try:
        if what == "linear":
            x, w = torch.randn(4, 8), torch.randn(50, 8 if rank == 0 else 9)
            vocab_parallel_linear_cross_entropy(x, w, target, **kwargs)
        else:
            vocab_parallel_cross_entropy(shard, target, **kwargs)
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("what, message", [
    ("label", "rank 1: target: label 100 at row 2 is out of range [0, 100)"),
    ("start", "rank 1: vocab_start is 40, but the ranks before it end at class 50"),
    ("option", "rank 0: label_smoothing: expected a number in [0, 1], got 1.5"),
    ("target", "rank 1: target differs from rank 0's"),
    ("mode", "rank 1: mode: 'megatronn' is not a valid value"),
    ("linear", "rank 1: input: expected hidden states [..., 9] for weight_shard of shape [50, 9], got (4, 8)"),
])
def test_a_bad_input_on_one_rank_is_the_same_error_on_every_rank(what, message):
    results = run(2, _bad, what)
    errors = []
    for status, value in results:
        assert status == "ok", value
        assert value is not None, "every rank raises"
        errors.append(value)
    assert errors[0] == errors[1]
    assert errors[0].startswith(message), errors[0]


def test_the_example_prints_the_same_losses_as_one_process():
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "vocab_parallel.py"
    out = subprocess.run([sys.executable, str(example), "--procs", "2", "--steps", "2"], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "identical: True" in out.stdout, out.stdout


def _linear(rank, world, k, slices, backend):
    from label_smoothing.torch import linear_cross_entropy

    g = torch.Generator().manual_seed(8)
    x = torch.randn(7, 16, generator=g)
    w = torch.randn(k, 16, generator=g) * 0.3
    b = torch.randn(k, generator=g) * 0.1
    target = torch.randint(0, k, (7,), generator=g)
    target[2] = -100
    start, end = slices[rank], slices[rank + 1]
    got = []
    for cfg in [dict(label_smoothing=0.1), dict(label_smoothing=0.1, reduction="none", softcap=5.0),
                dict(adaptive=0.2, spread="others", reduction="sum", lse_square_scale=1e-3)]:
        xs, ws, bs = x.clone().requires_grad_(), w[start:end].clone().requires_grad_(), b[start:end].clone()
        bs.requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(xs, ws, target, bias_shard=bs, vocab_start=start, vocab_size=k,
                                                   backend=backend, **cfg)
        up = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.dim() else torch.tensor(0.7)
        loss.backward(up)
        xw, ww, bw = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
        want = linear_cross_entropy(xw, ww, target, linear_bias=bw, **cfg)
        want.backward(up)
        got.append((loss.detach(), want.detach(), (xs.grad, xw.grad), (ws.grad, ww.grad[start:end]),
                    (bs.grad, bw.grad[start:end])))
    return got


@pytest.mark.parametrize("world, backend", [(1, None), (3, None), (2, "torch")])
def test_the_linear_variant_agrees_with_one_process(world, backend):
    k = 2 * 2048 + 77
    bounds = {1: [0, k], 2: [0, 2048, k], 3: [0, 2048, 4096, k]}[world]
    results = run(world, _linear, k, bounds, backend)
    for status, value in results:
        assert status == "ok", value
        for i, (loss, want, *pairs) in enumerate(value):
            torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6, msg=f"config {i}")
            for got, expected in pairs:
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"config {i}")
    for status, value in results[1:]:
        for a, b in zip(value, results[0][1]):
            assert torch.equal(a[0], b[0]), "the same loss on every rank"
            assert torch.equal(a[2][0], b[2][0]), "the same input gradient on every rank"


def test_torchrun_launches_the_example_with_the_losses_of_one_process():
    import importlib.util
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "vocab_parallel.py"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = subprocess.run([torchrun, "--nproc-per-node", "2", str(example), "--steps", "2"], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    printed = [float(line.split()[1]) for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    spec = importlib.util.spec_from_file_location("vocab_parallel", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, _ = module.train(0, 1, 2)
    finally:
        torch.set_num_threads(threads)
    assert printed == [float(f"{v:.9f}") for v in single], (printed, single)
