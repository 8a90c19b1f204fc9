"""numbagrad.blas: matrix products call NumPy's BLAS (one thread pool with the user's NumPy),
or SciPy's where asked or where NumPy's is not found."""
import ctypes
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import blas

_GEMM = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char, ctypes.c_char, ctypes.c_char,
                         *[ctypes.c_ssize_t] * 3, *[ctypes.c_void_p] * 2, ctypes.c_ssize_t,
                         ctypes.c_void_p, ctypes.c_ssize_t, *[ctypes.c_void_p] * 2,
                         ctypes.c_ssize_t)


def _call(library, kind, ta, tb, a, b, c, beta, name=blas.SYMBOL):
    """Row-major ``c = op(a) @ op(b) + beta c`` through a shim (column-major: b first)."""
    fn = _GEMM(library.get_pointer_to_function(name))
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    one, be = np.ones(1, c.dtype), np.full(1, beta, c.dtype)
    return fn(kind, b"t" if tb else b"n", b"t" if ta else b"n", n, m, k, one.ctypes.data,
              b.ctypes.data, _ld(b), a.ctypes.data, _ld(a), be.ctypes.data,
              c.ctypes.data, _ld(c))


def _ld(x):
    """The row stride of a row-major block (rows may be a wider array's, cut by a slice)."""
    assert x.strides[1] == x.itemsize
    return x.strides[0] // x.itemsize


def _numpy_has_its_own_blas():
    root = os.path.dirname(os.path.dirname(np.__file__))
    return bool(glob.glob(os.path.join(root, "numpy.libs", "*openblas*"))
                or glob.glob(os.path.join(root, "numpy", ".dylibs", "*openblas*")))


@pytest.mark.skipif(not _numpy_has_its_own_blas(), reason="NumPy without a bundled OpenBLAS")
def test_products_share_numpys_blas():
    assert blas.SOURCE == "numpy"


@pytest.mark.parametrize("dtype,kind", [(np.float64, b"d"), (np.float32, b"s")])
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_shim_multiplies_transposes_and_accumulates(dtype, kind, ta, tb):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    a = np.ascontiguousarray(A.T) if ta else A
    b = np.ascontiguousarray(B.T) if tb else B
    c = np.ones((3, 5), dtype)
    assert _call(blas._library, kind, ta, tb, a, b, c, 1.0) == 0
    np.testing.assert_allclose(c, A @ B + 1, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert _call(blas._library, kind, ta, tb, a, b, c, 0.0) == 0
    np.testing.assert_allclose(c, A @ B, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype,kind", [(np.float64, b"d"), (np.float32, b"s")])
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("m,k,n", [(3, 5, 1), (1, 5, 4), (1, 5, 1), (1, 1, 1), (4, 1, 1)])
def test_shim_products_with_one_row_or_column(dtype, kind, ta, tb, m, k, n):
    # one column or one row of C goes to ?gemv: each operand cut from a wider array, so that
    # leading dimensions (and a vector's stride through them) differ from its width
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    A, B = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)

    def cut(x):  # x's values in the first columns of a wider row-major array
        wide = np.full((x.shape[0], x.shape[1] + 3), np.nan, dtype)
        wide[:, :x.shape[1]] = x
        return wide[:, :x.shape[1]]

    a, b = cut(A.T if ta else A), cut(B.T if tb else B)
    c = cut(np.ones((m, n), dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert _call(blas._library, kind, ta, tb, a, b, c, 1.0) == 0
    np.testing.assert_allclose(c, A @ B + 1, rtol=tol)
    c[...] = np.nan  # beta 0: C is written, never read
    assert _call(blas._library, kind, ta, tb, a, b, c, 0.0) == 0
    np.testing.assert_allclose(c, A @ B, rtol=tol)
    assert np.isnan(c.base[:, n:]).all()  # nothing written past C's columns


def test_shim_without_a_blas_reports_it():
    # under a name of its own: a second numbagrad_xxgemm would take the kernels' calls
    library = blas._compile(blas._shim_ir(None, None, None, None, 64, name="test_no_blas_gemm"))
    c = np.zeros((2, 2))
    assert _call(library, b"d", 0, 0, np.eye(2), np.eye(2), c, 0.0, "test_no_blas_gemm") == -1
    assert not c.any()


def test_scipys_blas_when_asked():
    code = """
import numpy as np, numbagrad as ng
from numbagrad import blas
assert blas.SOURCE == "scipy", blas.SOURCE
rng = np.random.default_rng(1)
for dt in ("float64", "float32"):
    A, B = (ng.tensor(rng.standard_normal(s).astype(dt), requires_grad=True)
            for s in [(6, 7), (7, 5)])
    (A @ B).sum().backward()
    a, b = A.detach().numpy(), B.detach().numpy()
    tol = 1e-5 if dt == "float32" else 1e-12
    np.testing.assert_allclose(A.grad.numpy(), np.ones((6, 5), dt) @ b.T, rtol=tol)
    np.testing.assert_allclose(B.grad.numpy(), a.T @ np.ones((6, 5), dt), rtol=tol)
    # a matrix times a vector and a vector times a matrix: SciPy's ?gemv
    x, v = rng.standard_normal(7).astype(dt), rng.standard_normal(6).astype(dt)
    f = ng.trace(lambda A, x, v: (ng.tanh(A @ x) * (v @ A)[:6]).sum(), a, x, v)
    _, gx, gv = f.grad(a, x, v)
    t, s = np.tanh(a @ x), (v @ a)[:6]
    np.testing.assert_allclose(gx, a.T @ (s * (1 - t * t)), rtol=100 * tol)
    np.testing.assert_allclose(gv, a[:, :6] @ t, rtol=100 * tol)
print("ok")
"""
    env = dict(os.environ, NUMBAGRAD_BLAS="scipy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_matrix_product_gradients_with_numpys_blas():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 6))
    A, B = ng.tensor(a, requires_grad=True), ng.tensor(b, requires_grad=True)
    (ng.tanh(A @ B) * 2).sum().backward()
    G = 2 * (1 - np.tanh(a @ b) ** 2)
    np.testing.assert_allclose(A.grad.numpy(), G @ b.T, rtol=1e-12)
    np.testing.assert_allclose(B.grad.numpy(), np.einsum("qmk,qmn->kn", a, G), rtol=1e-12)
