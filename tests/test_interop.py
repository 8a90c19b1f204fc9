"""NumPy's protocols on Tensors: np calls record like the ng calls, or refuse to drop a gradient."""
import numpy as np
import pytest

import numbagrad as ng


def _leaf(rng, *shape, positive=False):
    a = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
    return ng.tensor(a, requires_grad=True)


def _same_as_ng(np_call, ng_call, *arrays):
    """np_call and ng_call on fresh leaves record the same grad_fn and give the same values and
    gradients."""
    results = []
    for call in (np_call, ng_call):
        xs = [ng.tensor(a, requires_grad=True) for a in arrays]
        y = call(*xs)
        assert isinstance(y, ng.Tensor), f"{call} returned {type(y).__name__}"
        y.sum().backward()
        results.append((y.grad_fn.name(), y.detach().numpy(), [x.grad.numpy() for x in xs]))
    (name_np, val_np, g_np), (name_ng, val_ng, g_ng) = results
    assert name_np == name_ng
    np.testing.assert_allclose(val_np, val_ng)
    for a, b in zip(g_np, g_ng):
        np.testing.assert_allclose(a, b)


UNARY = [
    (np.exp, ng.exp), (np.log, ng.log), (np.sqrt, ng.sqrt), (np.sin, ng.sin), (np.cos, ng.cos),
    (np.tan, ng.tan), (np.tanh, ng.tanh), (np.negative, ng.neg), (np.abs, ng.abs),
    (np.square, lambda x: x ** 2),
]


@pytest.mark.parametrize("np_f,ng_f", UNARY, ids=[u[0].__name__ for u in UNARY])
def test_unary_ufuncs_record_like_ng(rng, np_f, ng_f):
    _same_as_ng(np_f, ng_f, rng.random((3, 2)) + 0.5)


BINARY = [
    (np.add, ng.add), (np.subtract, ng.sub), (np.multiply, ng.mul), (np.divide, ng.div),
    (np.power, ng.pow), (np.maximum, ng.maximum), (np.minimum, ng.minimum),
]


@pytest.mark.parametrize("np_f,ng_f", BINARY, ids=[b[0].__name__ for b in BINARY])
def test_binary_ufuncs_record_like_ng(rng, np_f, ng_f):
    _same_as_ng(np_f, ng_f, rng.random((3, 2)) + 0.5, rng.random(2) + 0.5)


def test_functions_record_like_ng(rng):
    A, v = rng.standard_normal((3, 4)), rng.standard_normal(4)
    _same_as_ng(lambda x: np.sum(x), lambda x: x.sum(), A)
    _same_as_ng(lambda x: np.sum(x, axis=1, keepdims=True), lambda x: x.sum(1, True), A)
    _same_as_ng(lambda x: np.mean(x, axis=0), lambda x: x.mean(0), A)
    _same_as_ng(lambda x: np.max(x), lambda x: x.max(), A)
    _same_as_ng(lambda x: np.min(x, axis=1), lambda x: x.min(1).values, A)
    _same_as_ng(np.matmul, ng.matmul, A, v)
    _same_as_ng(np.dot, ng.matmul, A.T, A)
    _same_as_ng(lambda x: np.clip(x, -0.5, 0.5), lambda x: ng.clamp(x, -0.5, 0.5), A)
    _same_as_ng(lambda x: np.where(x > 0, x, 0.1 * x),
                lambda x: ng.where(x > 0, x, 0.1 * x), A)
    _same_as_ng(lambda x, y: np.concatenate([x, y], axis=1), lambda x, y: ng.cat([x, y], 1),
                A, A)
    _same_as_ng(lambda x, y: np.stack([x, y]), lambda x, y: ng.stack([x, y]), A, A)
    _same_as_ng(lambda x: np.reshape(x, (2, 6)), lambda x: x.reshape(2, 6), A)
    _same_as_ng(lambda x: np.transpose(x), lambda x: x.T, A)
    _same_as_ng(lambda x: np.expand_dims(x, 0), lambda x: x.unsqueeze(0), A)
    _same_as_ng(lambda x: np.broadcast_to(x, (2, 3, 4)), lambda x: x.expand(2, 3, 4), A)


def test_mixed_ndarray_tensor_arithmetic_keeps_gradient_both_orders(rng):
    a = rng.random(3) + 0.5
    M = rng.standard_normal((3, 3))
    x = _leaf(rng, 3, positive=True)
    terms = [a + x, x + a, a - x, x - a, a * x, x * a, a / x, x / a, a ** x, x ** a,
             M @ x, x @ M]
    for t in terms:
        assert isinstance(t, ng.Tensor) and t.requires_grad
    sum(t.sum() for t in terms).backward()
    xv = x.detach().numpy()
    expected = (1 + 1 - 1 + 1 + a + a - a / xv ** 2 + 1 / a + a ** xv * np.log(a)
                + a * xv ** (a - 1) + M.sum(0) + M.sum(1))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_numpy_scalars_both_orders(rng):
    x = _leaf(rng, 3)
    y = x * np.float64(2) + np.float64(3) * x - np.float32(1) - x / np.float64(4)
    assert y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 2 + 3 - 0.25))
    # a NumPy scalar is a weak scalar, as in PyTorch: a float32 tensor stays float32
    assert (ng.ones(2, dtype=ng.float32) * np.float64(2)).dtype == np.float32


def test_comparisons_from_ndarrays_are_tensors(rng):
    x = _leaf(rng, 4)
    m = np.zeros(4) < x
    assert isinstance(m, ng.Tensor) and m.dtype == np.bool_
    np.testing.assert_array_equal(m.numpy(), x.detach().numpy() > 0)


def test_asarray_of_a_tensor_that_requires_grad_raises(rng):
    # PyTorch's numpy() rule: np.asarray / np.array would detach silently
    x = _leaf(rng, 3)
    y = x * 2
    for conv in (np.asarray, np.array, np.asanyarray):
        with pytest.raises(RuntimeError, match=r"requires grad.*detach\(\)"):
            conv(y)
    a = np.asarray(y.detach())     # detaching on purpose is the way
    assert type(a) is np.ndarray
    np.testing.assert_array_equal(a, 2 * x.detach().numpy())
    with ng.no_grad():             # no gradient at stake: the values, as before
        np.testing.assert_array_equal(np.asarray(y), a)
        np.testing.assert_array_equal(np.mean([y, y], axis=0), a)
    assert y.requires_grad         # y itself keeps its history
    assert np.asarray(ng.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]   # no grad: values


@pytest.mark.parametrize("call, name", [
    (lambda x: np.mean([x, x + 2]), "np.mean"),
    (lambda x: np.linalg.norm([x, x + 2]), "np.linalg.norm"),
    (lambda x: np.array([x, 2 * x]).sum(), "np.asarray / np.array"),
    (lambda x: np.r_[x, x], r"np.r_\[...\]"),
    (lambda x: np.append([[x, x]], [[x]]), "np.append"),
    (lambda x: np.sum([[x], [x]]), "np.sum"),
    (lambda x: np.concatenate([[x], [x]]), "np.asarray / np.array"),
])
def test_tensors_in_lists_never_lose_their_gradient_silently(call, name):
    # each of these returned a NumPy float before: no tensor, no error, no gradient
    x = ng.tensor(1.5, requires_grad=True)
    with pytest.raises(RuntimeError, match=name.replace(".", r"\.") + ".*drop its gradient"):
        call(x)
    with ng.no_grad():
        assert not isinstance(call(x), ng.Tensor)   # grad mode off: NumPy's answer, on values


def test_lists_of_tensors_record_through_stack():
    # the way the error points to: stack first, then NumPy's function records
    x = ng.tensor(1.5, requires_grad=True)
    m = np.mean(ng.stack([x, x + 2]))
    assert isinstance(m, ng.Tensor) and m.item() == pytest.approx(2.5)
    m.backward()
    assert x.grad.item() == pytest.approx(1.0)
    # ng.tensor of nested lists of tensors copies their values into a new leaf (no raise)
    t = ng.tensor([[x, x + 1]])
    assert t.tolist() == [[1.5, 2.5]] and t.is_leaf and not t.requires_grad


@pytest.mark.parametrize("call, name", [
    (lambda x: np.cumsum(x), "np.cumsum"),
    (lambda x: np.arctan(x), "np.arctan"),
    (lambda x: np.linalg.norm(x), "np.linalg.norm"),
    (lambda x: np.sum(x, dtype=np.float32), "np.sum"),
    (lambda x: np.exp(x, out=np.empty(3)), "np.exp"),
    (lambda x: np.add.accumulate(x), "np.add.accumulate"),
])
def test_missing_function_raises_naming_it(rng, call, name):
    x = _leaf(rng, 3)
    with pytest.raises(TypeError, match=name.replace(".", r"\.")):
        call(x)
    with pytest.raises(TypeError, match="requires grad"):
        call(x * 1.0)    # a computed tensor carries the gradient too


def test_inplace_into_ndarray_would_drop_gradient(rng):
    x = _leaf(rng, 3)
    a = np.zeros(3)
    with pytest.raises(TypeError, match="np.add"):
        a += x
    np.testing.assert_array_equal(a, 0)


def test_without_gradient_numpy_runs_on_the_values():
    t = ng.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.cumsum(t), [1.0, 3.0, 6.0])
    assert np.shape(t) == (3,) and np.ndim(t) == 1
    x = ng.tensor([1.0, 2.0], requires_grad=True)
    with ng.no_grad():
        np.testing.assert_allclose(np.linalg.norm(x), np.sqrt(5.0))
    np.testing.assert_allclose(np.linalg.norm(x.detach()), np.sqrt(5.0))


def test_trace_replays_numpy_calls(rng):
    def f(x):
        return np.sum(np.tanh(np.matmul(W, x)) ** 2) + np.mean(np.exp(x))

    W = rng.standard_normal((4, 3))
    x0 = rng.standard_normal(3)
    g = ng.trace(f, x0)
    x1 = rng.standard_normal(3)
    xt = ng.tensor(x1, requires_grad=True)
    f(xt).backward()
    np.testing.assert_allclose(g.grad(x1), xt.grad.numpy(), rtol=1e-12)
