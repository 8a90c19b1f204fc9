"""The Jacobian of an ODE right-hand side for a stiff solver: Robertson's chemical kinetics,

    y1' = -0.04 y1 + 1e4 y2 y3
    y2' =  0.04 y1 - 1e4 y2 y3 - 3e7 y2^2
    y3' =                        3e7 y2^2

The right-hand side is written once with numbagrad ops and traced; the solver then calls the
replay for f(y) and ``Traced.jacobian`` for df/dy (exact, one reverse sweep per row), instead
of estimating the Jacobian by finite differences.  Checks the Jacobian against the hand-derived
one, the solution against the finite-difference run, and that mass is conserved.
"""
import numpy as np
from scipy.integrate import solve_ivp

import numbagrad as ng


def robertson(y):
    y1, y2, y3 = y[0], y[1], y[2]
    r1, r2, r3 = 0.04 * y1, 1e4 * y2 * y3, 3e7 * y2 * y2
    return ng.stack([-r1 + r2, r1 - r2 - r3, r3])


def exact_jacobian(y):
    y1, y2, y3 = y
    return np.array([[-0.04, 1e4 * y3, 1e4 * y2],
                     [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2],
                     [0.0, 6e7 * y2, 0.0]])


y0 = np.array([1.0, 0.0, 0.0])
rhs = ng.trace(robertson, y0)
print(rhs)
print(rhs.tape)

probe = np.array([0.9, 2e-5, 0.1])
np.testing.assert_allclose(rhs.jacobian(probe), exact_jacobian(probe), rtol=1e-14)
print("Jacobian at", probe, "matches the hand-derived one")

span, opts = (0.0, 1e4), dict(method="BDF", rtol=1e-8, atol=[1e-10, 1e-14, 1e-10])
runs = {}
for name, jac in (("exact Jacobian", lambda t, y: rhs.jacobian(y)), ("finite differences", None)):
    calls = [0]

    def f(t, y):
        calls[0] += 1   # counted here: solve_ivp's nfev leaves out its finite-difference calls
        return rhs(y)
    sol = solve_ivp(f, span, y0, jac=jac, **opts)
    assert sol.success, sol.message
    runs[name] = sol, calls[0]
    print(f"{name:>19}: {calls[0]:4d} f calls, {sol.njev:3d} Jacobians, y(1e4) = {sol.y[:, -1]}")
(with_jac, exact_calls), (finite_diff, fd_calls) = runs.values()
np.testing.assert_allclose(with_jac.y[:, -1], finite_diff.y[:, -1], rtol=1e-5, atol=1e-12)
np.testing.assert_allclose(with_jac.y.sum(0), 1.0, atol=1e-8)   # y1 + y2 + y3 is conserved
assert exact_calls < fd_calls   # no extra f calls to estimate the Jacobian
print("ODE Jacobian OK")
