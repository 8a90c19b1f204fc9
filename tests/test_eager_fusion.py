"""An eager backward sweeps runs of large elementwise ops fused, with the op-by-op gradients."""
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import autograd

N = autograd.FUSE_MIN + 1000  # just past the threshold: fused, and not slow to sweep op by op
rng = np.random.default_rng(7)


def grads(f, arrays, fused, monkeypatch, **backward):
    """The leaves' gradients of ``f`` by one eager backward, fused or op by op."""
    monkeypatch.setattr(autograd, "FUSE_MIN", autograd.FUSE_MIN if fused else 1 << 62)
    xs = [ng.tensor(a, requires_grad=True) for a in arrays]
    f(*xs).backward(**backward)
    return [None if x.grad is None else x.grad.numpy().copy() for x in xs]


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


# (function, inputs, whether the fused gradients are those op by op to the bit: arithmetic is
# IEEE, recomputed transcendental values may differ from NumPy's in the last place)
CASES = {
    "notebook": (lambda x: (2 * (x + 2) ** 2).mean(), [rng.standard_normal(N)], True),
    "rosenbrock": (rosenbrock, [rng.uniform(-2, 2, N)], True),
    "transcendental": (lambda x: (ng.tanh(x) * ng.exp(-x * x) + ng.sin(x) / (2 + ng.cos(x))).sum(),
                       [rng.standard_normal(N)], False),
    # a value used outside its run (h) and a reduction that does not close one (h.max())
    "used outside": (lambda x: (lambda h: (h * h).sum() + h.max() * (h - 1).mean())(ng.sqrt(x + 3)),
                     [rng.uniform(0, 1, N)], False),
    # two runs separated by a matmul
    "two runs": (lambda x: ng.tanh((ng.relu(x - 0.1) * 3).reshape(2, -1).T @ np.ones((2, 3))
                                   ).sum() + (x * x).sum(),
                 [rng.standard_normal(2 * N)], False),
    # runs reading two large inputs, and a one-element value (a mean) inside a run
    "variance": (lambda x: ((x - x.mean()) ** 2).mean(), [rng.standard_normal(N) + 3], False),
    "two inputs": (lambda p, y: ((p - y) ** 2).mean() + (p * y).sum() / (p.mean() + 3),
                   [rng.standard_normal(N), rng.standard_normal(N)], True),
    "float32": (lambda x: ((x * 3 + 1) ** 2 / 4).sum(), [rng.standard_normal(N).astype(np.float32)],
                True),
    # x's adjoint: cleared by the run that adds to it first (the later one), then added to by
    # the earlier; through views in one run and wholly in another; three uses in one op chain
    "two runs on x": (lambda x: (ng.sin(x) * 2).sum() + (x * 3.0 + 1).sum(),
                      [rng.standard_normal(N)], False),
    "views and whole": (lambda x: (x[1:] * x[:-1]).sum() + (x * x).sum(),
                        [rng.standard_normal(N)], True),
    "x thrice": (lambda x: (x * x + x).sum(), [rng.standard_normal(N)], True),
}


@pytest.mark.parametrize("name", CASES)
def test_fused_gradients_are_the_op_by_op_ones(name, monkeypatch):
    f, arrays, exact = CASES[name]
    fused = grads(f, arrays, True, monkeypatch)
    by_op = grads(f, arrays, False, monkeypatch)
    for g, h in zip(fused, by_op):
        if exact:
            np.testing.assert_array_equal(g, h)
        else:
            tol = 1e-5 if g.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(g, h, rtol=tol, atol=tol * np.abs(h).max())


def test_a_run_of_large_ops_is_planned_as_one_segment_whose_inner_adjoints_take_no_memory():
    x = ng.tensor(rng.standard_normal(N), requires_grad=True)
    y = (2 * (x + 2) ** 2).mean()
    t = y._tape.arrays()
    fused = autograd._eager_fusion(y._tape, t, np.array([y._node]), autograd._NO_NODES)
    assert fused.plan.seg_start.tolist() == [1] and fused.plan.seg_stop.tolist() == [5]
    assert fused.internal.tolist() == [False, True, True, True, False]
    assert fused.unit_top.tolist() == [0, 4, 4, 4, 4]
    p, q = (ng.tensor(rng.standard_normal(N), requires_grad=True) for _ in range(2))
    mse = ((p - q) ** 2).mean()  # values in two chunks (the leaves'), read in one pass
    fused = autograd._eager_fusion(mse._tape, mse._tape.arrays(), np.array([mse._node]),
                                   autograd._NO_NODES)
    assert fused.plan.seg_start.tolist() == [2] and fused.plan.seg_stop.tolist() == [5]
    small = ng.tensor(rng.standard_normal(100), requires_grad=True)
    z = (2 * (small + 2) ** 2).mean()
    assert autograd._eager_fusion(z._tape, z._tape.arrays(), np.array([z._node]),
                                  autograd._NO_NODES) is None


@pytest.mark.parametrize("fused", [True, False])
def test_seeds_retained_and_asked_for_adjoints_inside_a_run(fused, monkeypatch):
    """A run's inner nodes take no adjoint slot, unless someone reads theirs."""
    monkeypatch.setattr(autograd, "FUSE_MIN", autograd.FUSE_MIN if fused else 1 << 62)
    a = rng.standard_normal(N)
    x = ng.tensor(a, requires_grad=True)
    h = ng.tanh(x * 2)
    h.retain_grad()
    y = h * h + 1
    seed = rng.standard_normal(N)
    y.backward(ng.tensor(seed))  # a non-scalar output, seeded
    th = np.tanh(2 * a)
    np.testing.assert_allclose(h.grad.numpy(), 2 * th * seed, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 2 * th * seed * 2 * (1 - th ** 2), rtol=1e-12)
    x2 = ng.tensor(a, requires_grad=True)
    u = x2 * 3
    (gu, gx) = ng.grad(((u + 1) ** 2).sum(), [u, x2])
    np.testing.assert_allclose(gu.numpy(), 2 * (3 * a + 1), rtol=1e-12)
    np.testing.assert_allclose(gx.numpy(), 6 * (3 * a + 1), rtol=1e-12)


def test_a_value_changed_in_place_since_is_not_recomputed_from():
    """(x + 1) ** 2 saved x + 1: changing the leaf x afterwards must not change the gradient, as
    it would if the fused sweep recomputed x + 1 from x's storage (the tape's, for a leaf)."""
    a = rng.standard_normal(N)
    x = ng.tensor(a, requires_grad=True)
    y = ((x + 1) ** 2).sum()
    with ng.no_grad():
        x -= 1
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * (a + 1))


def test_a_second_backward_through_a_fused_run_still_says_so():
    x = ng.tensor(rng.standard_normal(N), requires_grad=True)
    y = ((x + 2) ** 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 4 * (x.detach().numpy() + 2))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def random_graph(seed):
    """A function of two vectors and a 0-d tensor built of random elementwise ops, views and
    reductions, and inputs for it: runs fused and not, values used twice, a 0-d operand."""
    r = np.random.default_rng(seed)
    unary = [ng.sin, ng.cos, ng.tanh, ng.sigmoid, ng.relu, ng.abs, lambda v: -v,
             lambda v: ng.exp(v * 0.3), lambda v: ng.sqrt(v * v + 1), lambda v: v ** 2,
             lambda v: v ** 3 * 0.1, lambda v: 2.5 - v, lambda v: 1.5 / (v * v + 1),
             lambda v: v * -1.7 + 0.25, lambda v: v / 3.0, lambda v: ng.clamp(v, -0.5, 0.8)]
    binary = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
              lambda a, b: a / (b * b + 0.5), ng.maximum, ng.minimum]
    plan = [(r.integers(3), r.integers(len(unary)), r.integers(len(binary)), r.integers(1 << 30))
            for _ in range(r.integers(4, 12))]

    def f(x, y, s):
        vals = [x, y]
        for kind, u, b, pick in plan:
            a = vals[pick % len(vals)]
            if kind == 0:
                v = unary[u](a)
            elif kind == 1:
                v = binary[b](a, vals[(pick >> 8) % len(vals)])
            else:  # with the 0-d tensor, or a view of the same length of another value
                v = binary[b](a, s) if pick & 1 else binary[b](a, ng.cat([a[1:], a[:1]]))
            vals.append(v)
        out = vals[-1].sum() + vals[len(vals) // 2].mean() * s
        return out + (vals[-2] * vals[-1]).mean()
    n = OWN + 900
    dt = np.float32 if seed % 4 == 3 else np.float64
    return f, [r.standard_normal(n).astype(dt), r.standard_normal(n).astype(dt),
               dt(r.uniform(0.5, 2.0))]


OWN = 4096  # tape.OWN_CHUNK: values this large have chunks of their own, as FUSE_MIN's do


@pytest.mark.parametrize("seed", range(40))  # 600 seeds passed once (benchmarks/NOTES.md)
def test_random_graphs_fused_small_give_the_op_by_op_gradients(seed, monkeypatch):
    """FUSE_MIN lowered to fuse runs of a few thousand elements: many graphs, quickly."""
    f, arrays = random_graph(seed)
    planned = []
    real = autograd._eager_fusion
    monkeypatch.setattr(autograd, "_eager_fusion", lambda *a: planned.append(real(*a)) or planned[-1])
    monkeypatch.setattr(autograd, "FUSE_MIN", OWN)
    fused = grads(f, arrays, True, monkeypatch)
    assert planned[-1] is not None and len(planned[-1].plan.seg_start)  # something was fused
    monkeypatch.setattr(autograd, "FUSE_MIN", 1 << 62)
    by_op = grads(f, arrays, True, monkeypatch)
    for g, h in zip(fused, by_op):
        assert (g is None) == (h is None)
        if g is not None:
            tol = 1e-10 if arrays[0].dtype == np.float64 else 2e-5  # the graph's dtype
            np.testing.assert_allclose(g, h, rtol=tol, atol=tol * max(1.0, np.abs(h).max()))


def test_a_run_clears_the_adjoints_it_adds_to_first_itself():
    # share_adjoints' clear_seg: an operand's slot that a fused run adds to first and wholly is
    # cleared by that run block by block (in cache), not beforehand with the rest of the buffer
    from numbagrad import sweeps

    def clear_seg(y, *leaves):
        """Which run clears each leaf's slot (-1: cleared beforehand), and the runs' starts."""
        tape = y._tape
        arrays = tape.arrays()
        seeds, keep = np.array([y._node]), np.zeros(0, dtype=np.int64)
        fused = autograd._eager_fusion(tape, arrays, seeds, keep)
        adj_off = sweeps.plan_adjoints(arrays, seeds)[0]
        seg = autograd.share_adjoints(arrays, adj_off, seeds, keep, autograd.SHARE_MIN, fused)[-1]
        node = {id(t): k for k, t, _ in tape.leaves}
        return [int(seg[node[id(t)]]) for t in leaves], fused.plan.seg_start.tolist()

    x0, w0 = rng.standard_normal(N), rng.standard_normal(N)
    x, w = ng.tensor(x0, requires_grad=True), ng.tensor(w0, requires_grad=True)
    assert clear_seg((2 * (x + 2) ** 2).mean(), x) == ([0], [1])  # the leaf, by the one run
    x, w = ng.tensor(x0, requires_grad=True), ng.tensor(w0, requires_grad=True)
    (gx, gw), starts = clear_seg((x[1:] * w[:-1]).sum() + (w * 2.0).sum(), x, w)
    assert len(starts) == 2
    assert gx == -1  # x only through a view: cleared beforehand
    assert gw == 1  # w wholly in the later run, which adds to it first
    # the buffers come from the pool uncleared: a second backward gets the first one's
    for _ in range(2):
        x, w = ng.tensor(x0, requires_grad=True), ng.tensor(w0, requires_grad=True)
        ((x[1:] * w[:-1]).sum() + (w * 2.0).sum() + (2 * (x + 2) ** 2).mean()).backward()
        gx = np.zeros(N)
        gx[1:] += w0[:-1]
        gx += 4 * (x0 + 2) / N
        gw = np.full(N, 2.0)
        gw[:-1] += x0[1:]
        np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-12)
