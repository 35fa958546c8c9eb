#!/usr/bin/env python3
"""Recomputes the expected values of crates/label-smoothing/testdata/cross_entropy_cases.json from the inputs
committed in it, in float64 with torch autograd, and cross-checks each case against an outside implementation:
`torch.nn.functional.cross_entropy` (spread `uniform`) or the seed document's fast-reid `cross_entropy_loss`
(spread `others`, reduction `mean-nonzero`, hard labels, no weights, nothing ignored).

    scripts/test --deps-only && .venv/bin/python scripts/gen_cross_entropy_cases.py --check   # verify
    .venv/bin/python scripts/gen_cross_entropy_cases.py --write                                # rewrite

The inputs (logits, targets, options) are the file's own: they were drawn once and are kept as data; this script
owns every number derived from them (`expected_loss`, `expected_grad`, `checked_against`) and the `definition`
text. `--check` fails when a recomputed number differs from the committed one by more than 1e-12 relative.
"""
import argparse
import json
import pathlib
import sys

import torch
import torch.nn.functional as F

PATH = pathlib.Path(__file__).resolve().parents[1] / "crates/label-smoothing/testdata/cross_entropy_cases.json"

DEFINITION = """Golden cases for label-smoothed cross-entropy, computed in float64 with PyTorch autograd by
scripts/gen_cross_entropy_cases.py.

The general definition (docs/SPEC.md): per row i with logits z_i, p_i = softmax(z_i),
target distribution q_i, class weights w (all ones when absent):
    loss_i = - sum_c w_c q_ic log p_ic           (0 for ignored rows)
    q_i (hard label y_i, smoothing e_i):
        spread 'others'  : q = 1-e at y, e/(K-1) elsewhere          (the seed, fast-reid)
        spread 'uniform' : q = (1-e)[c=y] + e/K                      (PyTorch, Keras, timm)
    q_i (soft target row t_i): others: (1-e) t + e (1-t)/(K-1);  uniform: (1-e) t + e/K
    e_i = eps (fixed) or alpha * p_i[y_i] (adaptive, treated as a constant in the gradient)
reductions: none | sum | mean (hard: / sum of w[y_i] over non-ignored rows, soft: / N)
            | mean-nonzero (/ max(#rows with loss_i != 0, 1), fast-reid)
mean over zero counted rows gives 0 (not NaN).
Every case is cross-checked against F.cross_entropy (uniform) or the seed's fast-reid function (others).
"""


def seed_cross_entropy_loss(pred_class_outputs, gt_classes, eps, alpha=0.2):
    """fast-reid's function as the seed document gives it."""
    num_classes = pred_class_outputs.size(1)
    if eps >= 0:
        smooth_param = eps
    else:
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
    return loss.sum() / non_zero_cnt


def definition(z, c):
    """The loss of docs/SPEC.md, differentiable in z (adaptive smoothing held constant)."""
    o = c["options"]
    n, k = c["n"], c["k"]
    logp = torch.log_softmax(z, dim=1)
    w = torch.tensor(o["weights"], dtype=torch.float64) if o["weights"] is not None else torch.ones(k, dtype=torch.float64)
    if c["soft_targets"] is not None:
        t = torch.tensor(c["soft_targets"], dtype=torch.float64).reshape(n, k)
        e = o["eps"]
        q = (1 - e) * t + (e * (1 - t) / (k - 1) if o["spread"] == "others" else e / k)
        rows = -(w * q * logp).sum(1)
        counted = torch.tensor(float(n), dtype=torch.float64)
    else:
        y = torch.tensor(c["targets"])
        valid = (y != o["ignore_index"]) if o["ignore_index"] is not None else torch.ones(n, dtype=torch.bool)
        ys = torch.where(valid, y, torch.zeros_like(y))
        if o["alpha"] is not None:
            e = (o["alpha"] * logp.gather(1, ys[:, None]).exp()).detach()
        else:
            e = torch.full((n, 1), o["eps"], dtype=torch.float64)
        onehot = F.one_hot(ys, k).to(torch.float64)
        if o["spread"] == "others":
            q = onehot * (1 - e) + (1 - onehot) * e / (k - 1)
        else:
            q = onehot * (1 - e) + e / k
        rows = torch.where(valid, -(w * q * logp).sum(1), torch.zeros(n, dtype=torch.float64))
        counted = (w[ys] * valid).sum()
    r = o["reduction"]
    if r == "none":
        return rows
    if r == "sum":
        return rows.sum()
    if r == "mean":
        return rows.sum() / counted if counted > 0 else rows.sum() * 0
    return rows.sum() / max(int((rows.detach() != 0).sum()), 1)


def outside(z, c):
    """The same loss from an outside implementation, and its name; None where none applies."""
    o = c["options"]
    n, k = c["n"], c["k"]
    hard = c["soft_targets"] is None
    if o["spread"] == "uniform" and o["alpha"] is None and o["reduction"] != "mean-nonzero":
        w = None if o["weights"] is None else torch.tensor(o["weights"], dtype=torch.float64)
        if hard:
            y = torch.tensor(c["targets"])
            ignore = o["ignore_index"] if o["ignore_index"] is not None else -100
            if o["reduction"] == "mean" and bool((y == ignore).all()):
                return None, "skipped (torch gives NaN for an all-ignored mean)"
            t = y
        else:
            t = torch.tensor(c["soft_targets"], dtype=torch.float64).reshape(n, k)
            ignore = -100
        return F.cross_entropy(z, t, w, ignore_index=ignore, reduction=o["reduction"], label_smoothing=o["eps"]), \
            "F.cross_entropy"
    if (o["spread"] == "others" and o["reduction"] == "mean-nonzero" and hard and o["weights"] is None
            and (o["ignore_index"] is None or o["ignore_index"] not in c["targets"])):
        eps = o["eps"] if o["alpha"] is None else -1.0
        alpha = o["alpha"] if o["alpha"] is not None else 0.2
        return seed_cross_entropy_loss(z, torch.tensor(c["targets"]), eps, alpha), "fast-reid cross_entropy_loss"
    return None, "reference only"


def recompute(c):
    n, k = c["n"], c["k"]
    z = torch.tensor(c["logits"], dtype=torch.float64).reshape(n, k).requires_grad_()
    loss = definition(z, c)
    up = torch.ones_like(loss) if c["grad_output"] is None else torch.tensor(c["grad_output"], dtype=torch.float64)
    (grad,) = torch.autograd.grad(loss, z, up if loss.dim() else None)
    z2 = z.detach().clone().requires_grad_()
    other, name = outside(z2, c)
    if other is not None:
        (g2,) = torch.autograd.grad(other, z2, up if other.dim() else None)
        assert torch.allclose(other, loss.detach(), rtol=1e-12, atol=1e-14), (c["name"], name)
        assert torch.allclose(g2, grad, rtol=1e-10, atol=1e-14), (c["name"], name)
    expected_loss = loss.detach().tolist()
    return expected_loss, grad.reshape(-1).tolist(), name


def close(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    return len(a) == len(b) and all(abs(x - y) <= 1e-12 * max(1.0, abs(y)) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    args = ap.parse_args()
    data = json.loads(PATH.read_text())
    bad = []
    for c in data["cases"]:
        loss, grad, name = recompute(c)
        if not (close(loss, c["expected_loss"]) and close(grad, c["expected_grad"])) or name != c["checked_against"]:
            bad.append(c["name"])
        c["expected_loss"], c["expected_grad"], c["checked_against"] = loss, grad, name
    data["definition"] = DEFINITION
    if args.write:
        tmp = PATH.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        tmp.replace(PATH)
        print(f"wrote {PATH} ({len(data['cases'])} cases)")
    elif bad:
        print(f"{len(bad)} of {len(data['cases'])} cases differ: {', '.join(bad[:10])}", file=sys.stderr)
        sys.exit(1)
    else:
        print(f"all {len(data['cases'])} cases agree with their recomputation and outside checks")


if __name__ == "__main__":
    main()
