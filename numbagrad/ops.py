"""Every primitive, defined once: opcode, grad_fn names, forward and derivatives.

An elementwise op is a line in each rule table below: its forward ``f``, its
local derivative ``d`` (dy/dx, given x and the output y) and its second
derivative ``dd`` (Hessian-vector products).  The Numba kernels in
``kernels.py`` apply the rules element by element; the eager path calls the
NumPy ``eager`` form of ``OPS`` on whole arrays.  Structural ops (reductions,
gather, concat, matmul) have their loops in ``kernels.py`` and are listed here
by opcode, name and saved values.

Unary rules take the op's two constants ``c0, c1`` (unused ones are 0).
Binary rules take the operands ``a, b`` and the output ``y``.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.cpu import ParallelOptions
from numba.extending import intrinsic, overload

# Every compiled function in numbagrad uses NumPy's error model: x / 0 is inf (0 / 0 nan) as in
# PyTorch, instead of Numba's default ZeroDivisionError, and without that per-element zero
# check loops with a division vectorise.  Decorators spell it ``njit(**IEEE, ...)``.
IEEE = {"error_model": "numpy"}

# Parallel functions run their explicit ``prange`` loops on threads, and nothing else:
# ``parallel=True`` would also turn array expressions (``np.zeros(k)``, ``.sum()``, ``a[:] = 0``)
# into parallel loops, each a thread-pool launch, taken even on the small path that skips the
# pranges, which doubled a small replayed gradient (benchmarks/NOTES.md, "Parallel regions
# for the pranges only").
# Decorators spell it ``njit(**IEEE, parallel=PRANGE_ONLY, ...)``.  An options
# object, not a dict: Numba pops the keys of a dict it is given, so every function compiled
# after the first would have found it empty and taken the defaults, all on.
PRANGE_ONLY = ParallelOptions({"prange": True, "comprehension": False, "numpy": False,
                               "reduction": False, "setitem": False, "inplace_binop": False,
                               "stencil": False, "fusion": False})

inline = njit(**IEEE, inline="always", cache=True)

# ---------------------------------------------------------------- opcodes
LEAF = 0  # an input: a user tensor (AccumulateGrad when it requires grad) or a constant

# unary elementwise, y = f(x; c0, c1)
NEG, EXP, LOG, SIN, COS, TAN, TANH, SIGMOID, RELU, SQRT, ABS = range(1, 12)
ADD_C, MUL_C, DIV_C, POW_C, RSUB_C, RDIV_C, RPOW_C, CLAMP = range(12, 20)
# binary elementwise with NumPy broadcasting, y = f(a, b)
ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM = range(20, 27)
WHERE = 27  # y = b if cond else c; operands (cond, b, c), cond is a constant 0/1 node
# reductions and normalisations over one axis, laid out as (outer, n, inner)
SUM, MEAN, MAX, MIN, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX = range(30, 37)
# structure
RESHAPE = 40  # a view: shares its operand's storage
GATHER = 41   # y.flat[j] = x.flat[idx[j]]: indexing, transpose, permute
CAT = 42      # concatenation of k operands along one axis
MATMUL = 43   # (batched) matrix products, 1-D operands included
COMPARE = 44  # a < b (and friends, by constant 0..5) as 0/1: no gradient, but replays recompute it

N_OPCODES = 45
LT, LE, GT, GE, EQ, NE = range(6)  # COMPARE's constant
UNARY = range(NEG, CLAMP + 1)
BINARY = range(ADD, MINIMUM + 1)
REDUCTIONS = range(SUM, LOG_SOFTMAX + 1)


# ---------------------------------------------------------------- unary rules
# One line per op in each table, as HIPS autograd's numpy_vjps.  ``op`` is a
# compile-time constant where the kernels call these (numba.literally), so each
# kernel compiles to the one line it needs (see "calling a rule table" below).

def _unary_f(op, x, c0, c1):
    """y = f(x)."""
    if op == NEG: return -x
    if op == EXP: return _exp(x)
    if op == LOG: return np.log(x)
    if op == SIN: return np.sin(x)
    if op == COS: return np.cos(x)
    if op == TAN: return np.tan(x)
    if op == TANH: return _tanh(x)
    if op == SIGMOID: return _sigmoid(x)
    if op == RELU: return x if x > 0 else 0.0 * x
    if op == SQRT: return np.sqrt(x)
    if op == ABS: return np.abs(x)
    if op == ADD_C: return x + c0
    if op == MUL_C: return x * c0
    if op == DIV_C: return x / c0
    if op == POW_C: return _powc(x, c0)
    if op == RSUB_C: return c0 - x
    if op == RDIV_C: return c0 / x
    if op == RPOW_C: return c0 ** x
    if op == CLAMP: return min(max(x, c0), c1)
    return x * np.nan


def _unary_d(op, x, y, c0, c1):
    """dy/dx, given x and y."""
    if op == NEG: return -1.0
    if op == EXP: return y
    if op == LOG: return 1.0 / x
    if op == SIN: return np.cos(x)
    if op == COS: return -np.sin(x)
    if op == TAN: return 1.0 + y * y
    if op == TANH: return 1.0 - y * y
    if op == SIGMOID: return y * (1.0 - y)
    if op == RELU: return 1.0 if x > 0 else 0.0                # torch: 0 at the kink
    if op == SQRT: return 0.5 / y
    if op == ABS: return np.sign(x)                             # torch: 0 at the kink
    if op == ADD_C: return 1.0
    if op == MUL_C: return c0
    if op == DIV_C: return 1.0 / c0
    if op == POW_C: return 0.0 if c0 == 0.0 else c0 * _powc(x, c0 - 1.0)  # torch: 0 for x**0
    if op == RSUB_C: return -1.0
    if op == RDIV_C: return -c0 / (x * x)
    if op == RPOW_C: return 0.0 if c0 == 0.0 else y * np.log(c0)
    if op == CLAMP: return 1.0 if c0 <= x <= c1 else 0.0       # torch: inclusive bounds
    return np.nan


@inline
def unary_fd(op, x, c0, c1):
    """(y, dy/dx) at once, for the ops whose derivative is a second transcendental of x: side
    by side, LLVM computes sin and cos in one sincos call (scalar replays keep dy/dx for the
    reverse pass; fusion.AUX_OPS)."""
    if op == SIN:  # a constant opcode per branch, so that the rules fold side by side
        y = unary_f_inlined(SIN, x, c0, c1)
        return y, unary_d_inlined(SIN, x, y, c0, c1)
    if op == COS:
        y = unary_f_inlined(COS, x, c0, c1)
        return y, unary_d_inlined(COS, x, y, c0, c1)
    y = unary_f_inlined(op, x, c0, c1)
    return y, unary_d_inlined(op, x, y, c0, c1)


def _unary_dd(op, x, y, c0, c1):
    """d2y/dx2, given x and y (Hessian-vector products)."""
    if op == EXP: return y
    if op == LOG: return -1.0 / (x * x)
    if op == SIN: return -y
    if op == COS: return -y
    if op == TAN: return 2.0 * y * (1.0 + y * y)
    if op == TANH: return -2.0 * y * (1.0 - y * y)
    if op == SIGMOID: return y * (1.0 - y) * (1.0 - 2.0 * y)
    if op == SQRT: return -0.25 / (y * y * y)
    if op == POW_C: return 0.0 if c0 == 0.0 or c0 == 1.0 else c0 * (c0 - 1.0) * x ** (c0 - 2.0)
    if op == RDIV_C: return 2.0 * c0 / (x * x * x)
    if op == RPOW_C: return 0.0 if c0 == 0.0 else y * np.log(c0) * np.log(c0)
    return 0.0  # NEG, RELU, ABS, ADD_C, MUL_C, DIV_C, RSUB_C, CLAMP are piecewise linear


@inline
def _powc(x, c):
    # small integer exponents by multiplication: pow() costs ten times more per element
    if c == 1.0: return x
    if c == 2.0: return x * x
    if c == 3.0: return x * x * x
    return x ** c


@inline
def _sigmoid(x):
    # exp(-|x|) never overflows; a select, not a branch, so that loops vectorise
    e = _exp(-abs(x))
    return (1.0 if x >= 0 else e) / (1.0 + e)


# exp and tanh that loops vectorise.  Numba calls libm's exp and tanh one element at a time
# (tanh 15 ns per element here, against 0.4-1.8 for NumPy's SIMD versions), and LLVM has no
# vector library without SVML.  These are plain arithmetic: exp is 2^k * exp(r) with
# |r| <= ln2/2 (Cody-Waite reduction, degree-13 Taylor polynomial), within 1 ulp of libm;
# tanh(x) = -m / (2 + m) with m = expm1(-2|x|) by the same reduction, within 3 ulp of NumPy's.
# Both compute in float64 (float32's tanh: _tanh32), their polynomials in fused multiply-adds
# (_fma), a third faster than without, with the same ulp bounds (benchmarks/NOTES.md).

@intrinsic
def _bits_as_float(typingctx, bits):
    """The float64 whose IEEE 754 bit pattern is the int64 ``bits``."""
    if bits != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _bits_as_float32(typingctx, bits):
    """The float32 whose IEEE 754 bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0] if bits.bitwidth == 32 else builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma: one instruction, also in vectorised loops)."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(sig.args[0])
        fn = builder.module.declare_intrinsic("llvm.fma", [ty], ir.FunctionType(ty, [ty] * 3))
        return builder.call(fn, args)
    return a(a, b, c), codegen


_EXP_C = tuple(1.0 / math.factorial(n) for n in range(14))
_EXPM1_C = tuple(1.0 / math.factorial(n) for n in range(1, 14))
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split
_INV_LN2 = 1.44269504088896338700e+00


@inline
def _reduce_ln2(y):
    """``(k, r)`` with y = k ln2 + r, k an integer and |r| <= ln2/2 (Cody-Waite: _LN2_HI has 21
    trailing zero bits, so k * _LN2_HI is exact for the |k| < 2^11 that _exp and _tanh see)."""
    k = np.floor(y * _INV_LN2 + 0.5)
    return k, (y - k * _LN2_HI) - k * _LN2_LO


@inline
def _exp(x):
    xs = min(max(x, -746.0), 710.0) if x == x else 0.0  # beyond: 0 and inf anyway
    k, r = _reduce_ln2(xs)
    c = _EXP_C
    p = c[13]
    p = _fma(p, r, c[12]); p = _fma(p, r, c[11]); p = _fma(p, r, c[10])  # noqa: E702
    p = _fma(p, r, c[9]); p = _fma(p, r, c[8]); p = _fma(p, r, c[7])  # noqa: E702
    p = _fma(p, r, c[6]); p = _fma(p, r, c[5]); p = _fma(p, r, c[4])  # noqa: E702
    p = _fma(p, r, c[3]); p = _fma(p, r, c[2]); p = _fma(p, r, c[1])  # noqa: E702
    p = _fma(p, r, 1.0)
    # 2^k as two factors, so that results near the subnormal range and overflow come out right
    kk = np.int64(k)
    k1 = kk >> 1
    y = p * _bits_as_float((k1 + 1023) << 52) * _bits_as_float((kk - k1 + 1023) << 52)
    return y if x == x else x


def _tanh(x):
    """tanh in compiled code: _tanh64, or _tanh32 for a float32 ``x``."""
    raise NotImplementedError("ops._tanh runs in compiled code only")


@overload(_tanh, jit_options=IEEE)
def _tanh_typed(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def tanh32(x):
            return _tanh32(x)
        return tanh32

    def tanh64(x):
        return _tanh64(x)
    return tanh64


@inline
def _tanh64(x):
    # tanh(|x|) = -m / (2 + m), m = expm1(-2|x|) = 2^k (1 + p) - 1 with p = expm1(r), |r| <=
    # ln2/2 (degree 13); m has no cancellation to fear: k = 0 gives m = p, any other k |m| > 0.29.
    # Beyond |x| = 32 tanh rounds to 1, so 2^k stays a normal number.
    a = abs(x)
    k, r = _reduce_ln2(max(-2.0 * a, -64.0))
    c = _EXPM1_C  # 1/n! from n = 1
    p = c[12]
    p = _fma(p, r, c[11]); p = _fma(p, r, c[10]); p = _fma(p, r, c[9])  # noqa: E702
    p = _fma(p, r, c[8]); p = _fma(p, r, c[7]); p = _fma(p, r, c[6])  # noqa: E702
    p = _fma(p, r, c[5]); p = _fma(p, r, c[4]); p = _fma(p, r, c[3])  # noqa: E702
    p = _fma(p, r, c[2]); p = _fma(p, r, c[1]); p = _fma(p, r, c[0])  # noqa: E702
    p = p * r
    s = _bits_as_float((np.int64(k) + 1023) << 52)
    m = _fma(s, p, s - 1.0)
    t = -m / (2.0 + m)
    return np.copysign(t, x) if x == x else x


# float32's tanh, in float32: the same reduction with float32 constants (_LN2_HI32 has 9
# trailing zero bits: k * _LN2_HI32 is exact for the |k| <= 29 it meets), degree 8 and fused
# multiply-adds.  A loop over float32 runs twice as many lanes as over float64, and in float64
# the degree-13 form cost 115 us for W4's 65,536 elements against 35 here (NumPy's 18).  It is
# within 2.5 ulp of the exact tanh, within 3 (2.6e-7) of NumPy's float32 tanh, which is itself
# within 1 (tests/test_fastmath.py sweeps [0, 10) densely); the float64 form rounded was within
# 0.5.  Beyond |x| = 10 float32 tanh rounds to 1.
_F32 = np.float32
_LN2_HI32, _LN2_LO32 = _F32(0.693145751953125), _F32(1.428606765330187045e-06)
_INV_LN2_32 = _F32(_INV_LN2)
_EXPM1_C32 = tuple(_F32(1.0 / math.factorial(n)) for n in range(1, 9))
_ONE32, _TWO32, _HALF32, _MTWO32, _LIM32 = (_F32(v) for v in (1.0, 2.0, 0.5, -2.0, -20.0))


@inline
def _tanh32(x):
    a = abs(x)
    y = max(_MTWO32 * a, _LIM32)
    k = np.floor(y * _INV_LN2_32 + _HALF32)
    r = _fma(-k, _LN2_LO32, _fma(-k, _LN2_HI32, y))
    c = _EXPM1_C32  # 1/n! from n = 1
    p = c[7]
    p = _fma(p, r, c[6]); p = _fma(p, r, c[5]); p = _fma(p, r, c[4])  # noqa: E702
    p = _fma(p, r, c[3]); p = _fma(p, r, c[2]); p = _fma(p, r, c[1])  # noqa: E702
    p = _fma(p, r, c[0]) * r
    s = _bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
    m = _fma(s, p, s - _ONE32)
    t = -m / (_TWO32 + m)
    return np.copysign(t, x) if x == x else x


# ---------------------------------------------------------------- binary rules

def _binary_f(op, a, b):
    """y = f(a, b)."""
    if op == ADD: return a + b
    if op == SUB: return a - b
    if op == MUL: return a * b
    if op == DIV: return a / b
    if op == POW: return a ** b
    if op == MAXIMUM: return a if a >= b else b
    if op == MINIMUM: return a if a <= b else b
    return a * np.nan


def _binary_da(op, a, b, y):
    """dy/da."""
    if op == ADD: return 1.0
    if op == SUB: return 1.0
    if op == MUL: return b
    if op == DIV: return 1.0 / b
    if op == POW: return 0.0 if b == 0.0 else b * a ** (b - 1.0)
    if op == MAXIMUM: return 1.0 if a > b else (0.5 if a == b else 0.0)   # torch splits ties
    if op == MINIMUM: return 1.0 if a < b else (0.5 if a == b else 0.0)
    return np.nan


def _binary_db(op, a, b, y):
    """dy/db."""
    if op == ADD: return 1.0
    if op == SUB: return -1.0
    if op == MUL: return a
    if op == DIV: return -a / (b * b)
    if op == POW: return 0.0 if (a == 0.0 and b >= 0.0) else y * np.log(a)  # torch masks 0 ** b
    if op == MAXIMUM: return 1.0 if b > a else (0.5 if a == b else 0.0)
    if op == MINIMUM: return 1.0 if b < a else (0.5 if a == b else 0.0)
    return np.nan


def _binary_dd(op, a, b, y):
    """Second partials (d2y/da2, d2y/dadb, d2y/db2) for Hessian-vector products."""
    if op == MUL: return 0.0, 1.0, 0.0
    if op == DIV: return 0.0, -1.0 / (b * b), 2.0 * a / (b * b * b)
    if op == POW:
        daa = 0.0 if b == 0.0 or b == 1.0 else b * (b - 1.0) * a ** (b - 2.0)
        if a == 0.0:
            return daa, 0.0, 0.0
        la = np.log(a)
        return daa, a ** (b - 1.0) * (1.0 + b * la), y * la * la
    return 0.0, 0.0, 0.0  # ADD, SUB, MAXIMUM, MINIMUM are piecewise linear


# ---------------------------------------------------------------- calling a rule table
# Kernels and generated code call a table with a constant opcode, ``unary_f(SIN, x, c0, c1)``. That
# passes the opcode on as a plain int64 to the table compiled once per dtype; LLVM inlines the call
# and folds the table to the op's line, as fast as an inlined rule.  Numba's own inlining
# (inline="always") of the table copied and typed all of it at every call site, once per opcode:
# most of a cold test run (benchmarks/NOTES.md, "Rule tables compiled once, not inlined into every
# kernel").  Loops whose opcode changes from one iteration to the next (the scalar interpreters)
# call the ``_inlined`` forms instead: for them a call per op would cost more than the op.

jit = njit(**IEEE, cache=True)
unary_f_inlined, unary_d_inlined, binary_f_inlined, binary_da_inlined, binary_db_inlined = (
    inline(rule) for rule in (_unary_f, _unary_d, _binary_f, _binary_da, _binary_db))
_unary_f_jit, _unary_d_jit, _unary_dd_jit = jit(_unary_f), jit(_unary_d), jit(_unary_dd)
_binary_f_jit, _binary_da_jit, _binary_db_jit, _binary_dd_jit = (
    jit(_binary_f), jit(_binary_da), jit(_binary_db), jit(_binary_dd))


# np.int64(op): a Literal[int] opcode would compile the table once more per opcode
@inline
def unary_f(op, x, c0, c1):
    """y = f(x)."""
    return _unary_f_jit(np.int64(op), x, c0, c1)


@inline
def unary_d(op, x, y, c0, c1):
    """dy/dx, given x and y."""
    return _unary_d_jit(np.int64(op), x, y, c0, c1)


@inline
def unary_dd(op, x, y, c0, c1):
    """d2y/dx2, given x and y."""
    return _unary_dd_jit(np.int64(op), x, y, c0, c1)


@inline
def binary_f(op, a, b):
    """y = f(a, b)."""
    return _binary_f_jit(np.int64(op), a, b)


@inline
def binary_da(op, a, b, y):
    """dy/da."""
    return _binary_da_jit(np.int64(op), a, b, y)


@inline
def binary_db(op, a, b, y):
    """dy/db."""
    return _binary_db_jit(np.int64(op), a, b, y)


@inline
def binary_dd(op, a, b, y):
    """(d2y/da2, d2y/dadb, d2y/db2)."""
    return _binary_dd_jit(np.int64(op), a, b, y)


# ---------------------------------------------------------------- the table
def _sigmoid_eager(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _clamp_eager(x, lo, hi):
    return np.minimum(np.maximum(x, x.dtype.type(lo)), x.dtype.type(hi))


# Families: an op's family names the kernels that run it in each sweep mode (dispatch.py)
LEAF_F, UNARY_F, BINARY_F, WHERE_F, SUM_F, REDUCE_F, RESHAPE_F, GATHER_F, CAT_F, MATMUL_F, \
    COMPARE_F = ("leaf", "unary", "binary", "where", "sum", "reduce", "reshape", "gather", "cat",
                 "matmul", "compare")


class Op:
    """One opcode's row: what Python and the dispatch tables need to know of it."""

    __slots__ = ("code", "name", "saves", "eager", "family", "linear")

    def __init__(self, code, name, saves, eager, family, linear):
        self.code = code      # the opcode
        self.name = name      # grad_fn name as torch prints it
        self.saves = saves    # which values backward reads: "" none, "in", "out", "both"
        self.eager = eager    # NumPy forward on whole arrays (Python side)
        self.family = family  # which kernels sweep it (dispatch.KERNELS)
        self.linear = linear  # piecewise linear: no curvature, its HVP is its VJP on adjdot


OPS = [None] * N_OPCODES
# piecewise-linear ops: the Hessian-vector sweep runs their reverse kernel on the adjoints'
# tangents (their second derivative is zero wherever it exists)
_LINEAR = {NEG, RELU, ABS, ADD_C, MUL_C, DIV_C, RSUB_C, CLAMP, ADD, SUB, MAXIMUM, MINIMUM, WHERE,
           SUM, MEAN, MAX, MIN, RESHAPE, GATHER, CAT, COMPARE, LEAF}


def _family(code):
    if code == LEAF: return LEAF_F
    if code in UNARY: return UNARY_F
    if code in BINARY: return BINARY_F
    if code == SUM or code == MEAN: return SUM_F
    if code in REDUCTIONS: return REDUCE_F
    return {WHERE: WHERE_F, RESHAPE: RESHAPE_F, GATHER: GATHER_F, CAT: CAT_F, MATMUL: MATMUL_F,
            COMPARE: COMPARE_F}[code]


def _op(code, name, saves, eager=None):
    OPS[code] = Op(code, name, saves, eager, _family(code), code in _LINEAR)


_op(LEAF, "AccumulateGrad", "")
_op(NEG, "NegBackward0", "", np.negative)
_op(EXP, "ExpBackward0", "out", np.exp)
_op(LOG, "LogBackward0", "in", np.log)
_op(SIN, "SinBackward0", "in", np.sin)
_op(COS, "CosBackward0", "in", np.cos)
_op(TAN, "TanBackward0", "out", np.tan)
_op(TANH, "TanhBackward0", "out", np.tanh)
_op(SIGMOID, "SigmoidBackward0", "out", _sigmoid_eager)
_op(RELU, "ReluBackward0", "in", lambda x: np.maximum(x, x.dtype.type(0)))
_op(SQRT, "SqrtBackward0", "out", np.sqrt)
_op(ABS, "AbsBackward0", "in", np.abs)
_op(ADD_C, "AddBackward0", "", lambda x, c: x + c)
_op(MUL_C, "MulBackward0", "", lambda x, c: x * c)
_op(DIV_C, "DivBackward0", "", lambda x, c: x / c)
_op(POW_C, "PowBackward0", "in", lambda x, c: x ** c)
_op(RSUB_C, "RsubBackward1", "", lambda x, c: c - x)
_op(RDIV_C, "DivBackward0", "in", lambda x, c: c / x)
_op(RPOW_C, "PowBackward1", "out", lambda x, c: c ** x)
_op(CLAMP, "ClampBackward1", "in", _clamp_eager)
_op(ADD, "AddBackward0", "", np.add)
_op(SUB, "SubBackward0", "", np.subtract)
_op(MUL, "MulBackward0", "in", np.multiply)
_op(DIV, "DivBackward0", "in", np.divide)
_op(POW, "PowBackward1", "both", np.power)
_op(MAXIMUM, "MaximumBackward0", "in", np.maximum)
_op(MINIMUM, "MinimumBackward0", "in", np.minimum)
_op(WHERE, "WhereBackward0", "in")
_op(SUM, "SumBackward0", "")
_op(MEAN, "MeanBackward0", "")
_op(MAX, "MaxBackward1", "both")
_op(MIN, "MinBackward1", "both")
_op(LOGSUMEXP, "LogsumexpBackward0", "both")
_op(SOFTMAX, "SoftmaxBackward0", "out")
_op(LOG_SOFTMAX, "LogSoftmaxBackward0", "out")
_op(RESHAPE, "ViewBackward0", "")
_op(GATHER, "IndexBackward0", "")
_op(CAT, "CatBackward0", "")
_op(MATMUL, "MmBackward0", "in")
_op(COMPARE, "Compare", "")

# Every grad_fn name a tape can hold; a node stores its index here.  Torch names the
# same math by how it was called (x - 2 is SubBackward0, x.T is PermuteBackward0).
# Append only: saved tapes refer to these by position.
NAMES = [
    "AccumulateGrad", "NegBackward0", "ExpBackward0", "LogBackward0", "SinBackward0",
    "CosBackward0", "TanBackward0", "TanhBackward0", "SigmoidBackward0", "ReluBackward0",
    "SqrtBackward0", "AbsBackward0", "AddBackward0", "SubBackward0", "MulBackward0",
    "DivBackward0", "PowBackward0", "PowBackward1", "RsubBackward1", "ClampBackward1",
    "ClampMinBackward0", "ClampMaxBackward0", "MaximumBackward0", "MinimumBackward0",
    "WhereBackward0", "SumBackward0", "SumBackward1", "MeanBackward0", "MeanBackward1",
    "MaxBackward0", "MaxBackward1", "MinBackward0", "MinBackward1", "LogsumexpBackward0",
    "SoftmaxBackward0", "LogSoftmaxBackward0", "ViewBackward0", "ReshapeAliasBackward0",
    "UnsqueezeBackward0", "SqueezeBackward0", "CloneBackward0", "ToCopyBackward0",
    "SelectBackward0", "SliceBackward0", "IndexBackward0", "TransposeBackward0",
    "PermuteBackward0", "TBackward0", "ExpandBackward0", "CatBackward0", "StackBackward0",
    "MmBackward0", "MvBackward0", "DotBackward0", "BmmBackward0", "Compare",
]
NAME_ID = {name: i for i, name in enumerate(NAMES)}
assert all(op.name in NAME_ID for op in OPS if op is not None)

# The value each opcode's backward reads, as a table the Numba sweeps can index:
# bit 0 its inputs, bit 1 its output.
SAVES = np.zeros(N_OPCODES, dtype=np.int8)
for _o in OPS:
    if _o is not None:
        SAVES[_o.code] = {"": 0, "in": 1, "out": 2, "both": 3}[_o.saves]
KNOWN = np.array([o is not None for o in OPS], dtype=np.bool_)

# Every opcode's stable name (its constant's name here).  A saved tape stores its opcodes by
# these names, so that renumbering or adding ops never changes what an existing file means.
OPCODE_NAME = {
    LEAF: "LEAF", NEG: "NEG", EXP: "EXP", LOG: "LOG", SIN: "SIN", COS: "COS", TAN: "TAN",
    TANH: "TANH", SIGMOID: "SIGMOID", RELU: "RELU", SQRT: "SQRT", ABS: "ABS", ADD_C: "ADD_C",
    MUL_C: "MUL_C", DIV_C: "DIV_C", POW_C: "POW_C", RSUB_C: "RSUB_C", RDIV_C: "RDIV_C",
    RPOW_C: "RPOW_C", CLAMP: "CLAMP", ADD: "ADD", SUB: "SUB", MUL: "MUL", DIV: "DIV", POW: "POW",
    MAXIMUM: "MAXIMUM", MINIMUM: "MINIMUM", WHERE: "WHERE", SUM: "SUM", MEAN: "MEAN", MAX: "MAX",
    MIN: "MIN", LOGSUMEXP: "LOGSUMEXP", SOFTMAX: "SOFTMAX", LOG_SOFTMAX: "LOG_SOFTMAX",
    RESHAPE: "RESHAPE", GATHER: "GATHER", CAT: "CAT", MATMUL: "MATMUL", COMPARE: "COMPARE",
}
OPCODE_OF = {name: code for code, name in OPCODE_NAME.items()}
assert sorted(OPCODE_NAME) == [o.code for o in OPS if o is not None]
