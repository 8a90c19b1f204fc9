"""Every op's gradient against central finite differences (float64), broadcasting included."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numbagrad as ng
from conftest import check_grads

UNARY = {
    "exp": (ng.exp, "any"), "log": (ng.log, "pos"), "sin": (ng.sin, "any"), "cos": (ng.cos, "any"),
    "tan": (ng.tan, "small"), "tanh": (ng.tanh, "any"), "sigmoid": (ng.sigmoid, "any"),
    "relu": (ng.relu, "nonzero"), "sqrt": (ng.sqrt, "pos"), "abs": (ng.abs, "nonzero"),
    "neg": (lambda x: -x, "any"), "add_c": (lambda x: x + 2.5, "any"), "sub_c": (lambda x: x - 2.5, "any"),
    "rsub_c": (lambda x: 2.5 - x, "any"), "mul_c": (lambda x: x * 3.0, "any"),
    "div_c": (lambda x: x / 3.0, "any"), "rdiv_c": (lambda x: 2.0 / x, "pos"),
    "pow_c": (lambda x: x ** 3, "any"), "pow_frac": (lambda x: x ** 1.5, "pos"),
    "rpow_c": (lambda x: 2.0 ** x, "any"), "clamp": (lambda x: ng.clamp(x, -0.5, 0.5), "nonzero"),
    "clamp_min": (lambda x: x.clamp(min=0.2), "nonzero"), "method_pow": (lambda x: x.pow(2), "any"),
}


def sample(rng, shape, kind):
    x = rng.standard_normal(shape)
    if kind == "pos":
        return np.abs(x) + 0.5
    if kind == "small":
        return np.clip(x, -1.2, 1.2)
    if kind == "nonzero":  # keep away from kinks, where finite differences are meaningless
        return np.where(np.abs(x) < 0.1, 0.3, x) + np.where(np.abs(np.abs(x) - 0.5) < 0.05, 0.1, 0)
    return x


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, rng):
    f, kind = UNARY[name]
    check_grads(f, sample(rng, (2, 3), kind))


BINARY = {
    "add": (lambda a, b: a + b, "any"), "sub": (lambda a, b: a - b, "any"),
    "mul": (lambda a, b: a * b, "any"), "div": (lambda a, b: a / b, "pos"),
    "pow": (lambda a, b: a ** b, "pos"), "maximum": (ng.maximum, "any"),
    "minimum": (ng.minimum, "any"), "where": (lambda a, b: ng.where(a > b, a, b), "any"),
}
SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((2, 3), (2, 1)), ((2, 1, 3), (4, 3)), ((), (2, 2)),
          ((4, 1), (1, 5)), ((2, 3, 4), (3, 1))]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_broadcast(name, shapes, rng):
    f, kind = BINARY[name]
    out = check_grads(f, sample(rng, shapes[0], kind), sample(rng, shapes[1], kind))
    assert out.shape == np.broadcast_shapes(*shapes)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=3), st.data())
def test_mul_broadcast_random_shapes(shape, data):
    # the second operand keeps a random subset of trailing axes, others set to 1
    nd = data.draw(st.integers(0, len(shape)))
    other = [s if data.draw(st.booleans()) else 1 for s in shape[len(shape) - nd:]]
    rng = np.random.default_rng(len(shape) * 7 + nd)
    check_grads(lambda a, b: a * b + b, rng.standard_normal(shape), rng.standard_normal(other))


REDUCTIONS = {
    "sum": lambda x: x.sum(), "sum_dim": lambda x: x.sum(dim=1),
    "sum_dims_keep": lambda x: x.sum(dim=(0, 2), keepdim=True), "sum_axis": lambda x: x.sum(axis=-1),
    "mean": lambda x: x.mean(), "mean_dims": lambda x: x.mean(dim=(0, 1)),
    "max": lambda x: x.max(), "min": lambda x: x.min(), "max_dim": lambda x: x.max(dim=1).values,
    "min_dim_keep": lambda x: x.min(dim=0, keepdim=True)[0],
    "logsumexp": lambda x: ng.logsumexp(x, 2), "logsumexp_dims": lambda x: ng.logsumexp(x, (0, 2)),
    "softmax": lambda x: ng.softmax(x, 1) * ng.arange(3.0).reshape(3, 1),
    "log_softmax": lambda x: ng.log_softmax(x, -1) * ng.arange(4.0),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions(name, rng):
    check_grads(REDUCTIONS[name], rng.standard_normal((2, 3, 4)))


STRUCTURE = {
    "reshape": lambda x: x.reshape(4, 6) * ng.arange(6.0),
    "view": lambda x: x.view(-1) * ng.arange(24.0),
    "flatten": lambda x: x.flatten(1) * ng.arange(12.0),
    "T": lambda x: x.reshape(6, 4).T * ng.arange(6.0),
    "transpose": lambda x: x.transpose(0, 2) * ng.arange(2.0),
    "permute": lambda x: x.permute(2, 0, 1) * ng.arange(3.0),
    "index_int": lambda x: x[1] * 2, "index_slice": lambda x: x[:, 1:, ::2] ** 2,
    "index_array": lambda x: x[[0, 0, 1]] * 3, "index_none": lambda x: x[None, ..., 0] * 2,
    "index_mask": lambda x: x[x > 0] ** 2,
    "unsqueeze_squeeze": lambda x: x.unsqueeze(1).squeeze(1) * x,
    "expand": lambda x: x[:, :1].expand(2, 3, 4) * ng.arange(4.0),
    "clone": lambda x: x.clone() * x,
    "cat": lambda x: ng.cat([x, x[:, :1] * 2, x], dim=1) ** 2,
    "stack": lambda x: ng.stack([x, 2 * x], dim=-1) * ng.arange(2.0),
}


@pytest.mark.parametrize("name", sorted(STRUCTURE))
def test_structure(name, rng):
    check_grads(STRUCTURE[name], rng.standard_normal((2, 3, 4)))


MATMUL = [((3, 4), (4, 2)), ((3, 4), (4,)), ((4,), (4, 2)), ((4,), (4,)), ((2, 3, 4), (2, 4, 5)),
          ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3))]


@pytest.mark.parametrize("shapes", MATMUL, ids=str)
def test_matmul(shapes, rng):
    out = check_grads(lambda a, b: a @ b, rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]))
    assert out.shape == np.matmul(np.ones(shapes[0]), np.ones(shapes[1])).shape


def test_dot_and_composite_graph(rng):
    check_grads(lambda a, b: ng.dot(a, b) * ng.tanh(a).sum(), rng.standard_normal(5),
                rng.standard_normal(5))
    check_grads(lambda w, x: ng.log_softmax(ng.tanh(x @ w) @ w.T, 1).mean(),
                rng.standard_normal((4, 4)), rng.standard_normal((3, 4)))


def test_reused_operand_and_diamond(rng):
    # x feeds several ops; gradients from every path add up
    check_grads(lambda x: ng.sin(x) * ng.exp(x) + x * x - ng.sin(x) / (1 + x * x),
                rng.standard_normal((3, 2)))


def test_kink_conventions_match_torch():
    x = ng.tensor([0.0, 0.0, 0.0, 1.0], requires_grad=True)
    (ng.relu(x[0]) + ng.abs(x[1]) + ng.maximum(x[2], ng.tensor(0.0)) + x[3].clamp(max=1.0)).backward()
    # relu'(0) = 0, abs'(0) = 0, maximum ties split the gradient, clamp's bounds are inclusive
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.5, 1.0])
    y = ng.tensor([1.0, 3.0, 3.0], requires_grad=True)
    y.max().backward()  # whole-tensor max shares the gradient among ties
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.5, 0.5])
    z = ng.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    z.max(dim=1).values.sum().backward()  # max along a dim sends it to the index it returns
    np.testing.assert_array_equal(z.grad.numpy(), [[0.0, 1.0, 0.0]])
    b = ng.tensor([0.0, 2.0], requires_grad=True)
    (b ** 0).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0])


def test_large_tensors_take_the_parallel_path(rng):
    from numbagrad.sweeps import PAR_MIN
    n = PAR_MIN * 2
    x = ng.tensor(rng.standard_normal(n), requires_grad=True)
    b = ng.tensor(rng.standard_normal(n), requires_grad=True)
    (ng.tanh(x) * b + ng.exp(-x * x)).sum().backward()
    xv, bv = x.detach().numpy(), b.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), (1 - np.tanh(xv) ** 2) * bv - 2 * xv * np.exp(-xv * xv),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), np.tanh(xv), rtol=1e-12)


@pytest.mark.parametrize("shapes", [((12, 5), (5, 3)), ((16, 7), (7,)), ((2, 9, 4), (2, 4, 3))],
                         ids=str)
def test_matmul_adjoint_from_a_few_seeded_rows(shapes, rng):
    # one seeded output row (a Jacobian row) takes matmul_vjp's sparse-row path; all rows its
    # dense BLAS path: both must give what the analytic adjoint gives
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    out_shape = np.matmul(a, b).shape
    for seed in (np.eye(1, int(np.prod(out_shape)), 3).reshape(out_shape),
                 rng.standard_normal(out_shape)):
        ta, tb = ng.tensor(a, requires_grad=True), ng.tensor(b, requires_grad=True)
        (ta @ tb).backward(ng.tensor(seed))
        A, B, G = a, b[..., None] if b.ndim == 1 else b, seed[..., None] if b.ndim == 1 else seed
        np.testing.assert_allclose(ta.grad.numpy(), G @ np.swapaxes(B, -1, -2), rtol=1e-12)
        np.testing.assert_allclose(tb.grad.numpy().reshape(-1),
                                   (np.swapaxes(A, -1, -2) @ G).sum(
                                       axis=tuple(range(G.ndim - b.ndim))).reshape(-1)
                                   if b.ndim > 1 else (A.T @ G).reshape(-1), rtol=1e-12)


def test_jacobian_rows_of_a_matrix_product_skip_zero_rows():
    # W5's shape of graph: row r of the Jacobian of tanh(A @ x) seeds only output r, and the
    # rows of A that the seed does not reach are not multiplied by 0 (an inf there stays out)
    rng = np.random.default_rng(0)
    A, x = rng.standard_normal((20, 30)), rng.standard_normal(30)
    A[0, 5] = np.inf
    J = ng.trace(lambda v: ng.tanh(ng.tensor(A[1:]) @ v), x).jacobian(x)
    t = np.tanh(A[1:] @ x)
    np.testing.assert_allclose(J, (1 - t * t)[:, None] * A[1:], rtol=1e-9, atol=1e-15)
    J = ng.trace(lambda v: ng.tanh(ng.tensor(A) @ v), x).jacobian(x)
    assert np.isfinite(J[1:]).all()


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_bias_rows_broadcast_both_ways(op, rng):
    # a trailing block (a bias row) against a full operand runs row by row (kernels._by_rows)
    f = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
         "/": lambda a, b: a / b}[op]
    full, row = rng.standard_normal((6, 5)), rng.standard_normal(5) + 3.0
    check_grads(lambda a, b: f(a, b).sum() + f(b, a).sum(), full, row)
    check_grads(lambda a, b: (f(a, b) * f(b, a)).sum(), rng.standard_normal((3, 4, 5)),
                rng.standard_normal((4, 5)) + 3.0)


SLICES = [  # (input shape, selection, positions the tape keeps)
    ((12,), lambda v: v[1:], 1), ((12,), lambda v: v[2:7], 1), ((12,), lambda v: v[:-1], 1),
    ((12,), lambda v: v[4:5], 1), ((12,), lambda v: v[::2], 6), ((12,), lambda v: v[::-1], 12),
    ((12,), lambda v: v[[1, 1, 3]], 3), ((4, 6), lambda v: v[1:3], 1), ((4, 6), lambda v: v[2], 1),
    ((4, 6), lambda v: v[:, 1:3], 8), ((4, 6), lambda v: v[1:, None], 1),
    ((2, 3, 4), lambda v: v[1, 1:], 1), ((2, 3, 4), lambda v: v[:, 1], 8),
]


@pytest.mark.parametrize("case", range(len(SLICES)))
def test_basic_slices_keep_one_position_and_differentiate_like_the_others(case, rng):
    # a contiguous run (a basic slice) is recorded as its first position alone; gradient,
    # tangent and a replay at a new point agree with the ones of explicit positions
    shape, f, kept = SLICES[case]
    x = rng.standard_normal(shape)
    t = ng.tensor(x, requires_grad=True)
    y = f(t)
    arrays = y._tape.arrays()
    assert arrays.iparam_ptr[y._node + 1] - arrays.iparam_ptr[y._node] == kept
    check_grads(lambda v: f(v) * f(v), x)
    w = rng.standard_normal(shape)
    _, jv = ng.functional.jvp(lambda v: (f(v) ** 3).sum(), x, w)
    assert np.isclose(jv, (3 * f(x) ** 2 * f(w)).sum())
    g = ng.trace(lambda v: (f(v) * f(v)).sum(), x)
    x2 = rng.standard_normal(shape)
    _, grad = g.value_and_grad(x2)
    want = ng.tensor(x2, requires_grad=True)
    (f(want) * f(want)).sum().backward()
    np.testing.assert_allclose(grad, want.grad.numpy(), rtol=1e-12)


def test_gather_adjoints_of_runs_and_of_scattered_indices(rng):
    # a basic slice reads one run of its operand (gather_vjp's one-loop path); strided,
    # repeated, 2-d and empty selections take the per-index path or none
    x = rng.standard_normal(12)
    check_grads(lambda v: (v[2:7] * v[3:8]).sum(), x)
    check_grads(lambda v: (v[::2] ** 2).sum() + (v[[1, 1, 3]] * 3.0).sum(), x)
    check_grads(lambda v: (v[5:5].sum() + v[4:].sum()) * v[:1].sum(), x)
    m = rng.standard_normal((4, 6))
    check_grads(lambda v: (v[1:3] ** 2).sum() + (v[:, 1:3] * v[:, 2:4]).sum(), m)
    t = ng.tensor(x, requires_grad=True)
    (t[2:5] * ng.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0])
