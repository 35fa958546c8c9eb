#!/usr/bin/env python3
# Derives the polynomial of the kernels' `exp` (crates/label-smoothing/src/simd.rs, `exp_nonpos`).
# Needs numpy (`pip install numpy`); not part of the build or the tests.
# Minimax (Lawson IRLS) fit of exp(r) ~ 1 + r*(c1 + c2 r + c3 r^2 + c4 r^3 + c5 r^4) on [-ln2/2, ln2/2],
# minimising the relative error of exp.
import numpy as np
a = np.log(2) / 2
r = np.cos(np.linspace(0, np.pi, 20001)) * a
r = r[np.abs(r) > 1e-9]
g = np.expm1(r) / r            # target for P
w_rel = np.abs(r) / np.exp(r)  # error of exp = r (P - g) / exp(r)
deg = 4
V = np.vander(r, deg + 1, increasing=True)
wt = np.ones_like(r)
for it in range(300):
    W = np.sqrt(wt) * w_rel
    c, *_ = np.linalg.lstsq(V * W[:, None], g * W, rcond=None)
    err = np.abs((V @ c - g) * w_rel)
    wt = wt * err
    wt /= wt.sum()
print("max rel err (f64 coeffs): %.3e" % err.max())
c32 = c.astype(np.float32)
for i, ci in enumerate(c32):
    print("c%d = %r  (%s)" % (i + 1, float(ci), float(ci).hex()))
err32 = np.abs((V @ c32.astype(np.float64) - g) * w_rel)
print("max rel err (f32 coeffs): %.3e = %.2f ulp(2^-24)" % (err32.max(), err32.max() / 2**-24))
