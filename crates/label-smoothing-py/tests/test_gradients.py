"""The kernel's gradients against central finite differences of its own loss, and against torch autograd of
the composition (adaptive smoothing, which PyTorch has no function for)."""
import pytest
import torch

from conftest import assert_grad_close, assert_loss_close
from label_smoothing.torch import cross_entropy, linear_cross_entropy


def central_differences(f, x, entries, h):
    out = []
    for idx in entries:
        xp, xm = x.clone(), x.clone()
        xp[idx] += h
        xm[idx] -= h
        out.append((f(xp) - f(xm)) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("options", [
    dict(label_smoothing=0.1), dict(label_smoothing=0.2, spread="others"), dict(adaptive=0.3),
    dict(label_smoothing=0.1, weight=torch.rand(20) + 0.5), dict(label_smoothing=0.1, reduction="mean_nonzero"),
])
def test_finite_differences(options):
    # The kernel's loss is f32 with f64 accumulation; float64 logits would leave the kernel, so the differences
    # are taken in float32 on a sum over few rows with a step of 1e-2 (rounding ~1e-5, truncation ~1e-5).
    x = torch.randn(6, 20)
    y = torch.randint(0, 20, (6,))
    reduction = options.pop("reduction", "sum")
    loss_fn = lambda z: float(cross_entropy(z, y, reduction=reduction, backend="kernel", **options))  # noqa: E731
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(cross_entropy(xg, y, reduction=reduction, backend="kernel", **options), xg)
    entries = [(i, j) for i in range(6) for j in (0, 3, int(y[i]), 19)]
    fd = central_differences(loss_fn, x, entries, 1e-2)
    if "adaptive" in options:
        # Adaptive smoothing is held constant for the gradient: the gradient is not the derivative of the loss.
        # Its gradient is checked against autograd of the composition below instead.
        return
    got = torch.tensor([g[i] for i in entries], dtype=torch.float64)
    assert (got - fd).abs().max().item() < 1e-3 * max(1.0, fd.abs().max().item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "mean_nonzero"])
@pytest.mark.parametrize("spread", ["uniform", "others"])
def test_adaptive_against_autograd_of_composition(reduction, spread):
    x = (torch.randn(30, 64) * 2).requires_grad_()
    y = torch.randint(0, 64, (30,))
    y[4] = -100
    w = torch.rand(64) + 0.2
    ours = cross_entropy(x, y, w, reduction=reduction, spread=spread, adaptive=0.4)
    z = x.detach().double().requires_grad_()
    ref = cross_entropy(z, y, w.double(), reduction=reduction, spread=spread, adaptive=0.4)  # float64: composed
    assert_loss_close(ours, ref)
    up = torch.randn(30) if reduction == "none" else None
    (g,) = torch.autograd.grad(ours, x, up)
    (gr,) = torch.autograd.grad(ref, z, None if up is None else up.double())
    assert_grad_close(g, gr, atol=1e-6 * (1 if up is None else up.abs().max().item()))


def test_linear_finite_differences():
    x = torch.randn(5, 8)
    w = torch.randn(30, 8) * 0.5
    b = torch.randn(30) * 0.1
    y = torch.randint(0, 30, (5,))
    f = lambda xx, ww, bb: float(linear_cross_entropy(xx, ww, y, linear_bias=bb, label_smoothing=0.1,  # noqa: E731
                                                      reduction="sum", backend="kernel"))
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    gx, gw, gb = torch.autograd.grad(
        linear_cross_entropy(xs, ws, y, linear_bias=bs, label_smoothing=0.1, reduction="sum", backend="kernel"),
        (xs, ws, bs))
    for grad, which in ((gx, 0), (gw, 1), (gb, 2)):
        base = [x, w, b]
        entries = [tuple(int(torch.randint(0, s, ())) for s in base[which].shape) for _ in range(8)]

        def g(t, which=which):
            args = list(base)
            args[which] = t
            return f(*args)

        fd = central_differences(g, base[which], entries, 1e-2)
        got = torch.tensor([grad[e] for e in entries], dtype=torch.float64)
        assert (got - fd).abs().max().item() < 1e-3 * max(1.0, fd.abs().max().item())
