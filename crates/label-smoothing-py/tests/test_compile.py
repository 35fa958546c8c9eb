"""Under torch.compile the loss is traced as the torch composition (the kernel is opaque to the compiler) and gives
the eager result."""
import torch

from conftest import assert_grad_close, assert_loss_close
from label_smoothing.torch import LabelSmoothingCrossEntropy, cross_entropy


def test_compiled_matches_eager():
    torch._dynamo.reset()
    x = torch.randn(32, 100, requires_grad=True)
    y = torch.randint(0, 100, (32,))
    y[3] = -100
    criterion = LabelSmoothingCrossEntropy(label_smoothing=0.1, spread="others")
    compiled = torch.compile(criterion, backend="aot_eager", fullgraph=True)
    loss = compiled(x, y)
    (g,) = torch.autograd.grad(loss, x)
    eager = criterion(x, y)
    (ge,) = torch.autograd.grad(eager, x)
    assert_loss_close(loss, eager)
    assert_grad_close(g, ge)


def test_compiled_adaptive_and_none():
    torch._dynamo.reset()
    x = torch.randn(16, 20, requires_grad=True)
    y = torch.randint(0, 20, (16,))
    f = torch.compile(lambda a, b: cross_entropy(a, b, adaptive=0.2, reduction="none"), backend="aot_eager")
    assert_loss_close(f(x, y), cross_entropy(x, y, adaptive=0.2, reduction="none"))
