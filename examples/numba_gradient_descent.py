"""Gradients inside your own Numba code: ``Traced.numba()``.

The energy is written once with numbagrad ops and traced; ``.numba()`` turns the trace into a
handle that ``@njit`` functions call in nopython mode, with no Python and no allocation per
call.  Here:

1. plain gradient descent on the Rosenbrock function, as one compiled loop (the handle passed as
   an argument, so the loop is cached on disk like any ``cache=True`` function);
2. the same loop with the handle as a global, as in a quick script (such a function cannot be
   cached: the handle's address is baked into it);
3. a ``prange`` loop computing one gradient per starting point, each block of points with its
   own copy of the handle's work buffers, checked against ``Traced.grad_batch``;
4. Newton steps on the same function with Hessian-vector products (conjugate gradients), still
   inside Numba.
"""
import time

import numba
import numpy as np
from numba import njit, prange

import numbagrad as ng


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


n = 10
energy = ng.trace(rosenbrock, np.zeros(n))
h = energy.numba()
print(energy)
print(h)


@njit(cache=True)
def descend(h, x, steps, lr):
    g = np.empty_like(x)
    for _ in range(steps):
        h.grad_into(x, g)          # writes the gradient into g, returns the value
        x -= lr * g
    return x


t0 = time.perf_counter()
x = descend(h, np.zeros(n), 20_000, 1e-3)
elapsed = time.perf_counter() - t0
print(f"1. gradient descent, 20,000 steps in one @njit loop: {elapsed:.2f} s, "
      f"f = {h.value(x):.2e}")
np.testing.assert_allclose(x, np.ones(n), atol=1e-3)

# 2. the handle as a global (not cacheable: Numba freezes the handle's address into the code)
g_handle = h


@njit
def descend_global(x, steps, lr):
    g = np.empty_like(x)
    for _ in range(steps):
        g_handle.grad_into(x, g)
        x -= lr * g
    return x


np.testing.assert_array_equal(descend_global(np.zeros(n), 100, 1e-3),
                              descend(h, np.zeros(n), 100, 1e-3))
print("2. the same loop with the handle as a global: identical iterates")


# 3. per-point gradients in parallel: each block of points calls its own copy of the handle
@njit(parallel=True, cache=True)
def gradients(h, X, G, nblocks):
    for b in prange(nblocks):
        w = h.copy()               # own work buffers; the tape is shared, read-only
        for r in range(b, X.shape[0], nblocks):
            w.grad_into(X[r], G[r])


X = np.random.default_rng(0).uniform(-2, 2, (1000, n))
G = np.empty_like(X)
gradients(h, X, G, 4 * numba.get_num_threads())
np.testing.assert_allclose(G, energy.grad_batch(X), rtol=1e-13)
print(f"3. {len(X)} gradients in a prange loop equal Traced.grad_batch")


# 4. Newton-CG: H p from hvp_into, no Hessian formed
@njit(cache=True)
def newton_cg(h, x, iters):
    m = len(x)
    g, p, r, d, Hd = np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    for _ in range(iters):
        h.grad_into(x, g)
        # solve H p = -g by conjugate gradients (stop at negative curvature)
        p[:] = 0.0
        r[:] = -g
        d[:] = r
        rr = r @ r
        for _ in range(2 * m):
            h.hvp_into(x, d, Hd)
            dHd = d @ Hd
            if dHd <= 0.0:
                if not p.any():
                    p[:] = -g
                break
            a = rr / dHd
            p += a * d
            r -= a * Hd
            rr_new = r @ r
            if rr_new < 1e-20:
                break
            d[:] = r + rr_new / rr * d
            rr = rr_new
        # backtracking line search on the value
        f0, t = h.value(x), 1.0
        while h.value(x + t * p) > f0 + 1e-4 * t * (g @ p) and t > 1e-8:
            t *= 0.5
        x += t * p
    return x


x = newton_cg(h, np.zeros(n), 60)
np.testing.assert_allclose(x, np.ones(n), atol=1e-8)
print(f"4. Newton-CG with Hessian-vector products: |x - 1| = {np.abs(x - 1).max():.1e}")
print("numba gradient descent OK")
