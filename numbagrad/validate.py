"""Never trust a tape you did not record: checks that run before any sweep sees one.

The sweeps index without bounds checks, so a tape from a file, a pickle or
another process is checked here first: every column's dtype and length, every
pointer array, every opcode and operand (defined before use), every shape and
value range inside the buffer, and every op's parameters against its operands'
sizes.  Anything off raises ``ValueError`` naming the node and the problem.
"""
import numpy as np
from numba import njit

from .ops import (
    IEEE, LEAF, UNARY, BINARY, WHERE, SUM, MEAN, MAX, MIN, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX,
    RESHAPE, GATHER, CAT, MATMUL, COMPARE, KNOWN, NAMES, N_OPCODES,
)
from .tape import TapeArrays, _INT_COLUMNS

_FLAG_BITS = 7
_MAX_ELEMENTS = 1 << 48

# how many operands each opcode takes (-1: one or more)
ARITY = np.full(N_OPCODES, -2, dtype=np.int64)
ARITY[LEAF] = 0
for _op in UNARY:
    ARITY[_op] = 1
for _op in BINARY:
    ARITY[_op] = 2
ARITY[WHERE] = 3
for _op in (SUM, MEAN, MAX, MIN, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX, RESHAPE, GATHER):
    ARITY[_op] = 1
ARITY[CAT] = -1
ARITY[MATMUL] = 2
ARITY[COMPARE] = 2


def _fail(k, what):
    raise ValueError(f"invalid tape: node {k}: {what}" if k >= 0 else f"invalid tape: {what}")


def validate(t, n_values, n_chunks=1):
    """Check a TapeArrays against a value buffer of ``n_values`` elements; returns it typed.

    >>> import numbagrad as ng
    >>> from numbagrad.validate import validate
    >>> y = (ng.ones(2, requires_grad=True) * 2).sum()
    >>> t = y._tape
    >>> validate(t.arrays(), sum(c.size for c in t.chunks), len(t.chunks)).opcodes.tolist()
    [0, 13, 30]
    """
    if not isinstance(t, TapeArrays):
        try:
            t = TapeArrays(**{name: t[name] for name in TapeArrays._fields})
        except (KeyError, TypeError) as e:
            _fail(-1, f"missing column {e}")
    cols = {}
    for name, (_, dt) in _INT_COLUMNS.items():
        a = np.asarray(getattr(t, name))
        if a.ndim != 1:
            _fail(-1, f"column {name} must be 1-D, got shape {a.shape}")
        if a.dtype != dt:
            if a.dtype.kind not in "iuf" or (a.dtype.kind == "f") != (np.dtype(dt).kind == "f"):
                _fail(-1, f"column {name} has dtype {a.dtype}, expected {np.dtype(dt)}")
            cast = a.astype(dt)
            if not np.array_equal(cast, a):
                _fail(-1, f"column {name} has values that do not fit {np.dtype(dt)}")
            a = cast
        cols[name] = np.ascontiguousarray(a)
    t = TapeArrays(**cols)
    n = len(t.opcodes)
    for name in ("name_ids", "flags", "sizes", "val_chunk", "val_off"):
        if len(getattr(t, name)) != n:
            _fail(-1, f"column {name} has {len(getattr(t, name))} entries for {n} nodes")
    for ptr, target in (("arg_ptr", "args"), ("shape_ptr", "shapes"), ("const_ptr", "consts"),
                        ("iparam_ptr", "iparams")):
        p = getattr(t, ptr)
        if len(p) != n + 1 or p[0] != 0 or p[-1] != len(getattr(t, target)) \
                or np.any(np.diff(p) < 0):
            _fail(-1, f"{ptr} is not a pointer array into {target} ({len(getattr(t, target))} "
                      f"entries) for {n} nodes")
    if n and (t.opcodes.min() < 0 or t.opcodes.max() >= N_OPCODES
              or not KNOWN[t.opcodes].all()):
        k = int(np.flatnonzero((t.opcodes < 0) | (t.opcodes >= N_OPCODES))[0]) \
            if (t.opcodes < 0).any() or (t.opcodes >= N_OPCODES).any() \
            else int(np.flatnonzero(~KNOWN[t.opcodes])[0])
        _fail(k, f"unknown opcode {t.opcodes[k]}")
    if n and (t.name_ids.min() < 0 or t.name_ids.max() >= len(NAMES)):
        _fail(int(np.flatnonzero((t.name_ids < 0) | (t.name_ids >= len(NAMES)))[0]), "unknown name")
    if n and (t.flags.min() < 0 or t.flags.max() > _FLAG_BITS):
        _fail(-1, "unknown node flags")
    if len(t.shapes) and t.shapes.min() < 0:
        _fail(-1, "negative dimension in shapes")
    code, k, detail = _check_nodes(t, n_values, n_chunks, ARITY)
    if code:
        _fail(k, _MESSAGES[code].format(detail))
    return t


_MESSAGES = {
    1: "wrong number of operands ({})", 2: "operand {} is not an earlier node",
    3: "size does not match its shape (or is too large): {}", 4: "value outside the buffer (offset {})",
    5: "operand sizes do not fit the op ({})", 6: "parameters do not fit the op ({})",
    7: "gather index {} is out of range", 8: "operand shape does not broadcast to the output ({})",
    9: "value in chunk {} which does not exist",
}


@njit(**IEEE, cache=True, inline="always")
def _too_large(a, b, c):
    """Whether a * b * c (non-negative) exceeds the element limit; in floats, because a
    crafted int64 product wraps around to a small number that would pass an equality check
    (and send a kernel's index arithmetic far outside its buffer)."""
    return float(a) * float(b) * float(c) > _MAX_ELEMENTS


@njit(**IEEE, cache=True)
def _check_nodes(t, n_values, n_chunks, arity):
    """Structural checks that need a loop; indexes only what earlier checks proved in range."""
    n = len(t.opcodes)
    for k in range(n):
        op = t.opcodes[k]
        nargs = t.arg_ptr[k + 1] - t.arg_ptr[k]
        if (arity[op] >= 0 and nargs != arity[op]) or (arity[op] == -1 and nargs < 1):
            return 1, k, nargs
        for p in range(t.arg_ptr[k], t.arg_ptr[k + 1]):
            if t.args[p] < 0 or t.args[p] >= k:
                return 2, k, t.args[p]
        size = 1
        fsize = 1.0  # the product in floats: int64 products of crafted dims wrap around
        for p in range(t.shape_ptr[k], t.shape_ptr[k + 1]):
            if t.shapes[p] > _MAX_ELEMENTS:
                return 3, k, t.shapes[p]
            fsize *= t.shapes[p]
            if fsize > _MAX_ELEMENTS:
                return 3, k, t.shapes[p]
            size *= t.shapes[p]
        if size != t.sizes[k]:
            return 3, k, t.sizes[k]
        if t.val_chunk[k] < 0 or t.val_chunk[k] >= n_chunks:
            return 9, k, t.val_chunk[k]
        if t.val_off[k] < 0 or t.val_off[k] > n_values - size:  # no int64 wrap-around
            return 4, k, t.val_off[k]
        ip0, ip1 = t.iparam_ptr[k], t.iparam_ptr[k + 1]
        ni = ip1 - ip0
        a0 = t.args[t.arg_ptr[k]] if nargs > 0 else -1
        if arity[op] == 1 and op != GATHER and op != RESHAPE and op < SUM:
            if t.sizes[a0] != size:
                return 5, k, t.sizes[a0]
        elif op == RESHAPE:
            if t.sizes[a0] != size:
                return 5, k, t.sizes[a0]
        elif arity[op] == 2 and op != MATMUL or op == WHERE:  # elementwise, COMPARE too
            nd = t.shape_ptr[k + 1] - t.shape_ptr[k]
            for p in range(t.arg_ptr[k], t.arg_ptr[k + 1]):
                a = t.args[p]
                na = t.shape_ptr[a + 1] - t.shape_ptr[a]
                if na > nd:
                    return 8, k, a
                for d in range(1, na + 1):
                    s_in = t.shapes[t.shape_ptr[a + 1] - d]
                    s_out = t.shapes[t.shape_ptr[k + 1] - d]
                    if s_in != 1 and s_in != s_out:
                        return 8, k, a
        elif SUM <= op <= LOG_SOFTMAX:
            if ni < 3 or ni > 4:
                return 6, k, ni
            outer, m, inner = t.iparams[ip0], t.iparams[ip0 + 1], t.iparams[ip0 + 2]
            if outer < 0 or m < 0 or inner < 0 or _too_large(outer, m, inner) \
                    or outer * m * inner != t.sizes[a0]:
                return 6, k, outer * m * inner
            expect = outer * m * inner if op == SOFTMAX or op == LOG_SOFTMAX else outer * inner
            if expect != size:
                return 6, k, expect
            if (op == MAX or op == MIN) and m == 0 and outer * inner > 0:
                return 6, k, m
        elif op == GATHER:
            if ni == 1 and size != 1:  # a contiguous run from one position (kernels.gather_fwd)
                if t.iparams[ip0] < 0 or t.iparams[ip0] > t.sizes[a0] - size:
                    return 7, k, t.iparams[ip0]
            elif ni != size:
                return 6, k, ni
            else:
                for p in range(ip0, ip1):
                    if t.iparams[p] < 0 or t.iparams[p] >= t.sizes[a0]:
                        return 7, k, t.iparams[p]
        elif op == CAT:
            if ni != 2 + nargs:
                return 6, k, ni
            outer, inner = t.iparams[ip0], t.iparams[ip0 + 1]
            if outer < 0 or inner < 0 or _too_large(outer, 1, inner):
                return 6, k, outer
            total = 0
            for r in range(nargs):
                m = t.iparams[ip0 + 2 + r]
                if m < 0 or _too_large(outer, m, inner) \
                        or t.sizes[t.args[t.arg_ptr[k] + r]] != outer * m * inner:
                    return 5, k, r
                total += m
                if _too_large(outer, total, inner):
                    return 6, k, total
            if outer * total * inner != size:
                return 6, k, total
        elif op == MATMUL:
            if ni != 6:
                return 6, k, ni
            b, m, kk, nn = t.iparams[ip0], t.iparams[ip0 + 1], t.iparams[ip0 + 2], t.iparams[ip0 + 3]
            sa, sb = t.iparams[ip0 + 4], t.iparams[ip0 + 5]
            if b < 0 or m < 0 or kk < 0 or nn < 0 or sa < 0 or sa > 1 or sb < 0 or sb > 1:
                return 6, k, -1
            if _too_large(b, m, kk) or _too_large(b, kk, nn) or _too_large(b, m, nn):
                return 6, k, -1
            if b * m * nn != size:
                return 6, k, b * m * nn
            if t.sizes[a0] != (b if sa else 1) * m * kk:
                return 5, k, t.sizes[a0]
            if t.sizes[t.args[t.arg_ptr[k] + 1]] != (b if sb else 1) * kk * nn:
                return 5, k, t.sizes[t.args[t.arg_ptr[k] + 1]]
    return 0, -1, 0
