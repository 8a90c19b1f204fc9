"""The sweeps: Numba loops over a tape that run each op's kernel.

``reverse_sweep`` walks the tape backwards accumulating adjoints (backward,
``grad``, VJPs); ``forward_sweep`` recomputes every value from the leaves
(replay); ``tangent_sweep`` pushes tangents forward (JVPs, forward mode) and
``hvp_sweep`` pushes the tangents of the adjoints backward (forward-over-reverse:
Hessian-vector products).  Each node's kernel is looked up in ``dispatch.TABLE`` by mode, size
class, dtype and opcode and called there: the sweeps decide nothing per op, and compile once
whatever ops exist.  The rules live in ``ops.py`` (scalar formulas) and ``kernels.py`` (loops).
"""
import numpy as np
from numba import njit

from . import kernels as K
from . import dispatch as D
from .dispatch import FWD, VJP, JVP, HVP, SMALL, LARGE
from .ops import IEEE, LEAF, N_OPCODES, SAVES

# node flags (Tape.flags)
REQUIRES_GRAD = 1  # the node depends on an input that requires grad
DIRTY = 2          # its value was overwritten in place after it was recorded
FREED = 4          # a backward without retain_graph went through it

# what plan_adjoints reports; autograd.backward_sweep adds NEED_BUFFER (the adjoints need a
# buffer allocated by the caller)
OK, MODIFIED, SECOND_BACKWARD, NEED_BUFFER = 0, 1, 2, 3

# Below this many elements a kernel loops serially: the parallel region's start-up
# costs more than it saves (measured in benchmarks/NOTES.md).
PAR_MIN = np.int64(1 << 17)
# par_min for sweeps that must stay serial (inside our own prange loops, or in a handle the
# user may call from theirs): every kernel takes its serial branch, so no parallel region is
# ever launched from inside another one.
SERIAL = np.int64(1 << 62)
# Compiled callers pass integer constants to a sweep or kernel as np.int64 (these two, and
# np.int64(0) for a literal 0), never as Python ints.  Numba compiles a callee once more for
# every literal int it is called with, each copy a compile of its own (benchmarks/NOTES.md,
# "One compile per sweep and kernel per dtype").
# tests/test_compile.py checks that no such call comes back.


@njit(**IEEE, cache=True)
def plan_adjoints(t, seed_nodes):
    """Give each node reachable from the seeds that requires grad a slot in one adjoint buffer.

    Returns (adj_off, total, status, op, node): adj_off is -1 for nodes without an
    adjoint; status says whether a reachable op would read a value that was
    overwritten in place (MODIFIED) or released by an earlier backward
    (SECOND_BACKWARD), and which op and node.
    """
    n = len(t.opcodes)
    adj_off = np.full(n, -1, dtype=np.int64)
    need = np.zeros(n, dtype=np.bool_)
    top = -1
    for s in seed_nodes:
        if t.flags[s] & REQUIRES_GRAD:
            need[s] = True
        top = max(top, s)
    total = 0
    for i in range(top, -1, -1):
        if not need[i]:
            continue
        adj_off[i] = total
        total += t.sizes[i]
        op = t.opcodes[i]
        if op == LEAF:
            continue
        saves = SAVES[op]
        if saves != 0 and t.flags[i] & FREED:
            return adj_off, total, SECOND_BACKWARD, i, i
        if saves & 2 and t.flags[i] & DIRTY:
            return adj_off, total, MODIFIED, i, i
        for p in range(t.arg_ptr[i], t.arg_ptr[i + 1]):
            a = t.args[p]
            if saves & 1 and t.flags[a] & DIRTY:
                return adj_off, total, MODIFIED, i, a
            if t.flags[a] & REQUIRES_GRAD:
                need[a] = True
    return adj_off, total, OK, -1, -1


@njit(**IEEE, cache=True)
def fill_slot(mode, size, dtype_index, op):
    """Compile the kernel of an empty slot (once per machine: then Numba's cache loads it)."""
    addr = D.call_fill_slot(mode, size, dtype_index, op)
    if addr == 0:  # dispatch.last_error() holds the reason, printed on stderr too
        # a constant message: formatting the opcode would compile str() into every sweep
        raise ValueError("numbagrad: no kernel for opcode (no row in numbagrad.ops, or its "
                         "kernel failed to compile: numbagrad.dispatch.last_error() says which)")
    return addr


@K.inline
def size_class(t, i, par_min):
    """LARGE where node i or its first operand has par_min elements or more."""
    n = t.sizes[i]
    p = t.arg_ptr[i]
    if p < t.arg_ptr[i + 1]:
        n = max(n, t.sizes[t.args[p]])
    return LARGE if n >= par_min else SMALL


@K.inline
def kernel(mode, size, values, op):
    """The address of op's kernel for ``mode``, compiled on its first use."""
    a = D.table_slot(mode, size, values, op)
    if a == 0 or op < 0 or op >= N_OPCODES:  # the callback raises for an unknown opcode
        a = fill_slot(np.int64(mode), np.int64(size), D.dtype_index(values), np.int64(op))
    return a


@njit(**IEEE, cache=True)
def reverse_sweep(t, chunks, adj, adj_off, top, par_min, bottom):
    """Accumulate adjoints from node ``top`` down to ``bottom`` (seeds already in ``adj``)."""
    # the caller holds these for the call: borrowed, kernels count no references to them
    # (kernels.borrowed; a driver that loops over sweeps borrows its chunk list too)
    t, adj, adj_off = K.borrowed(t), K.borrowed(adj), K.borrowed(adj_off)
    tp = K.tape_address(t)
    for i in range(top, bottom - 1, -1):
        if adj_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF:
            continue
        a = kernel(VJP, size_class(t, i, par_min), adj, op)
        D.call_kernel(VJP, a, op, (tp, chunks, adj, adj_off, i, par_min))


@njit(**IEEE, cache=True)
def forward_sweep(t, chunks, start, stop, par_min):
    """Recompute the values of ops start..stop-1 from their operands (leaves are given)."""
    t = K.borrowed(t)  # as in reverse_sweep
    tp = K.tape_address(t)
    for i in range(start, stop):
        op = t.opcodes[i]
        if op == LEAF:
            continue
        a = kernel(FWD, size_class(t, i, par_min), chunks, op)
        D.call_kernel(FWD, a, op, (tp, chunks, i, par_min))


@njit(**IEEE, cache=True)
def plan_tangents(t, seed_nodes, stop):
    """Give each of nodes 0..stop-1 that depends on a seed node a slot in one tangent buffer.

    Returns (tan_off, total): tan_off[k] is where node k's tangent starts in a
    buffer of ``total`` elements, -1 for nodes whose tangent is zero.  The seeds
    are the leaves whose tangents the caller writes before ``tangent_sweep``.
    """
    n = len(t.opcodes)
    tan_off = np.full(n, -1, dtype=np.int64)
    has = np.zeros(n, dtype=np.bool_)
    for s in seed_nodes:
        has[s] = True
    total = 0
    for i in range(stop):
        if not has[i] and t.opcodes[i] != LEAF and t.flags[i] & REQUIRES_GRAD:
            for p in range(t.arg_ptr[i], t.arg_ptr[i + 1]):
                if has[t.args[p]]:
                    has[i] = True
                    break
        if has[i]:
            tan_off[i] = total
            total += t.sizes[i]
    return tan_off, total


@njit(**IEEE, cache=True)
def tangent_sweep(t, chunks, tan, tan_off, start, stop, par_min):
    """Forward mode: the tangent of ops start..stop-1 from their operands' tangents (JVPs).

    ``chunks`` hold every node's value (as after the eager pass or
    ``forward_sweep``).  Node k's tangent is ``tan[tan_off[k]:tan_off[k] + sizes[k]]``;
    ``tan_off[k] == -1`` means a zero tangent, and such nodes are skipped (an op
    whose operand has a tangent must have a slot: ``plan_tangents`` gives one).
    Leaves' tangents are the caller's seeds and are left as they are; every other
    op with a slot gets its tangent assigned.  ``tan`` has the values' dtype.
    """
    t = K.borrowed(t)  # the caller holds it for the call (as in reverse_sweep)
    tp = K.tape_address(t)
    for i in range(start, stop):
        if tan_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF:
            continue
        a = kernel(JVP, size_class(t, i, par_min), tan, op)
        D.call_kernel(JVP, a, op, (tp, chunks, tan, tan_off, i, par_min))


@njit(**IEEE, cache=True)
def hvp_sweep(t, chunks, tan, tan_off, adj, adjdot, adj_off, top, par_min):
    """Forward-over-reverse: the tangent of every adjoint, from node ``top`` down to the leaves.

    Takes the values (``chunks``), the tangents from ``tangent_sweep``
    (``tan``, ``tan_off``), and the *finished* adjoints of a ``reverse_sweep``
    from the same seeds (``adj``, ``adj_off`` from ``plan_adjoints``).
    ``adjdot`` has ``adj``'s layout (same ``adj_off``) and holds the seeds'
    adjoint tangents (usually zero); every op adds
    ``J^T adjdot_y + (dJ/dt)^T adj_y`` into its operands' slots.

    With ``f`` scalar, adj seed 1 at its node, adjdot seed 0 and the tangent
    ``v`` on input leaf x, x's slot of ``adjdot`` ends as H(f) v.  In general a
    leaf's slot is d/dt of (J(x + t v)^T w) at t = 0, w the adjoint seed.

    Piecewise-linear ops (no second derivative) run their reverse kernel on
    ``adjdot``: the same loop ``reverse_sweep`` compiled, so no new one to compile.
    """
    t = K.borrowed(t)  # the caller holds it for the call (as in reverse_sweep)
    tp = K.tape_address(t)
    for i in range(top, -1, -1):
        if adj_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF:
            continue
        size = size_class(t, i, par_min)
        if D.HVP_AS_VJP[op]:  # linear: no curvature term
            a = kernel(VJP, size, adjdot, op)
            D.call_kernel(VJP, a, op, (tp, chunks, adjdot, adj_off, i, par_min))
        else:
            a = kernel(HVP, size, adjdot, op)
            D.call_kernel(HVP, a, op, (tp, chunks, tan, tan_off, adj, adjdot, adj_off, i,
                                       par_min))
