"""The BLAS that matrix-product kernels call: NumPy's own, where it can be found.

Numba's ``np.dot`` calls SciPy's BLAS.  NumPy's wheels bring a second OpenBLAS with a thread
pool of its own, and after each call a pool's threads spin for a while: when a program's
NumPy products and numbagrad's products come in turn (a training loop, a benchmark, an
optimizer's line search), the two pools spin against each other and both run about twice
as slow on a 2-core machine.  Kernels therefore call ``numbagrad_xxgemm``, a symbol this
module defines at import: a few lines of LLVM IR, compiled here, that call ``sgemm`` /
``dgemm`` of NumPy's BLAS (its ILP64 ``scipy_?gemm_64_`` in NumPy's wheels), or of SciPy's
(``scipy.linalg.cython_blas``) where NumPy's is not found.  The kernels are cached and name
only the symbol, so the choice is made per process and may differ between processes.

A product with one column or one row (a matrix times a vector, either side) goes to ``?gemv``
inside the shim: OpenBLAS's ``dgemm`` with one column took 61-70 us for W5's 100 x 1000 matrix
against 22 us for ``dgemv``, what NumPy's ``A @ x`` calls (``benchmarks/NOTES.md``).

``NUMBAGRAD_BLAS=scipy`` in the environment picks SciPy's BLAS; ``SOURCE`` says which one
this process calls, ``"numpy"``, ``"scipy"`` or ``None`` (none found: a product raises).

>>> import numbagrad.blas
>>> numbagrad.blas.SOURCE in ("numpy", "scipy", None)
True
"""
import ctypes
import glob
import os

import llvmlite.binding as llvm
from llvmlite import ir

# Cached kernels call this name (kernels._xxgemm); renaming it means editing kernels.py too,
# which drops their caches (numbagrad/__init__.py).
SYMBOL = "numbagrad_xxgemm"

# NumPy's wheels rename OpenBLAS's symbols (prefix, suffix) and build it with 64-bit integers.
_NUMPY_NAMES = (("scipy_", "_64_", 64), ("", "_64_", 64), ("scipy_", "_", 32), ("", "_", 32))


def _numpy_gemms():
    """``(sgemm, dgemm, sgemv, dgemv, int bits)`` of the BLAS library inside NumPy's wheel."""
    import numpy as np
    root = os.path.dirname(os.path.dirname(np.__file__))
    libs = [p for d in ("numpy.libs", os.path.join("numpy", ".dylibs"))
            for p in glob.glob(os.path.join(root, d, "*blas*"))]
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library, the same pool
        except OSError:
            continue
        for prefix, suffix, bits in _NUMPY_NAMES:
            try:
                found = [getattr(lib, f"{prefix}{c}{f}{suffix}") for f in ("gemm", "gemv")
                         for c in "sd"]
            except AttributeError:
                continue
            return (*(_address(f) for f in found), bits)
    return None


def _scipy_gemms():
    """``(sgemm, dgemm, sgemv, dgemv, 32)`` from SciPy's Cython BLAS table, where Numba finds
    it too."""
    from numba.extending import get_cython_function_address
    try:
        found = [get_cython_function_address("scipy.linalg.cython_blas", f)
                 for f in ("sgemm", "dgemm", "sgemv", "dgemv")]
    except (ImportError, ValueError):
        return None
    return (*found, 32)


def _address(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


def _shim_ir(sgemm, dgemm, sgemv, dgemv, bits, name=SYMBOL):
    """``i32 name(kind, ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc)`` (the
    signature of Numba's ``numba_xxgemm``, column-major, ``ta``/``tb`` ``'n'`` or ``'t'``):
    Fortran ``?gemm`` of the given addresses with every argument by reference, integers of
    ``bits`` bits, or ``?gemv`` where C has one column (``op(A) @ x``) or one row
    (``x @ op(B)``, done as ``op(B)^T @ x``).  Returns -1 without a BLAS.  (Another function
    named ``SYMBOL`` in Numba's engine would take the kernels' calls.)"""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    vp, iw, ip = i8.as_pointer(), ir.IntType(bits), ir.IntType(8 * ctypes.sizeof(ctypes.c_void_p))
    mod = ir.Module(name="numbagrad_blas")
    fnty = ir.FunctionType(i32, [i8, i8, i8, ip, ip, ip, vp, vp, ip, vp, ip, vp, vp, ip])
    fn = ir.Function(mod, fnty, name)
    kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = fn.args
    bld = ir.IRBuilder(fn.append_basic_block("entry"))
    if sgemm is None:
        bld.ret(ir.Constant(i32, -1))
        return mod

    def ref(v, ty):
        p = bld.alloca(ty)
        if v.type.width > ty.width:
            v = bld.trunc(v, ty)
        elif v.type.width < ty.width:
            v = bld.sext(v, ty)
        bld.store(v, p)
        return bld.bitcast(p, vp)

    def char(ch):
        return ir.Constant(i8, ord(ch))

    def pick(cond, yes, no):
        return bld.select(cond, yes, no)

    one = ir.Constant(ip, 1)
    single = bld.icmp_unsigned("==", kind, char("s"))
    a_plain = bld.icmp_unsigned("==", ta, char("n"))
    b_plain = bld.icmp_unsigned("==", tb, char("n"))
    column, row, general = (fn.append_basic_block(b) for b in ("column", "row", "general"))
    check_row = fn.append_basic_block("check_row")
    bld.cbranch(bld.icmp_signed("==", n, one), column, check_row)
    bld.position_at_end(check_row)
    bld.cbranch(bld.icmp_signed("==", m, one), row, general)

    # gfortran's hidden lengths of the character arguments close each list; C BLAS
    # interfaces ignore them.
    gemv_ty = ir.FunctionType(ir.VoidType(), [vp] * 11 + [i64]).as_pointer()

    def gemv(trans, rows, cols, mat, ld, x, incx, y, incy):
        args = [ref(trans, i8), ref(rows, iw), ref(cols, iw), alpha, mat, ref(ld, iw), x,
                ref(incx, iw), beta, y, ref(incy, iw), ir.Constant(i64, 1)]
        target = pick(single, ir.Constant(i64, sgemv), ir.Constant(i64, dgemv))
        bld.call(bld.inttoptr(target, gemv_ty), args)
        bld.ret(ir.Constant(i32, 0))

    # C (m x 1) = op(A) @ op(B), op(B) a column of k: A is m x k, or k x m under 't'
    bld.position_at_end(column)
    gemv(ta, pick(a_plain, m, k), pick(a_plain, k, m), a, lda, b, pick(b_plain, one, ldb),
         c, one)
    # C (1 x n) = op(A) @ op(B), op(A) a row of k: C^T = op(B)^T @ op(A)^T
    bld.position_at_end(row)
    gemv(pick(b_plain, char("t"), char("n")), pick(b_plain, k, n), pick(b_plain, n, k), b,
         ldb, a, pick(a_plain, lda, one), c, ldc)

    bld.position_at_end(general)
    args = [ref(ta, i8), ref(tb, i8), ref(m, iw), ref(n, iw), ref(k, iw), alpha, a,
            ref(lda, iw), b, ref(ldb, iw), beta, c, ref(ldc, iw),
            ir.Constant(i64, 1), ir.Constant(i64, 1)]
    gemm_ty = ir.FunctionType(ir.VoidType(), [vp] * 13 + [i64, i64]).as_pointer()
    target = pick(single, ir.Constant(i64, sgemm), ir.Constant(i64, dgemm))
    bld.call(bld.inttoptr(target, gemm_ty), args)
    bld.ret(ir.Constant(i32, 0))
    return mod


def _install():
    gemms = None
    if os.environ.get("NUMBAGRAD_BLAS", "").lower() != "scipy":
        gemms, source = _numpy_gemms(), "numpy"
    if gemms is None:
        gemms, source = _scipy_gemms(), "scipy"
    if gemms is None:
        gemms, source = (None, None, None, None, 64), None
    library = _compile(_shim_ir(*gemms))
    llvm.add_symbol(SYMBOL, library.get_pointer_to_function(SYMBOL))
    return library, source


def _compile(module):
    """A finalized Numba code library of the LLVM IR ``module`` (keep it: it owns the code)."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    with global_compiler_lock:
        library = cpu_target.target_context.codegen().create_library(module.name)
        library.add_ir_module(module)
        library.finalize()
    return library


# The library holds the compiled shim: it lives as long as the module.
_library, SOURCE = _install()
