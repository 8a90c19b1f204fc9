"""trace: a recording replayed by the sweeps must agree with running the function eagerly."""
import pickle
import warnings

import numpy as np
import pytest

import numbagrad as ng
from numbagrad.trace import trace, value_and_grad, TraceWarning

# a faithful trace must not warn
pytestmark = pytest.mark.filterwarnings("error::numbagrad.trace.TraceWarning")
from numbagrad import functional


def eager(f, *arrays):
    """Value and gradients of a scalar f by the eager path (record + backward)."""
    ts = [ng.tensor(a, requires_grad=True) for a in arrays]
    out = f(*ts)
    grads = ng.grad(out, ts, allow_unused=True)
    return out.item(), [np.zeros_like(a) if g is None else g.numpy() for a, g in zip(arrays, grads)]


def elementwise(x):
    return (ng.sin(x) * ng.exp(-x ** 2) + ng.sigmoid(x) * ng.tanh(x)
            - ng.log(1 + x * x) + ng.sqrt(ng.abs(x) + 1) / (2 + ng.cos(x))).sum()


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _mlp_data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((16, 4)), rng.standard_normal((16, 1))


X_DATA, Y_DATA = _mlp_data()


def mlp_loss(W1, W2):
    X, y = ng.tensor(X_DATA), ng.tensor(Y_DATA)     # captured constants
    h = ng.tanh(X @ W1)
    return ((h @ W2 - y) ** 2).mean()


def two_args(x, y):
    return (x * ng.exp(y) + (x - y) ** 2).sum() / (1 + (y * y).sum())


@pytest.mark.parametrize("f, shapes", [
    (elementwise, [(7,)]),
    (rosenbrock, [(6,)]),
    (mlp_loss, [(4, 8), (8, 1)]),
    (two_args, [(3,), (3,)]),
])
def test_replay_matches_eager(f, shapes, rng):
    f_t = trace(f, *[rng.standard_normal(s) for s in shapes])
    for _ in range(3):
        xs = [rng.standard_normal(s) for s in shapes]
        value, grads = eager(f, *xs)
        assert f_t(*xs) == pytest.approx(value, rel=1e-12, abs=1e-12)
        g = f_t.grad(*xs)
        g = g if isinstance(g, tuple) else (g,)
        assert len(g) == len(shapes)
        for gi, ei in zip(g, grads):
            np.testing.assert_allclose(gi, ei, rtol=1e-10, atol=1e-12)
        v2, g2 = f_t.value_and_grad(*xs)
        assert v2 == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_tape_dump_and_len(rng):
    f_t = trace(rosenbrock, np.zeros(4))
    assert len(f_t.tape) == len(f_t.tape.opcodes)
    text = str(f_t.tape)
    assert "Input x" in text and "SumBackward0" in text and "PowBackward0" in text
    assert len(text.splitlines()) == len(f_t.tape) + 1


def test_unused_argument_and_constant_output():
    f_t = trace(lambda x, y: (x * 2).sum(), np.ones(3), np.ones(2))
    gx, gy = f_t.grad(np.arange(3.0), np.ones(2))
    np.testing.assert_array_equal(gx, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(gy, [0.0, 0.0])
    ident = trace(lambda x: x, np.ones(3))
    np.testing.assert_array_equal(ident(np.arange(3.0)), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(ident.jacobian(np.arange(3.0)), np.eye(3))


def test_vjp_of_vector_output(rng):
    def g(x):
        return ng.sin(x) * x + ng.sqrt(ng.abs(x) + 1)
    x0 = rng.standard_normal(5)
    f_t = trace(g, x0)
    x, v = rng.standard_normal(5), rng.standard_normal(5)
    xt = ng.tensor(x, requires_grad=True)
    g(xt).backward(ng.tensor(v))
    (vjp,) = f_t.vjp((x,), v)
    np.testing.assert_allclose(vjp, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(f_t(x), g(ng.tensor(x)).numpy(), rtol=1e-14)
    out, vjp2 = functional.vjp(g, x, v)
    np.testing.assert_allclose(vjp2, vjp)
    np.testing.assert_allclose(out, f_t(x))


def _fd_jacobian(f, x, eps=1e-6):
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = eps
        cols.append((f(x + e) - f(x - e)) / (2 * eps))
    return np.stack(cols, axis=-1).reshape(np.shape(f(x)) + x.shape)


def test_jacobian_vs_finite_differences(rng):
    A = rng.standard_normal((3, 4))

    def h(x):
        return ng.tanh(ng.tensor(A) @ x) + x[:3] * (x * x).sum()

    f_t = trace(h, rng.standard_normal(4))
    x = rng.standard_normal(4)
    J = f_t.jacobian(x)
    assert J.shape == (3, 4)
    np.testing.assert_allclose(J, _fd_jacobian(f_t, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(functional.jacobian(h, x), J, rtol=1e-12)
    # two arguments: one Jacobian each, and Tensors in give Tensors out
    Jx, Jy = functional.jacobian(lambda a, b: a * b.sum(), (ng.tensor(x), ng.tensor(x[:2])))
    assert isinstance(Jx, ng.Tensor) and Jx.shape == (4, 4) and Jy.shape == (4, 2)
    np.testing.assert_allclose(Jy.numpy(), np.repeat(x[:, None], 2, axis=1))


def test_jacobian_many_rows(rng):
    # enough output elements for the parallel path, two arguments, a matmul
    W0, b0 = rng.standard_normal((20, 3)), rng.standard_normal(20)
    f_t = trace(lambda W, b: ng.tanh(W @ ng.tensor(np.ones(3)) * b), W0, b0)
    JW, Jb = f_t.jacobian(W0, b0)
    assert JW.shape == (20, 20, 3) and Jb.shape == (20, 20)
    np.testing.assert_allclose(JW, _fd_jacobian(lambda W: f_t(W, b0), W0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(Jb, _fd_jacobian(lambda b: f_t(W0, b), b0), rtol=1e-6, atol=1e-8)


def test_jacobian_out(rng):
    # out= writes into given arrays: in place when one contiguous array of the tape's dtype,
    # through a copy otherwise; every entry is overwritten, whatever it held
    A = rng.standard_normal((30, 8))
    f_t = trace(lambda x: ng.tanh(ng.tensor(A) @ x) * x.sum(), rng.standard_normal(8))
    x = rng.standard_normal(8)
    J = f_t.jacobian(x)
    out = np.full((30, 8), np.nan)
    assert f_t.jacobian(x, out=out) is out
    np.testing.assert_array_equal(out, J)
    strided = np.full((30, 16), np.nan)[:, ::2]
    assert f_t.jacobian(x, out=strided) is strided
    np.testing.assert_array_equal(strided, J)
    # an argument used twice (its adjoint adds) and one not used at all (zeros), many rows
    g_t = trace(lambda a, b, c: ng.tanh(ng.tensor(A) @ a) * a[:30:1].sum() + 0 * c.sum(),
                x, x[:3], x[:2])
    outs = (np.full((30, 8), np.nan), np.full((30, 3), np.nan), np.full((30, 2), np.nan))
    res = g_t.jacobian(x, x[:3], x[:2], out=outs)
    assert all(r is o for r, o in zip(res, outs))
    for got, want in zip(outs, g_t.jacobian(x, x[:3], x[:2])):
        np.testing.assert_array_equal(got, want)
    h_t = trace(lambda a, b: a * 2.0, x, x[:3])  # b unused: its Jacobian is zero
    ob = np.full((8, 3), np.nan)
    h_t.jacobian(x, x[:3], out=(np.zeros((8, 8)), ob))
    np.testing.assert_array_equal(ob, 0.0)
    with pytest.raises(ValueError, match=r"out for x: expected a writable float64 array of "
                                         r"shape \(30, 8\)"):
        f_t.jacobian(x, out=np.zeros(8))


@pytest.mark.parametrize("codegen", [None, False])
def test_grad_batch_out(rng, codegen):
    # out= as for grad: in place when contiguous (whatever it held: the batch kernel clears
    # each row itself), through a copy when strided; few rows loop, many run in parallel
    def rosen(x):
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
    f_t = trace(rosen, rng.standard_normal(7), codegen=codegen)
    for B in (5, 40, 20000):
        X = rng.standard_normal((B, 7))
        vals, G = f_t.value_and_grad_batch(X)
        np.testing.assert_allclose(G[3], f_t.grad(X[3]), rtol=1e-14)
        out = np.full((B, 7), np.nan)
        v2, g2 = f_t.value_and_grad_batch(X, out=out)
        assert g2 is out
        np.testing.assert_array_equal(out, G)
        np.testing.assert_array_equal(v2, vals)
        strided = np.full((B, 14), np.nan)[:, ::2]
        assert f_t.grad_batch(X, out=strided) is strided
        np.testing.assert_array_equal(strided, G)
    with pytest.raises(ValueError, match=r"out for x: expected a writable float64 array of "
                                         r"shape \(4, 7\)"):
        f_t.grad_batch(np.ones((4, 7)), out=np.zeros((4, 8)))
    with pytest.raises(ValueError, match="out for x"):
        f_t.grad_batch(np.ones((4, 7)), out=np.zeros((4, 7), dtype=np.float32))


def test_scalar_graph_takes_python_floats_and_keeps_derivatives_aside(tmp_path):
    # a scalar graph runs its scalar program alone, takes Python floats as they are, and keeps
    # sin/cos derivatives in slots past the values: none of which shows in results or files
    def f(a, b, c):
        acc = a * 0.0
        for k in range(30):
            acc = acc + ng.sin(a * k) * ng.cos(b) / (1.0 + c * c)
        return acc
    xs = (0.3, -1.2, 0.7)
    f_t = trace(f, *xs)
    assert f_t._scalar_segs is not None and len(f_t._init) > f_t._n_values
    value, grads = eager(f, *[np.float64(x) for x in xs])
    for args in (xs, [np.float64(x) for x in xs], [np.array(x) for x in xs]):
        v, g = f_t.value_and_grad(*args)
        assert v == pytest.approx(value, rel=1e-13)
        for gi, ei in zip(g, grads):
            assert isinstance(gi, np.ndarray) and gi.shape == ()
            assert gi == pytest.approx(ei, rel=1e-13)
    g0 = f_t.grad(*xs)
    np.testing.assert_array_equal(f_t.grad(*xs), g0)  # the buffers' reuse changes nothing
    for other in (pickle.loads(pickle.dumps(f_t)), ng.load(_saved(f_t, tmp_path))):
        assert len(other._init) == len(f_t._init)
        np.testing.assert_array_equal(other.grad(*xs), g0)
    assert pickle.loads(pickle.dumps(f_t)).__getstate__()["init"].size == f_t._n_values
    with pytest.raises(ValueError, match="argument b: expected shape"):
        f_t.grad(0.3, [1.0, 2.0], 0.7)
    with pytest.raises(TypeError, match="traced with 3 argument"):
        f_t.grad(0.3, 0.7)
    f32 = trace(f, *[np.float32(x) for x in xs])
    with pytest.raises(ValueError, match="expected dtype float32, got float64"):
        f32.grad(*xs)
    np.testing.assert_allclose(f32.grad(*[np.float32(x) for x in xs]), g0, rtol=1e-5)


def _saved(f_t, tmp_path):
    path = tmp_path / "scalar.npz"
    f_t.save(path)
    return path


def test_grad_batch_equals_loop(rng):
    f_t = trace(rosenbrock, np.zeros(5))
    X = rng.standard_normal((64, 5))
    G = f_t.grad_batch(X)
    assert G.shape == X.shape
    expected = np.stack([f_t.grad(x) for x in X])
    np.testing.assert_allclose(G, expected, rtol=1e-12)
    vals, _ = f_t.value_and_grad_batch(X)
    np.testing.assert_allclose(f_t.grad_batch(X[:5]), expected[:5], rtol=1e-12)  # serial path
    np.testing.assert_allclose(vals, [f_t(x) for x in X], rtol=1e-12)
    with pytest.raises(ValueError, match="x"):
        f_t.grad_batch(np.zeros((4, 6)))


def test_scipy_bfgs_rosenbrock():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    fg = value_and_grad(rosenbrock)
    x0 = np.zeros(10)     # (-1.2, 1, ...) would lead BFGS to the local minimum near x0 = -1
    res = scipy_optimize.minimize(fg, x0, jac=True, method="BFGS", options={"gtol": 1e-8})
    assert res.success
    np.testing.assert_allclose(res.x, np.ones(10), atol=1e-5)
    np.testing.assert_allclose(res.jac, scipy_optimize.rosen_der(res.x), rtol=1e-10, atol=1e-12)
    # a new shape traces again
    v, g = fg(np.ones(3))
    assert v == 0.0 and g.shape == (3,)


def test_value_and_grad_argnums(rng):
    fg = value_and_grad(two_args, argnums=(0, 1))
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    v, (gx, gy) = fg(x, y)
    ev, (ex, ey) = eager(two_args, x, y)
    assert v == pytest.approx(ev)
    np.testing.assert_allclose(gx, ex, rtol=1e-12)
    np.testing.assert_allclose(gy, ey, rtol=1e-12)
    v1, g1 = value_and_grad(two_args, argnums=1)(x, y)
    np.testing.assert_allclose(g1, ey, rtol=1e-12)


def test_pickle_round_trip(rng):
    f_t = trace(mlp_loss, rng.standard_normal((4, 8)), rng.standard_normal((8, 1)))
    W1, W2 = rng.standard_normal((4, 8)), rng.standard_normal((8, 1))
    g = f_t.grad(W1, W2)
    f2 = pickle.loads(pickle.dumps(f_t))
    g2 = f2.grad(W1, W2)
    for a, b in zip(g, g2):
        np.testing.assert_array_equal(a, b)
    assert f2(W1, W2) == f_t(W1, W2)
    assert str(f2.tape) == str(f_t.tape)


def test_argument_checks():
    f_t = trace(rosenbrock, np.zeros(4))
    with pytest.raises(ValueError, match=r"argument x: expected shape \(4,\)"):
        f_t(np.zeros(5))
    with pytest.raises(ValueError, match="argument x: expected dtype float64"):
        f_t.grad(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError):
        f_t(np.zeros(4), np.zeros(4))
    assert f_t(np.ones(4, dtype=np.int64)) == 0.0   # integers are cast


def test_float32_trace_keeps_dtype(rng):
    x0 = rng.standard_normal(5).astype(np.float32)
    f_t = trace(elementwise, x0)
    x = rng.standard_normal(5).astype(np.float32)
    g = f_t.grad(x)
    assert g.dtype == np.float32
    _, (ge,) = eager(elementwise, x)
    np.testing.assert_allclose(g, ge, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("default::numbagrad.trace.TraceWarning")
def test_values_frozen_by_the_trace_are_reported():
    def noisy(x):
        return (x * ng.tensor(np.random.rand(3))).sum()   # a fresh draw at every eager call
    with pytest.warns(TraceWarning, match="constant node"):
        trace(noisy, np.ones(3))

    def branchy(x):
        return (x * 2).sum() if x.sum().item() > 0 else (x * x).sum()
    with pytest.warns(TraceWarning, match="depend on the values"):
        trace(branchy, np.ones(3))


# ---------------------------------------------------------------- item() read only to branch

def _branchy(calls):
    def f(x):
        calls.append(1)
        if x.sum().item() > 0:
            return (x * x).sum()
        return (-x).sum()
    return f


def test_item_only_compared_guards_only_the_branch(tmp_path):
    import pickle
    from numbagrad.tensor import GUARD_CMP
    calls = []
    t = ng.trace(_branchy(calls), np.ones(3), check=False)
    assert [g[1] for g in t._guards] == [GUARD_CMP + 2]      # "item() > 0", not its value
    x = np.array([1.0, 2.0, 3.0])
    assert t(x) == 14.0 and np.array_equal(t.grad(x), 2 * x)   # same branch, another point
    for g in (t, ng.load(_saved(t, tmp_path)), pickle.loads(pickle.dumps(t))):
        assert g(x) == 14.0
        with pytest.raises(ng.GuardError, match=r"item\(\) > 0"):   # the other branch
            g(-x)
    # value_and_grad: no new trace on the same branch, a right answer on the other one
    calls.clear()
    fg = ng.value_and_grad(_branchy(calls))
    with warnings.catch_warnings():   # its probe may take the other branch: guarded, no verdict
        warnings.simplefilter("ignore", ng.TraceWarning)
        fg(np.ones(3))
    n = len(calls)
    for k in range(2, 6):
        v, gr = fg(np.full(3, float(k)))
        assert v == 3 * k * k and np.array_equal(gr, np.full(3, 2.0 * k))
    assert len(calls) == n                                    # replayed, never re-traced
    v, gr = fg(-x)
    assert v == 6.0 and np.array_equal(gr, -np.ones(3))


@pytest.mark.parametrize("use", [
    lambda x, v: x.sum() * v,                 # folded into the tape as a constant
    lambda x, v: x.sum() + (v + 1.0),         # Python arithmetic, then a constant
    lambda x, v: x.sum() + len(f"{v:.3f}"),   # formatting
    lambda x, v: x.sum() + int(v),            # int conversion
    lambda x, v: x.sum() * np.exp(v),         # a NumPy ufunc of it
    lambda x, v: x.sum() * ng.tensor([v, 1.0]).sum(),   # data of a new tensor
    lambda x, v: x.sum() * v if v > 0 else x.sum(),     # compared and used
])
def test_item_used_otherwise_keeps_the_exact_value_guard(use):
    from numbagrad.tensor import GUARD_VALUE
    t = ng.trace(lambda x: use(x, x.sum().item()), np.ones(3), check=False)
    assert [g[1] for g in t._guards] == [GUARD_VALUE]
    assert t(np.ones(3)) == use(ng.tensor(np.ones(3)), 3.0).item()
    with pytest.raises(ng.GuardError):   # another point: its value changed, never a wrong number
        t(np.full(3, 2.0))


def test_item_float_is_a_float():
    x = ng.tensor([1.5, 2.0], requires_grad=True)
    v = (x * 2).sum().item()
    assert isinstance(v, float) and v == 7.0 and v > 1 and repr(v) == "7.0"
    assert float(v) == 7.0 and type(float(v)) is float and hash(v) == hash(7.0)


def test_item_compared_with_numbers_it_cannot_replay_exactly_keeps_the_value_guard():
    from numbagrad.tensor import GUARD_VALUE
    for other in (2 ** 60 + 1, np.float32(0.5), "a"):
        def f(x, other=other):
            v = x.sum().item()
            try:
                v > other
            except TypeError:
                pass
            return x.sum()
        t = ng.trace(f, np.ones(3), check=False)
        assert [g[1] for g in t._guards] == [GUARD_VALUE], other
