"""fast_reid_cross_entropy_loss against the seed document's function itself (fast-reid's cross_entropy_loss,
copied verbatim below as the oracle), fixed and adaptive, loss and gradient."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_grad_close, assert_loss_close
from label_smoothing.torch import cross_entropy, fast_reid_cross_entropy_loss


def seed_cross_entropy_loss(pred_class_outputs, gt_classes, eps, alpha=0.2):
    # fast-reid's function as the seed document gives it (comments dropped).
    num_classes = pred_class_outputs.size(1)

    if eps >= 0:
        smooth_param = eps
    else:
        # Adaptive label smooth regularization
        soft_label = F.softmax(pred_class_outputs, dim=1)
        smooth_param = alpha * soft_label[torch.arange(soft_label.size(0)), gt_classes].unsqueeze(1)

    log_probs = F.log_softmax(pred_class_outputs, dim=1)
    with torch.no_grad():
        targets = torch.ones_like(log_probs)
        targets *= smooth_param / (num_classes - 1)
        targets.scatter_(1, gt_classes.data.unsqueeze(1), (1 - smooth_param))

    loss = (-targets * log_probs).sum(dim=1)

    with torch.no_grad():
        non_zero_cnt = max(loss.nonzero(as_tuple=False).size(0), 1)

    loss = loss.sum() / non_zero_cnt

    return loss


@pytest.mark.parametrize("eps,alpha", [(0.1, 0.2), (0.0, 0.2), (0.3, 0.2), (-1.0, 0.2), (-0.5, 0.7)])
@pytest.mark.parametrize("n,k", [(16, 95), (64, 751), (3, 2)])
def test_seed_function(eps, alpha, n, k):
    x = (torch.randn(n, k) * 3).requires_grad_()
    y = torch.randint(0, k, (n,))
    ours = fast_reid_cross_entropy_loss(x, y, eps, alpha)
    z = x.detach().double().requires_grad_()
    ref = seed_cross_entropy_loss(z, y, eps, alpha)
    assert_loss_close(ours, ref)
    (g,) = torch.autograd.grad(ours, x)
    (gr,) = torch.autograd.grad(ref, z)
    assert_grad_close(g, gr)


def test_mean_over_nonzero_rows():
    # A row fit exactly (loss 0 without smoothing) is left out of fast-reid's denominator.
    x = torch.tensor([[0.0, 0.0, 0.0], [200.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    y = torch.tensor([1, 0, 2])
    ours = fast_reid_cross_entropy_loss(x, y, 0.0)
    ref = seed_cross_entropy_loss(x.detach().double(), y, 0.0)
    assert_loss_close(ours, ref)
    assert_loss_close(cross_entropy(x, y, reduction="mean_nonzero", backend="torch", ignore_index=None), ref)


def test_seed_example():
    # The seed document's 6-class example: eps = 0.1 gives targets [0.9, 0.02, 0.02, 0.02, 0.02, 0.02].
    x = torch.tensor([[2.0, 0.5, -1.0, 0.0, 1.0, -0.5]])
    assert_loss_close(fast_reid_cross_entropy_loss(x, torch.tensor([0]), 0.1),
                      seed_cross_entropy_loss(x.double(), torch.tensor([0]), 0.1))
