"""z-loss (``lse_square_scale``), soft-capping (``softcap``), token accuracy and predicted classes, against the
golden cases computed in float64 from Liger-Kernel's formulas and SPEC.md (scripts/gen_logit_option_cases.py),
on the kernel and on the torch composition."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, assert_grad_close, assert_loss_close
from label_smoothing.torch import (
    CrossEntropyOutput, LabelSmoothingCrossEntropy, LinearCrossEntropyLoss, cross_entropy, linear_cross_entropy,
)

CASES = json.loads((REPO / "crates/label-smoothing/testdata/logit_option_cases.json").read_text())["cases"]


def test_the_cases_match_their_generator():
    script = REPO / "scripts" / "gen_logit_option_cases.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "66 cases, 0 differences" in out.stdout


def _call(case, backend, logits):
    o = case["options"]
    n, k = case["n"], case["k"]
    if case["soft_targets"] is not None:
        target = torch.tensor(case["soft_targets"], dtype=torch.float32).reshape(n, k)
    else:
        target = torch.tensor(case["targets"])
    weight = None if o["weights"] is None else torch.tensor(o["weights"], dtype=torch.float32)
    return cross_entropy(
        logits, target, weight, ignore_index=o["ignore_index"], reduction=o["reduction"].replace("-", "_"),
        label_smoothing=o["eps"], spread=o["spread"], adaptive=o["alpha"], lse_square_scale=o["z_loss"],
        softcap=o["softcap"], return_z_loss=True, return_token_accuracy=True, return_predicted_tokens=True,
        backend=backend,
    )


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, backend):
    n, k = case["n"], case["k"]
    logits = torch.tensor(case["logits"], dtype=torch.float32).reshape(n, k).requires_grad_()
    out = _call(case, backend, logits)
    assert isinstance(out, CrossEntropyOutput)
    assert_loss_close(out.loss.detach(), case["expected_loss"])
    assert_loss_close(out.z_loss, case["expected_z_loss"])
    assert not out.z_loss.requires_grad
    out.loss.backward(torch.ones_like(out.loss))
    assert_grad_close(logits.grad.reshape(-1), torch.tensor(case["expected_grad"]), rtol=1e-6)
    if case["soft_targets"] is None:
        assert out.predicted_tokens.tolist() == case["expected_predicted"]
        counted = case["expected_counted"]
        want = case["expected_correct"] / counted if counted else 0.0
        assert out.token_accuracy.dtype == torch.float32
        assert abs(float(out.token_accuracy) - want) < 1e-7
    else:
        assert out.token_accuracy is None


def test_only_what_is_asked_for_is_returned():
    logits = torch.randn(6, 11, requires_grad=True)
    target = torch.randint(0, 11, (6,))
    plain = cross_entropy(logits, target, lse_square_scale=1e-3, softcap=5.0)
    assert isinstance(plain, torch.Tensor)
    out = cross_entropy(logits, target, lse_square_scale=1e-3, softcap=5.0, return_token_accuracy=True)
    assert out.z_loss is None and out.predicted_tokens is None and out.token_accuracy is not None
    assert torch.equal(out.loss, plain)
    per_row = cross_entropy(
        logits.reshape(2, 3, 11).transpose(1, 2), target.reshape(2, 3), reduction="none", lse_square_scale=1e-3,
        return_z_loss=True, return_predicted_tokens=True,
    )
    assert per_row.loss.shape == per_row.z_loss.shape == per_row.predicted_tokens.shape == (2, 3)
    assert per_row.predicted_tokens.reshape(-1).tolist() == logits.argmax(1).tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sixteen_bit_kernel_agrees_with_the_composition(dtype):
    logits = (torch.randn(33, 300) * 8).to(dtype).requires_grad_()
    target = torch.randint(0, 300, (33,))
    got = cross_entropy(logits, target, label_smoothing=0.1, lse_square_scale=1e-3, softcap=10.0,
                        return_z_loss=True, backend="kernel")
    want = cross_entropy(logits.detach().float(), target, label_smoothing=0.1, lse_square_scale=1e-3, softcap=10.0,
                         return_z_loss=True, backend="torch")
    assert_loss_close(got.loss.float(), want.loss.float(), rtol=1e-2)
    assert_loss_close(got.z_loss.float(), want.z_loss.float(), rtol=1e-2)


def test_the_module_takes_the_options():
    crit = LabelSmoothingCrossEntropy(label_smoothing=0.1, lse_square_scale=1e-4, softcap=30.0)
    logits, target = torch.randn(4, 7), torch.randint(0, 7, (4,))
    assert torch.equal(crit(logits, target), cross_entropy(logits, target, label_smoothing=0.1,
                                                           lse_square_scale=1e-4, softcap=30.0))
    assert "lse_square_scale=0.0001" in repr(crit) and "softcap=30.0" in repr(crit)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lse_square_scale=-1e-4), "lse_square_scale"),
    (dict(lse_square_scale=float("nan")), "lse_square_scale"),
    (dict(softcap=0.0), "softcap"),
    (dict(softcap=-2.0), "softcap"),
    (dict(softcap=float("inf")), "softcap"),
])
def test_bad_values_name_the_argument(kwargs, message):
    for backend in ["kernel", "torch"]:
        with pytest.raises(ValueError, match=message):
            cross_entropy(torch.randn(3, 5), torch.tensor([0, 1, 2]), backend=backend, **kwargs)
    with pytest.raises(ValueError, match=message):
        LabelSmoothingCrossEntropy(**kwargs)


HARD = [c for c in CASES if c["soft_targets"] is None]


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("case", HARD, ids=[c["name"] for c in HARD])
def test_linear_case(case, backend):
    # The linear loss with the identity as classifier: its logits are the case's (x @ I^T is exact in f32), and
    # the gradient of x is the gradient of the logits.
    n, k = case["n"], case["k"]
    x = torch.tensor(case["logits"], dtype=torch.float32).reshape(n, k).requires_grad_()
    o = case["options"]
    weight = None if o["weights"] is None else torch.tensor(o["weights"], dtype=torch.float32)
    out = linear_cross_entropy(
        x, torch.eye(k), torch.tensor(case["targets"]), weight=weight, ignore_index=o["ignore_index"],
        reduction=o["reduction"].replace("-", "_"), label_smoothing=o["eps"], spread=o["spread"],
        adaptive=o["alpha"], lse_square_scale=o["z_loss"], softcap=o["softcap"], return_z_loss=True,
        return_token_accuracy=True, return_predicted_tokens=True, backend=backend,
    )
    assert isinstance(out, CrossEntropyOutput)
    assert_loss_close(out.loss.detach(), case["expected_loss"])
    assert_loss_close(out.z_loss, case["expected_z_loss"])
    out.loss.backward(torch.ones_like(out.loss))
    assert_grad_close(x.grad.reshape(-1), torch.tensor(case["expected_grad"]), rtol=1e-6)
    assert out.predicted_tokens.tolist() == case["expected_predicted"]
    counted = case["expected_counted"]
    want = case["expected_correct"] / counted if counted else 0.0
    assert abs(float(out.token_accuracy) - want) < 1e-7


def test_linear_module_and_leading_shapes():
    head = LinearCrossEntropyLoss(8, 50, bias=True, label_smoothing=0.1, lse_square_scale=1e-3, softcap=5.0)
    x, target = torch.randn(2, 3, 8), torch.randint(0, 50, (2, 3))
    logits = head.linear(x)
    want = cross_entropy(logits.reshape(6, 50), target.reshape(6), label_smoothing=0.1, lse_square_scale=1e-3,
                         softcap=5.0)
    assert_loss_close(head(x, target).detach(), want.detach())
    assert "lse_square_scale=0.001" in repr(head) and "softcap=5.0" in repr(head)
    for backend in ["kernel", "torch"]:
        per_row = linear_cross_entropy(
            x, head.linear.weight, target, linear_bias=head.linear.bias, reduction="none", softcap=5.0,
            return_z_loss=True, return_token_accuracy=True, return_predicted_tokens=True, backend=backend,
        )
        assert per_row.loss.shape == per_row.z_loss.shape == per_row.predicted_tokens.shape == (2, 3)
        assert per_row.predicted_tokens.tolist() == logits.argmax(-1).tolist()
        assert per_row.token_accuracy.dim() == 0
    with pytest.raises(ValueError, match="softcap"):
        linear_cross_entropy(x, head.linear.weight, target, softcap=0.0)
    with pytest.raises(ValueError, match="lse_square_scale"):
        LinearCrossEntropyLoss(8, 50, lse_square_scale=-1.0)
