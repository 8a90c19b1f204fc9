"""Large eager arithmetic on every core (numbagrad/bulk.py): NumPy's values to the bit."""
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import bulk, ops
from numbagrad.sweeps import PAR_MIN

N = PAR_MIN + 77  # above the threshold, not a multiple of anything a loop splits by

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 2.2e-308, 1e308, -1e308,
           1.0, -1.0, 3.0, 0.1]


def _operands(dtype, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(N) * 10.0 ** rng.integers(-30, 30, N)).astype(dtype)
    b = (rng.standard_normal(N) * 10.0 ** rng.integers(-30, 30, N)).astype(dtype)
    # every pair of special values somewhere in the arrays
    with np.errstate(over="ignore"):  # 1e308 is inf in float32
        pairs = np.array([(x, y) for x in SPECIAL for y in SPECIAL], dtype=dtype)
    a[:len(pairs)], b[:len(pairs)] = pairs[:, 0], pairs[:, 1]
    return a, b


def _same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    bits = np.int64 if want.dtype == np.float64 else np.int32
    assert np.array_equal(got[~nan].view(bits), want[~nan].view(bits))  # -0.0 included


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_arrays_of_one_shape_give_numpys_values_to_the_bit(op, dtype):
    a, b = _operands(dtype, 0)
    opcode = {"add": ops.ADD, "sub": ops.SUB, "mul": ops.MUL, "div": ops.DIV}[op]
    with np.errstate(all="ignore"):
        want = getattr(np, {"add": "add", "sub": "subtract", "mul": "multiply",
                            "div": "true_divide"}[op])(a, b)
    _same(bulk.binary(opcode, a, b), want)
    # and through the tensor API, recorded
    x, y = ng.tensor(a, requires_grad=True), ng.tensor(b)
    _same(getattr(ng, op)(x, y).detach().numpy(), want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c", [2, 2.5, -0.0, 0.125, 3, 0.1])
def test_numbers_give_numpys_values_to_the_bit(c, dtype):
    a, _ = _operands(dtype, 1)
    x = ng.tensor(a, requires_grad=True)
    with np.errstate(all="ignore"):
        cases = [(x + c, a + c), (x * c, a * c), (x / c, a / c), (c - x, c - a),
                 (c / x, c / a), (x - c, a - c)]
        if c == 2:
            cases.append((x ** c, a ** c))
    for got, want in cases:
        _same(got.detach().numpy(), want)


def test_what_stays_numpys():
    a = np.ones(N)
    assert bulk.binary(ops.ADD, a[:PAR_MIN - 1], a[:PAR_MIN - 1]) is None      # small
    assert bulk.binary(ops.ADD, a[::2], a[::2]) is None                        # strided
    assert bulk.binary(ops.SUB, a, a[:1]) is None                              # broadcast
    assert bulk.binary(ops.SUB, a, np.ones((), a.dtype)) is None
    assert bulk.binary(ops.SUB, a[None], a) is None
    assert bulk.binary(ops.SUB, a, a.astype(np.float32)) is None
    assert bulk.binary(ops.POW, a, a) is None                                  # not IEEE-exact
    assert bulk.binary(ops.ADD, np.ones(N, np.int64), np.ones(N, np.int64)) is None
    assert bulk.with_number(ops.POW_C, a, 3) is None                           # pow(), not x * x
    assert bulk.with_number(ops.ADD_C, a.astype(np.float32), 0.1) is None      # 0.1 not float32
    assert bulk.with_number(ops.ADD_C, a.astype(np.float32), 1e300) is None    # overflows float32
    assert bulk.with_number(ops.ADD_C, a, 2 ** 60 + 1) is None                 # not a float64
    assert bulk.with_number(ops.ADD_C, a, 0.1) is not None


def test_a_broadcast_operand_is_numpys_to_broadcast():
    """x - x.mean() at PAR_MIN elements and more once read past the mean's one element."""
    a = np.random.default_rng(3).standard_normal(N)
    x = ng.tensor(a, requires_grad=True)
    mu = ng.tensor(np.float64(3.0), requires_grad=True)
    _same((x - mu).detach().numpy(), a - 3.0)
    _same((x * x.sum(0, keepdim=True)).detach().numpy(), a * a.sum(0, keepdims=True))
    ((x - mu) ** 2).sum().backward()
    _same(x.grad.numpy(), 2 * (a - 3.0))


def test_gradients_through_large_arithmetic_are_unchanged():
    rng = np.random.default_rng(2)
    a = rng.standard_normal(N)
    x = ng.tensor(a, requires_grad=True)
    (2 * (x + 2) ** 2 - x * x / 3.0 + (1 - x) / 4).mean().backward()
    want = (4 * (a + 2) - 2 * a / 3.0 - 0.25) / N
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-18)


def test_threads_running_large_arithmetic_at_once_get_their_own_values():
    # the parallel loops run on Numba's thread-safe layer (numbagrad/__init__.py): two Python
    # threads launching them together must neither abort nor mix their outputs
    import threading
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal(N) for _ in range(4)]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                x = ng.tensor(inputs[i])
                results[i] = ((x * x + 2.0) / 3.0 - x).numpy()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, a in enumerate(inputs):
        np.testing.assert_array_equal(results[i], (a * a + 2.0) / 3.0 - a)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_large_tensor_is_a_copy_made_on_every_core(dtype):
    a, _ = _operands(dtype, 5)
    a = a.reshape(-1, 1)
    t = ng.tensor(a)
    _same(t.numpy(), a)
    assert not np.shares_memory(t.numpy(), a)
    a[0] = 42  # the tensor keeps the values it was made with
    assert t.numpy()[0, 0] != 42
    assert bulk.copy(a[:PAR_MIN - 1], a.dtype) is None                        # small
    assert bulk.copy(a[::2], a.dtype) is None                                  # strided
    assert bulk.copy(a, np.float32 if dtype == np.float64 else np.float64) is None  # a cast
    assert bulk.copy(np.ones(N, np.int64), np.int64) is None
    _same(ng.tensor(a[::2]).numpy(), a[::2])           # NumPy's copies, the same values
    _same(ng.tensor(a, dtype=ng.float64).numpy(), a.astype(np.float64))
