"""label_smoothing.torch.cross_entropy against torch.nn.functional.cross_entropy in float64 (the reference),
for every reduction, class weights, the ignore index, smoothing, probability targets and both spreads."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, assert_grad_close, assert_loss_close, reference
from label_smoothing.torch import LabelSmoothingCrossEntropy, cross_entropy


def problem(n, k, scale=3.0, ignore=True):
    x = (torch.randn(n, k) * scale).requires_grad_()
    y = torch.randint(0, k, (n,))
    if ignore and n > 2:
        y[1] = -100
    return x, y


def upstream_atol(upstream):
    """SPEC's 1e-6 is for an upstream gradient of 1; a per-row upstream gradient scales each row's error."""
    return 1e-6 * (1.0 if upstream is None else max(1.0, upstream.abs().max().item()))


def grads(loss, x, upstream=None):
    if loss.dim() == 0:
        (g,) = torch.autograd.grad(loss, x)
    else:
        (g,) = torch.autograd.grad(loss, x, torch.ones_like(loss) if upstream is None else upstream)
    return g


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("n,k", [(33, 2), (64, 10), (17, 751), (5, 5000)])
def test_matches_pytorch_with_labels(backend, reduction, weighted, smoothing, n, k):
    x, y = problem(n, k)
    w = torch.rand(k) + 0.1 if weighted else None
    upstream = torch.randn(n) if reduction == "none" else None
    ours = cross_entropy(x, y, w, reduction=reduction, label_smoothing=smoothing, backend=backend)
    ref, z = reference(x, y, weight=w, reduction=reduction, label_smoothing=smoothing)
    assert ours.dtype == torch.float32
    assert_loss_close(ours, ref)
    g_ref = grads(ref, z, None if upstream is None else upstream.double())
    assert_grad_close(grads(ours, x, upstream), g_ref, atol=upstream_atol(upstream))


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_pytorch_with_probabilities(backend, reduction, weighted):
    n, k = 40, 300
    x = (torch.randn(n, k) * 2).requires_grad_()
    t = torch.softmax(torch.randn(n, k) * 4, dim=1)
    w = torch.rand(k) + 0.1 if weighted else None
    ours = cross_entropy(x, t, w, reduction=reduction, label_smoothing=0.2, backend=backend)
    ref, z = reference(x, t, weight=w, reduction=reduction, label_smoothing=0.2)
    assert_loss_close(ours, ref)
    upstream = torch.randn(n) if reduction == "none" else None
    assert_grad_close(grads(ours, x, upstream), grads(ref, z, None if upstream is None else upstream.double()),
                      atol=upstream_atol(upstream))


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_others_spread_is_uniform_with_converted_smoothing(backend):
    # Spread::convert: e_uniform = e_others * K / (K - 1) gives the same targets.
    n, k, e = 50, 12, 0.1
    x, y = problem(n, k)
    ours = cross_entropy(x, y, label_smoothing=e, spread="others", backend=backend)
    ref, z = reference(x, y, label_smoothing=e * k / (k - 1))
    assert_loss_close(ours, ref)
    assert_grad_close(grads(ours, x), grads(ref, z))


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_spatial_and_unbatched_inputs(backend):
    x = torch.randn(3, 7, 4, 5).requires_grad_()
    y = torch.randint(0, 7, (3, 4, 5))
    y[0, 1, 2] = -100
    for reduction in ("mean", "none"):
        ours = cross_entropy(x, y, reduction=reduction, label_smoothing=0.1, backend=backend)
        ref, z = reference(x, y, reduction=reduction, label_smoothing=0.1)
        assert ours.shape == ref.shape
        assert_loss_close(ours, ref)
        up = torch.randn(ref.shape) if reduction == "none" else None
        assert_grad_close(grads(ours, x, up), grads(ref, z, None if up is None else up.double()),
                          atol=upstream_atol(up))
    # Probability targets of the input's shape.
    t = torch.softmax(torch.randn(3, 7, 4, 5), dim=1)
    assert_loss_close(cross_entropy(x, t, label_smoothing=0.1, backend=backend),
                      reference(x, t, label_smoothing=0.1)[0])
    # Unbatched [K] logits with a [] target.
    v = torch.randn(9).requires_grad_()
    ours = cross_entropy(v, torch.tensor(4), label_smoothing=0.1, backend=backend)
    ref, zv = reference(v, torch.tensor(4), label_smoothing=0.1)
    assert_loss_close(ours, ref)
    assert_grad_close(grads(ours, v), grads(ref, zv))


def test_non_contiguous_input_and_integer_dtypes():
    x = torch.randn(20, 30).t().requires_grad_()  # [30, 20], not contiguous
    y = torch.randint(0, 20, (30,), dtype=torch.int32)
    ours = cross_entropy(x, y, label_smoothing=0.1)
    ref, z = reference(x, y.long(), label_smoothing=0.1)
    assert_loss_close(ours, ref)
    assert_grad_close(grads(ours, x), grads(ref, z))


def test_upstream_gradient_and_second_backward():
    x, y = problem(16, 100)
    loss = cross_entropy(x, y, label_smoothing=0.1)
    (3.5 * loss).backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    loss.backward()  # a second backward recomputes the gradient the first one handed over
    ref, z = reference(x, y, label_smoothing=0.1)
    (g,) = torch.autograd.grad(ref, z)
    assert_grad_close(first, 3.5 * g)
    assert_grad_close(x.grad, g)


@pytest.mark.parametrize("dtype,rel", [(torch.bfloat16, 2.0**-8), (torch.float16, 2.0**-11)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision(dtype, rel, reduction):
    # The kernel computes in f32 from the widened 16-bit values: the loss and gradient are the f32 results rounded
    # to the input's type once (a relative half-ulp, plus SPEC's f32 tolerance).
    x16 = (torch.randn(24, 1000) * 3).to(dtype).requires_grad_()
    y = torch.randint(0, 1000, (24,))
    ours = cross_entropy(x16, y, label_smoothing=0.1, reduction=reduction)
    assert ours.dtype == dtype
    ref, z = reference(x16.float(), y, label_smoothing=0.1, reduction=reduction)
    assert_loss_close(ours, ref, rtol=rel, atol=1e-6)
    up = torch.rand(24) if reduction == "none" else None
    assert_grad_close(grads(ours, x16, None if up is None else up.to(dtype)),
                      grads(ref, z, None if up is None else up.to(dtype).double()), atol=1e-6, rtol=rel)
    # A scaled 16-bit gradient is the kernel's, scaled in f32 before the rounding.
    (g2,) = torch.autograd.grad(cross_entropy(x16, y, label_smoothing=0.1) * 1000.0, x16)
    ref2, z2 = reference(x16.float(), y, label_smoothing=0.1)
    (gr,) = torch.autograd.grad(ref2 * 1000.0, z2)
    assert_grad_close(g2, gr, atol=1e-3, rtol=rel)


def test_module_matches_functional():
    x, y = problem(30, 40)
    w = torch.rand(40)
    m = LabelSmoothingCrossEntropy(weight=w, label_smoothing=0.15, reduction="sum", spread="others")
    assert_loss_close(m(x, y), cross_entropy(x, y, w, reduction="sum", label_smoothing=0.15, spread="others"))
    assert "weight" in dict(m.named_buffers())
    # PyTorch's deprecated size_average=False means reduction "sum", as in nn.CrossEntropyLoss.
    with pytest.warns(UserWarning, match="deprecated"):
        legacy = LabelSmoothingCrossEntropy(weight=w, label_smoothing=0.15, size_average=False)
    assert legacy.reduction == "sum"
    assert_loss_close(legacy(x, y), reference(x, y, weight=w, label_smoothing=0.15, reduction="sum")[0])


def test_mean_over_no_rows_is_zero():
    # SPEC.md: a mean over zero counted rows is 0 with a zero gradient (PyTorch gives NaN).
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.full((4,), -100)
    for backend in ("kernel", "torch"):
        loss = cross_entropy(x, y, label_smoothing=0.1, backend=backend)
        assert loss.item() == 0.0
        (g,) = torch.autograd.grad(loss, x)
        assert bool((g == 0).all())
    empty = torch.empty(0, 6, requires_grad=True)
    loss = cross_entropy(empty, torch.empty(0, dtype=torch.long), label_smoothing=0.1)
    assert loss.item() == 0.0
    assert cross_entropy(empty, torch.empty(0, dtype=torch.long), reduction="none").shape == (0,)


def test_no_grad_and_inference():
    x, y = problem(8, 50)
    with torch.no_grad():
        a = cross_entropy(x, y, label_smoothing=0.1)
    with torch.inference_mode():
        b = cross_entropy(x, y, label_smoothing=0.1)
    assert a.item() == b.item()
    assert not a.requires_grad


def test_golden_cases():
    """The project's 133 golden cases (float64 PyTorch autograd of SPEC.md's definition), through the torch
    API."""
    path = REPO / "crates" / "label-smoothing" / "testdata" / "cross_entropy_cases.json"
    cases = json.loads(path.read_text())["cases"]
    assert len(cases) > 100
    for c in cases:
        o = c["options"]
        n, k = c["n"], c["k"]
        x = torch.tensor(c["logits"], dtype=torch.float32).reshape(n, k).requires_grad_()
        if c["soft_targets"] is not None:
            t = torch.tensor(c["soft_targets"], dtype=torch.float32).reshape(n, k)
        else:
            t = torch.tensor(c["targets"], dtype=torch.int64)
        w = None if o["weights"] is None else torch.tensor(o["weights"])
        loss = cross_entropy(
            x, t, w, ignore_index=o["ignore_index"], reduction=o["reduction"],
            label_smoothing=o["eps"] if o["alpha"] is None else 0.0, spread=o["spread"], adaptive=o["alpha"],
        )
        assert_loss_close(loss, torch.tensor(c["expected_loss"], dtype=torch.float64))
        up = None if c["grad_output"] is None else torch.tensor(c["grad_output"])
        g = grads(loss, x, up)
        expected = torch.tensor(c["expected_grad"], dtype=torch.float64).reshape(n, k)
        assert_grad_close(g, expected, atol=2e-6, rtol=1e-5)


def test_no_gradient_computed_without_grad_mode(monkeypatch):
    # Under torch.no_grad() the kernel computes the loss alone (reads the logits once), even for logits that
    # require a gradient.
    from label_smoothing.torch import functional as fn

    calls = []
    original = fn._kernel_loss

    def spy(logits, target, opts, grad=None, **kw):
        calls.append(grad is not None)
        return original(logits, target, opts, grad=grad, **kw)

    monkeypatch.setattr(fn, "_kernel_loss", spy)
    x, y = problem(8, 50)
    with torch.no_grad():
        cross_entropy(x, y, label_smoothing=0.1)
    with torch.inference_mode():
        cross_entropy(x, y, label_smoothing=0.1)
    cross_entropy(x.detach(), y, label_smoothing=0.1)
    assert calls == [False, False, False]
    cross_entropy(x, y, label_smoothing=0.1).backward()
    assert calls[-1] is True and x.grad is not None
