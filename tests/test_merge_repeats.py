"""A traced tape reads a repeated op from its first occurrence (trace._merge_repeats)."""
import importlib
import os
import tempfile

import numpy as np

import numbagrad as ng
from numbagrad.ops import LEAF, SIN

T = importlib.import_module("numbagrad.trace")


def _eager_grad(f, *xs):
    ts = [ng.tensor(x, requires_grad=True) for x in xs]
    out = f(*ts)
    out.backward()
    return float(out.item()), [t.grad.numpy() for t in ts]


def test_repeated_ops_are_computed_once_and_gradients_match_eager():
    def f(x, y):  # sin(x), x * y, their product and sin(y) three times each
        acc = 0.0
        for _ in range(3):
            acc = acc + ng.sin(x) * (x * y) + ng.sin(y)
        return acc.sum()

    x, y = np.array([0.3, -1.2, 2.0]), np.array([0.7, 0.1, -0.4])
    t = ng.trace(f, x, y)
    ops = t._t.opcodes
    assert (ops == SIN).sum() == 2  # sin(x) and sin(y), once each
    dead = [k for k in range(len(ops)) if ops[k] == LEAF and k not in sum(t._in_nodes, [])]
    assert len(dead) == 8  # two repeats of each of the four, leaves nothing reads
    used = T._reachable(t._t, t._out_node)
    assert not used[dead].any()
    x2, y2 = x * 1.3 - 0.2, y * 0.8 + 0.5  # other values: the merged ops are recomputed
    v, g = t.value_and_grad(x2, y2)
    ve, ge = _eager_grad(f, x2, y2)
    np.testing.assert_allclose(v, ve, rtol=1e-13)
    for a, b in zip(g, ge):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    # forward mode and curvature read the same tape
    jv = t.jvp((x2, y2), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(np.ravel(jv[1] if isinstance(jv, tuple) else jv)[0],
                               ge[0].sum(), rtol=1e-12)


def test_the_output_and_guarded_nodes_are_kept():
    def f(x):
        a = ng.sin(x).sum()
        b = ng.sin(x).sum()  # the output repeats node a: kept, so that the output is a node
        return b

    t = ng.trace(f, np.ones(2))
    assert t._t.opcodes[t._out_node] != LEAF
    np.testing.assert_allclose(t.grad(np.array([0.5, 1.0])), np.cos([0.5, 1.0]), rtol=1e-14)


def test_a_merged_tape_saves_loads_and_pickles():
    import pickle

    def f(x):
        return (ng.tanh(x) * ng.tanh(x) + ng.exp(x) * ng.exp(x)).sum()

    x = np.array([0.1, 0.2, -0.5])
    t = ng.trace(f, x)
    assert (t._t.opcodes == LEAF).sum() == 3  # the input and two repeats
    path = os.path.join(tempfile.mkdtemp(), "f.npz")
    t.save(path)
    for u in (ng.load(path), pickle.loads(pickle.dumps(t))):
        np.testing.assert_allclose(u.grad(x * 2), t.grad(x * 2), rtol=0, atol=0)
    np.testing.assert_allclose(t.grad(x), 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
                               + 2 * np.exp(2 * x), rtol=1e-14)


def test_no_merge_leaves_the_tape_as_recorded():
    t = ng.trace(lambda x: (ng.sin(x) * 2).sum(), np.ones(3))
    assert [t.tape.name(k) for k in range(len(t.tape))] == [
        "Input x", "SinBackward0", "MulBackward0", "SumBackward0"]
