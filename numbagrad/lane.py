"""The scalar lane: eager ops on 0-d float64 tensors in Python floats, recorded straight away.

Scalar code (``acc = acc + ng.sin(x[a]) * x[b]`` in a loop, a function of a few numbers)
spent most of each op in NumPy's 0-d machinery: a ufunc call, its error state, a 0-d result
array, then ``record``'s general merge.  Here such an op computes its value on Python floats
(IEEE arithmetic is the same; ``sin``, ``cos``, ... come from the C library only where they
give NumPy's results bit for bit: ``_CHOSEN``), writes its row and value onto the tape
(``Tape.record_scalar``), and the result's ndarray is made only if someone reads ``_data``
(a property of Tensor: ``materialize``).  Anything the lane does not cover (other shapes and
dtypes, no grad mode, anomaly detection, a division by zero) goes the general way, which
gives the same values and the same tape.

An op whose operands are untaped leaves has no tape to go on.  The general path makes a tape
for it and merges that into the running graph's at the next binary op: in scalar code, a
new tape, a copy of the leaf and a merge per step.  Here its result waits instead, ``_pending``
its (opcode, name, operands, constants, size of the waiting tree), with no tape, until it
meets a tape or PENDING_MAX nodes wait in one tree; ``attach`` then records the tree onto
that tape, operands first.  Reading a waiting tensor's ``_tape`` or ``_node`` (properties of
Tensor) attaches it to a tape of its own.

Tensor's operators ``+ - * /`` (both ways round) and ``**`` are this module's ``add``,
``radd``, ..., ``power``: a Python number or a tensor meets the lane in the operator's own
frame, and anything else goes on to ``functions``.  The lane reads a tensor's slots
(``_array``, ``_tape_``, ``_node_``), not the properties over them: a property read costs
48 ns, a slot 10, and scalar code reads a dozen per op.
"""
import functools
import math
import operator

import numpy as np

from . import anomaly, grad_mode
from .ops import (OPS, NAME_ID, NEG, EXP, LOG, SIN, COS, TAN, TANH, SQRT, ABS,
                  ADD_C, MUL_C, DIV_C, POW_C, RSUB_C, RDIV_C, ADD, SUB, MUL, DIV)
from .sweeps import REQUIRES_GRAD
from .tape import Tape, resolve
from .tensor import Tensor, _tape_for
from . import functions as F
from .functions import _quietly

F64 = np.dtype(np.float64)
PENDING_MAX = 8     # nodes of one waiting tree; scalar code's per-step trees have 2 or 3
_BIG_INT = 1 << 53  # integer constants up to this convert to float exactly (as NumPy does)

_new = object.__new__
_grad_state = grad_mode._state
_grad_off = grad_mode._off  # threads with grad off: while 0, no thread-local read
_anomaly = anomaly._active


# ---------------------------------------------------------------- values

# The lane's forward of each unary op on a Python float: Python's arithmetic (NEG, ABS: IEEE,
# so NumPy's results), or the C library's function, which _choose checks against the op's own
# NumPy form (ops.OPS[op].eager).
UNARY = {NEG: operator.neg, ABS: abs, SIN: math.sin, COS: math.cos, TAN: math.tan,
         EXP: math.exp, LOG: math.log, TANH: math.tanh, SQRT: math.sqrt}
ARITHMETIC = (NEG, ABS)
# with a constant c (x - c is x + (-c), as functions.sub records it): the ops' eager forms are
# Python's arithmetic on floats; ** c only for c = 2, which NumPy computes as x * x
WITH_CONST = {op: OPS[op].eager for op in (ADD_C, MUL_C, DIV_C, RSUB_C, RDIV_C)}
WITH_CONST[POW_C] = lambda v, c: v * v if c == 2 else None
NAME_OF = {op: NAME_ID[OPS[op].name] for op in UNARY}
_ADD_NAME, _SUB_NAME, _MUL_NAME, _DIV_NAME = (NAME_ID[OPS[op].name] for op in (ADD, SUB, MUL, DIV))
_RSUB_NAME, _POW_NAME = NAME_ID[OPS[RSUB_C].name], NAME_ID[OPS[POW_C].name]

_CHOSEN = {}  # opcode -> (the function the lane uses or None, NumPy's), as _choose decides
_FORWARD = {}  # opcode -> the function the lane computes it with (_choose's choice)


def _choose(opcode):
    """Use the C library's function where it gives NumPy's 0-d results on 2,048 probes (NumPy
    calls it, or an implementation that agrees), else NumPy's own.  Where the C function raises
    (domain and range errors: math.log(0.0), math.exp(1e3)) NumPy's gives the value."""
    eager = OPS[opcode].eager

    def exact(v):
        return _quietly(eager, np.array(v)).item()

    fast = UNARY[opcode]
    if opcode not in ARITHMETIC:
        rng = np.random.default_rng(0)
        probes = np.concatenate([rng.standard_normal(512) * s for s in (1e-3, 1.0, 30.0, 1e4)])
        for v in probes.tolist():
            try:
                if fast(v) != exact(v):
                    fast = None
                    break
            except (ValueError, OverflowError):
                pass
    _CHOSEN[opcode] = fast, exact
    _FORWARD[opcode] = fast or exact
    return fast or exact


def materialize(t):
    """``t._data`` of a lane tensor: its value as a 0-d array, made at the first read."""
    v = t._scalar
    if v is None:
        raise AttributeError("'Tensor' object has no attribute '_data'")
    d = np.array(v)
    t._array = d
    t._scalar = None  # from now on the array is the value (in-place ops write into it)
    return d


# ---------------------------------------------------------------- ops

def unary_function(opcode, general):
    """``general`` (``functions.sin`` and the like: the op on anything) with the lane in front,
    in one frame: ``ng.sin(x)`` of a 0-d float64 tensor goes through the lane, anything else
    (or a tensor the lane does not take) to ``general(x)``."""
    name_id = NAME_OF[opcode]

    def function(x):
        if type(x) is not Tensor:
            return general(x)
        v = x._scalar
        if v is None:  # _array_value(x), in line: unary ops on leaves are half of scalar code's
            d = x._array
            if d.ndim or d.dtype is not F64:
                return general(x)
            v = d.item()
        if _grad_off[0] and not _grad_state.enabled or _anomaly[0]:
            return general(x)
        f = _FORWARD.get(opcode) or _choose(opcode)
        try:
            v = f(v)
        except (ValueError, OverflowError):  # the C library's domain and range errors
            v = _CHOSEN[opcode][1](v)
        if x._pending is None and x._tape_ is None and x._requires_grad:
            # an untaped leaf (half of scalar code's unary ops): the result waits (_waiting,
            # in line)
            out = _new(Tensor)
            out._array = None
            out._scalar = v
            out._pending = (opcode, name_id, (x,), (), 1)
            out._tape_ = None
            out._node_ = -1
            out._requires_grad = True
            out._grad = None
            out._version = None  # made at the first need (tape.version_counter)
            out._retains_grad = False
            return out
        return _result1(opcode, name_id, x, v, ())
    return functools.update_wrapper(function, general)


def _not_here(x):
    return None


_LANE_ONLY = {op: unary_function(op, _not_here) for op in UNARY}


def unary(opcode, x):
    """``opcode`` applied to the tensor ``x`` through the lane, or None."""
    return _LANE_ONLY[opcode](x)


def _result1(opcode, name_id, x, v, consts):
    """``_result`` for one operand, with its two common cases first."""
    if x._pending is None:
        tape = x._tape_
        if tape is None:
            if x._requires_grad:  # an untaped leaf: the result waits for a tape
                return _waiting(opcode, name_id, (x,), consts, 1, v)
        elif tape.forward_to is None and tape.dtype is F64:
            return _taped(tape, opcode, name_id, (x._node_,), v, consts, x._requires_grad)
    return _result(opcode, name_id, (x,), v, consts)


def with_const(opcode, name_id, x, c):
    """``opcode`` on the tensor ``x`` and the Python number ``c``, or None."""
    v = x._scalar
    if v is None and (v := _array_value(x)) is None or \
            _grad_off[0] and not _grad_state.enabled or _anomaly[0]:
        return None
    if type(c) is not float and not (type(c) is int and -_BIG_INT <= c <= _BIG_INT):
        return None
    f = WITH_CONST.get(opcode)
    if f is None:
        return None
    try:
        y = f(v, c)
    except ZeroDivisionError:  # NumPy's inf or nan, the general way
        return None
    if y is None:
        return None
    return _result1(opcode, name_id, x, y, (float(c),))


def _array_value(x):
    """The value of ``x``, a tensor holding an ndarray (a leaf, mostly), as a Python float if
    it is 0-d float64, else None."""
    d = x._array
    if d.ndim == 0 and d.dtype is F64:
        return d.item()
    return None


# Tensor.__add__, __sub__, __mul__, __truediv__ (and ng.add, ... between two tensors): the
# operands' floats and the value here, in the operator's own frame (scalar code runs these
# ops in about a microsecond, of which each Python call is 0.05), the tape in _binary
def add(a, b):
    """``a + b``: through the lane where it applies, else functions.add."""
    if type(b) is not Tensor:
        if (type(b) is float or type(b) is int) and a._scalar is not None:
            out = with_const(ADD_C, _ADD_NAME, a, b)
            if out is not None:
                return out
        return F.add(a, b)
    va = a._scalar
    vb = b._scalar
    if (va is not None or (va := _array_value(a)) is not None) and \
            (vb is not None or (vb := _array_value(b)) is not None):
        return _binary(ADD, _ADD_NAME, a, b, va + vb)
    return F._binary_tensors(ADD, a, b)


def sub(a, b):
    """``a - b``: through the lane where it applies, else functions.sub."""
    if type(b) is not Tensor:
        if (type(b) is float or type(b) is int) and a._scalar is not None:
            out = with_const(ADD_C, _SUB_NAME, a, -b)  # as functions.sub records it
            if out is not None:
                return out
        return F.sub(a, b)
    va = a._scalar
    vb = b._scalar
    if (va is not None or (va := _array_value(a)) is not None) and \
            (vb is not None or (vb := _array_value(b)) is not None):
        return _binary(SUB, _SUB_NAME, a, b, va - vb)
    return F._binary_tensors(SUB, a, b)


def mul(a, b):
    """``a * b``: through the lane where it applies, else functions.mul."""
    if type(b) is not Tensor:
        if (type(b) is float or type(b) is int) and a._scalar is not None:
            out = with_const(MUL_C, _MUL_NAME, a, b)
            if out is not None:
                return out
        return F.mul(a, b)
    va = a._scalar
    vb = b._scalar
    if (va is not None or (va := _array_value(a)) is not None) and \
            (vb is not None or (vb := _array_value(b)) is not None):
        return _binary(MUL, _MUL_NAME, a, b, va * vb)
    return F._binary_tensors(MUL, a, b)


def div(a, b):
    """``a / b``: through the lane where it applies, else functions.div (a division by zero
    too: NumPy's inf or nan)."""
    if type(b) is not Tensor:
        if (type(b) is float or type(b) is int) and a._scalar is not None:
            out = with_const(DIV_C, _DIV_NAME, a, b)
            if out is not None:
                return out
        return F.div(a, b)
    va = a._scalar
    vb = b._scalar
    if (va is not None or (va := _array_value(a)) is not None) and \
            (vb is not None or (vb := _array_value(b)) is not None) and vb != 0.0:
        return _binary(DIV, _DIV_NAME, a, b, va / vb)
    return F._binary_tensors(DIV, a, b)


def _with_number(opcode, name_id, general, doc):
    """The operator ``doc`` on a tensor ``x`` and a Python number ``c`` (``x ** c`` and the
    reflected ones): ``with_const`` straight away for a lane tensor, else ``general(x, c)``.
    A closure over constants, so that the operator runs in one frame."""
    def operator_(x, c):
        if (type(c) is float or type(c) is int) and x._scalar is not None:
            out = with_const(opcode, name_id, x, c)
            if out is not None:
                return out
        return general(x, c)
    operator_.__doc__ = doc
    return operator_


radd = _with_number(ADD_C, _ADD_NAME, lambda x, c: F.add(c, x), "``c + x`` (Tensor.__radd__).")
rsub = _with_number(RSUB_C, _RSUB_NAME, lambda x, c: F.sub(c, x), "``c - x`` (Tensor.__rsub__).")
rmul = _with_number(MUL_C, _MUL_NAME, lambda x, c: F.mul(c, x), "``c * x`` (Tensor.__rmul__).")
rdiv = _with_number(RDIV_C, _DIV_NAME, lambda x, c: F.div(c, x),
                    "``c / x`` (Tensor.__rtruediv__).")
power = _with_number(POW_C, _POW_NAME, lambda x, c: F.pow(x, c), "``x ** c`` (Tensor.__pow__).")


def _binary(opcode, name_id, a, b, v):
    """The tensor holding ``v``, the value of ``opcode`` on the 0-d float64 tensors ``a`` and
    ``b``, recorded or waiting; the general path's result where the lane does not record."""
    if _grad_off[0] and not _grad_state.enabled or _anomaly[0]:
        return F._binary_tensors(opcode, a, b)
    # the common cases first, without _result's loop: operands on one tape (or untaped
    # leaves), or a waiting tree meeting a tape
    pa = a._pending
    pb = b._pending
    ta = None if pa is not None else a._tape_
    tb = None if pb is not None else b._tape_
    tape = tb if ta is None else ta
    if tape is not None and (tb is tape or tb is None) and tape.forward_to is None \
            and tape.dtype is F64:
        if pa is not None:
            _record_tree(a, tape)
            ta = tape
        elif pb is not None:
            _record_tree(b, tape)
            tb = tape
        na = a._node_ if ta is tape else tape.leaf(a)
        nb = b._node_ if tb is tape else tape.leaf(b)
        grad = a._requires_grad or b._requires_grad
        out = _new(Tensor)  # _taped, and tape.record_scalar, in line: a call is 5% of an op
        out._array = None
        out._scalar = v
        out._pending = None
        out._tape_ = tape
        off = tape._small_used
        if off < tape._small_size:
            tape._small_slots[off] = v
            tape._small_used = off + 1
            chunk = tape._small_id
        else:
            chunk, off = tape.store(np.array(v))
        tape._args.extend((na, nb))
        tape._rows.extend((opcode, name_id, REQUIRES_GRAD if grad else 0, 2, (), 1, (), (),
                           chunk, off))
        out._node_ = k = tape._len
        tape._len = k + 1
        out._requires_grad = grad
        out._grad = None
        out._version = None
        out._retains_grad = False
        return out
    elif tape is None and ta is None and tb is None:  # untaped leaves or waiting: wait
        size = 1 + (0 if pa is None else pa[4]) + (0 if pb is None else pb[4])
        if size <= PENDING_MAX and (a._requires_grad or b._requires_grad):
            out = _new(Tensor)  # _waiting, in line
            out._array = None
            out._scalar = v
            out._pending = (opcode, name_id, (a, b), (), size)
            out._tape_ = None
            out._node_ = -1
            out._requires_grad = True
            out._grad = None
            out._version = None
            out._retains_grad = False
            return out
    return _result(opcode, name_id, (a, b), v, ())


def _waiting(opcode, name_id, operands, consts, size, v):
    """A lane tensor holding ``v`` whose op waits for a tape (see the module's doc)."""
    out = _new(Tensor)
    out._array = None
    out._scalar = v
    out._pending = (opcode, name_id, operands, consts, size)
    out._tape_ = None
    out._node_ = -1
    out._requires_grad = True
    out._grad = None
    out._version = None
    out._retains_grad = False
    return out


def _taped(tape, opcode, name_id, nodes, v, consts, grad):
    """A lane tensor holding ``v``, recorded onto ``tape`` as an op on ``nodes``."""
    out = _new(Tensor)
    out._array = None
    out._scalar = v
    out._pending = None
    out._tape_ = tape
    out._node_ = tape.record_scalar(opcode, name_id, nodes, v, consts,
                                    REQUIRES_GRAD if grad else 0)
    out._requires_grad = grad
    out._grad = None
    out._version = None
    out._retains_grad = False
    return out


def _result(opcode, name_id, operands, v, consts):
    """The tensor holding ``v``, the value of an op on the lane tensors ``operands``: recorded
    onto their tape, waiting (see the module's doc) or, when nothing is recorded, plain."""
    grad = False
    tape = None
    general = False
    waiting = 1
    pending = None
    for x in operands:
        if x._requires_grad:
            grad = True
        p = x._pending
        if p is not None:
            waiting += p[4]
            pending = [x] if pending is None else pending + [x]
        else:
            t = x._tape_
            if t is not None:
                if t.forward_to is not None or (tape is not None and t is not tape):
                    general = True
                tape = t
    if tape is None:
        if not grad:  # as record(): an op on untracked tensors is not recorded
            return Tensor(np.array(v))
        if waiting <= PENDING_MAX:
            return _waiting(opcode, name_id, operands, consts, waiting, v)
        general = True
    if general or tape.dtype is not F64:
        tape = _onto(operands)
    elif pending is not None:
        for x in pending:
            _record_tree(x, tape)
    return _taped(tape, opcode, name_id,
                  tuple([x._node_ if x._tape_ is tape else tape.leaf(x) for x in operands]),
                  v, consts, grad)


def _onto(operands):
    """The one float64 tape an op on ``operands`` goes on (their tapes merged, or a new one),
    with their waiting trees recorded there."""
    tape = _tape_for([x for x in operands if x._pending is None and x._tape_ is not None], F64)
    for x in operands:
        if x._pending is not None:
            _record_tree(x, tape)
    for x in operands:  # a merge may have forwarded the tape an operand was resolved to
        if x._tape_ is not None:
            x._tape_, x._node_ = resolve(x._tape_, x._node_)
    return tape


def attach(root):
    """Record the waiting tree of ``root`` onto a tape of its own; returns that tape."""
    tape = Tape(F64)
    _record_tree(root, tape)
    return tape


def _record_tree(x, tape):
    """Record ``x`` and the rest of its waiting tree onto ``tape``, operands first.

    A waiting tree holds at most PENDING_MAX nodes, so this recurses at most that deep.  Its
    operands are untaped leaves or waiting nodes, or nodes a tree sharing them recorded since:
    those are brought onto ``tape`` (their tape merged into it) if they are elsewhere.
    """
    p = x._pending
    if p is None:  # recorded already, through another tree sharing it
        return
    opcode, name_id, operands, consts, _ = p
    nodes = []
    for o in operands:
        if o._pending is not None:
            _record_tree(o, tape)
            nodes.append(o._node_)
        elif o._tape_ is None:  # a leaf: tape.leaf(o), in line where it is on the tape already
            seen = tape._leaf_node.get(id(o))
            nodes.append(seen[0] if seen is not None and seen[1] == o._version[0] else
                         tape.leaf(o))
        else:
            t, k = resolve(o._tape_, o._node_)
            if t is not tape:
                tape.absorb(t)
                t, k = resolve(t, k)
            o._tape_, o._node_ = t, k
            nodes.append(k)
    v = x._scalar
    if v is None:
        v = x._array.item()
    off = tape._small_used  # tape.record_scalar, in line (as in _binary)
    if off < tape._small_size:
        tape._small_slots[off] = v
        tape._small_used = off + 1
        chunk = tape._small_id
    else:
        chunk, off = tape.store(np.array(v))
    tape._args.extend(nodes)
    tape._rows.extend((opcode, name_id, REQUIRES_GRAD, len(nodes), (), 1, consts, (), chunk, off))
    x._node_ = k = tape._len
    tape._len = k + 1
    x._tape_ = tape
    x._pending = None
