"""Segments compiled to straight loops (codegen.py) equal the interpreted replay.

Every case here is a new segment structure, so a cold kernel cache compiles a few kernels
per case (about 5 s each); they are cached in the kernel directory after."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import codegen
trace_module = sys.modules["numbagrad.trace"]

from test_fusion import CASES


def pair(f, xs, **kw):
    return ng.trace(f, *xs, codegen=False, **kw), ng.trace(f, *xs, codegen=True, **kw)


def flat(r):
    return [z for x in r for z in flat(x)] if isinstance(r, (tuple, list)) else [r]


def assert_same(a, b, rtol=1e-10):
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(y, x, rtol=rtol, atol=1e-12)


@pytest.fixture(params=["serial", "chunks"])
def chunking(request, monkeypatch):
    """Serial loops, or chunks over two threads (phases where views overlap) at small sizes."""
    if request.param == "chunks":
        monkeypatch.setattr(codegen, "PAR_MIN", 64)
    return request.param


@pytest.mark.parametrize("name", sorted(k for k in CASES if k != "scalar_graph"))
def test_compiled_replay_matches_interpreted(name, chunking):
    f, shapes = CASES[name]
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(s) for s in shapes]
    interp, comp = pair(f, xs)
    assert comp._compiled() and not interp._compiled()
    for _ in range(2):  # buffers reused: nothing may depend on what the last call left
        assert_same(interp.value_and_grad(*xs), comp.value_and_grad(*xs))
        xs = [x * 0.9 + 0.05 for x in xs]
    assert_same(interp(*xs), comp(*xs))


def test_vjp_and_outputs_read_outside_through_compiled_segments():
    def f(x, w):
        h = ng.tanh(x * w + 0.5)          # a segment whose values and adjoints leave it
        return h * ng.exp(-x) + h.max() * x  # the max reads h outside
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(500), rng.standard_normal(1)]
    interp, comp = pair(f, xs)
    v = rng.standard_normal(500)
    assert_same(interp.vjp(xs, v), comp.vjp(xs, v))
    assert_same(interp(*xs), comp(*xs))
    g = lambda x, w: f(x, w).sum()
    interp, comp = pair(g, xs)
    assert_same(interp.value_and_grad(*xs), comp.value_and_grad(*xs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_receives_the_gradient_and_is_returned(dtype):
    rosen = CASES["rosenbrock"][0]
    x = np.random.default_rng(2).standard_normal(1000).astype(dtype)
    interp, comp = pair(rosen, [x])
    expected = interp.grad(x)
    for f in (interp, comp):
        out = np.full_like(x, np.nan)
        v, g = f.value_and_grad(x, out=out)
        assert g is out
        np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-10)
    with pytest.raises(ValueError, match="out for x"):
        comp.grad(x, out=np.zeros(999, dtype))
    with pytest.raises(ValueError, match="out for x"):
        comp.grad(x, out=np.zeros(1000, np.float64 if dtype == np.float32 else np.float32))
    with pytest.raises(ValueError, match="1 array"):
        comp.grad(x, out=(np.zeros_like(x), np.zeros_like(x)))


def test_arguments_read_in_place_or_copied_alike():
    f = CASES["notebook"][0]
    x = np.random.default_rng(3).standard_normal(5000)  # above SMALL_IO_MAX
    interp, comp = pair(f, [x])
    assert comp._compiled() and comp._cg_in and comp._cg_out[0][1]  # read, assigned in place
    expected = interp.value_and_grad(x)
    ro = x.copy()
    ro.flags.writeable = False
    strided = np.repeat(x, 2)[::2]
    for arg in (x, ro, strided, list(x)):
        assert_same(expected, comp.value_and_grad(arg))
    out = np.empty(10000)[::2]  # not contiguous: filled from a scratch gradient
    assert comp.grad(x, out=out) is out
    np.testing.assert_allclose(out, expected[1], rtol=1e-12)


def test_weights_read_by_one_matrix_product_skip_the_buffers():
    # a weight whose one reader is a matrix product is read from the caller's array and its
    # gradient assigned by one gemm into the returned array (Traced._mm_direct)
    rng = np.random.default_rng(6)
    X = ng.tensor(rng.standard_normal((20, 12)))
    Xinf = rng.standard_normal((20, 12))
    Xinf[3, 0] = np.inf  # in a row whose adjoint is a structural zero: must not make NaN
    Xinf = ng.tensor(Xinf)

    def f(W1, b1, W2, V, W3):
        h = ng.tanh(X @ W1 + b1)                       # W1: the right operand
        z = W2 @ h                                     # W2: the left operand
        u = (h @ V).sum() + V.sum()                    # V: two readers, through the buffers
        s = (ng.tanh(Xinf @ W3)[0] ** 2).sum()         # one seeded row: the sparse-row rule
        return (z * z).mean() + u + s

    args = [rng.standard_normal(s) for s in ((12, 8), (8,), (5, 20), (8, 8), (12, 4))]
    args.append(rng.standard_normal(trace_module.SMALL_IO_MAX))  # arguments past the small path
    f5 = f
    f = lambda W1, b1, W2, V, W3, pad: f5(W1, b1, W2, V, W3) + (pad * pad).sum()
    interp, comp = pair(f, args)
    expected = interp.value_and_grad(*args)
    assert_same(expected, comp.value_and_grad(*args))
    assert sorted(comp._mm_direct) == [0, 2, 4]
    assert np.isfinite(expected[1][4]).all()
    outs = [np.full_like(a, np.nan) for a in args]
    v, grads = comp.value_and_grad(*args, out=outs)
    assert all(g is o for g, o in zip(grads, outs))
    assert_same(expected, (v, grads))
    fortran, ro = np.asfortranarray(args[0]), args[2].copy()
    ro.flags.writeable = False
    assert_same(expected, comp.value_and_grad(fortran, args[1], ro, *args[3:]))
    with np.errstate(all="raise"):  # the eager matmul's inf * 0 stays silent, as in PyTorch
        f(*[ng.tensor(a, requires_grad=True) for a in args]).backward()
    args2 = [a * 0.7 - 0.1 for a in args]  # nothing left over from the last call
    assert_same(interp.value_and_grad(*args2), comp.value_and_grad(*args2))
    assert_same(interp.vjp(args2, 1.0), comp.vjp(args2, 1.0))  # the buffers' path, unchanged
    assert_same(interp.value_and_grad(*args2), comp.value_and_grad(*args2))


def test_weights_changed_in_place_between_calls_are_read_again():
    # a thread keeps the chunk list of the weights read in place while the same arrays come
    # back (Traced._mm_chunks): an SGD step writes into them, and a weight made read-only
    # since is copied in instead
    rng = np.random.default_rng(7)
    X = ng.tensor(rng.standard_normal((20, 12)))
    W, b = rng.standard_normal((12, 8)), rng.standard_normal(8)
    pad = rng.standard_normal(trace_module.SMALL_IO_MAX)

    def f(W, b, pad):
        return (ng.tanh(X @ W + b) ** 2).sum() + (pad * pad).sum()

    interp, comp = pair(f, [W, b, pad])
    for _ in range(3):
        expected = interp.value_and_grad(W, b, pad)
        assert_same(expected, comp.value_and_grad(W, b, pad))
        assert sorted(comp._mm_direct) == [0]
        W -= 0.1 * expected[1][0]
        b -= 0.1 * expected[1][1]
    W.flags.writeable = False
    assert_same(interp.value_and_grad(W, b, pad), comp.value_and_grad(W, b, pad))
    W2 = np.array(W) * 2  # another array: a new list
    assert_same(interp.value_and_grad(W2, b, pad), comp.value_and_grad(W2, b, pad))


def test_grad_batch_whole_rows_in_one_kernel():
    rosen = CASES["rosenbrock"][0]
    X = np.random.default_rng(4).standard_normal((40, 30))
    interp, comp = pair(rosen, [X[0]])
    assert comp._batch_kernel(len(X)) is not None and interp._batch_kernel(len(X)) is None
    assert_same(interp.value_and_grad_batch(X), comp.value_and_grad_batch(X))
    mean = lambda x: (ng.sin(x) * x[0:30] + 2).mean()  # a view at shift 0 and a MEAN
    interp, comp = pair(mean, [X[0]])
    assert comp._batch_kernel(len(X)) is not None
    assert_same(interp.value_and_grad_batch(X), comp.value_and_grad_batch(X))
    # more than one segment: rows go through the per-op sweeps
    two = lambda x: (ng.tanh(x) * x).sum() * ng.exp(x).max()
    interp, comp = pair(two, [X[0]])
    assert comp._batch_kernel(len(X)) is None
    assert_same(interp.value_and_grad_batch(X), comp.value_and_grad_batch(X))


def test_output_independent_of_the_arguments_and_ops_after_the_output():
    c = np.linspace(0.0, 1.0, 300)
    interp, comp = pair(lambda x: (ng.tensor(c) * 3 + 1).sum(), [np.ones(300)])
    assert_same(interp.value_and_grad(np.ones(300)), comp.value_and_grad(np.ones(300)))

    def after(x):
        y = (ng.sin(x) * 2).sum()
        ng.cos(x) * 5  # recorded on the same tape after the output, never used
        return y
    x = np.random.default_rng(6).standard_normal(300)
    interp, comp = pair(after, [x])
    for _ in range(2):
        assert_same(interp.value_and_grad(x), comp.value_and_grad(x))


def test_anomaly_mode_uses_the_per_op_sweeps():
    f = lambda x: ng.log(x).sum()
    comp = ng.trace(f, np.ones(100), codegen=True)
    comp.grad(np.ones(100))
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match="Log"):
        comp.grad(-np.ones(100))


def test_default_compiles_only_large_segments():
    small = ng.trace(lambda x: (x * x).sum(), np.ones(100))
    assert small._compiled() == {}
    big = ng.trace(lambda x: (x * x).sum(), np.ones(codegen.MIN_ELEMENTS))
    assert list(big._compiled()) == [0]
    off = ng.trace(lambda x: (x * x).sum(), np.ones(codegen.MIN_ELEMENTS), codegen=False)
    assert off._compiled() == {}


def test_kernels_are_files_loaded_from_numba_cache_in_a_new_process(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, numbagrad as ng
        f = ng.trace(lambda x: (ng.sqrt(x * x + 1.5) * 3).mean(), np.ones(50), codegen=True)
        g = f.grad(np.arange(50.0))
        seg = f._compiled()[0]
        print(seg.module.__file__, sum(seg.module.value_and_grad.stats.cache_hits.values()))
        assert np.allclose(g, np.arange(50.0) / np.sqrt(np.arange(50.0) ** 2 + 1.5) * 3 / 50)
    """)
    env = dict(os.environ, NUMBAGRAD_KERNEL_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    (path1, hits1), (path2, hits2) = (r.stdout.split() for r in runs)
    assert path1 == path2 and os.path.dirname(path1) == str(tmp_path)
    assert hits1 == "0" and hits2 == "1"  # compiled once, then loaded from Numba's cache
    source = open(path1).read()
    assert "def value_and_grad(" in source and "unary_f(10," in source  # SQRT's opcode


@pytest.mark.parametrize("n", [1, 511, 512, 1537])
def test_sum_of_transcendentals_adds_in_blocks_in_order(n, chunking):
    # a segment closed by a sum that computes a transcendental stores the summed values in
    # blocks of SUM_BLOCK and adds them in a second loop (in the order the single loop added
    # them: the values did not move by a bit when this came in); blocks cut at and off 512
    rng = np.random.default_rng(n)
    x, b = rng.standard_normal(n), rng.standard_normal(n)

    def f(x, b):
        return (ng.tanh(x * 3.0 + b) * ng.exp(-x * x)).sum() + (x * b).sum()

    interp, comp = pair(f, (x, b))
    (v0, g0), (v1, g1) = interp.value_and_grad(x, b), comp.value_and_grad(x, b)
    np.testing.assert_allclose(v1, v0, rtol=1e-13)
    for a, c in zip(g0, g1):
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-15)
    assert comp.grad(x, b)[0].shape == (n,)
    assert codegen.SUM_BLOCK == 512


@pytest.mark.parametrize("name,f,shifts", [
    ("rosenbrock", lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
     [0, 1]),
    ("three apart", lambda x: (ng.sin(x[:-3]) * x[3:] + x[1:-2]).sum(), [0, 1, 3]),
    ("one view off the start", lambda x: (x[2:] ** 2 * 0.5).mean(), [2]),
    ("the middle only", lambda x: (ng.exp(x[2:-2]) - x[3:-1]).sum(), [2, 3]),
    ("wider than the window", lambda x: (x[:-6] * x[6:]).sum(), [0, 6]),
    ("the whole row", lambda x: (x * x).sum(), [0]),
])
@pytest.mark.parametrize("width", [9, 30])
def test_grad_batch_carries_pending_adjoints_across_views(name, f, shifts, width, monkeypatch):
    # views of the row at nearby shifts: the batch kernel writes each gradient element once
    # from registers (codegen.BATCH_WINDOW) instead of adding into a cleared row; the same
    # additions in the same order, so equal to the bit, and every element of out= written
    X = np.random.default_rng(width).standard_normal((40, width))
    comp = ng.trace(f, X[0], codegen=True)
    assert comp._batch_kernel(len(X)) is not None
    assert sorted(sh for _, sh in comp._batch_segment.targets) == shifts
    source = open(comp._batch_segment.module.__file__).read()
    windowed = "GW[k] = w0" in source
    assert windowed == ((len(shifts) > 1 or shifts[0] > 0) and max(shifts) - min(shifts) <= 4)
    out = np.full_like(X, np.nan)
    v1, g1 = comp.value_and_grad_batch(X, out=out)
    assert g1 is out and not np.isnan(out).any()
    monkeypatch.setattr(codegen, "BATCH_WINDOW", -1)  # the cleared row, added into
    old = ng.trace(f, X[0], codegen=True)
    assert old._batch_kernel(len(X)) is not None
    assert "GW[k]" not in open(old._batch_segment.module.__file__).read()
    v0, g0 = old.value_and_grad_batch(X)
    assert np.array_equal(v1, v0) and np.array_equal(g1, g0)
    rows = np.stack([ng.trace(f, X[0], codegen=False).grad(x) for x in X[:5]])
    np.testing.assert_allclose(g1[:5], rows, rtol=1e-12, atol=1e-12)


WINDOWED = [
    ("rosenbrock", lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(), 0),
    ("three apart", lambda x: (ng.sin(x[:-3]) * x[3:] + x[1:-2]).sum(), 0),
    ("one view off the start", lambda x: (x[2:] ** 2 * 0.5).mean(), 0),
    ("the middle only", lambda x: (ng.exp(x[2:-2]) - x[3:-1]).sum(), 0),
    ("a sum of transcendentals", lambda x: ng.tanh(x[1:] * x[:-1]).sum(), 0),
    ("not the output", lambda x: (x[1:] * x[:-1]).sum() * 3.0 + 1.0, 0),
    ("a product's value", lambda A, x: (lambda z: (z[1:] - z[:-1] ** 2).sum())(A @ x), 1),
]


@pytest.mark.parametrize("name,f,arg", WINDOWED, ids=[w[0] for w in WINDOWED])
@pytest.mark.parametrize("n", [8, 300])
def test_shifted_views_assign_each_adjoint_element_once(name, f, arg, n, chunking, monkeypatch):
    # views of one value at nearby shifts: the whole-array kernels keep pending sums in
    # registers and assign each element once (Segment.window), chunk edges added after the
    # parallel loop, what no view reaches cleared; against the interpreter and against the
    # kernels that add into a cleared adjoint.  n = 8 with chunks: narrower than the spread
    if chunking == "chunks":
        monkeypatch.setattr(codegen, "PAR_MIN", 2)
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, 5))
    xs = [A, rng.standard_normal(5)] if arg else [rng.standard_normal(n)]
    interp, comp = pair(f, xs)
    segs = comp._compiled()
    assert any(s.window is not None for s in segs.values())
    assert all(s.chunks(2) == ((2, 1) if chunking == "chunks" else (1, 1)) for s in segs.values())
    assert "GW[k] = w0" in open(next(iter(segs.values())).module.__file__).read()
    out = [np.full_like(x, np.nan) for x in xs]
    for _ in range(2):  # buffers reused
        v1, g1 = comp.value_and_grad(*xs, out=out if len(xs) > 1 else out[0])
        v0, g0 = interp.value_and_grad(*xs)
        assert_same((v0, g0), (v1, g1), rtol=1e-12)
        assert not any(np.isnan(g).any() for g in flat(g1))
        xs = [x * 0.9 + 0.05 for x in xs]
    assert_same(interp.vjp(tuple(xs), np.array(2.0)), comp.vjp(tuple(xs), np.array(2.0)))
    monkeypatch.setattr(codegen, "BATCH_WINDOW", -1)  # added into a cleared adjoint
    old = ng.trace(f, *xs, codegen=True)
    assert all(s.window is None for s in old._compiled().values())
    assert_same(old.value_and_grad(*xs), comp.value_and_grad(*xs), rtol=1e-13)
