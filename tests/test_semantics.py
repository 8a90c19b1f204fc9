"""PyTorch semantics users rely on: names, reprs, errors, accumulation, grad mode, in-place."""
import gc
import threading
import warnings

import numpy as np
import pytest

import numbagrad as ng


def leaf(values):
    return ng.tensor(values, requires_grad=True)


@pytest.mark.parametrize("expr, name", [
    (lambda x: x + 2, "AddBackward0"), (lambda x: x + x, "AddBackward0"),
    (lambda x: x - 1, "SubBackward0"), (lambda x: x - x, "SubBackward0"),
    (lambda x: 1 - x, "RsubBackward1"), (lambda x: x * 2, "MulBackward0"),
    (lambda x: x / 2, "DivBackward0"), (lambda x: 2 / x, "DivBackward0"),
    (lambda x: x ** 2, "PowBackward0"), (lambda x: 2 ** x, "PowBackward1"),
    (lambda x: x ** x, "PowBackward1"), (lambda x: -x, "NegBackward0"),
    (lambda x: x.mean(), "MeanBackward0"), (lambda x: x.sum(), "SumBackward0"),
    (lambda x: x.sum(0), "SumBackward1"), (lambda x: x.exp(), "ExpBackward0"),
    (lambda x: x.log(), "LogBackward0"), (lambda x: x.tanh(), "TanhBackward0"),
    (lambda x: x.sigmoid(), "SigmoidBackward0"), (lambda x: x.relu(), "ReluBackward0"),
    (lambda x: x.sin(), "SinBackward0"), (lambda x: x.cos(), "CosBackward0"),
    (lambda x: x.sqrt(), "SqrtBackward0"), (lambda x: x.abs(), "AbsBackward0"),
    (lambda x: x.reshape(3, 1), "ViewBackward0"), (lambda x: x[0], "SelectBackward0"),
    (lambda x: x[1:], "SliceBackward0"), (lambda x: x[[0, 1]], "IndexBackward0"),
    (lambda x: ng.dot(x, x), "DotBackward0"),
    (lambda x: x.reshape(1, 3) @ x.reshape(3, 1), "MmBackward0"),
    (lambda x: x.reshape(3, 1).T.reshape(1, 3) @ x, "MvBackward0"),
    (lambda x: ng.cat([x, x]), "CatBackward0"), (lambda x: ng.stack([x, x]), "StackBackward0"),
    (lambda x: ng.softmax(x, 0), "SoftmaxBackward0"), (lambda x: x.max(), "MaxBackward1"),
    (lambda x: ng.where(x > 1, x, 0.0), "WhereBackward0"),
    (lambda x: x.clamp(0, 1), "ClampBackward1"),
])
def test_grad_fn_names(expr, name):
    y = expr(leaf([1.0, 2.0, 3.0]))
    assert y.grad_fn.name() == name
    assert f"grad_fn=<{name}>" in repr(y)


def test_graph_structure():
    x = leaf([1.0, 2.0])
    y = x + 2
    z = (y * y).mean()
    assert x.is_leaf and not y.is_leaf and x.grad_fn is None
    mul = z.grad_fn.next_functions[0][0]
    assert mul.name() == "MulBackward0"
    add = mul.next_functions[0][0]
    assert add.name() == "AddBackward0" and mul.next_functions[1][0] == add
    acc = add.next_functions[0][0]
    assert acc.name() == "AccumulateGrad" and acc.variable is x
    w = ng.tensor([1.0, 1.0])  # a constant operand has no function
    assert (x * w).grad_fn.next_functions[1] == (None, 0)


def test_repr_formats():
    assert repr(ng.tensor(10.2899)) == "tensor(10.2899)"
    assert repr(ng.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(ng.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(ng.tensor([True, False])) == "tensor([ True, False])"
    assert repr(ng.tensor([1e-5, 1.0])) == "tensor([1.0000e-05, 1.0000e+00])"
    assert repr(ng.tensor([[1.5, 2.0], [3.0, 4.0]])) == "tensor([[1.5000, 2.0000],\n        [3.0000, 4.0000]])"
    assert repr(ng.ones(2, dtype=ng.float32, requires_grad=True)) == \
        "tensor([1., 1.], dtype=float32, requires_grad=True)"
    assert repr(ng.zeros(0)) == "tensor([])"
    big = repr(ng.arange(2000.0))
    assert "..." in big and big.startswith("tensor([0.0000e+00, 1.0000e+00")
    assert repr(ng.tensor([float("nan"), 1.0])) == "tensor([nan, 1.])"


def test_errors_match_torch():
    x = ng.randn(3)
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a grad_fn"):
        (x * 2).sum().backward()
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of \(3,\) and output\[0\] has a shape of \(2,\)"):
        y.backward(ng.ones(3))
    w = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation."):
        w += 1
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        ng.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        ng.arange(3).requires_grad_()


def test_second_backward_through_freed_graph():
    x = leaf([1.0, 2.0])
    z = (x * x).sum()
    z.backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        z.backward()
    # a graph that saved no values can be swept again, as in torch
    y = (x + 1).sum()
    y.backward()
    y.backward()
    # retain_graph keeps it
    x.grad = None
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])


def test_branches_are_freed_separately():
    x = leaf([1.0, 2.0])
    h = x * 2
    a, b = h.sum(), (h * h).sum()
    a.backward()
    b.backward()  # b's own mul was never swept, so its saved values are still there
    np.testing.assert_array_equal(x.grad.numpy(), 2 + 8 * x.detach().numpy())


def test_modified_by_inplace_operation():
    x = leaf([1.0, 2.0])
    a = x * 2
    b = a * a
    a += 1  # a was saved by the second mul
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()
    w = leaf([1.0, 2.0])
    y = (w * w).sum()
    with ng.no_grad():
        w -= 1  # the leaf itself, saved by mul
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    # an in-place op whose old value nobody saved is fine, and its gradient is right
    v = leaf([1.0, 2.0])
    c = v + 0
    c *= 3
    assert c.grad_fn.name() == "MulBackward0"
    c.sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [3.0, 3.0])


def test_leaf_grads_accumulate_and_nonleaf_grads_stay_none():
    x = leaf([1.0, 2.0])
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 12.0])
    y = x * 2
    y.sum().backward()
    with pytest.warns(UserWarning, match="not a leaf Tensor"):
        assert y.grad is None
    y = x * 2
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), 2 * y.detach().numpy())


def test_sgd_step_under_no_grad():
    w = leaf([1.0, -1.0])
    for _ in range(50):
        loss = ((w - 3.0) ** 2).sum()
        loss.backward()
        with ng.no_grad():
            w -= 0.1 * w.grad
        w.grad.zero_()
    np.testing.assert_allclose(w.detach().numpy(), [3.0, 3.0], atol=1e-4)
    assert w.is_leaf and w.requires_grad


def test_grad_mode_switches():
    x = leaf([1.0])
    with ng.no_grad():
        assert not ng.is_grad_enabled()
        y = x * 2
        with ng.enable_grad():
            assert (x * 2).requires_grad
    assert not y.requires_grad and y.grad_fn is None
    assert ng.is_grad_enabled()

    @ng.no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad
    ng.set_grad_enabled(False)
    assert not ng.is_grad_enabled()
    ng.set_grad_enabled(True)
    with ng.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert ng.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with ng.no_grad():
        t = threading.Thread(target=lambda: seen.append(ng.is_grad_enabled()))
        t.start(); t.join()
    assert seen == [True]


def test_autograd_grad_returns_tuple_and_leaves_grad_alone():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, 4.0])
    y = (x * w).sum()
    gx, gw = ng.grad(y, (x, w))
    np.testing.assert_array_equal(gx.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(gw.numpy(), [1.0, 2.0])
    assert x.grad is None and w.grad is None
    h = x * 2  # a non-leaf input
    (gh,) = ng.grad((h * h).sum(), h)
    np.testing.assert_array_equal(gh.numpy(), 2 * h.detach().numpy())
    u = leaf([1.0])
    with pytest.raises(RuntimeError, match="appears to not have been used"):
        ng.grad((x * 2).sum(), [u])
    assert ng.grad((x * 2).sum(), [x, u], allow_unused=True)[1] is None
    v = x * 2
    (g,) = ng.grad(v, x, grad_outputs=ng.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(g.numpy(), [2.0, 20.0])


def test_graphs_recorded_apart_then_joined():
    x = leaf([1.0, 2.0])
    a = x * 3       # one graph
    b = ng.exp(x)   # another
    c = a * b       # joins them
    c.sum().backward()
    xv = x.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp(xv) + 3 * xv * np.exp(xv))


def test_training_loop_memory_is_freed():
    import weakref
    w = leaf(np.ones(100))
    refs = []
    for _ in range(200):
        loss = (ng.tanh(w) ** 2).sum()
        refs.append(weakref.ref(loss._tape))
        loss.backward()
    del loss
    gc.collect()
    assert sum(r() is not None for r in refs) == 0  # no tape outlives its step


def test_conversions():
    t = ng.tensor([[1.0, 2.0]])
    assert np.asarray(t).shape == (1, 2)
    assert np.asarray(leaf([1.0]).detach()).tolist() == [1.0]  # detached: its values
    with pytest.raises(RuntimeError, match="detach"):
        np.asarray(leaf([1.0]))  # PyTorch's numpy() rule: no silent detach
    with pytest.raises(RuntimeError, match="Use tensor.detach"):
        leaf([1.0]).numpy()
    assert t.tolist() == [[1.0, 2.0]] and t.size() == (1, 2) and t.size(1) == 2
    assert t.numel() == 2 and t.ndim == 2 and t.dim() == 2 and t.shape == (1, 2)
    assert ng.tensor(3.5).item() == 3.5 and float(ng.tensor([2.0])) == 2.0
    with pytest.raises(RuntimeError, match="cannot be converted to Scalar"):
        t.item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(t)
    assert (t > 1).dtype == np.bool_ and not (t > 1).requires_grad
    assert (leaf([1.0]) > 0).requires_grad is False
    a = np.zeros(3)
    shared = ng.from_numpy(a)
    a[0] = 1
    assert shared[0].item() == 1.0
    d = leaf([1.0, 2.0]).detach()
    assert d.is_leaf and not d.requires_grad


def test_reflected_and_numpy_operands():
    x = leaf([1.0, 2.0])
    for y, expect in [(2 - x, [-1.0, -1.0]), (2 / x, [-2.0, -0.5]), (2 ** x, np.log(2) * 2 ** np.array([1.0, 2.0])),
                      (np.array([1.0, 3.0]) * x, [1.0, 3.0]), (x @ np.array([1.0, 2.0]), [1.0, 2.0])]:
        assert isinstance(y, ng.Tensor)
        x.grad = None
        y.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), expect)


def test_dtype_promotion():
    f32 = ng.ones(2, dtype=ng.float32)
    assert (f32 * 2.5).dtype == np.float32
    assert (f32 * ng.ones(2)).dtype == np.float64
    assert (f32 * ng.tensor(2.0)).dtype == np.float32  # a 0-d tensor defers, as in torch
    assert (ng.arange(3) * 1.5).dtype == np.float64
    assert (ng.arange(3) / 2).dtype == np.float64
    assert (ng.arange(3) * 2).dtype == np.int64
    assert ng.tensor([1.5]).dtype == ng.get_default_dtype() == np.float64
    ng.set_default_dtype(ng.float32)
    try:
        assert ng.tensor([1.5]).dtype == np.float32 and ng.randn(2).dtype == np.float32
    finally:
        ng.set_default_dtype(ng.float64)


@pytest.mark.parametrize("bad, err, match", [
    (lambda: ng.ones(2, 3) + ng.ones(4), RuntimeError, r"size of tensor a \(3\) must match the size of tensor b \(4\)"),
    (lambda: ng.ones(2, 3) @ ng.ones(4, 5), RuntimeError, r"mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)"),
    (lambda: ng.dot(ng.ones(3), ng.ones(4)), RuntimeError, "inconsistent tensor size"),
    (lambda: ng.ones(2).sum(dim=3), IndexError, "Dimension out of range"),
    (lambda: ng.tensor(["a"]), TypeError, "convert"),
    (lambda: ng.tensor([[1.0], [1.0, 2.0]]), ValueError, "ragged"),
    (lambda: ng.ones(6).reshape(4, 2), RuntimeError, "invalid for input of size 6"),
    (lambda: ng.ones(0).max(), RuntimeError, "numel"),
    (lambda: ng.cat([ng.ones(2, 3), ng.ones(2, 4)]), RuntimeError, "Sizes of tensors must match"),
    (lambda: ng.ones(2)[5], IndexError, "out of bounds"),
    (lambda: ng.randn(-1), RuntimeError, "negative dimension"),
    (lambda: ng.ones(2).backward(ng.tensor([float("nan"), 1.0])), RuntimeError, "does not require grad"),
])
def test_bad_input_gets_clear_errors(bad, err, match):
    with pytest.raises(err, match=match):
        bad()


def test_creation_functions():
    ng.manual_seed(7)
    a = ng.randn(2, 3)
    ng.manual_seed(7)
    assert np.array_equal(a.numpy(), ng.randn((2, 3)).numpy())
    assert ng.rand(4).numpy().min() >= 0
    assert ng.zeros(2, 2).sum().item() == 0 and ng.ones(3).sum().item() == 3
    assert ng.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert ng.zeros_like(a).shape == a.shape and ng.ones_like(a).dtype == a.dtype
    assert ng.arange(5).tolist() == [0, 1, 2, 3, 4] and ng.arange(0.0, 1.0, 0.5).tolist() == [0.0, 0.5]
    assert ng.linspace(0, 1, 3).tolist() == [0.0, 0.5, 1.0]
    assert np.array_equal(ng.eye(2).numpy(), np.eye(2))
    assert ng.as_tensor(np.ones(2)).dtype == np.float64
    assert ng.randn(3, requires_grad=True).requires_grad
    assert ng.zeros(2, dtype=ng.float32).dtype == np.float32


def test_nan_seed_is_rejected():
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(ValueError, match="NaN"):
        y.backward(ng.tensor([float("nan"), 1.0]))


def test_comparisons_are_recorded_without_gradient():
    x = leaf([-1.0, 2.0])
    mask = x > 0
    assert mask.dtype == np.bool_ and not mask.requires_grad
    assert mask.is_leaf and mask.grad_fn is None and repr(mask) == "tensor([False,  True])"
    assert mask._tape is not None  # on the tape, so that a replay recomputes it
    y = ng.where(mask, x * 3, x * 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 3.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        mask.float().sum().backward()


def test_python_reads_of_recorded_values_are_noted_as_guards():
    x = leaf([1.0, -2.0])
    s = (x * 2).sum()
    if s.item() > 0 or bool(s < 0):
        pass
    kinds = [(how, kind) for _, kind, _, how in s._tape.guards]
    assert ("item()", 0) in kinds and ("bool()", 1) in kinds


def test_division_by_zero_gives_inf_and_nan_in_every_sweep():
    # PyTorch computes x / 0 as inf (0 / 0 as nan) without raising; so do the eager path and the
    # Numba sweeps (error_model="numpy": no ZeroDivisionError, and loops with divisions vectorise)
    x = np.array([0.0, 1.0, -2.0])
    t = ng.tensor(x, requires_grad=True)
    (1 / t).sum().backward()
    eager = t.grad.numpy()
    assert eager[0] == -np.inf and eager[1] == -1.0
    tr = ng.trace(lambda x: (1 / x).sum(), x)
    assert tr(x) == np.inf
    np.testing.assert_array_equal(tr.grad(x), eager)
    f = lambda x: (x / x[:1]).sum()  # noqa: E731  (0 / 0 on the way)
    t = ng.tensor(x, requires_grad=True)
    f(t).backward()
    np.testing.assert_array_equal(ng.trace(f, x).grad(x), t.grad.numpy())  # [nan, inf, inf]


def test_every_compiled_function_uses_the_ieee_error_model():
    # a kernel compiled with Numba's default error model raises ZeroDivisionError mid-sweep
    import pathlib
    import re
    src = pathlib.Path(ng.__file__).parent
    plain = [f"{p.name}: {m.group(0)}" for p in sorted(src.glob("*.py"))
             for m in re.finditer(r"njit\([^)]*\)", p.read_text()) if "**IEEE" not in m.group(0)]
    assert not plain, plain
