"""linear_cross_entropy against torch's F.linear_cross_entropy and F.cross_entropy(F.linear(...)) in float64."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_grad_close, assert_loss_close
from label_smoothing.torch import LinearCrossEntropyLoss, linear_cross_entropy


def setup(n=48, d=32, k=500, bias=True):
    x = torch.randn(n, d).requires_grad_()
    w = (torch.randn(k, d) / d**0.5).requires_grad_()
    b = (torch.randn(k) * 0.1).requires_grad_() if bias else None
    y = torch.randint(0, k, (n,))
    y[2] = -100
    return x, w, b, y


def reference(x, w, b, y, **kw):
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    wt = kw.pop("weight", None)
    loss = F.cross_entropy(F.linear(x64, w64, b64), y, None if wt is None else wt.double(), **kw)
    return loss, [t for t in (x64, w64, b64) if t is not None]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_composition(reduction, bias, weighted):
    x, w, b, y = setup(bias=bias)
    wt = torch.rand(500) + 0.1 if weighted else None
    ours = linear_cross_entropy(x, w, y, linear_bias=b, weight=wt, reduction=reduction, label_smoothing=0.1)
    ref, leaves = reference(x, w, b, y, weight=wt, reduction=reduction, label_smoothing=0.1)
    assert_loss_close(ours, ref)
    up = torch.randn(x.shape[0]) if reduction == "none" else None
    params = [t for t in (x, w, b) if t is not None]
    got = torch.autograd.grad(ours, params, up)
    exp = torch.autograd.grad(ref, leaves, None if up is None else up.double())
    scale = 1.0 if up is None else up.abs().max().item()
    for g, e in zip(got, exp):
        assert_grad_close(g, e, atol=2e-6 * scale, rtol=1e-5)


def test_matches_torch_linear_cross_entropy():
    x, w, b, y = setup()
    ours = linear_cross_entropy(x, w, y, linear_bias=b, label_smoothing=0.1)
    theirs = F.linear_cross_entropy(x.double(), w.double(), y, linear_bias=b.double(), label_smoothing=0.1)
    assert_loss_close(ours, theirs)


def test_scaled_and_second_backward():
    x, w, b, y = setup()
    loss = linear_cross_entropy(x, w, y, linear_bias=b, label_smoothing=0.1, spread="others")
    (2.0 * loss).backward(retain_graph=True)
    first = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    loss.backward()
    for f, t in zip(first, (x, w, b)):
        assert_grad_close(f, 2.0 * t.grad, atol=1e-7)


def test_only_the_wanted_gradients():
    x, w, b, y = setup()
    x.requires_grad_(False)
    loss = linear_cross_entropy(x, w, y, linear_bias=b, label_smoothing=0.1)
    gw, gb = torch.autograd.grad(loss, (w, b))
    ref, leaves = reference(x, w, b, y, label_smoothing=0.1)
    _, rw, rb = torch.autograd.grad(ref, leaves)
    assert_grad_close(gw, rw, atol=2e-6)
    assert_grad_close(gb, rb, atol=2e-6)


def test_sequence_input_and_adaptive_and_composition_paths():
    x = torch.randn(2, 7, 16).requires_grad_()
    w = torch.randn(50, 16).requires_grad_()
    y = torch.randint(0, 50, (2, 7))
    kernel = linear_cross_entropy(x, w, y, adaptive=0.2, reduction="none")
    composed = linear_cross_entropy(x, w, y, adaptive=0.2, reduction="none", backend="torch")
    assert kernel.shape == (2, 7)
    assert_loss_close(kernel, composed)
    g1 = torch.autograd.grad(kernel.sum(), (x, w))
    g2 = torch.autograd.grad(composed.sum(), (x, w))
    for a, c in zip(g1, g2):
        assert_grad_close(a, c, atol=1e-5)
    # Probability targets and float64 take the composition.
    t = torch.softmax(torch.randn(14, 50), 1)
    soft = linear_cross_entropy(x.reshape(14, 16), w, t, label_smoothing=0.1)
    ref = F.cross_entropy(F.linear(x.reshape(14, 16).double(), w.double()), t.double(), label_smoothing=0.1)
    assert_loss_close(soft, ref)
    with pytest.raises(ValueError, match="backend"):
        linear_cross_entropy(x.double(), w.double(), y, backend="kernel")


def test_module():
    torch.manual_seed(1)
    head = LinearCrossEntropyLoss(16, 100, bias=True, label_smoothing=0.1, spread="others")
    x = torch.randn(9, 16)
    y = torch.randint(0, 100, (9,))
    loss = head(x, y)
    ref = F.cross_entropy(head.linear(x).double(), y, label_smoothing=0.1 * 100 / 99)
    assert_loss_close(loss, ref)
    loss.backward()
    assert head.linear.weight.grad.shape == (100, 16)
    assert head.linear.bias.grad.shape == (100,)
    assert "num_classes=100" in repr(head)
