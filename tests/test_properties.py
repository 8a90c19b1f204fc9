"""Property-based checks: random expression graphs from the op set on random broadcast-compatible
shapes, differentiated every way numbagrad can, against finite differences and each other.

For a random program ``f`` (a short sequence of smooth ops over 1-3 inputs whose shapes
broadcast together) and a random weight ``w``, with ``s(x) = sum(w * f(x))``:

- eager ``backward`` of ``s``               == central differences of ``s``
- traced ``grad`` of ``s`` (replay)         == eager backward
- traced ``vjp`` of ``f`` with ``w``        == eager backward
- traced ``jvp`` of ``f`` along ``t``       == central differences of ``f`` along ``t``, and
  ``<w, J t>`` == ``<grad s, t>``
- traced ``hvp`` of ``s`` along ``t``       == central differences of the eager gradient, and
  ``<t2, H t1>`` == ``<t1, H t2>`` (symmetry)

Kinks (relu, abs, max) are left out: finite differences across a kink are not a derivative.

    python -m pytest -q tests/test_properties.py            # 25 random graphs
    python -m pytest -q -m fuzz tests/test_properties.py    # 500 (PROPERTY_EXAMPLES)
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import numbagrad as ng

EPS = 1e-6

# ---------------------------------------------------------------- the op menu
# each entry: (name, arity, function of tensors); every function is smooth everywhere and keeps
# values bounded, so repeated application stays well inside float64's range


def _dims(v):
    return list(range(v.ndim))


UNARY = {
    "sin": ng.sin,
    "cos": ng.cos,
    "tanh": ng.tanh,
    "sigmoid": ng.sigmoid,
    "exp_tanh": lambda x: ng.exp(ng.tanh(x)),
    "log1p_sq": lambda x: ng.log(x * x + 1.0),
    "sqrt1p_sq": lambda x: ng.sqrt(x * x + 1.0),
    "neg": lambda x: -x,
    "scale": lambda x: x * -1.25,
    "shift": lambda x: 0.5 - x,
    "div_c": lambda x: x / 3.0,
    "rdiv": lambda x: 1.0 / (x * x + 1.0),
    "pow_c": lambda x: ng.tanh(x) ** 3,
    "rpow": lambda x: 1.5 ** ng.tanh(x),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
    "pow": lambda a, b: (a * a + 1.0) ** ng.tanh(b),
}
# reductions along one dim keep it (keepdim/normalisations): shapes stay broadcast-compatible
REDUCE = {
    "sum": lambda x, d: x.sum(d, keepdim=True),
    "mean": lambda x, d: x.mean(d, keepdim=True),
    "logsumexp": lambda x, d: ng.logsumexp(x, d, keepdim=True),
    "softmax": lambda x, d: ng.softmax(x, d),
    "log_softmax": lambda x, d: ng.log_softmax(x, d),
}


@st.composite
def programs(draw):
    """(input shapes, steps, input arrays, weight, tangents, second tangents)."""
    base = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    n_in = draw(st.integers(1, 3))
    shapes = []
    for _ in range(n_in):
        # drop some leading dims, set some dims to 1: broadcasts to ``base``
        lead = draw(st.integers(0, len(base)))
        shape = [1 if draw(st.booleans()) else s for s in base[lead:]]
        shapes.append(tuple(shape))
    n_steps = draw(st.integers(1, 7))
    steps = []
    for _ in range(n_steps):
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "reduce"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, 99))))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))),
                          draw(st.integers(0, 99)), draw(st.integers(0, 99))))
        else:
            steps.append(("reduce", draw(st.sampled_from(sorted(REDUCE))),
                          draw(st.integers(0, 99)), draw(st.integers(0, 99))))
    elems = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)
    xs = [draw(hnp.arrays(np.float64, s, elements=elems)) for s in shapes]
    ts = [draw(hnp.arrays(np.float64, s, elements=st.floats(-1.0, 1.0))) for s in shapes]
    ts2 = [draw(hnp.arrays(np.float64, s, elements=st.floats(-1.0, 1.0))) for s in shapes]
    return shapes, steps, xs, ts, ts2, draw(st.integers(0, 2 ** 31))


def build(steps):
    """The program as a function of tensors: each step reads earlier values (inputs first);
    the result is the last value, plus every input so that all of them are used."""
    def f(*xs):
        vals = list(xs)
        for step in steps:
            if step[0] == "unary":
                vals.append(UNARY[step[1]](vals[step[2] % len(vals)]))
            elif step[0] == "binary":
                vals.append(BINARY[step[1]](vals[step[2] % len(vals)], vals[step[3] % len(vals)]))
            else:
                v = vals[step[2] % len(vals)]
                if v.ndim == 0:
                    vals.append(UNARY["tanh"](v))
                else:
                    vals.append(REDUCE[step[1]](v, step[3] % v.ndim))
        out = vals[-1]
        for x in xs:
            out = out + x * 0.25
        return out
    return f


def _eval(f, xs):
    with ng.no_grad():
        return np.asarray(f(*[ng.tensor(x) for x in xs])._data, dtype=np.float64)


def _eager_grad(s, xs):
    leaves = [ng.tensor(x, requires_grad=True) for x in xs]
    s(*leaves).backward()
    return [leaf.grad.numpy().copy() for leaf in leaves]


def _fd_directional(fn, xs, ts):
    """(fn(x + eps t) - fn(x - eps t)) / 2 eps for fn returning an array or a list of arrays."""
    hi = fn([x + EPS * t for x, t in zip(xs, ts)])
    lo = fn([x - EPS * t for x, t in zip(xs, ts)])
    if isinstance(hi, list):
        return [(h - l) / (2 * EPS) for h, l in zip(hi, lo)]
    return (hi - lo) / (2 * EPS)


def _close(a, b, tol, scale=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s = max(1.0, float(np.max(np.abs(b), initial=0.0))) if scale is None else scale
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * s)


N_DEFAULT = 25
N_LONG = int(os.environ.get("PROPERTY_EXAMPLES", "500"))


def check_program(prog):
    shapes, steps, xs, ts, ts2, seed = prog
    f = build(steps)
    out_shape = _eval(f, xs).shape
    w = np.random.default_rng(seed).standard_normal(out_shape)
    wt = ng.tensor(w)

    def s(*a):
        return (f(*a) * wt).sum()

    # eager backward against finite differences of s, one input element at a time
    g_eager = _eager_grad(s, xs)
    for i, x in enumerate(xs):
        fd = np.zeros_like(x)
        for j in range(x.size):
            e = [np.zeros_like(y) for y in xs]
            e[i].reshape(-1)[j] = 1.0
            fd.reshape(-1)[j] = _fd_directional(lambda a: _eval(s, a), xs, e)
        _close(g_eager[i], fd, 1e-5)

    # replayed gradient, VJP, JVP: the same numbers from the tape
    S = ng.trace(s, *xs, check=False)
    F = ng.trace(f, *xs, check=False)
    g_traced = S.grad(*xs)
    g_traced = g_traced if isinstance(g_traced, tuple) else (g_traced,)
    vjp = F.vjp(tuple(xs), w)
    for a, b, c in zip(g_traced, vjp, g_eager):
        _close(a, c, 1e-10)
        _close(b, c, 1e-10)
    value, jt = F.jvp(tuple(xs), tuple(ts))
    _close(value, _eval(f, xs), 1e-12)
    _close(jt, _fd_directional(lambda a: _eval(f, a), xs, ts), 1e-5)
    lhs = float(np.sum(w * jt))
    rhs = sum(float(np.sum(g * t)) for g, t in zip(g_eager, ts))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs), abs(rhs)), (lhs, rhs)

    # Hessian-vector products against differences of the eager gradient, and symmetry
    hv = S.hvp(tuple(xs), tuple(ts))
    hv = hv if isinstance(hv, tuple) else (hv,)
    fd_h = _fd_directional(lambda a: _eager_grad(s, a), xs, ts)
    scale = max([1.0] + [float(np.max(np.abs(h), initial=0.0)) for h in fd_h])
    for a, b in zip(hv, fd_h):
        _close(a, b, 1e-5, scale)
    hv2 = S.hvp(tuple(xs), tuple(ts2))
    hv2 = hv2 if isinstance(hv2, tuple) else (hv2,)
    a12 = sum(float(np.sum(t2 * h)) for t2, h in zip(ts2, hv))
    a21 = sum(float(np.sum(t1 * h)) for t1, h in zip(ts, hv2))
    assert abs(a12 - a21) <= 1e-9 * max(1.0, abs(a12), abs(a21)), (a12, a21)


_SETTINGS = dict(deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=N_DEFAULT, **_SETTINGS)
@given(programs())
def test_random_graphs(prog):
    check_program(prog)


@pytest.mark.fuzz
@settings(max_examples=N_LONG, **dict(_SETTINGS, derandomize=False))
@given(programs())
def test_random_graphs_long(prog):
    check_program(prog)


def test_program_builder_uses_every_op():
    # the menu covers the smooth ops: each name runs and differentiates
    x = ng.tensor(np.linspace(-1.0, 1.0, 6).reshape(2, 3), requires_grad=True)
    for name, fn in UNARY.items():
        assert fn(x).requires_grad, name
    for name, fn in BINARY.items():
        assert fn(x, x).shape == x.shape, name
    for name, fn in REDUCE.items():
        assert fn(x, 1).ndim == 2, name
