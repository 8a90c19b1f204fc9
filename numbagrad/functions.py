"""The differentiable functions: check arguments, compute eagerly with NumPy, record.

Each function validates its input (PyTorch's error texts where users know
them), computes the value with NumPy, and calls ``record`` with the opcode
and whatever the sweeps need (constants, layouts, index maps).  Elementwise
ops on 0-d float64 tensors try the scalar lane first (``lane.py``).
"""
import builtins
import math
import numbers
from collections import namedtuple

import numpy as np

from . import bulk, grad_mode
from .sweeps import PAR_MIN
from .ops import (
    OPS, NEG, EXP, LOG, SIN, COS, TAN, TANH, SIGMOID, RELU, SQRT, ABS,
    ADD_C, MUL_C, DIV_C, POW_C, RSUB_C, RDIV_C, RPOW_C, CLAMP,
    ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM, WHERE,
    SUM, MEAN, MAX, MIN, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX,
    RESHAPE, GATHER, CAT, MATMUL, COMPARE, LT, LE, GT, GE, EQ, NE, NAME_ID,
)
from .tape import version_counter
from .tensor import _shape_arg, note_number_use
from .tensor import Tensor, record, mark_modified, as_tensor, get_default_dtype, _dim, Size, \
    contiguous

def _quiet():
    return np.errstate(all="ignore")  # PyTorch computes inf and nan silently; so do we


try:
    # NumPy 2 keeps its error state in a context variable: setting it directly costs 0.1 us,
    # np.errstate 0.9 us, which was a tenth of an eager scalar op.  Other NumPy: np.errstate.
    from numpy._core._ufunc_config import _extobj_contextvar as _ERR_STATE
    from numpy._core.umath import _make_extobj
    _IGNORE_ALL = _make_extobj(all="ignore")
except (ImportError, AttributeError, TypeError):  # pragma: no cover
    _ERR_STATE = None


def _quietly(fn, *args):
    """``np.asarray(fn(*args))`` computed as inside ``_quiet()``: the hot ops' path."""
    if _ERR_STATE is None:  # pragma: no cover
        with _quiet():
            return np.asarray(fn(*args))
    token = _ERR_STATE.set(_IGNORE_ALL)
    try:
        return np.asarray(fn(*args))
    finally:
        _ERR_STATE.reset(token)


def _is_number(x):
    if type(x) is float or type(x) is int:  # the common cases, without the ABC check
        return True
    if type(x) is Tensor:
        return False
    if isinstance(x, numbers.Number) and not isinstance(x, Tensor):
        note_number_use(x)  # an item() value as an operand: its replay checks it exactly
        return True
    return False


def _recorded(x):
    """Whether an op on ``x`` goes on a tape (see ``record``)."""
    return grad_mode.is_grad_enabled() and (x._requires_grad or x._tape is not None)


def _tensor_arg(x):
    return x if isinstance(x, Tensor) else as_tensor(x)


def _float(a):
    """Values of an integer/bool array as the default float dtype (for float-valued ops)."""
    return a if a.dtype.kind == "f" else a.astype(get_default_dtype())


def _scalar(c):
    """A Python number kept weak for NumPy's promotion (a float32 tensor stays float32)."""
    if type(c) is float or type(c) is int:
        return c
    if isinstance(c, (bool, np.bool_)):
        return int(c)
    if isinstance(c, numbers.Integral):
        return int(c)
    if isinstance(c, numbers.Real):
        return float(c)
    raise TypeError(f"unsupported operand type: {type(c).__name__}")


# ---------------------------------------------------------------- unary elementwise

# exp, log, sin, cos, tan, tanh and sqrt are wrapped at the end of this module: the scalar
# lane (lane.unary_function) runs first, in the same frame, and these run where it does not apply
def _unary(opcode, x):
    if type(x) is not Tensor:
        x = _tensor_arg(x)
    d = x._data
    op = OPS[opcode]
    value = _quietly(op.eager, d if d.dtype.kind == "f" else _float(d))
    return record(opcode, op.name, (x,), value)


def exp(x):
    """e ** x, elementwise.

    >>> import numbagrad as ng
    >>> ng.exp(ng.tensor([0.0, 1.0]))
    tensor([1.0000, 2.7183])
    """
    return _unary(EXP, x)


def log(x):
    """Natural logarithm, elementwise."""
    return _unary(LOG, x)


def sin(x):
    """Sine, elementwise."""
    return _unary(SIN, x)


def cos(x):
    """Cosine, elementwise."""
    return _unary(COS, x)


def tan(x):
    """Tangent, elementwise."""
    return _unary(TAN, x)


def tanh(x):
    """Hyperbolic tangent, elementwise.

    >>> import numbagrad as ng
    >>> ng.tanh(ng.tensor([0.0]))
    tensor([0.])
    """
    return _unary(TANH, x)


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise, without overflow for large ``|x|``."""
    return _unary(SIGMOID, x)


def sqrt(x):
    """Square root, elementwise."""
    return _unary(SQRT, x)


def neg(x):
    """-x (keeps integer dtypes)."""
    x = _tensor_arg(x)
    out = lane.unary(NEG, x)
    if out is not None:
        return out
    if x.dtype.kind == "b":
        raise TypeError("Negation, the `-` operator, on a bool tensor is not supported.")
    return record(NEG, "NegBackward0", (x,), np.negative(x._data))


def abs(x):
    """``|x|``, elementwise; its gradient at 0 is 0 as in PyTorch."""
    x = _tensor_arg(x)
    out = lane.unary(ABS, x)
    if out is not None:
        return out
    return record(ABS, "AbsBackward0", (x,), np.abs(x._data))


def relu(x):
    """max(x, 0), elementwise; its gradient at 0 is 0."""
    x = _tensor_arg(x)
    return record(RELU, "ReluBackward0", (x,), np.maximum(x._data, x._data.dtype.type(0)))


def clamp(x, min=None, max=None):
    """Limit values to [min, max] (either may be None, or a tensor).

    >>> import numbagrad as ng
    >>> ng.clamp(ng.tensor([-2.0, 0.5, 3.0]), min=0.0, max=1.0)
    tensor([0.0000, 0.5000, 1.0000])
    """
    x = _tensor_arg(x)
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor) \
            or isinstance(min, np.ndarray) or isinstance(max, np.ndarray):
        out = x if min is None else maximum(x, min)
        return out if max is None else minimum(out, max)
    lo = -np.inf if min is None else float(min)
    hi = np.inf if max is None else float(max)
    name = "ClampBackward1" if min is not None and max is not None else (
        "ClampMinBackward0" if min is not None else "ClampMaxBackward0")
    with _quiet():
        value = np.asarray(OPS[CLAMP].eager(_float(x._data), lo, hi)) if x.dtype.kind == "f" \
            else np.clip(x._data, min, max)
    return record(CLAMP, name, (x,), value, consts=(lo, hi))


clip = clamp


# ---------------------------------------------------------------- binary elementwise

def _result_dtype(a, b):
    """PyTorch's promotion: floats win over ints, and a 0-d tensor defers to a dimensioned one."""
    da, db = a.dtype, b.dtype
    fa, fb = da.kind == "f", db.kind == "f"
    if fa != fb:
        return da if fa else db
    if fa and (a.ndim == 0) != (b.ndim == 0):
        return db if a.ndim == 0 else da
    return np.promote_types(da, db)


def _shapes_text(shapes):
    """``(3, 4) and (2, 5)``: shapes as tuples, for error messages."""
    shapes = [tuple(int(d) for d in sh) for sh in shapes]
    if len(shapes) <= 2:
        return " and ".join(map(str, shapes))
    return ", ".join(map(str, shapes[:-1])) + f" and {shapes[-1]}"


def broadcast_shapes(*shapes):
    """The shape that ``shapes`` broadcast to, or PyTorch's error naming the clash."""
    if len(shapes) == 2 and shapes[0] == shapes[1]:
        return tuple(shapes[0])
    nd = builtins.max((len(s) for s in shapes), default=0)
    out = [1] * nd
    for s in shapes:
        for d in range(1, len(s) + 1):
            size = s[-d]
            if size != 1:
                if out[-d] != 1 and out[-d] != size:
                    # PyTorch's sentence, then every full shape: in a deep expression the
                    # two sizes alone do not say which operands clashed
                    raise RuntimeError(
                        f"The size of tensor a ({out[-d]}) must match the size of tensor b "
                        f"({size}) at non-singleton dimension {nd - d} (shapes "
                        f"{_shapes_text(shapes)})")
                out[-d] = size
    return tuple(out)


def _binary_tensors(opcode, a, b, name=None):
    if type(a) is not Tensor or type(b) is not Tensor:
        a, b = _tensor_arg(a), _tensor_arg(b)
    av, bv = a._data, b._data
    if not (av.shape == bv.shape and av.dtype == bv.dtype and av.dtype.kind == "f"):
        # anything but two float arrays of one shape and dtype (the fast path) is checked here
        broadcast_shapes(av.shape, bv.shape)
        dt = _result_dtype(a, b)
        if opcode == DIV and dt.kind != "f":
            dt = get_default_dtype()
        av = av if av.dtype == dt else av.astype(dt)
        bv = bv if bv.dtype == dt else bv.astype(dt)
    op = OPS[opcode]
    value = bulk.binary(opcode, av, bv) if av.size >= PAR_MIN else None
    if value is None:
        value = _quietly(op.eager, av, bv)
    return record(opcode, name or op.name, (a, b), value)


def _with_scalar(opcode, x, c, name, eager):
    """An op between a tensor and a Python number: the number is a constant on the tape."""
    c = _scalar(c)
    d = x._array
    if d is None or not d.ndim:  # a 0-d tensor: the scalar lane's, where it applies
        out = lane.with_const(opcode, NAME_ID[name], x, c)
        if out is not None:
            return out
        d = x._data
    value = bulk.with_number(opcode, d, c) if d.size >= PAR_MIN else None
    if value is None:
        value = _quietly(eager, d, c)
    if d.dtype.kind != "f" and value.dtype.kind == "f":
        value = value.astype(get_default_dtype())
    return record(opcode, name, (x,), value, consts=(float(c),))


def add(a, b):
    """a + b with broadcasting.

    >>> import numbagrad as ng
    >>> x = ng.tensor([1.0, 2.0], requires_grad=True)
    >>> x + 2
    tensor([3., 4.], grad_fn=<AddBackward0>)
    """
    if type(a) is Tensor and type(b) is Tensor:
        return lane.add(a, b)
    if _is_number(b):
        return _with_scalar(ADD_C, _tensor_arg(a), b, "AddBackward0", lambda x, c: x + c)
    if _is_number(a):
        return _with_scalar(ADD_C, _tensor_arg(b), a, "AddBackward0", lambda x, c: c + x)
    return _binary_tensors(ADD, a, b)


def sub(a, b):
    """a - b with broadcasting."""
    if type(a) is Tensor and type(b) is Tensor:
        return lane.sub(a, b)
    if _is_number(b):
        # x - c is recorded as x + (-c), which rounds identically
        return _with_scalar(ADD_C, _tensor_arg(a), -_scalar(b), "SubBackward0", lambda x, c: x + c)
    if _is_number(a):
        return _with_scalar(RSUB_C, _tensor_arg(b), a, "RsubBackward1", lambda x, c: c - x)
    return _binary_tensors(SUB, a, b)


def mul(a, b):
    """a * b with broadcasting."""
    if type(a) is Tensor and type(b) is Tensor:
        return lane.mul(a, b)
    if _is_number(b):
        return _with_scalar(MUL_C, _tensor_arg(a), b, "MulBackward0", lambda x, c: x * c)
    if _is_number(a):
        return _with_scalar(MUL_C, _tensor_arg(b), a, "MulBackward0", lambda x, c: c * x)
    return _binary_tensors(MUL, a, b)


def div(a, b):
    """a / b (true division) with broadcasting."""
    if type(a) is Tensor and type(b) is Tensor:
        return lane.div(a, b)
    if _is_number(b):
        return _with_scalar(DIV_C, _tensor_arg(a), b, "DivBackward0", lambda x, c: x / c)
    if _is_number(a):
        return _with_scalar(RDIV_C, _tensor_arg(b), a, "DivBackward0", lambda x, c: c / x)
    return _binary_tensors(DIV, a, b)


def pow(a, b):
    """a ** b with broadcasting (either may be a number).

    >>> import numbagrad as ng
    >>> ng.pow(ng.tensor([2.0, 3.0]), 2)
    tensor([4., 9.])
    """
    if _is_number(b):
        x = _tensor_arg(a)
        if x.dtype.kind != "f" and isinstance(b, numbers.Integral) and b < 0:
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        return _with_scalar(POW_C, x, b, "PowBackward0", lambda x, c: x ** c)
    if _is_number(a):
        x = _tensor_arg(b)
        return _with_scalar(RPOW_C, x, a, "PowBackward1",
                            lambda x, c: (c ** _float(x)) if x.dtype.kind != "f" else c ** x)
    return _binary_tensors(POW, a, b)


def maximum(a, b):
    """Elementwise max; a tie sends half the gradient to each side, as in PyTorch."""
    return _binary_tensors(MAXIMUM, a, b)


def minimum(a, b):
    """Elementwise min; a tie sends half the gradient to each side."""
    return _binary_tensors(MINIMUM, a, b)


_COMPARE_KIND = {np.less: LT, np.less_equal: LE, np.greater: GT, np.greater_equal: GE,
                 np.equal: EQ, np.not_equal: NE}


def compare(a, b, ufunc):
    """A comparison: a bool tensor without gradient, recorded (when its operands are) so that
    a replay recomputes it."""
    ta = _tensor_arg(a)
    tb = b if isinstance(b, Tensor) else as_tensor(np.asarray(b, dtype=ta.dtype)
                                                  if _is_number(b) else b)
    broadcast_shapes(ta.shape, tb.shape)
    value = np.asarray(ufunc(ta._data, tb._data))
    return record(COMPARE, "Compare", (ta, tb), value, consts=(float(_COMPARE_KIND[ufunc]),),
                  differentiable=False)


def where(condition, a, b):
    """Pick ``a`` where ``condition`` holds, else ``b`` (all broadcast together).

    >>> import numbagrad as ng
    >>> x = ng.tensor([-1.0, 2.0])
    >>> ng.where(x > 0, x, 0.0)
    tensor([0., 2.])
    """
    cond_t = condition if isinstance(condition, Tensor) else as_tensor(np.asarray(condition))
    cond = cond_t._data
    if cond.dtype != np.bool_:
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor "
                           f"with dtype {cond.dtype}")
    ta = a if isinstance(a, Tensor) else None
    tb = b if isinstance(b, Tensor) else None
    like = ta if ta is not None else tb
    if like is None:
        like = as_tensor(np.asarray(a, dtype=get_default_dtype() if isinstance(a, float) else None))
    ta = ta if ta is not None else as_tensor(np.asarray(a, dtype=like.dtype if _is_number(a) else None))
    tb = tb if tb is not None else as_tensor(np.asarray(b, dtype=like.dtype if _is_number(b) else None))
    broadcast_shapes(cond.shape, ta.shape, tb.shape)
    dt = _result_dtype(ta, tb)
    value = np.asarray(np.where(cond, ta._data.astype(dt, copy=False), tb._data.astype(dt, copy=False)))
    return record(WHERE, "WhereBackward0", (cond_t, ta, tb), value)


# ---------------------------------------------------------------- reductions

def _axes(dim, axis, ndim):
    if dim is None:
        dim = axis
    elif axis is not None:
        raise TypeError("pass dim or axis, not both")
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        axes = sorted({_dim(d, ndim) for d in dim})
        if len(axes) != len(dim):
            raise RuntimeError(f"dim {tuple(dim)} appears multiple times in the list of dims")
        return axes
    return [_dim(dim, ndim)]


def _blocks(axes):
    """Runs of consecutive axes, last run first: each run is one (outer, n, inner) reduction."""
    runs = []
    for a in axes:
        if runs and runs[-1][1] == a:
            runs[-1][1] = a + 1
        else:
            runs.append([a, a + 1])
    return runs[::-1]


def _layout(shape, lo, hi):
    outer = math.prod(shape[:lo])
    n = math.prod(shape[lo:hi])
    inner = math.prod(shape[hi:])
    return outer, n, inner


def _reduce_chain(x, axes, keepdim, last_opcode, last_name, eager_last):
    """Reduce ``x`` over ``axes``: SUM over every run of axes but the last, then ``last_opcode``."""
    if axes is None and not keepdim:  # all of it: one node, without the layout work below
        v = x._data if last_opcode == SUM else _float(x._data)
        n = v.size
        value = _quietly(eager_last, v.reshape(1, n, 1), n).reshape(())
        return record(last_opcode, last_name, (x,), value, consts=(float(n),),
                      iparams=(1, n, 1))
    shape = tuple(x.shape)
    if axes is None:
        axes = list(range(len(shape)))
    keep_shape = tuple(1 if d in axes else s for d, s in enumerate(shape))
    final_shape = keep_shape if keepdim else tuple(s for d, s in enumerate(shape) if d not in axes)
    count = math.prod([shape[a] for a in axes]) if axes else 1
    runs = _blocks(axes) if axes else [[0, 0]]
    cur, t = shape, x
    for r, (lo, hi) in enumerate(runs):
        outer, n, inner = _layout(cur, lo, hi)
        last = r == len(runs) - 1
        new_shape = final_shape if last else cur[:lo] + cur[hi:]
        v = _float(t._data) if last_opcode != SUM else t._data
        v3 = v.reshape(outer, n, inner)
        with _quiet():
            if last:
                value = np.asarray(eager_last(v3, count)).reshape(new_shape)
                t = record(last_opcode, last_name, (t,), value, consts=(float(count),),
                           iparams=(outer, n, inner))
            else:
                value = np.asarray(v3.sum(axis=1)).reshape(new_shape)
                t = record(SUM, "SumBackward1", (t,), value, iparams=(outer, n, inner))
        cur = new_shape
    return t


def sum(x, dim=None, keepdim=False, *, axis=None):
    """Sum of all elements, or over ``dim`` (an int or a tuple).

    >>> import numbagrad as ng
    >>> ng.sum(ng.tensor([[1.0, 2.0], [3.0, 4.0]]), dim=0)
    tensor([4., 6.])
    """
    x = _tensor_arg(x)
    axes = _axes(dim, axis, x.ndim)
    name = "SumBackward0" if axes is None else "SumBackward1"
    return _reduce_chain(x, axes, keepdim, SUM, name, lambda v, count: v.sum(axis=1))


def mean(x, dim=None, keepdim=False, *, axis=None):
    """Mean of all elements, or over ``dim``.

    >>> import numbagrad as ng
    >>> ng.mean(ng.tensor([1.0, 2.0, 6.0]))
    tensor(3.)
    """
    x = _tensor_arg(x)
    if x.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {x.dtype}")
    axes = _axes(dim, axis, x.ndim)
    name = "MeanBackward0" if axes is None else "MeanBackward1"
    return _reduce_chain(x, axes, keepdim, MEAN, name, lambda v, count: v.sum(axis=1) / count)


return_types_max = namedtuple("max", ["values", "indices"])
return_types_min = namedtuple("min", ["values", "indices"])


def _extremum(x, dim, keepdim, axis, opcode, pick, argpick, kind):
    x = _tensor_arg(x)
    if isinstance(dim, (Tensor, np.ndarray)):
        return maximum(x, dim) if opcode == MAX else minimum(x, dim)
    axes = _axes(dim, axis, x.ndim)
    if axes is None:
        if x.numel() == 0:
            raise RuntimeError(f"{kind}(): Expected reduction dim to be specified for "
                               "input.numel() == 0. Specify the reduction dim with the 'dim' argument.")
        value = np.asarray(pick(x._data))
        # the whole-tensor max shares its gradient evenly among ties (as PyTorch does)
        return record(opcode, f"{kind.capitalize()}Backward1", (x,), value,
                      iparams=(1, x.numel(), 1, 1))
    if len(axes) != 1:
        raise TypeError(f"{kind}() takes one dim, got {dim!r}")
    d = axes[0]
    if x.shape[d] == 0:
        raise IndexError(f"{kind}(): Expected reduction dim {d} to have non-zero size.")
    outer, n, inner = _layout(x.shape, d, d + 1)
    values = np.asarray(pick(x._data, axis=d, keepdims=keepdim))
    indices = np.asarray(argpick(x._data, axis=d, keepdims=keepdim))
    v = record(opcode, f"{kind.capitalize()}Backward0", (x,), values, iparams=(outer, n, inner, 0))
    result = return_types_max if opcode == MAX else return_types_min
    return result(v, Tensor(indices.astype(np.int64)))


def max(x, dim=None, keepdim=False, *, axis=None):
    """The largest element, or ``(values, indices)`` along ``dim``, or ``maximum(x, other)``.

    >>> import numbagrad as ng
    >>> ng.max(ng.tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).values
    tensor([5., 7.])
    """
    return _extremum(x, dim, keepdim, axis, MAX, np.max, np.argmax, "max")


def min(x, dim=None, keepdim=False, *, axis=None):
    """The smallest element, or ``(values, indices)`` along ``dim``, or ``minimum(x, other)``."""
    return _extremum(x, dim, keepdim, axis, MIN, np.min, np.argmin, "min")


def _lse_eager(v3, count):
    m = np.max(v3, axis=1, keepdims=True) if v3.shape[1] else np.full(
        (v3.shape[0], 1, v3.shape[2]), -np.inf, v3.dtype)
    m = np.where(np.isinf(m), 0, m).astype(v3.dtype)
    return np.log(np.sum(np.exp(v3 - m), axis=1)) + m[:, 0, :]


def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x))) over ``dim``, computed without overflow.

    >>> import numbagrad as ng
    >>> ng.logsumexp(ng.tensor([0.0, 0.0]), dim=0)
    tensor(0.6931)
    """
    x = _tensor_arg(x)
    axes = _axes(dim, None, x.ndim)
    if axes is None:
        axes = list(range(x.ndim))
    if len(_blocks(axes)) > 1:  # bring the reduced axes together at the end
        rest = [d for d in range(x.ndim) if d not in axes]
        x = permute(x, rest + axes)
        out = logsumexp(x, tuple(range(len(rest), x.ndim)), False)
        if keepdim:
            out = reshape(out, tuple(1 if d in axes else s for d, s in enumerate(x.shape)))
        return out
    lo, hi = _blocks(axes)[0]
    outer, n, inner = _layout(x.shape, lo, hi)
    shape = tuple(1 if d in axes else s for d, s in enumerate(x.shape)) if keepdim else \
        tuple(s for d, s in enumerate(x.shape) if d not in axes)
    with _quiet():
        value = np.asarray(_lse_eager(_float(x._data).reshape(outer, n, inner), n)).reshape(shape)
    return record(LOGSUMEXP, "LogsumexpBackward0", (x,), value, iparams=(outer, n, inner))


def _normalise(opcode, name, x, dim):
    x = _tensor_arg(x)
    d = _dim(dim, x.ndim)
    outer, n, inner = _layout(x.shape, d, d + 1) if x.ndim else (1, 1, 1)
    v3 = _float(x._data).reshape(outer, n, inner)
    with _quiet():
        lse = _lse_eager(v3, n)[:, None, :]
        value = np.exp(v3 - lse) if opcode == SOFTMAX else v3 - lse
    return record(opcode, name, (x,), np.asarray(value.reshape(x.shape), dtype=v3.dtype),
                  iparams=(outer, n, inner))


def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along ``dim``.

    >>> import numbagrad as ng
    >>> ng.softmax(ng.tensor([0.0, 0.0]), dim=0)
    tensor([0.5000, 0.5000])
    """
    return _normalise(SOFTMAX, "SoftmaxBackward0", x, dim)


def log_softmax(x, dim=-1):
    """x - logsumexp(x) along ``dim``."""
    return _normalise(LOG_SOFTMAX, "LogSoftmaxBackward0", x, dim)


# ---------------------------------------------------------------- shapes and indexing

def _of_shape(source):
    return "" if source is None else f" (a tensor of shape {tuple(int(d) for d in source)})"


def _shape_from(args, numel, source=None):
    if len(args) == 1 and isinstance(args[0], (tuple, list, Size)):
        args = tuple(args[0])
    shape = [int(s) for s in args]
    if shape.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    known = math.prod([s for s in shape if s != -1])
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{shape}' is invalid for input of size {numel}"
                               + _of_shape(source))
        shape[shape.index(-1)] = numel // known
    elif known != numel or builtins.any(s < 0 for s in shape):
        raise RuntimeError(f"shape '{shape}' is invalid for input of size {numel}"
                           + _of_shape(source))
    return tuple(shape)


def reshape(x, *shape, name="ViewBackward0"):
    """The same elements in a new shape (one dimension may be -1); a view, no copy.

    >>> import numbagrad as ng
    >>> ng.arange(6).reshape(2, -1).shape
    Size([2, 3])
    """
    x = _tensor_arg(x)
    shape = _shape_from(shape, x.numel(), x.shape)
    return record(RESHAPE, name, (x,), x._data.reshape(shape), alias=True)


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims start_dim..end_dim into one."""
    x = _tensor_arg(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = _dim(start_dim, x.ndim), _dim(end_dim, x.ndim)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:]
    return reshape(x, shape)


def squeeze(x, dim=None):
    """Drop axes of length 1 (all, or just ``dim``)."""
    x = _tensor_arg(x)
    if dim is None:
        shape = tuple(s for s in x.shape if s != 1)
    else:
        d = _dim(dim, x.ndim)
        shape = tuple(s for i, s in enumerate(x.shape) if i != d or s != 1)
    return reshape(x, shape, name="SqueezeBackward0")


def unsqueeze(x, dim):
    """Insert an axis of length 1 at ``dim``."""
    x = _tensor_arg(x)
    d = _dim(dim, x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:], name="UnsqueezeBackward0")


def _gather(x, value, idx, name):
    """Record ``value`` = x.flat[idx] (idx shaped like value): indexing, permutes, expands."""
    flat = np.asarray(idx, dtype=np.int64)
    flat = flat if flat.ndim == 1 else flat.reshape(-1)
    if flat.base is not None:  # a view (of a positions array, say): a compact copy of its own
        flat = flat.copy()
    flat.flags.writeable = False  # the tape keeps it without a copy (Tape.append)
    return record(GATHER, name, (x,), contiguous(value), iparams=flat)


def _gather_run(x, value, lo, name):
    """Record ``value`` = x.flat[lo:lo + value.size], a contiguous run, by its first position
    alone (kernels.gather_fwd); a tuple, not an array, so that the tape's rows stay comparable
    (an eager graph recorded again reuses the last one's arrays: tape._arrays_of_rows)."""
    return record(GATHER, name, (x,), contiguous(value), iparams=(int(lo),))


def _positions(x):
    return np.arange(x.numel(), dtype=np.int64).reshape(x.shape)


def _basic_positions(shape, key):
    """``_positions`` of a tensor of ``shape`` indexed by ``key`` (ints, slices, None, an
    Ellipsis: basic indexing), flat, without the arange of every position: ``X[i]`` of a
    1000 x 1000 tensor made an arange of 10^6 positions to keep 1,000 (``index`` uses this
    where the selection is under an eighth of the tensor: it costs 7 us against 0.7 for the
    arange of 100 positions).

    Basic indexing is affine in the flat position.  NumPy indexes a read-only int64 array of
    ``shape`` and C strides laid over one element (no element is read: with an Ellipsis in the
    key the result is a view even when every axis gets an int), and the view's offset and
    strides give the positions."""
    strides, step = [], 8
    for n in reversed(shape):
        strides.append(step)
        step *= builtins.max(n, 1)
    anchor = np.zeros(1, dtype=np.int64)
    lattice = np.lib.stride_tricks.as_strided(anchor, shape=shape, strides=strides[::-1],
                                              writeable=False)
    if not any(k is Ellipsis for k in key):
        key = key + (Ellipsis,)
    view = lattice[key]
    first = (view.__array_interface__["data"][0] - anchor.__array_interface__["data"][0]) // 8
    if view.ndim == 0:
        return np.array([first], dtype=np.int64)
    n, st = view.shape[-1], view.strides[-1] // 8
    pos = np.arange(first, first + n * st, st, dtype=np.int64) if n > 1 else \
        np.full(n, first, dtype=np.int64)
    if view.ndim == 1:
        return pos
    for n, st in zip(view.shape[-2::-1], view.strides[-2::-1]):
        pos = (np.arange(n, dtype=np.int64) * (st // 8)).reshape((n,) + (1,) * pos.ndim) + pos
    out = np.empty(view.size, dtype=np.int64)
    out.reshape(view.shape)[...] = pos
    return out


def permute(x, *dims):
    """Reorder the axes (``x.permute(1, 0)`` transposes a matrix)."""
    x = _tensor_arg(x)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) != x.ndim:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does "
                           f"not match the length of the desired ordering of dimensions i.e. "
                           f"input.dim() = {x.ndim} is not equal to len(dims) = {len(dims)}")
    dims = tuple(_dim(d, x.ndim) for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    if not _recorded(x):
        return Tensor(contiguous(x._data.transpose(dims)))
    return _gather(x, x._data.transpose(dims), _positions(x).transpose(dims), "PermuteBackward0")


def transpose(x, dim0, dim1, name="TransposeBackward0"):
    """Swap two axes."""
    x = _tensor_arg(x)
    d0, d1 = _dim(dim0, x.ndim), _dim(dim1, x.ndim)
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    if not _recorded(x):
        return Tensor(contiguous(x._data.transpose(dims)))
    return _gather(x, x._data.transpose(dims), _positions(x).transpose(dims), name)


def expand(x, *shape):
    """Broadcast to ``shape`` (-1 keeps a dimension); the gradient sums back."""
    x = _tensor_arg(x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    if lead < 0:
        raise RuntimeError(f"expand: the number of sizes provided ({len(shape)}) must be greater "
                           f"or equal to the number of dimensions in the tensor ({x.ndim})")
    shape = tuple(x.shape[d - lead] if s == -1 and d >= lead else s for d, s in enumerate(shape))
    shape = _shape_arg(shape)  # ints, none negative, the element count fits (names the size)
    if broadcast_shapes(x.shape, shape) != tuple(shape):
        raise RuntimeError(f"The expanded size of the tensor must match the existing size at "
                           f"non-singleton dimensions: {tuple(x.shape)} -> {tuple(shape)}")
    value = np.broadcast_to(x._data, shape)
    if not _recorded(x):
        return Tensor(contiguous(value))
    return _gather(x, value, np.broadcast_to(_positions(x), shape), "ExpandBackward0")


def _index_key(key):
    """A __getitem__ key with tensors turned into arrays, and the grad_fn name it earns."""
    if not isinstance(key, tuple):
        key = (key,)
    out, name = [], "SelectBackward0"
    for k in key:
        if isinstance(k, Tensor):
            k = k._data
        if isinstance(k, list):
            k = np.asarray(k)
        if isinstance(k, np.ndarray):
            if k.dtype.kind not in "iub":
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            name = "IndexBackward0"
        elif isinstance(k, (slice, type(None), type(Ellipsis))):
            if name == "SelectBackward0":
                name = "SliceBackward0"
        elif not isinstance(k, numbers.Integral):
            raise IndexError(f"only integers, slices, None, Ellipsis and integer or boolean "
                             f"tensors are valid indices (got {type(k).__name__})")
        out.append(k)
    return tuple(out), name


def index(x, key):
    """``x[key]``: ints, slices, None, Ellipsis, integer or boolean arrays.

    >>> import numbagrad as ng
    >>> ng.arange(6.0).reshape(2, 3)[:, 1]
    tensor([1., 4.])
    """
    key, name = _index_key(key)
    value = np.asarray(x._data[key])
    if not _recorded(x):
        return Tensor(value.copy() if np.shares_memory(value, x._data) else value,
                      version=version_counter(x))
    if x.ndim == 1 and len(key) == 1 and type(key[0]) is slice:  # x[a:b:c]
        start, stop, step = key[0].indices(x.shape[0])
        if step == 1 and value.size > 1:
            return _gather_run(x, value, start, name)
        return _gather(x, value, np.arange(start, stop, step, dtype=np.int64), name)
    lo = _run_start(x._data, value)
    if lo is not None:  # X[2:5], X[i], ...: the run's first position stands for them all
        return _gather_run(x, value, lo, name)
    if name != "IndexBackward0" and value.size * 8 < x._data.size and \
            not any(type(k) in (bool, np.bool_) for k in key):
        return _gather(x, value, _basic_positions(x.shape, key), name)
    return _gather(x, value, _positions(x)[key], name)


def _run_start(data, value):
    """Where ``value``, ``data[key]``, starts in ``data`` when it is a view of more than one
    element whose elements are a contiguous run of ``data``'s (a C-contiguous view of a
    C-contiguous array: basic indexing, ``x[1:]``, ``X[2:5]``, ``X[i]``), else None.  A GATHER
    then keeps that one position (kernels.gather_fwd), not one per element."""
    if value.size > 1 and value.flags.c_contiguous and data.flags.c_contiguous \
            and np.may_share_memory(value, data):
        start = value.__array_interface__["data"][0] - data.__array_interface__["data"][0]
        return start // data.itemsize
    return None


def setitem(x, key, value):
    """``x[key] = value`` in place (on tensors that are not part of a recorded graph)."""
    key, _ = _index_key(key)
    v = value._data if isinstance(value, Tensor) else value
    recording = grad_mode.is_grad_enabled() and (
        x._requires_grad or (isinstance(value, Tensor) and value._requires_grad))
    if recording:
        if x.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
        raise RuntimeError("item assignment into a tensor that is part of a recorded graph is not "
                           "differentiable here: build the result with ng.where or ng.cat instead")
    x._data[key] = v
    mark_modified(x)


def cat(tensors, dim=0):
    """Join tensors along an existing axis.

    >>> import numbagrad as ng
    >>> ng.cat([ng.zeros(2), ng.ones(1)])
    tensor([0., 0., 1.])
    """
    return _cat(tensors, dim, "CatBackward0")


def _cat(tensors, dim, name):
    ts = [_tensor_arg(t) for t in tensors]
    if not ts:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    nd = ts[0].ndim
    if nd == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    d = _dim(dim, nd)
    for i, t in enumerate(ts):
        if t.ndim != nd:
            raise RuntimeError(f"Tensors must have same number of dimensions: got {nd} and {t.ndim}")
        for a in range(nd):
            if a != d and t.shape[a] != ts[0].shape[a]:
                raise RuntimeError(f"Sizes of tensors must match except in dimension {d}. Expected "
                                   f"size {ts[0].shape[a]} but got size {t.shape[a]} for tensor "
                                   f"number {i} in the list (shapes "
                                   f"{_shapes_text([ts[0].shape, t.shape])}).")
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = np.promote_types(dt, t.dtype)
    value = np.concatenate([t._data.astype(dt, copy=False) for t in ts], axis=d)
    outer, _, inner = _layout(ts[0].shape, d, d + 1)
    return record(CAT, name, ts, value, iparams=[outer, inner] + [t.shape[d] for t in ts])


def stack(tensors, dim=0):
    """Join same-shape tensors along a new axis."""
    ts = [_tensor_arg(t) for t in tensors]
    if not ts:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{list(ts[0].shape)} at entry 0 and {list(t.shape)} at entry {i}")
    d = _dim(dim, ts[0].ndim + 1)
    return _cat([unsqueeze(t, d) for t in ts], d, "StackBackward0")


# ---------------------------------------------------------------- matrix products

def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands, 2-D, and batches of matrices.

    >>> import numbagrad as ng
    >>> ng.matmul(ng.eye(2), ng.tensor([1.0, 2.0]))
    tensor([1., 2.])
    """
    a, b = _tensor_arg(a), _tensor_arg(b)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                           f"{a.ndim}D and {b.ndim}D")
    dt = _result_dtype(a, b)
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        sa = "x".join(map(str, a.shape if a.ndim > 1 else (1,) + tuple(a.shape)))
        sb = "x".join(map(str, b.shape if b.ndim > 1 else tuple(b.shape) + (1,)))
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({sa} and {sb})"
                           if a.ndim <= 2 and b.ndim <= 2 else
                           f"Expected size for first two dimensions of batch2 tensor to be: "
                           f"[..., {ka}] but got: [..., {kb}] (shapes {tuple(a.shape)} and "
                           f"{tuple(b.shape)})")
    m = 1 if a.ndim == 1 else a.shape[-2]
    n = 1 if b.ndim == 1 else b.shape[-1]
    k = ka
    if a.ndim <= 2 and b.ndim <= 2:
        name = {(1, 1): "DotBackward0", (2, 1): "MvBackward0"}.get((a.ndim, b.ndim), "MmBackward0")
        params = (1, m, k, n, 0, 0)
    elif b.ndim <= 2:  # a batch of matrices times one matrix: one product of the stacked rows
        name, params = "MmBackward0", (1, math.prod(a.shape[:-1]), k, n, 0, 0)
    else:
        batch_a = tuple(a.shape[:-2]) if a.ndim > 2 else ()
        batch_b = tuple(b.shape[:-2])
        batch = broadcast_shapes(batch_a, batch_b)
        if batch_a and batch_a != batch:
            a = expand(a, batch + tuple(a.shape[-2:]))
        if batch_b != batch:
            b = expand(b, batch + tuple(b.shape[-2:]))
        nb = math.prod(batch)
        name, params = "BmmBackward0", (nb, m, k, n, int(a.ndim > 2), 1)
    av = a._data if a.dtype == dt else a._data.astype(dt)
    bv = b._data if b.dtype == dt else b._data.astype(dt)
    value = _quietly(np.matmul, av, bv)  # inf * 0 makes NaN silently, as in PyTorch
    return record(MATMUL, name, (a, b), contiguous(value), iparams=params)


def dot(a, b):
    """Inner product of two 1-D tensors."""
    a, b = _tensor_arg(a), _tensor_arg(b)
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {a.ndim}D and {b.ndim}D tensors")
    if a.shape[0] != b.shape[0]:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{a.shape[0]}] and src "
                           f"[{b.shape[0]}] to have the same number of elements, but got "
                           f"{a.shape[0]} and {b.shape[0]} elements respectively")
    return matmul(a, b)


# ---------------------------------------------------------------- copies and in-place

def clone(x):
    """A copy that stays in the graph."""
    x = _tensor_arg(x)
    return record(RESHAPE, "CloneBackward0", (x,), x._data.copy())


def to_dtype(x, dtype):
    """A copy in another dtype; differentiable between float dtypes."""
    x = _tensor_arg(x)
    dt = np.dtype(dtype)
    if dt == x.dtype:
        return x
    value = x._data.astype(dt)
    if dt.kind != "f":
        return Tensor(value)
    return record(RESHAPE, "ToCopyBackward0", (x,), value)


_INPLACE = {"add": add, "sub": sub, "mul": mul, "div": div}


def inplace(x, other, how):
    """``x += other`` and friends: records a new node when grad is on, else writes through."""
    recording = grad_mode.is_grad_enabled() and (
        x._requires_grad or (isinstance(other, Tensor) and other._requires_grad))
    if recording and x.is_leaf and x._requires_grad:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                           "operation.")
    if recording:
        if how == "copy":
            src = _tensor_arg(other)
            result = add(mul(x, 0.0), src) if src.shape != x.shape else clone(src)
            result = to_dtype(result, x.dtype) if result.dtype != x.dtype else result
        else:
            result = _INPLACE[how](x, other)
        if result.shape != x.shape:
            raise RuntimeError(f"output with shape {list(x.shape)} doesn't match the broadcast "
                               f"shape {list(result.shape)}")
        if result.dtype != x.dtype:
            raise RuntimeError(f"result type {result.dtype} can't be cast to the desired output "
                               f"type {x.dtype}")
        mark_modified(x)  # its old node's value is now stale for any op that saved it
        x._data, x._tape, x._node, x._requires_grad = result._data, result._tape, result._node, True
        return x
    o = other._data if isinstance(other, Tensor) else other
    try:
        with _quiet():
            if how == "copy":
                np.copyto(x._data, o, casting="same_kind")
            else:
                ufunc = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                         "div": np.true_divide}[how]
                broadcast_shapes(x.shape, np.shape(o))
                ufunc(x._data, o, out=x._data, casting="same_kind")
    except (TypeError, ValueError) as e:  # numpy's casting and shape errors
        raise RuntimeError(f"in-place {how} into a {x.dtype} tensor of shape {list(x.shape)} "
                           f"failed: {e}") from None
    mark_modified(x)
    return x


from . import lane  # noqa: E402  (the scalar lane builds on Tensor and these functions' tape)

# the scalar lane in front of its unary ops, in their own frame: scalar code calls these a
# million times a second, and a call is 5% of an op
exp, log, sin, cos, tan, tanh, sqrt = (lane.unary_function(op, f) for op, f in (
    (EXP, exp), (LOG, log), (SIN, sin), (COS, cos), (TAN, tan), (TANH, tanh), (SQRT, sqrt)))
