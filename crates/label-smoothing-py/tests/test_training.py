"""A short training run of a small MLP on the embedded MNIST digits in torch: our loss and F.cross_entropy from
the same initial weights and batches give the same losses step for step."""
import copy
import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from label_smoothing.torch import LabelSmoothingCrossEntropy


def load_mnist(n):
    images = REPO / "data" / "mnist10k-images-idx3-ubyte.gz"
    labels = REPO / "data" / "mnist10k-labels-idx1-ubyte.gz"
    if not images.exists():
        pytest.skip(f"{images} is not here (a checkout of the repository has it)")
    with gzip.open(images) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = raw.reshape(-1, 784)[:n].astype(np.float32) / 255.0
    return torch.from_numpy(x), torch.from_numpy(y[:n].astype(np.int64))


def test_training_matches_pytorch_step_for_step():
    torch.manual_seed(0)
    x, y = load_mnist(4096)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    twin = copy.deepcopy(model)
    ours = LabelSmoothingCrossEntropy(label_smoothing=0.1)
    opt_a = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    order = torch.randperm(len(y))
    ours_losses, torch_losses = [], []
    for step in range(60):
        idx = order[(step * 128) % 4096:][:128]
        for net, opt, loss_fn, out in ((model, opt_a, ours, ours_losses),
                                       (twin, opt_b, lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1),
                                        torch_losses)):
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            out.append(loss.item())
    diffs = np.abs(np.array(ours_losses) - np.array(torch_losses))
    assert diffs[:20].max() < 1e-5, diffs[:20]
    assert diffs.max() < 1e-3
    assert ours_losses[-1] < 0.6 * ours_losses[0]  # it learns
    with torch.no_grad():
        acc_a = (model(x).argmax(1) == y).float().mean().item()
        acc_b = (twin(x).argmax(1) == y).float().mean().item()
    assert acc_a > 0.85 and abs(acc_a - acc_b) < 0.01
