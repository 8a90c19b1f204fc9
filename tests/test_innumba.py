"""Traced.numba(): derivatives called from inside @njit code agree with the Traced replay."""
import os
import subprocess
import sys
import textwrap
import warnings

import numba
import numpy as np
import pytest
from numba import njit, prange
from numba.core.errors import NumbaWarning
from numba.core.runtime import _nrt_python, rtsys

import numbagrad as ng
from numbagrad import innumba


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def mixed(x, w):
    """Two arguments, broadcasting, a matmul and a vector inside: ops outside fused runs."""
    return (ng.tanh(w @ x) * x[:3] + ng.exp(-x[1:4] ** 2)).sum() + (w * w).mean()


def lotka_volterra(y):
    """Right-hand side of an ODE: a vector output."""
    a, b, c, d = 1.5, 1.0, 3.0, 1.0
    return ng.stack([a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]])


ROSEN = ng.trace(rosenbrock, np.zeros(10))
H = ROSEN.numba()
G = H   # the example calls a handle held in a global


# ---------------------------------------------------------------- the methods, from Python

def test_methods_match_the_replay():
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal(5), rng.standard_normal((3, 5))
    f = ng.trace(mixed, x0, w0)
    h = f.numba()
    assert (h.n, h.m) == (20, 1)
    x, w, vx, vw = (rng.standard_normal(a.shape) for a in (x0, w0, x0, w0))
    flat = np.concatenate([x, w.ravel()])
    out = np.empty(20)
    value, (gx, gw) = f.value_and_grad(x, w)
    assert h.grad_into(flat, out) == pytest.approx(value, rel=1e-14)
    np.testing.assert_allclose(out, np.concatenate([gx, gw.ravel()]), rtol=1e-13)
    assert h.value(flat) == pytest.approx(value, rel=1e-14)
    h.vjp_into(flat, np.array([-2.0]), out)
    np.testing.assert_allclose(out, -2 * np.concatenate([gx, gw.ravel()]), rtol=1e-13)
    t = np.concatenate([vx, vw.ravel()])
    jt = np.empty(1)
    h.jvp_into(flat, t, jt)
    assert jt[0] == pytest.approx(f.jvp((x, w), (vx, vw))[1], rel=1e-12)
    hx, hw = f.hvp((x, w), (vx, vw))
    h.hvp_into(flat, t, out)
    np.testing.assert_allclose(out, np.concatenate([hx, hw.ravel()]), rtol=1e-12, atol=1e-14)


def test_vector_output():
    f = ng.trace(lotka_volterra, np.ones(2))
    h = f.numba()
    y, v = np.array([1.3, 0.7]), np.array([0.4, -1.1])
    out2 = np.empty(2)
    h.value_into(y, out2)
    np.testing.assert_allclose(out2, f(y), rtol=1e-15)
    h.jvp_into(y, v, out2)
    np.testing.assert_allclose(out2, f.jvp((y,), (v,))[1], rtol=1e-14)
    h.vjp_into(y, v, out2)
    np.testing.assert_allclose(out2, f.vjp((y,), v)[0], rtol=1e-14)
    with pytest.raises(ValueError, match="scalar"):
        h.grad_into(y, out2)


def test_wrong_sizes_and_types_raise():
    with pytest.raises(ValueError, match="wrong size"):
        H.grad_into(np.zeros(9), np.empty(10))
    with pytest.raises(TypeError, match="C-contiguous float64"):
        H.grad_into(np.zeros(10), np.empty(10, dtype=np.float32))
    with pytest.raises(TypeError, match="Traced.numba"):
        innumba.NumbaHandle()


def test_guard_failure_raises():
    def clipped(x):
        s = x.sum()
        return s * s if s.item() > 0 else -s   # .item() guards the exact value

    h = ng.trace(clipped, np.ones(2)).numba()
    out = np.empty(2)
    assert h.grad_into(np.ones(2), out) == 4.0
    with pytest.raises(ng.GuardError, match="trace again"):
        h.grad_into(np.array([1.0, 2.0]), out)


# ---------------------------------------------------------------- inside @njit code

@njit(cache=True)
def descend(h, x, steps, lr):
    g = np.empty_like(x)
    for _ in range(steps):
        h.grad_into(x, g)
        x -= lr * g
    return x


def test_gradient_descent_on_rosenbrock_converges_to_ones():
    x = descend(H, np.zeros(10), 20_000, 1e-3)
    np.testing.assert_allclose(x, np.ones(10), atol=1e-3)


def test_handle_as_a_global():
    @njit
    def descend_global(x, steps, lr):
        g = np.empty_like(x)
        for _ in range(steps):
            G.grad_into(x, g)
            x -= lr * g
        return x

    x0 = np.random.default_rng(1).random(10)
    np.testing.assert_array_equal(descend_global(x0.copy(), 50, 1e-3),
                                  descend(H, x0.copy(), 50, 1e-3))


def test_global_handle_cannot_be_cached():
    def value_at(x):
        return G.value(x)

    f = njit(cache=True)(value_at)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert f(np.ones(10)) == 0.0
    assert any(issubclass(w.category, NumbaWarning) and "dynamic globals" in str(w.message)
               for w in caught)


@njit(cache=True)
def rk4_with_tangent(h, y, dy, dt, steps):
    """Integrate y' = f(y) and its tangent dy' = J(y) dy (the variational equation) by RK4."""
    n = len(y)
    k = np.empty((4, n))
    q = np.empty((4, n))
    ys = np.empty(n)
    ds = np.empty(n)
    for _ in range(steps):
        for s in range(4):
            c = 0.0 if s == 0 else (0.5 if s < 3 else 1.0)
            for j in range(n):
                ys[j] = y[j] + c * dt * k[s - 1, j] if s else y[j]
                ds[j] = dy[j] + c * dt * q[s - 1, j] if s else dy[j]
            h.value_into(ys, k[s])
            h.jvp_into(ys, ds, q[s])
        for j in range(n):
            y[j] += dt / 6 * (k[0, j] + 2 * k[1, j] + 2 * k[2, j] + k[3, j])
            dy[j] += dt / 6 * (q[0, j] + 2 * q[1, j] + 2 * q[2, j] + q[3, j])
    return y, dy


def test_rk4_tangent_matches_finite_differences():
    h = ng.trace(lotka_volterra, np.ones(2)).numba()
    y0, v = np.array([1.0, 0.8]), np.array([0.3, -0.2])
    dt, steps, eps = 0.01, 300, 1e-6
    y, dy = rk4_with_tangent(h, y0.copy(), v.copy(), dt, steps)
    plus, _ = rk4_with_tangent(h, y0 + eps * v, np.zeros(2), dt, steps)
    minus, _ = rk4_with_tangent(h, y0 - eps * v, np.zeros(2), dt, steps)
    np.testing.assert_allclose(dy, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)
    assert np.abs(dy).max() > 0.1   # the tangent moved: the check is not vacuous


@njit(parallel=True, cache=True)
def grads_by_copy(h, X, out, nblocks):
    """Each block of rows calls its own copy of the handle (its own work buffers).  (The block
    count is an argument: numba.get_num_threads() read inside would make this uncachable.)"""
    for b in prange(nblocks):
        w = h.copy()
        for r in range(b, X.shape[0], nblocks):
            w.grad_into(X[r], out[r])


@njit(parallel=True, cache=True)
def grads_per_thread(hs, X, out):
    """One copy per thread, made ahead of time: the loop allocates nothing."""
    for r in prange(X.shape[0]):
        hs[numba.get_thread_id()].grad_into(X[r], out[r])


def test_prange_gradients_equal_grad_batch():
    X = np.random.default_rng(2).standard_normal((203, 10))
    expected = ROSEN.grad_batch(X)
    out = np.zeros_like(X)
    grads_by_copy(H, X, out, 4 * numba.get_num_threads())
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    out[:] = 0
    grads_per_thread(H.copies(numba.get_num_threads()), X, out)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


@njit(cache=True)
def grad_loop(h, x, g, calls):
    s = 0.0
    for _ in range(calls):
        s += h.grad_into(x, g)
    return s


@pytest.mark.parametrize("f, x", [
    (rosenbrock, np.linspace(-1, 1, 10)),
    (lambda *xs: sum(ng.sin(xs[k % 4]) * xs[(k + 1) % 4] for k in range(40)), np.ones(4)),
], ids=["rosenbrock", "scalar-graph"])
def test_steady_state_call_allocates_nothing(f, x):
    traced = ng.trace(f, x) if f is rosenbrock else ng.trace(f, *x)
    h = traced.numba()
    g = np.empty_like(x)
    grad_loop(h, x, g, 1)
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        grad_loop(h, x, g, 0)
        mid = rtsys.get_allocation_stats()
        grad_loop(h, x, g, 1000)
        after = rtsys.get_allocation_stats()
    finally:
        if not was_on:
            _nrt_python.memsys_disable_stats()
    # 1000 calls allocate exactly what 0 calls do (argument passing only)
    assert after.alloc - mid.alloc == mid.alloc - before.alloc
    assert after.mi_alloc - mid.mi_alloc == mid.mi_alloc - before.mi_alloc
    np.testing.assert_allclose(g, traced.grad(x) if f is rosenbrock else
                               np.array(traced.grad(*x)), rtol=1e-13)


def test_cache_true_user_function_loads_from_cache_in_a_new_process(tmp_path):
    (tmp_path / "user_code.py").write_text(textwrap.dedent("""
        import numpy as np, numba, numbagrad as ng

        @numba.njit(cache=True)
        def descend(h, x, steps, lr):
            g = np.empty_like(x)
            for _ in range(steps):
                h.grad_into(x, g)
                x -= lr * g
            return x

        h = ng.trace(lambda x: ((x - 3) ** 2).sum(), np.zeros(3)).numba()
        x = descend(h, np.zeros(3), 200, 0.1)
        assert np.allclose(x, 3), x
        print(sum(descend.stats.cache_hits.values()))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(ng.__file__)), os.environ.get("PYTHONPATH", "")]))
    hits = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "user_code.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        hits.append(r.stdout.split()[-1])
    assert hits == ["0", "1"]   # compiled and saved, then loaded
