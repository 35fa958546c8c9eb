"""The results do not depend on the number of threads, and concurrent calls from Python threads are safe (the
GIL is released while the kernels run)."""
import threading

import numpy as np
import torch

import label_smoothing
from label_smoothing import calibration
from label_smoothing.torch import cross_entropy, linear_cross_entropy


def run_all(x, y, w):
    xs = x.clone().requires_grad_()
    loss = cross_entropy(xs, y, label_smoothing=0.1)
    loss.backward()
    ws = w.clone().requires_grad_()
    lin = linear_cross_entropy(x[:, :64], ws, y % 300, label_smoothing=0.1)
    lin.backward()
    return loss.item(), xs.grad, lin.item(), ws.grad


def test_bit_identical_for_any_thread_count():
    x = torch.randn(40, 3000) * 3
    y = torch.randint(0, 3000, (40,))
    w = torch.randn(300, 64)
    results = []
    for n in (1, 2, 3, None):
        label_smoothing.set_num_threads(n)
        try:
            results.append(run_all(x, y, w))
        finally:
            label_smoothing.set_num_threads(None)
    first = results[0]
    for r in results[1:]:
        assert r[0] == first[0] and r[2] == first[2]
        assert torch.equal(r[1], first[1]) and torch.equal(r[3], first[3])
    z = np.asarray(x[:, :10], dtype=np.float32)
    label_smoothing.set_num_threads(1)
    one = calibration.calibrate(z, np.asarray(y) % 10, bootstrap=50)
    label_smoothing.set_num_threads(2)
    two = calibration.calibrate(z, np.asarray(y) % 10, bootstrap=50)
    label_smoothing.set_num_threads(None)
    assert one == two


def test_follows_torch_threads_by_default():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.randn(8, 500)
        y = torch.randint(0, 500, (8,))
        a = cross_entropy(x, y, label_smoothing=0.1)
        torch.set_num_threads(2)
        b = cross_entropy(x, y, label_smoothing=0.1)
        assert a.item() == b.item()
    finally:
        torch.set_num_threads(old)


def test_concurrent_calls_from_python_threads():
    x = torch.randn(64, 2000) * 2
    y = torch.randint(0, 2000, (64,))
    w = torch.randn(300, 64)
    expected = run_all(x, y, w)
    errors, results = [], []

    def work():
        try:
            for _ in range(5):
                results.append(run_all(x, y, w))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(results) == 30
    for r in results:
        assert r[0] == expected[0] and r[2] == expected[2]
        assert torch.equal(r[1], expected[1]) and torch.equal(r[3], expected[3])


def test_gradient_buffers_are_reused_only_when_free():
    from label_smoothing.torch import _cache, empty_cache, set_gradient_cache_limit

    empty_cache()
    x = torch.randn(512, 1024, requires_grad=True)  # 2 MiB gradients: kept by the cache
    y = torch.randint(0, 1024, (512,))
    cross_entropy(x, y, label_smoothing=0.1).backward()
    first = x.grad
    ptr = first.data_ptr()
    # In use as x.grad: the next gradient must not land in the same buffer.
    (g,) = torch.autograd.grad(cross_entropy(x * 1, y, label_smoothing=0.1), x)
    assert g.data_ptr() != ptr
    assert torch.equal(first, x.grad)
    expected = first.clone()
    del g
    x.grad = None
    del first
    # Free now: reused, and overwritten with the right values.
    cross_entropy(x, y, label_smoothing=0.1).backward()
    assert x.grad.data_ptr() == ptr
    assert torch.equal(x.grad, expected)
    assert _cache.CACHE.nbytes == 2 * 512 * 1024 * 4
    set_gradient_cache_limit(0)
    assert _cache.CACHE.nbytes == 0
    set_gradient_cache_limit(1 << 30)
