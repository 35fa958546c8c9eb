#!/usr/bin/env python3
"""Golden cases for z-loss, logit soft-capping and the predicted class / token accuracy:
crates/label-smoothing/testdata/logit_option_cases.json, computed in float64 with PyTorch.

Two independent definitions are written out here and must agree where both apply:

* `liger`: Liger-Kernel's `LigerCrossEntropyLoss` forward (ops/cross_entropy.py: hard labels, PyTorch's uniform
  label smoothing `eps / V`, class weights, ignore index, reductions none/sum/mean, `lse_square_scale`, `softcap`,
  `return_z_loss`, `return_token_accuracy`, `return_predicted_tokens`), transcribed term by term into torch ops
  (Liger itself needs a GPU): the smoothing term `eps * (lse * sum(w) - sum(w * x))`, the z-loss
  `lse_square_scale * lse^2` unweighted and, for `mean`, divided by the number of rows not ignored while the
  cross-entropy is divided by the sum of their label weights.
* `spec`: docs/SPEC.md's loss (`- sum_c w_c q_c log p_c` on the capped logits, both spreads, adaptive smoothing,
  soft targets, mean-nonzero) plus the z-loss with its denominator, for the options Liger lacks.

The gradients are torch autograd's of the float64 forward (adaptive smoothing held constant).

    scripts/test --deps-only && .venv/bin/python scripts/gen_logit_option_cases.py --check   # verify
    .venv/bin/python scripts/gen_logit_option_cases.py --write                                # rewrite

The inputs are drawn from a fixed seed and rounded to float32; `--check` recomputes every expected number from the
committed inputs and fails on a difference above 1e-12 relative.
"""
import argparse
import json
import pathlib
import sys

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATH = ROOT / "crates/label-smoothing/testdata/logit_option_cases.json"
# The cases of at most 40 classes, for `lsmooth loss` end to end (each crate ships the data its tests read).
CLI_PATH = ROOT / "crates/lsmooth/testdata/logit_option_cases.json"


def capped(z, softcap):
    return z if softcap is None else softcap * torch.tanh(z / softcap)


def liger(z, c):
    """Liger-Kernel's forward, term by term; returns (loss, z_loss, per-row correct, predicted)."""
    o = c["options"]
    n, k = c["n"], c["k"]
    x = capped(z, o["softcap"])
    y = torch.tensor(c["targets"])
    ignore = o["ignore_index"]
    valid = y != ignore
    ys = torch.where(valid, y, torch.zeros_like(y))
    has_w = o["weights"] is not None
    w = torch.tensor(o["weights"], dtype=torch.float64) if has_w else torch.ones(k, dtype=torch.float64)
    n_non_ignore = valid.sum().item()
    sum_non_ignore_weight = w[ys][valid].sum().item() if has_w else n_non_ignore
    weight_sum = w.sum()
    m = x.max(dim=1).values
    lse = m + torch.log(torch.exp(x - m[:, None]).sum(1))
    x_y = x.gather(1, ys[:, None])[:, 0]
    loss = lse - x_y
    if has_w:
        loss = w[ys] * loss
    ls = o["eps"]
    if ls > 0:
        eps = ls / k
        if has_w:
            smooth = -eps * (x * w).sum(1) + eps * lse * weight_sum
        else:
            smooth = -eps * x.sum(1) + ls * lse
        loss = loss * (1 - ls) + smooth
    z_loss = o["z_loss"] * lse * lse
    if o["reduction"] == "mean":
        loss = loss / sum_non_ignore_weight if sum_non_ignore_weight else loss * 0
        z_loss = z_loss / n_non_ignore if n_non_ignore else z_loss * 0
    loss = loss + z_loss
    zero = torch.zeros(n, dtype=torch.float64)
    loss = torch.where(valid, loss, zero)
    z_loss = torch.where(valid, z_loss, zero)
    pred = x.detach().argmax(dim=1)  # first index of the largest
    correct = (pred == y) & valid
    pred = torch.where(valid, pred, torch.full_like(pred, -1))
    if o["reduction"] == "none":
        return loss, z_loss, correct, pred
    return loss.sum(), z_loss.sum(), correct, pred


def spec(z, c):
    """docs/SPEC.md's loss on the capped logits, plus the z-loss; returns (loss, z_loss)."""
    o = c["options"]
    n, k = c["n"], c["k"]
    x = capped(z, o["softcap"])
    logp = torch.log_softmax(x, dim=1)
    lse = torch.logsumexp(x, dim=1)
    w = torch.tensor(o["weights"], dtype=torch.float64) if o["weights"] is not None else torch.ones(k, dtype=torch.float64)
    if c["soft_targets"] is not None:
        t = torch.tensor(c["soft_targets"], dtype=torch.float64).reshape(n, k)
        e = o["eps"]
        q = (1 - e) * t + (e * (1 - t) / (k - 1) if o["spread"] == "others" else e / k)
        valid = torch.ones(n, dtype=torch.bool)
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
        counted = (w[ys] * valid).sum()
    zero = torch.zeros(n, dtype=torch.float64)
    rows = torch.where(valid, -(w * q * logp).sum(1), zero)
    zs = torch.where(valid, o["z_loss"] * lse * lse, zero)
    r = o["reduction"]
    if r == "none":
        return rows + zs, zs
    if r == "sum":
        return rows.sum() + zs.sum(), zs.sum()
    if r == "mean":
        if counted == 0:
            return rows.sum() * 0, zs.sum() * 0
        hard_weighted = c["soft_targets"] is None and o["weights"] is not None
        z_count = valid.sum() if hard_weighted else counted
        zl = zs.sum() / z_count
        return rows.sum() / counted + zl, zl
    nonzero = max(int(((rows + zs).detach() != 0).sum()), 1)
    return (rows.sum() + zs.sum()) / nonzero, zs.sum() / nonzero


def liger_applies(c):
    o = c["options"]
    return (c["soft_targets"] is None and o["spread"] == "uniform" and o["alpha"] is None
            and o["reduction"] in ("none", "sum", "mean") and o["ignore_index"] is not None)


def recompute(c):
    n, k = c["n"], c["k"]
    z = torch.tensor(c["logits"], dtype=torch.float64).reshape(n, k).requires_grad_()
    loss, z_loss = spec(z, c)
    up = torch.ones_like(loss)
    (grad,) = torch.autograd.grad(loss, z, up if loss.dim() else None)
    out = {
        "expected_loss": loss.detach().tolist(),
        "expected_z_loss": z_loss.detach().tolist(),
        "expected_grad": grad.reshape(-1).tolist(),
        "checked_against": "spec only",
    }
    x = capped(z.detach(), c["options"]["softcap"])
    pred = x.argmax(dim=1)
    if c["soft_targets"] is None:
        y = torch.tensor(c["targets"])
        valid = y != c["options"]["ignore_index"] if c["options"]["ignore_index"] is not None else torch.ones(n, dtype=torch.bool)
        out["expected_predicted"] = torch.where(valid, pred, torch.full_like(pred, -1)).tolist()
        out["expected_correct"] = int(((pred == y) & valid).sum())
        out["expected_counted"] = int(valid.sum())
    if liger_applies(c):
        z2 = z.detach().clone().requires_grad_()
        l2, zl2, correct, p2 = liger(z2, c)
        (g2,) = torch.autograd.grad(l2, z2, torch.ones_like(l2) if l2.dim() else None)
        assert torch.allclose(l2, loss.detach(), rtol=1e-12, atol=1e-14), c["name"]
        assert torch.allclose(zl2, z_loss.detach(), rtol=1e-12, atol=1e-14), c["name"]
        assert torch.allclose(g2, grad, rtol=1e-10, atol=1e-14), c["name"]
        assert p2.tolist() == out["expected_predicted"], c["name"]
        assert int(correct.sum()) == out["expected_correct"], c["name"]
        out["checked_against"] = "Liger-Kernel's formulas"
    return out


def draw_cases():
    g = torch.Generator().manual_seed(36)
    cases = []

    def add(name, n, k, scale, options, soft=False):
        logits = (torch.randn(n * k, generator=g, dtype=torch.float64) * scale).float().double().tolist()
        base = {"eps": 0.0, "alpha": None, "spread": "uniform", "weights": None, "ignore_index": -100,
                "reduction": "mean", "z_loss": 0.0, "softcap": None}
        base.update(options)
        if base["weights"] == "draw":
            base["weights"] = (0.25 + 1.5 * torch.rand(k, generator=g, dtype=torch.float64)).float().double().tolist()
        c = {"name": name, "n": n, "k": k, "logits": logits, "targets": None, "soft_targets": None, "options": base}
        if soft:
            t = torch.rand(n, k, generator=g, dtype=torch.float64) ** 4
            c["soft_targets"] = (t / t.sum(1, keepdim=True)).float().double().reshape(-1).tolist()
            base["ignore_index"] = None
        else:
            y = torch.randint(0, k, (n,), generator=g)
            if base["ignore_index"] is not None and n > 2:
                y[1] = base["ignore_index"]
            c["targets"] = y.tolist()
        cases.append(c)

    # Liger-Kernel's options, crossed.
    i = 0
    for k, n in [(5, 6), (40, 5), (200, 3)]:
        for reduction in ["none", "sum", "mean"]:
            for z_loss, softcap in [(1e-4, None), (0.05, None), (0.0, 3.0), (0.02, 30.0), (0.01, 5.0)]:
                weights = "draw" if i % 3 == 1 else None
                eps = 0.1 if i % 2 == 0 else 0.0
                add(f"liger-k{k}-{reduction}-z{z_loss}-cap{softcap}-w{weights is not None}-eps{eps}", n, k, 6.0,
                    {"reduction": reduction, "z_loss": z_loss, "softcap": softcap, "weights": weights, "eps": eps})
                i += 1
    # Rows of more than one chunk of the kernel (2048 classes).
    for reduction, z_loss, softcap in [("mean", 0.01, 5.0), ("none", 1e-4, None), ("sum", 0.0, 3.0)]:
        add(f"liger-k2100-{reduction}-z{z_loss}-cap{softcap}", 1, 2100, 6.0,
            {"reduction": reduction, "z_loss": z_loss, "softcap": softcap, "weights": "draw", "eps": 0.1})
    # What Liger lacks: the spread `others`, adaptive smoothing, soft targets, mean-nonzero.
    for k, n in [(7, 5), (150, 3)]:
        for reduction in ["none", "mean", "mean-nonzero"]:
            add(f"spec-others-adaptive-k{k}-{reduction}", n, k, 5.0,
                {"spread": "others", "alpha": 0.3, "reduction": reduction, "z_loss": 0.01, "softcap": 4.0,
                 "ignore_index": None})
            add(f"spec-soft-k{k}-{reduction}", n, k, 5.0,
                {"spread": "others", "eps": 0.1, "reduction": reduction, "z_loss": 0.02, "softcap": 6.0,
                 "weights": "draw"}, soft=True)
            add(f"spec-weighted-others-k{k}-{reduction}", n, k, 5.0,
                {"spread": "others", "eps": 0.2, "reduction": reduction, "z_loss": 1e-3, "weights": "draw"})
    return cases


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
    if args.write:
        cases = draw_cases()
        for c in cases:
            c.update(recompute(c))
        for path, subset in [(PATH, cases), (CLI_PATH, [c for c in cases if c["k"] <= 40])]:
            doc = {"definition": __doc__, "cases": subset}
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(doc) + "\n")
            tmp.replace(path)
        liger_count = sum(c["checked_against"] != "spec only" for c in cases)
        print(f"wrote {len(cases)} cases ({liger_count} checked against Liger-Kernel's formulas) to {PATH}")
        return 0
    doc = json.loads(PATH.read_text())
    cli = json.loads(CLI_PATH.read_text())
    bad = 0
    if cli["cases"] != [c for c in doc["cases"] if c["k"] <= 40]:
        print(f"{CLI_PATH}: not the cases of at most 40 classes of {PATH}", file=sys.stderr)
        bad += 1
    for c in doc["cases"]:
        fresh = recompute(c)
        for key, value in fresh.items():
            same = value == c.get(key) if not key.startswith("expected_") or isinstance(value, int) or key == "expected_predicted" else close(value, c[key])
            if not same:
                print(f"{c['name']}: {key} differs", file=sys.stderr)
                bad += 1
    print(f"{len(doc['cases'])} cases, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
