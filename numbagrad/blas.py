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
    """``(sgemm, dgemm, int bits)`` of the BLAS library shipped inside NumPy's wheel."""
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
                s, d = (getattr(lib, f"{prefix}{c}gemm{suffix}") for c in "sd")
            except AttributeError:
                continue
            return _address(s), _address(d), bits
    return None


def _scipy_gemms():
    """``(sgemm, dgemm, 32)`` from SciPy's Cython BLAS table, where Numba finds it too."""
    from numba.extending import get_cython_function_address
    try:
        s, d = (get_cython_function_address("scipy.linalg.cython_blas", f)
                for f in ("sgemm", "dgemm"))
    except (ImportError, ValueError):
        return None
    return s, d, 32


def _address(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


def _shim_ir(sgemm, dgemm, bits, name=SYMBOL):
    """``i32 name(kind, ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc)`` (the
    signature of Numba's ``numba_xxgemm``): Fortran ``?gemm`` of the given addresses with
    every argument by reference, integers of ``bits`` bits.  Returns -1 without a BLAS.
    (Another function named ``SYMBOL`` in Numba's engine would take the kernels' calls.)"""
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

    # gfortran's hidden lengths of the two character arguments close the list; C BLAS
    # interfaces ignore them.
    args = [ref(ta, i8), ref(tb, i8), ref(m, iw), ref(n, iw), ref(k, iw), alpha, a,
            ref(lda, iw), b, ref(ldb, iw), beta, c, ref(ldc, iw),
            ir.Constant(i64, 1), ir.Constant(i64, 1)]
    gemm_ty = ir.FunctionType(ir.VoidType(), [vp] * 13 + [i64, i64]).as_pointer()
    single = bld.icmp_unsigned("==", kind, ir.Constant(i8, ord("s")))
    target = bld.select(single, ir.Constant(i64, sgemm), ir.Constant(i64, dgemm))
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
        gemms, source = (None, None, 64), None
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
