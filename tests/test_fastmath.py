"""The vectorisable exp, tanh and sigmoid of ops.py against NumPy's, specials included."""
import numpy as np
import pytest
from numba import njit

from numbagrad import ops


@njit(error_model="numpy")
def _apply(which, x, out):
    for i in range(x.size):
        if which == 0:
            out[i] = ops._exp(x[i])
        elif which == 1:
            out[i] = ops._tanh(x[i])
        else:
            out[i] = ops._sigmoid(x[i])


def _sigmoid(x):
    with np.errstate(all="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 709.7, 709.79, 709.8, 710.0, -708.0, -720.0,
            -744.4, -745.1, -745.2, 0.55, -0.55, 0.5499999999, 1e-310, -1e-310, 5e-324, 20.0,
            -20.0, 400.0, 0.1733, 0.5199, 19.06, 32.0, 64.0]  # tanh's k = 0 / -1 edges, saturation


@pytest.mark.parametrize("which, ref, max_ulp", [(0, np.exp, 1), (1, np.tanh, 3),
                                                  (2, _sigmoid, 3)])
def test_within_a_few_ulp_of_numpy(which, ref, max_ulp):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1e-12, 1e-4, 0.1, 0.2, 0.5, 1, 4,
                                                                    40, 300)] + [SPECIALS])
    out = np.empty_like(x)
    _apply(which, x, out)
    with np.errstate(over="ignore"):
        want = ref(x)
    same = (out == want) | (np.isnan(out) & np.isnan(want))
    finite = np.isfinite(want) & (want != 0)
    assert same[~finite].all(), x[~finite][~same[~finite]]  # 0, inf, nan exactly
    ulp = np.abs(out[finite] - want[finite]) / np.spacing(np.abs(want[finite]))
    assert ulp.max() <= max_ulp
    if which == 1:  # tanh is odd: -0.0 stays -0.0
        assert np.array_equal(np.signbit(out[~np.isnan(out)]), np.signbit(want[~np.isnan(want)]))


def test_float32_inputs_round_like_numpy():
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32) * 5
    for which, ref in [(0, np.exp), (1, np.tanh)]:
        out = np.empty_like(x)
        _apply(which, x, out)
        np.testing.assert_allclose(out, ref(x), rtol=3e-7)


def test_float32_tanh_within_3_ulp_over_a_dense_sweep():
    # float32 tanh computes in float32 (ops._tanh32): every 37th float32 in [0, 10) and the
    # negatives, against the exact tanh rounded (2.5 ulp measured) and NumPy's float32 tanh
    x = np.arange(0, 0x41200000, 37, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, -x[::7]])
    out = np.empty_like(x)
    _apply(1, x, out)
    assert out.dtype == np.float32
    exact = np.tanh(x.astype(np.float64))
    nonzero = exact != 0
    spacing = np.spacing(np.abs(exact[nonzero]).astype(np.float32))
    ulp = np.abs(out[nonzero] - exact[nonzero]) / spacing
    assert ulp.max() <= 2.5
    np.testing.assert_allclose(out, np.tanh(x), rtol=2.7e-7, atol=0)
    assert np.array_equal(np.signbit(out), np.signbit(x))  # -0.0 too


def test_float32_tanh_specials():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 10.0, 20.0, 1e30, -1e30, 1e-45, -1e-45,
                  1e-20, -1e-20], dtype=np.float32)
    out = np.empty_like(x)
    _apply(1, x, out)
    want = np.tanh(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    assert np.array_equal(np.signbit(out[~np.isnan(out)]), np.signbit(want[~np.isnan(want)]))
