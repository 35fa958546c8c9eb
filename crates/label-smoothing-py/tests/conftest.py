"""Shared helpers: the float64 references and SPEC.md's tolerances."""
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[3]

# SPEC.md, "Accuracy": f32 loss within 1e-5 relative (or 1e-6 absolute) of the float64 definition, each gradient
# entry within 1e-6 absolute (after the 1/D scale).
LOSS_RTOL, LOSS_ATOL, GRAD_ATOL = 1e-5, 1e-6, 1e-6


def assert_loss_close(got, expected, rtol=LOSS_RTOL, atol=LOSS_ATOL):
    got = torch.as_tensor(got).double()
    expected = torch.as_tensor(expected).double()
    assert got.shape == expected.shape, (got.shape, expected.shape)
    err = (got - expected).abs()
    bound = atol + rtol * expected.abs()
    assert bool((err <= bound).all()), f"loss off by {err.max().item():.3g} (bound {bound.max().item():.3g})"


def assert_grad_close(got, expected, atol=GRAD_ATOL, rtol=0.0):
    got, expected = got.double(), expected.double()
    assert got.shape == expected.shape, (got.shape, expected.shape)
    err = (got - expected).abs()
    bound = atol + rtol * expected.abs()
    assert bool((err <= bound).all()), f"gradient off by {err.max().item():.3g}"


def reference(logits, target, **kwargs):
    """``F.cross_entropy`` in float64 and its gradient (PyTorch is the reference for the uniform spread)."""
    z = logits.detach().double().requires_grad_()
    t = target.double() if target.is_floating_point() else target
    w = kwargs.pop("weight", None)
    loss = torch.nn.functional.cross_entropy(z, t, None if w is None else w.double(), **kwargs)
    return loss, z


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
