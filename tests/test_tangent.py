"""Forward mode and forward-over-reverse on the tape: ``tangent_sweep`` and ``hvp_sweep``.

Every op family is recorded eagerly, then swept.  Tangents (JVPs) are checked
against central differences of the eager function and against the reverse
sweep (<w, J v> == <J^T w, v>); Hessian-vector products of
``z = sum(W * f(x) ** 2)`` against central differences of eager gradients and
for symmetry (<u, H v> == <v, H u>).  The square makes every op's tangent feed
a curved op downstream, and ``W`` keeps the adjoint seed of ``f`` generic.
"""
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import sweeps
from numbagrad.tape import resolve

X = np.array([[0.55, 1.3, 0.8], [1.7, 0.35, 1.05]])       # positive: log, sqrt, powers
S = np.array([[-1.2, 0.45, 0.9], [-0.3, 1.6, -0.75]])     # signed, away from kinks
S2 = np.array([[0.4, -0.2, 1.1], [-0.9, 0.7, 0.25]])      # no ties with S
R3 = np.array([0.3, -0.7, 1.2])
C3 = np.linspace(-1.0, 1.3, 12).reshape(2, 3, 2) ** 3 + np.arange(12).reshape(2, 3, 2) * 0.05

# name -> (f on tensors, inputs); every input requires grad
CASES = {
    # unary elementwise
    "neg": (lambda x: -x, [S]),
    "exp": (ng.exp, [S]),
    "log": (ng.log, [X]),
    "sin": (ng.sin, [S]),
    "cos": (ng.cos, [S]),
    "tan": (ng.tan, [S * 0.8]),
    "tanh": (ng.tanh, [S]),
    "sigmoid": (ng.sigmoid, [S]),
    "relu": (ng.relu, [S]),
    "sqrt": (ng.sqrt, [X]),
    "abs": (ng.abs, [S]),
    "add_c": (lambda x: x + 2.5, [S]),
    "mul_c": (lambda x: x * -1.5, [S]),
    "div_c": (lambda x: x / 4.0, [S]),
    "pow_c2": (lambda x: x ** 2, [S]),
    "pow_c3": (lambda x: x ** 3, [S]),
    "pow_c_half": (lambda x: x ** 0.5, [X]),
    "pow_c_2.5": (lambda x: x ** 2.5, [X]),
    "rsub_c": (lambda x: 2.0 - x, [S]),
    "rdiv_c": (lambda x: 2.0 / x, [X]),
    "rpow_c": (lambda x: 1.7 ** x, [S]),
    "clamp": (lambda x: x.clamp(-1.0, 1.0), [S]),
    # binary elementwise, same shapes and broadcast
    "add": (lambda a, b: a + b, [S, S2]),
    "sub": (lambda a, b: a - b, [S, S2]),
    "mul": (lambda a, b: a * b, [S, S2]),
    "div": (lambda a, b: a / b, [S, X]),
    "pow": (lambda a, b: a ** b, [X, S2]),
    "maximum": (ng.maximum, [S, S2]),
    "minimum": (ng.minimum, [S, S2]),
    "mul_self": (lambda a: a * a, [S]),
    "div_self_shifted": (lambda a: a / (a + 3.0), [S]),
    "mul_row": (lambda a, b: a * b, [S, R3]),                      # trailing block
    "div_col": (lambda a, b: a / b, [S, X[:, :1]]),                # general broadcast
    "pow_scalar": (lambda a, b: a ** b, [X, np.array(1.7)]),       # one element
    "sub_outer": (lambda a, b: a - b, [X[:, :1], R3[None, :]]),    # both broadcast
    # where
    "where": (lambda a, b: ng.where(ng.tensor(S > 0), a, b), [X, S2]),
    "where_broadcast": (lambda a, b: ng.where(ng.tensor(S > 0), a * b, b), [X, R3]),
    # reductions and normalisations over (outer, n, inner)
    "sum": (lambda x: ng.sum(ng.sin(x)), [S]),
    "sum_dim": (lambda x: ng.sum(x, 1), [C3]),
    "sum_dims": (lambda x: ng.sum(x, (0, 2)), [C3]),
    "mean": (lambda x: ng.mean(x), [S]),
    "mean_dim": (lambda x: ng.mean(x, 1, keepdim=True), [C3]),
    "max": (lambda x: ng.max(x), [S]),
    "max_dim": (lambda x: ng.max(x, 1).values, [C3]),
    "min": (lambda x: ng.min(x), [S]),
    "min_dim": (lambda x: ng.min(x, 0).values, [S]),
    "logsumexp_0": (lambda x: ng.logsumexp(x, 0), [S]),
    "logsumexp_1": (lambda x: ng.logsumexp(x, 1), [C3]),
    "softmax_1": (lambda x: ng.softmax(x, 1), [S]),
    "softmax_inner": (lambda x: ng.softmax(x, 1), [C3]),
    "log_softmax_0": (lambda x: ng.log_softmax(x, 0), [S]),
    "log_softmax_inner": (lambda x: ng.log_softmax(x, 1), [C3]),
    # structure
    "reshape": (lambda x: ng.sin(x).reshape(3, 2) * ng.tensor(X.reshape(3, 2)), [S]),
    "clone_unsqueeze": (lambda x: ng.clone(ng.unsqueeze(x, 1)), [S]),
    "transpose": (lambda x: x.T @ ng.tensor(X), [S]),
    "permute": (lambda x: x.permute(2, 0, 1), [C3]),
    "index_slice": (lambda x: x[:, 1:] * x[:, :2], [S]),
    "index_repeat": (lambda x: x[[0, 0, 1]] * x[[1, 0, 0]], [S]),
    "expand": (lambda x: x.expand(2, 3) * ng.tensor(S2), [R3]),
    "cat": (lambda a, b: ng.cat([a, ng.exp(b), a], 1), [S, X[:, :2]]),
    "cat_const": (lambda a: ng.cat([ng.tensor(S2), a], 0), [S]),
    "stack": (lambda a, b: ng.stack([a, b], 1), [S, S2]),
    # matmul
    "mm": (lambda a, b: a @ b, [S, X.T @ S]),
    "mm_self": (lambda a: a @ a.T, [S]),
    "mv": (lambda a, b: a @ b, [S, R3]),
    "vm": (lambda a, b: a @ b, [R3, S.T]),
    "dot": (lambda a, b: ng.dot(a, b), [R3, R3[::-1].copy()]),
    "bmm": (lambda a, b: a @ b, [C3, C3.transpose(0, 2, 1).copy()]),
    "batch_times_matrix": (lambda a, b: a @ b, [C3, S]),
    "matrix_times_batch": (lambda a, b: a @ b, [S2, C3]),
    "batch_times_vector": (lambda a, b: a @ b, [C3.transpose(0, 2, 1).copy(), R3]),
}


def _record(f, arrays):
    """Record f on fresh inputs: (tape, output node, input leaf nodes, output tensor)."""
    xs = [ng.tensor(a, requires_grad=True) for a in arrays]
    y = f(*xs)
    tape, node = resolve(y._tape, y._node)
    leaves = [[k for k, t, _ in tape.leaves if t is x][0] for x in xs]
    return tape, node, leaves, y


def _jvp(tape, node, leaves, vs, par_min=sweeps.PAR_MIN):
    ta = tape.arrays()
    tan_off, total = sweeps.plan_tangents(ta, np.array(leaves, dtype=np.int64), node + 1)
    tan = np.zeros(total)
    for k, v in zip(leaves, vs):
        tan[tan_off[k]:tan_off[k] + v.size] = v.ravel()
    sweeps.tangent_sweep(ta, tape.typed_chunks(), tan, tan_off, 0, node + 1, par_min)
    return tan[tan_off[node]:tan_off[node] + ta.sizes[node]].copy(), tan, tan_off


def _vjp(tape, node, w, par_min=sweeps.PAR_MIN):
    ta = tape.arrays()
    adj_off, total, status, *_ = sweeps.plan_adjoints(ta, np.array([node], dtype=np.int64))
    assert status == sweeps.OK
    adj = np.zeros(total)
    adj[adj_off[node]:adj_off[node] + w.size] = w.ravel()
    sweeps.reverse_sweep(ta, tape.typed_chunks(), adj, adj_off, node, par_min, 0)
    return adj, adj_off


def _hvp(tape, node, leaves, vs, par_min=sweeps.PAR_MIN):
    """H v of the scalar at ``node`` with respect to the leaves, one array per leaf."""
    _, tan, tan_off = _jvp(tape, node, leaves, vs, par_min)
    adj, adj_off = _vjp(tape, node, np.ones(1), par_min)
    adjdot = np.zeros_like(adj)
    sweeps.hvp_sweep(tape.arrays(), tape.typed_chunks(), tan, tan_off, adj, adjdot, adj_off, node,
                     par_min)
    return [adjdot[adj_off[k]:adj_off[k] + v.size].reshape(v.shape) for k, v in zip(leaves, vs)]


def _eager(f, arrays):
    with ng.no_grad():
        return np.asarray(f(*[ng.tensor(a) for a in arrays]), dtype=np.float64)


def _grads(f, arrays):
    xs = [ng.tensor(a, requires_grad=True) for a in arrays]
    f(*xs).backward()
    return [x.grad.numpy().copy() for x in xs]


def _directions(arrays, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(np.shape(a)) for a in arrays]


def _squared(f, w):
    return lambda *xs: (f(*xs) ** 2 * ng.tensor(w)).sum()


@pytest.mark.parametrize("name", list(CASES))
def test_jvp_matches_finite_differences_and_the_vjp(name):
    f, arrays = CASES[name]
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    tape, node, leaves, y = _record(f, arrays)
    vs = _directions(arrays, 1)
    jv, _, _ = _jvp(tape, node, leaves, vs)
    eps = 1e-6
    fd = (_eager(f, [a + eps * v for a, v in zip(arrays, vs)])
          - _eager(f, [a - eps * v for a, v in zip(arrays, vs)])) / (2 * eps)
    np.testing.assert_allclose(jv, fd.ravel(), rtol=1e-6, atol=1e-8)
    w = np.random.default_rng(2).standard_normal(tape.arrays().sizes[node])
    adj, adj_off = _vjp(tape, node, w)
    jtw = sum(adj[adj_off[k]:adj_off[k] + v.size] @ v.ravel() for k, v in zip(leaves, vs))
    np.testing.assert_allclose(w @ jv, jtw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_hvp_matches_finite_differences_of_gradients(name):
    f, arrays = CASES[name]
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    w = np.random.default_rng(3).standard_normal(_eager(f, arrays).shape)
    g = _squared(f, w)
    tape, node, leaves, _ = _record(g, arrays)
    vs, us = _directions(arrays, 4), _directions(arrays, 5)
    hv, hu = _hvp(tape, node, leaves, vs), _hvp(tape, node, leaves, us)
    eps = 1e-5
    plus = _grads(g, [a + eps * v for a, v in zip(arrays, vs)])
    minus = _grads(g, [a - eps * v for a, v in zip(arrays, vs)])
    for k in range(len(arrays)):
        np.testing.assert_allclose(hv[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-5, atol=1e-7,
                                   err_msg=f"input {k}")
    uhv = sum(np.sum(u * h) for u, h in zip(us, hv))
    vhu = sum(np.sum(v * h) for v, h in zip(vs, hu))
    np.testing.assert_allclose(uhv, vhu, rtol=1e-10, atol=1e-12)


def test_hessian_of_a_scalar_from_unit_tangents():
    # the full Hessian, column by column, of a small model with every curved family
    a = np.array([0.3, -0.5, 0.8, 0.1])
    M = np.array([[0.5, -1.0], [0.2, 0.7], [-0.4, 0.3], [1.1, 0.6]])

    def f(x):
        h = ng.tanh(x.reshape(1, 4) @ ng.tensor(M))
        return ng.logsumexp(ng.log_softmax(h * x[:2], 1) + ng.sigmoid(x[2:]) ** 2, 1).sum() \
            + (x * ng.exp(x)).sum() / ng.cos(x[0])

    tape, node, leaves, _ = _record(f, [a])
    H = np.stack([_hvp(tape, node, leaves, [e])[0] for e in np.eye(4)], axis=1)
    eps = 1e-5
    fd = np.stack([(_grads(f, [a + eps * e])[0] - _grads(f, [a - eps * e])[0]) / (2 * eps)
                   for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-7)


def test_ties_are_consistent_between_forward_and_reverse():
    # at a tie the derivative is a convention; the JVP must be the VJP's transpose
    x = np.array([[1.0, 3.0, 0.5], [3.0, 0.0, 0.5]])
    for f in (ng.max, ng.min, lambda t: ng.max(t, 1).values, lambda t: ng.min(t, 0).values,
              lambda t: ng.maximum(t, ng.tensor(x[::-1].copy()))):
        tape, node, leaves, _ = _record(f, [x])
        v = _directions([x], 6)
        jv, _, _ = _jvp(tape, node, leaves, v)
        w = np.random.default_rng(7).standard_normal(jv.size)
        adj, adj_off = _vjp(tape, node, w)
        np.testing.assert_allclose(w @ jv, adj[adj_off[leaves[0]]:adj_off[leaves[0]] + x.size]
                                   @ v[0].ravel(), rtol=1e-13)
    tape, node, leaves, _ = _record(ng.max, [x])
    jv, _, _ = _jvp(tape, node, leaves, [np.arange(6.0).reshape(2, 3)])
    assert jv[0] == (1.0 + 3.0) / 2  # whole-tensor max splits ties evenly


def test_only_seeded_inputs_carry_tangents():
    a = ng.tensor(S, requires_grad=True)
    b = ng.tensor(S2, requires_grad=True)
    y = ng.sin(a) * b + ng.exp(b) + ng.tensor(X)
    tape, node = resolve(y._tape, y._node)
    ka = [k for k, t, _ in tape.leaves if t is a][0]
    kb = [k for k, t, _ in tape.leaves if t is b][0]
    ta = tape.arrays()
    tan_off, total = sweeps.plan_tangents(ta, np.array([ka]), node + 1)
    assert tan_off[kb] == -1 and tan_off[node] >= 0
    assert total == sum(ta.sizes[k] for k in range(node + 1) if tan_off[k] >= 0)
    jv, _, _ = _jvp(tape, node, [ka], [np.ones_like(S)])
    np.testing.assert_allclose(jv, (np.cos(S) * S2).ravel(), rtol=1e-14)


def test_parallel_threshold_gives_the_same_tangents_and_hvps():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((40, 30)), rng.standard_normal(30)

    def f(x, y):
        h = ng.softmax(ng.tanh(x * y) + x ** 2, 1)
        return (ng.logsumexp(h, 0) * y).sum() + (ng.exp(-x) / (1 + y * y)).mean()

    vs = _directions([a, b], 9)
    out = []
    for par_min in (1 << 62, 1):
        tape, node, leaves, _ = _record(f, [a, b])
        jv, _, _ = _jvp(tape, node, leaves, vs, par_min)
        out.append((jv, _hvp(tape, node, leaves, vs, par_min)))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-12)
    for h0, h1 in zip(out[0][1], out[1][1]):
        np.testing.assert_allclose(h0, h1, rtol=1e-12, atol=1e-14)
