"""Bad input raises ValueError or TypeError naming the argument (and the row or value), never a crash; nothing
is half-written."""
import numpy as np
import pytest
import torch

from label_smoothing import calibration, set_num_threads
from label_smoothing import numpy as lsnp
from label_smoothing.torch import LabelSmoothingCrossEntropy, cross_entropy, linear_cross_entropy


def x_y(n=4, k=5):
    return torch.randn(n, k, requires_grad=True), torch.randint(0, k, (n,))


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_label_out_of_range_names_row_and_value(backend):
    x, y = x_y()
    y[2] = 7
    with pytest.raises(ValueError, match=r"target: label 7 at row 2 is out of range \[0, 5\)"):
        cross_entropy(x, y, backend=backend)
    y[2] = -1
    with pytest.raises(ValueError, match="label -1 at row 2"):
        cross_entropy(x, y, ignore_index=None, backend=backend)


@pytest.mark.parametrize("call,match,exc", [
    (lambda x, y: cross_entropy(x, y, reduction="avg"), "reduction", ValueError),
    (lambda x, y: cross_entropy(x, y, spread="all"), "spread", ValueError),
    (lambda x, y: cross_entropy(x, y, label_smoothing=1.5), "label_smoothing", ValueError),
    (lambda x, y: cross_entropy(x, y, label_smoothing=float("nan")), "label_smoothing", ValueError),
    (lambda x, y: cross_entropy(x, y, adaptive=-0.1), "adaptive", ValueError),
    (lambda x, y: cross_entropy(x, y, weight=torch.ones(4)), r"weight: expected shape \(5,\)", ValueError),
    (lambda x, y: cross_entropy(x, y, weight=torch.tensor([1.0, -1, 1, 1, 1])), "weight: class weight -1", ValueError),
    (lambda x, y: cross_entropy(x, y, weight=[1.0] * 5), "weight", TypeError),
    (lambda x, y: cross_entropy(x, y[:3]), r"target: class indices .* must have shape \(4,\)", ValueError),
    (lambda x, y: cross_entropy(x, y.bool()), "target", TypeError),
    (lambda x, y: cross_entropy(x.detach().long(), y), "input", TypeError),
    (lambda x, y: cross_entropy(x.detach().numpy(), y), "input", TypeError),
    (lambda x, y: cross_entropy(x, torch.rand(4, 5)), "target: soft-target row 0 sums to", ValueError),
    (lambda x, y: cross_entropy(x, torch.softmax(torch.rand(4, 5), 1), adaptive=0.2), "adaptive", ValueError),
    (lambda x, y: cross_entropy(x[:, :1], y * 0), "input", ValueError),
    (lambda x, y: cross_entropy(x, y, backend="cuda"), "backend", ValueError),
    (lambda x, y: cross_entropy(x.double(), y, backend="kernel"), "float64", ValueError),
    (lambda x, y: LabelSmoothingCrossEntropy(label_smoothing=2), "label_smoothing", ValueError),
    (lambda x, y: linear_cross_entropy(x, torch.randn(3, 6), y), r"input: expected hidden states \[\.\.\., 6\]",
     ValueError),
    (lambda x, y: linear_cross_entropy(x, torch.randn(3, 5), y), "target: label", ValueError),
    (lambda x, y: set_num_threads(0), "num_threads", ValueError),
])
def test_bad_arguments(call, match, exc):
    x, y = x_y()
    with pytest.raises(exc, match=match):
        call(x, y)


def test_non_finite_logits_give_nan_like_pytorch():
    x, y = x_y()
    with torch.no_grad():
        x[1, 2] = float("nan")
    loss = cross_entropy(x, y, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2, 3]]).all()


def test_numpy_errors():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="input: expected float32 or float16"):
        lsnp.cross_entropy(z.astype(np.float64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="target: label 9 at row 1"):
        lsnp.cross_entropy(z, np.array([0, 9, 1]))
    with pytest.raises(ValueError, match=r"grad_output: expected 3 values|grad_output"):
        lsnp.cross_entropy(z, np.array([0, 1, 1]), reduction="none", return_grad=True, grad_output=np.ones(2))


def test_calibration_errors(tmp_path):
    z = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 4
    with pytest.raises(ValueError, match="labels: label 4 at row 3"):
        calibration.calibrate(z, np.where(np.arange(20) == 3, 4, y))
    with pytest.raises(ValueError, match=r"labels: expected shape \[20\]"):
        calibration.calibrate(z, y[:5])
    with pytest.raises(TypeError, match="labels: expected integer class indices"):
        calibration.calibrate(z, y.astype(float))
    with pytest.raises(ValueError, match="probability row 0 is not a distribution"):
        calibration.calibrate(probs=np.full((20, 4), 0.5, np.float32), labels=y)
    with pytest.raises(ValueError, match="bins"):
        calibration.calibrate(z, y, bins=0)
    with pytest.raises(ValueError, match="bootstrap"):
        calibration.calibrate(z, y, bootstrap=1)
    with pytest.raises(ValueError, match="exactly one of logits and probs"):
        calibration.calibrate(labels=y)
    with pytest.raises(ValueError, match="fit_temperature .logits.: expected 4 classes"):
        calibration.calibrate(z, y, fit_temperature=(z[:, :3], y))
    plot = tmp_path / "rel.jpg"
    with pytest.raises(ValueError, match="plot: .*svg or .png"):
        calibration.calibrate(z, y, plot=plot)
    assert not plot.exists()
    existing = tmp_path / "keep.svg"
    existing.write_text("old")
    with pytest.raises(ValueError):
        calibration.calibrate(z, np.full(20, 9), plot=existing)
    assert existing.read_text() == "old"
