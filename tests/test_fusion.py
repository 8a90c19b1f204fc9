"""Fused replay of elementwise runs equals the op-by-op sweeps."""
import numpy as np
import pytest
from numba.typed import List

import numbagrad as ng
from numbagrad import fusion, ops, sweeps


def replay_layout(y):
    """The recording of ``y`` laid out in one buffer, as a replay sees it."""
    tape = y._tape
    t = tape.arrays()
    off = np.concatenate([[0], np.cumsum(t.sizes)[:-1]]).astype(np.int64)
    buf = np.concatenate([tape.value(k) for k in range(len(tape))]).astype(tape.dtype)
    t = t._replace(val_chunk=np.zeros(len(t.opcodes), np.int32), val_off=off,
                   flags=t.flags & sweeps.REQUIRES_GRAD)
    return tape, t, buf


def fused_value_and_grads(f, xs, par_min):
    ts = [ng.tensor(x, requires_grad=True) for x in xs]
    y = f(*ts)
    y.backward()
    tape, t, buf = replay_layout(y)
    top = len(tape) - 1
    adj_off, total, *_ = sweeps.plan_adjoints(t, np.array([top]))
    # sin and cos rows of a scalar program keep their derivative past the values
    plan = fusion.plan_fusion(t, adj_off, total, keep=[top], aux_base=len(buf))
    n_aux = int((plan.prog[:, fusion.P_AUX] >= 0).sum())
    buf = np.concatenate([buf, np.full(n_aux, np.nan)])
    expected_value = buf[t.val_off[top]]
    for k in range(len(tape)):  # only the leaves survive: the replay must recompute the rest
        if t.opcodes[k] != ops.LEAF:
            buf[t.val_off[k]:t.val_off[k] + t.sizes[k]] = np.nan
    chunks = List([buf])
    fusion.replay_forward(t, chunks, buf, plan, par_min, 2)
    np.testing.assert_allclose(buf[t.val_off[top]], expected_value, rtol=1e-10)
    adj = np.zeros(total + 1)  # the last slot: the plan's trash slot
    adj[adj_off[top]] = 1.0
    fusion.replay_reverse(t, chunks, adj, adj_off, plan, top, par_min, 2)
    assert len(tape.leaves) == len(ts)  # one node per argument, even across merged tapes
    node = {id(leaf): k for k, leaf, _ in tape.leaves}
    for x in ts:
        k = node[id(x)]
        np.testing.assert_allclose(adj[adj_off[k]:adj_off[k] + t.sizes[k]],
                                   x.grad.numpy().ravel(), rtol=1e-10, atol=1e-12)
    return plan.seg_start, plan.seg_stop


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def scalar_chain(*xs):
    acc = xs[0] * 0
    for k in range(200):
        acc = acc + ng.sin(xs[k % 5]) * xs[(k + 3) % 5] / (1 + xs[(k + 1) % 5] ** 2)
    return acc


CASES = {
    "notebook": (lambda x: (2 * (x + 2) ** 2).mean(), [(1000,)]),
    "scalar_operand": (lambda x, w: (ng.tanh(x * w + 1) * ng.exp(-x) / (1 + x * x)).sum() + x @ x,
                       [(777,), (1,)]),
    "kinks_and_max": (lambda x, w: ng.sin(x * w).sum() * 3 + ng.relu(x).max() + ng.abs(x).mean(),
                      [(2000,), (1,)]),
    "binary_ops": (lambda a, b: (ng.maximum(a, b) - ng.minimum(a, b) + a ** 2 / (1 + b * b)
                                 + ng.sigmoid(a - b) * 2 ** b).sum(), [(600,), (600,)]),
    "rosenbrock": (rosenbrock, [(1000,)]),
    "scalar_graph": (scalar_chain, [()] * 5),
    # contiguous slices are read and accumulated in place (fusion._is_view); par_min = 256
    # splits these into chunks whose views overlap their neighbours' (spread 1 and 1,000)
    "views_spread": (lambda x: (x[1:2001] * x[:2000] + ng.sin(x[1000:3000]) * x[2:2002]).sum(),
                     [(3000,)]),
    "view_used_outside": (lambda x: (x[1:] * 2).sum() + (x[1:] ** 2).max() + x[:-1].mean(),
                          [(1500,)]),
    "views_of_a_fused_node": (lambda x: ((lambda h: ((h[1:] - h[:-1]) ** 2).sum())(
        ng.tanh(x) * 3)), [(1200,)]),
    "row_views_2d": (lambda X: ((X[1:] - X[:-1]) ** 2 * X[1:, :] + X[:, 1:].sum()).sum(),
                     [(30, 40)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("par_min", [1 << 62, 256])
def test_fused_replay_matches_eager(name, par_min):
    f, shapes = CASES[name]
    rng = np.random.default_rng(3)
    fused_value_and_grads(f, [rng.standard_normal(s) for s in shapes], par_min)


def test_segments_cover_elementwise_runs_and_closing_reductions():
    starts, stops = fused_value_and_grads(CASES["notebook"][0], [np.ones(10)], 1 << 62)
    # x + 2, ** 2, * 2 and the closing mean: one segment after the input leaf
    assert starts.tolist() == [1] and stops.tolist() == [5]
    starts, stops = fused_value_and_grads(scalar_chain, [np.ones(())] * 5, 1 << 62)
    assert len(starts) == 1  # a scalar graph is one segment, inputs recorded mid-run included
    ys = [ng.tensor(1.0, requires_grad=True) for _ in range(2)]
    y = ng.sin(ys[0]) * ng.cos(ys[1]) + ng.sin(ys[0] * 2.0) + ng.tanh(ys[1])
    _, t, buf = replay_layout(y)
    adj_off, total, *_ = sweeps.plan_adjoints(t, np.array([len(t.opcodes) - 1]))
    prog = fusion.plan_fusion(t, adj_off, total, aux_base=len(buf)).prog
    aux = prog[:, fusion.P_AUX]
    # the three sines and cosines get one slot each after the values; tanh needs none
    assert sorted(aux[aux >= 0].tolist()) == [len(buf), len(buf) + 1, len(buf) + 2]
    assert set(prog[aux >= 0, fusion.P_OP].tolist()) == {ops.SIN, ops.COS}
    assert (fusion.plan_fusion(t, adj_off, total).prog[:, fusion.P_AUX] == -1).all()


def test_contiguous_slices_fuse_into_the_segment_around_them():
    starts, stops = fused_value_and_grads(rosenbrock, [np.ones(50)], 1 << 62)
    # x[1:], x[:-1] (twice) and every elementwise op after them: one segment to the sum
    assert starts.tolist() == [1] and stops.tolist() == [12]
    x = np.arange(12.0).reshape(3, 4)
    t = ng.tensor(x, requires_grad=True)
    y = t[:, 1:] * 2  # not contiguous: a gather of its own, then a segment
    tape = y._tape.arrays()
    v = t[1:]  # contiguous: a view (recorded on y's tape, which holds t: tensor.start_tape)
    assert not fusion._is_view(tape, 1) and fusion._is_view((v * 2)._tape.arrays(), v._node)


def test_dead_closing_sum_keeps_the_gradient_of_shared_nodes():
    def f(x):
        y = ng.sin(x)
        y.sum()  # recorded, never used
        return (y * 2).max()

    x = np.random.default_rng(0).standard_normal(600)
    t = ng.tensor(x, requires_grad=True)
    f(t).backward()
    np.testing.assert_allclose(ng.trace(f, x).grad(x), t.grad.numpy(), atol=1e-12)
