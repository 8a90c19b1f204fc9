"""Fit a damped oscillation y = a e^(-k t) cos(w t + phi) to noisy samples with
scipy.optimize.minimize, numbagrad supplying every derivative:

- BFGS, L-BFGS-B and CG take ``fun`` and ``jac`` together from ``ng.value_and_grad``;
- Newton-CG takes Hessian-vector products (``ng.functional.hessp``, forward-over-reverse on
  the tape) and trust-ncg the Hessian itself (``ng.functional.hess``).

Each result is checked against scipy.optimize.curve_fit (its own finite-difference Jacobian).
"""
import time

import numpy as np
import scipy.optimize

import numbagrad as ng

rng = np.random.default_rng(3)
t = np.linspace(0, 10, 400)
truth = np.array([2.0, 0.3, 1.7, 0.4])      # a, k, w, phi


def model(p, t):
    return p[0] * np.exp(-p[1] * t) * np.cos(p[2] * t + p[3])


y = model(truth, t) + 0.05 * rng.standard_normal(t.size)
tt, yt = ng.tensor(t), ng.tensor(y)


def sse(p):
    """Sum of squared residuals; NumPy's ufuncs record on the tape like the ng functions."""
    r = p[0] * np.exp(-p[1] * tt) * np.cos(p[2] * tt + p[3]) - yt
    return (r * r).sum()


start = np.array([1.0, 0.1, 1.5, 0.0])
reference, _ = scipy.optimize.curve_fit(lambda t, *p: model(np.array(p), t), t, y, p0=start)
fg = ng.value_and_grad(sse)
runs = {
    "BFGS": dict(jac=True),
    "L-BFGS-B": dict(jac=True, options={"ftol": 1e-14, "gtol": 1e-10}),
    "CG": dict(jac=True),
    "Newton-CG": dict(jac=True, hessp=ng.functional.hessp(sse)),
    "trust-ncg": dict(jac=True, hess=ng.functional.hess(sse)),
}
print("(the first run includes recording the trace; later ones replay it)")
print(f"{'method':<10} {'iterations':>10} {'evals':>6} {'ms':>7}   a, k, w, phi")
for method, kw in runs.items():
    t0 = time.perf_counter()
    r = scipy.optimize.minimize(fg, start, method=method, **kw)
    ms = 1e3 * (time.perf_counter() - t0)
    print(f"{method:<10} {r.nit:>10} {r.nfev:>6} {ms:>7.1f}   {np.round(r.x, 4)}")
    assert np.abs(r.x - reference).max() < 1e-4, f"{method} missed the optimum: {r.x}"
print(f"{'curve_fit':<10} {'':>10} {'':>6} {'':>7}   {np.round(reference, 4)}")
print("all methods agree with curve_fit; truth was", truth)
print("scipy optimize OK")
