import numpy as np
import pytest

import numbagrad as ng


def numeric_grad(f, xs, k, eps=1e-6):
    """Central finite differences of sum(f(*xs)) with respect to xs[k] (float64 arrays)."""
    x = xs[k]
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for h in (eps, -eps):
            shifted = [a.copy() for a in xs]
            shifted[k][idx] += h
            with ng.no_grad():
                vals.append(float(np.sum(np.asarray(f(*[ng.tensor(a) for a in shifted])))))
        out[idx] = (vals[0] - vals[1]) / (2 * eps)
    return out


def check_grads(f, *xs, atol=1e-5, rtol=1e-4):
    """Assert that backward of sum(f) matches finite differences for every input."""
    ts = [ng.tensor(x, requires_grad=True) for x in xs]
    out = f(*ts)
    out.sum().backward()
    for k, t in enumerate(ts):
        expected = numeric_grad(f, [np.array(x, dtype=np.float64) for x in xs], k)
        assert t.grad is not None, f"input {k} got no gradient"
        np.testing.assert_allclose(t.grad.numpy(), expected, atol=atol, rtol=rtol,
                                   err_msg=f"gradient of input {k}")
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
