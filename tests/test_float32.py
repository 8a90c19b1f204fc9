"""float32 end to end: values and gradients stay float32."""
import numpy as np

import numbagrad as ng
from numbagrad.tape import OWN_CHUNK


def test_float32_graph_keeps_float32(rng):
    x = ng.tensor(rng.standard_normal(5).astype(np.float32), requires_grad=True)
    w = ng.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
    y = ng.softmax(ng.tanh(x @ w) * 2.0 + 1.0, 0)
    assert y.dtype == np.float32 and y._tape.dtype == np.float32
    loss = (y * ng.arange(3.0, dtype=ng.float32)).sum()
    loss.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
    # same gradient as the float64 computation, to float32 accuracy
    x64 = ng.tensor(x.detach().numpy().astype(np.float64), requires_grad=True)
    w64 = ng.tensor(w.detach().numpy().astype(np.float64), requires_grad=True)
    (ng.softmax(ng.tanh(x64 @ w64) * 2.0 + 1.0, 0) * ng.arange(3.0)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x64.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), w64.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_large_float32_tensor(rng):
    x = ng.tensor(rng.standard_normal(OWN_CHUNK * 4).astype(np.float32), requires_grad=True)
    (2 * (x + 2) ** 2).mean().backward()
    expected = 4 * (x.detach().numpy().astype(np.float64) + 2) / x.numel()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5)


def test_float32_meets_float64():
    a = ng.ones(3, dtype=ng.float32, requires_grad=True)
    b = ng.ones(3, dtype=ng.float64, requires_grad=True)
    fa = a * 3  # a float32 graph ...
    fb = b * 2  # ... and a float64 one, joined: the result is float64, as in torch
    z = (fa * fb).sum()
    assert z.dtype == np.float64
    z.backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad.numpy(), [6, 6, 6])
    np.testing.assert_array_equal(b.grad.numpy(), [6, 6, 6])
