"""Large eager elementwise arithmetic on every core.

NumPy runs an elementwise op on one core.  An eager op on at least ``PAR_MIN`` elements
whose result IEEE arithmetic fixes to the bit runs here instead, in a parallel loop:
``+ - * /`` between float arrays of one shape and dtype, and ``x + c``, ``x * c``, ``x / c``,
``c - x``, ``c / x``, ``x ** 2`` with a Python number; and ``ng.tensor``'s copy of its data.
The values are NumPy's exactly: the same operation on the same operands, rounded once (a
float32 array's number is taken only when float32 holds it exactly, so rounding it first, as
NumPy does, changes nothing).
Everything else (other ops, broadcasting, strided operands, fewer elements) returns None
and stays NumPy's.

Each op is a loop of its own (the rule from ``ops.py`` with a constant opcode folds to one
instruction, and the loop vectorises); with the opcode a variable inside the loop it did
not, and ran slower than NumPy's below 10^6 elements.
"""
import numpy as np
from numba import njit, prange

from . import pool
from .ops import (IEEE, PRANGE_ONLY, binary_f, unary_f, ADD, SUB, MUL, DIV, ADD_C, MUL_C, DIV_C,
                  POW_C, RSUB_C, RDIV_C)
from .sweeps import PAR_MIN

BINARY = (ADD, SUB, MUL, DIV)
WITH_NUMBER = (ADD_C, MUL_C, DIV_C, RSUB_C, RDIV_C, POW_C)  # POW_C for the exponent 2 only
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_F32_MAX = float(np.finfo(np.float32).max)


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def binary_into(op, a, b, out):
    """``out = a op b`` over flat arrays of one size."""
    n = out.size
    if op == ADD:
        for j in prange(n):
            out[j] = binary_f(ADD, a[j], b[j])
    elif op == SUB:
        for j in prange(n):
            out[j] = binary_f(SUB, a[j], b[j])
    elif op == MUL:
        for j in prange(n):
            out[j] = binary_f(MUL, a[j], b[j])
    else:
        for j in prange(n):
            out[j] = binary_f(DIV, a[j], b[j])


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def with_number_into(op, x, c, out):
    """``out = op(x; c)`` over flat arrays of one size (``x ** 2`` is ``binary_into``'s
    ``x * x``)."""
    n = out.size
    if op == ADD_C:
        for j in prange(n):
            out[j] = unary_f(ADD_C, x[j], c, c)
    elif op == MUL_C:
        for j in prange(n):
            out[j] = unary_f(MUL_C, x[j], c, c)
    elif op == DIV_C:
        for j in prange(n):
            out[j] = unary_f(DIV_C, x[j], c, c)
    elif op == RSUB_C:
        for j in prange(n):
            out[j] = unary_f(RSUB_C, x[j], c, c)
    else:
        for j in prange(n):
            out[j] = unary_f(RDIV_C, x[j], c, c)


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def copy_into(src, out, nchunks):
    """``out[:] = src`` over flat arrays of one size and dtype, in ``nchunks`` parallel chunks."""
    n = out.size
    for c in prange(nchunks):
        lo = c * n // nchunks
        hi = (c + 1) * n // nchunks
        s, d = src[lo:hi], out[lo:hi]
        for j in range(hi - lo):
            d[j] = s[j]


def copy(a, dtype):
    """A C-contiguous copy of the float array ``a`` in ``dtype``, copied on every core; None
    where NumPy's copy is the one to use (a cast, a strided array, fewer elements).
    ``ng.tensor`` copies its data: W1's 80 MB took NumPy 11 ms on one core.

    >>> import numpy as np
    >>> from numbagrad import bulk
    >>> a = np.arange(1 << 18, dtype=float)
    >>> bool((bulk.copy(a, a.dtype) == a).all())
    True
    """
    if a.size < PAR_MIN or a.dtype != dtype or a.dtype not in _FLOATS \
            or not a.flags.c_contiguous:
        return None
    out = pool.empty(a.shape, a.dtype)
    copy_into(a.reshape(-1), out.reshape(-1), a.size // PAR_MIN + 1)
    return out


def binary(opcode, a, b):
    """``a op b`` for float arrays of one shape and dtype, or None where NumPy's loop is the
    one to use.

    >>> import numpy as np
    >>> from numbagrad import bulk, ops
    >>> a = np.arange(1 << 18, dtype=float)
    >>> bool((bulk.binary(ops.MUL, a, a) == a * a).all())
    True
    """
    # the loop reads b[j] for every j of a: a broadcast b (x - x.mean()) read past its end
    if a.size < PAR_MIN or opcode not in BINARY or a.dtype not in _FLOATS \
            or a.shape != b.shape or a.dtype != b.dtype \
            or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    out = pool.empty(a.shape, a.dtype)  # reused, not faulted in afresh
    binary_into(opcode, a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def with_number(opcode, x, c):
    """``op(x; c)`` for a float array ``x`` and a Python number ``c``, or None where NumPy's
    loop is the one to use."""
    if x.size < PAR_MIN or opcode not in WITH_NUMBER or x.dtype not in _FLOATS \
            or not x.flags.c_contiguous or type(c) not in (int, float) \
            or (opcode == POW_C and c != 2):
        return None
    if not -_F32_MAX <= c <= _F32_MAX and x.dtype == np.float32:  # float32 overflow: NumPy's
        return None
    c_typed = x.dtype.type(c)
    if float(c_typed) != c:  # not exactly the array's dtype (or a huge int): NumPy's rounding
        return None
    out = pool.empty(x.shape, x.dtype)
    if opcode == POW_C:  # x ** 2, which NumPy computes as x * x
        binary_into(MUL, x.reshape(-1), x.reshape(-1), out.reshape(-1))
    else:
        with_number_into(opcode, x.reshape(-1), c_typed, out.reshape(-1))
    return out
