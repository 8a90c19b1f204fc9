"""The sweeps: Numba loops over a tape that dispatch on each op's opcode.

``reverse_sweep`` walks the tape backwards accumulating adjoints (backward,
``grad``, VJPs); ``forward_sweep`` recomputes every value from the leaves
(replay); ``tangent_sweep`` pushes tangents forward (JVPs, forward mode) and
``hvp_sweep`` pushes the tangents of the adjoints backward (forward-over-reverse:
Hessian-vector products).  The dispatch is one line per opcode; the rules live in ``ops.py``
(scalar formulas) and ``kernels.py`` (loops).
"""
import numpy as np
from numba import njit

from . import kernels as K
from .ops import (
    IEEE, LEAF, NEG, EXP, LOG, SIN, COS, TAN, TANH, SIGMOID, RELU, SQRT, ABS,
    ADD_C, MUL_C, DIV_C, POW_C, RSUB_C, RDIV_C, RPOW_C, CLAMP,
    ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM, WHERE,
    SUM, LOG_SOFTMAX, RESHAPE, GATHER, CAT, MATMUL, COMPARE, SAVES
)

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
# every literal int it is called with, and each extra copy of a sweep recompiles every kernel
# it calls: a full test run had compiled reverse_sweep 15 times and each elementwise kernel 4
# times per opcode where 2 (float64, float32) do (benchmarks/NOTES.md, 2026-11-28).
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
def reverse_sweep(t, chunks, adj, adj_off, top, par_min, bottom):
    """Accumulate adjoints from node ``top`` down to ``bottom`` (seeds already in ``adj``)."""
    # the caller holds these for the call: borrowed, kernels count no references to them
    # (kernels.borrowed; a driver that loops over sweeps borrows its chunk list too)
    t, adj, adj_off = K.borrowed(t), K.borrowed(adj), K.borrowed(adj_off)
    for i in range(top, bottom - 1, -1):
        if adj_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF: continue
        elif op == NEG: K.unary_vjp(NEG, t, chunks, adj, adj_off, i, par_min)
        elif op == EXP: K.unary_vjp(EXP, t, chunks, adj, adj_off, i, par_min)
        elif op == LOG: K.unary_vjp(LOG, t, chunks, adj, adj_off, i, par_min)
        elif op == SIN: K.unary_vjp(SIN, t, chunks, adj, adj_off, i, par_min)
        elif op == COS: K.unary_vjp(COS, t, chunks, adj, adj_off, i, par_min)
        elif op == TAN: K.unary_vjp(TAN, t, chunks, adj, adj_off, i, par_min)
        elif op == TANH: K.unary_vjp(TANH, t, chunks, adj, adj_off, i, par_min)
        elif op == SIGMOID: K.unary_vjp(SIGMOID, t, chunks, adj, adj_off, i, par_min)
        elif op == RELU: K.unary_vjp(RELU, t, chunks, adj, adj_off, i, par_min)
        elif op == SQRT: K.unary_vjp(SQRT, t, chunks, adj, adj_off, i, par_min)
        elif op == ABS: K.unary_vjp(ABS, t, chunks, adj, adj_off, i, par_min)
        elif op == ADD_C: K.unary_vjp(ADD_C, t, chunks, adj, adj_off, i, par_min)
        elif op == MUL_C: K.unary_vjp(MUL_C, t, chunks, adj, adj_off, i, par_min)
        elif op == DIV_C: K.unary_vjp(DIV_C, t, chunks, adj, adj_off, i, par_min)
        elif op == POW_C: K.unary_vjp(POW_C, t, chunks, adj, adj_off, i, par_min)
        elif op == RSUB_C: K.unary_vjp(RSUB_C, t, chunks, adj, adj_off, i, par_min)
        elif op == RDIV_C: K.unary_vjp(RDIV_C, t, chunks, adj, adj_off, i, par_min)
        elif op == RPOW_C: K.unary_vjp(RPOW_C, t, chunks, adj, adj_off, i, par_min)
        elif op == CLAMP: K.unary_vjp(CLAMP, t, chunks, adj, adj_off, i, par_min)
        elif op == ADD: K.binary_vjp(ADD, t, chunks, adj, adj_off, i, par_min)
        elif op == SUB: K.binary_vjp(SUB, t, chunks, adj, adj_off, i, par_min)
        elif op == MUL: K.binary_vjp(MUL, t, chunks, adj, adj_off, i, par_min)
        elif op == DIV: K.binary_vjp(DIV, t, chunks, adj, adj_off, i, par_min)
        elif op == POW: K.binary_vjp(POW, t, chunks, adj, adj_off, i, par_min)
        elif op == MAXIMUM: K.binary_vjp(MAXIMUM, t, chunks, adj, adj_off, i, par_min)
        elif op == MINIMUM: K.binary_vjp(MINIMUM, t, chunks, adj, adj_off, i, par_min)
        elif op == WHERE: K.where_vjp(t, chunks, adj, adj_off, i)
        elif SUM <= op <= LOG_SOFTMAX: K.reduce_vjp(t, chunks, adj, adj_off, i, par_min)
        elif op == RESHAPE: K.copy_vjp(t, adj, adj_off, i, par_min)
        elif op == GATHER: K.gather_vjp(t, adj, adj_off, i)
        elif op == CAT: K.cat_vjp(t, adj, adj_off, i)
        elif op == MATMUL: K.matmul_vjp(t, chunks, adj, adj_off, i)


@njit(**IEEE, cache=True)
def forward_sweep(t, chunks, start, stop, par_min):
    """Recompute the values of ops start..stop-1 from their operands (leaves are given)."""
    t = K.borrowed(t)  # as in reverse_sweep
    for i in range(start, stop):
        op = t.opcodes[i]
        if op == LEAF: continue
        elif op == NEG: K.unary_fwd(NEG, t, chunks, i, par_min)
        elif op == EXP: K.unary_fwd(EXP, t, chunks, i, par_min)
        elif op == LOG: K.unary_fwd(LOG, t, chunks, i, par_min)
        elif op == SIN: K.unary_fwd(SIN, t, chunks, i, par_min)
        elif op == COS: K.unary_fwd(COS, t, chunks, i, par_min)
        elif op == TAN: K.unary_fwd(TAN, t, chunks, i, par_min)
        elif op == TANH: K.unary_fwd(TANH, t, chunks, i, par_min)
        elif op == SIGMOID: K.unary_fwd(SIGMOID, t, chunks, i, par_min)
        elif op == RELU: K.unary_fwd(RELU, t, chunks, i, par_min)
        elif op == SQRT: K.unary_fwd(SQRT, t, chunks, i, par_min)
        elif op == ABS: K.unary_fwd(ABS, t, chunks, i, par_min)
        elif op == ADD_C: K.unary_fwd(ADD_C, t, chunks, i, par_min)
        elif op == MUL_C: K.unary_fwd(MUL_C, t, chunks, i, par_min)
        elif op == DIV_C: K.unary_fwd(DIV_C, t, chunks, i, par_min)
        elif op == POW_C: K.unary_fwd(POW_C, t, chunks, i, par_min)
        elif op == RSUB_C: K.unary_fwd(RSUB_C, t, chunks, i, par_min)
        elif op == RDIV_C: K.unary_fwd(RDIV_C, t, chunks, i, par_min)
        elif op == RPOW_C: K.unary_fwd(RPOW_C, t, chunks, i, par_min)
        elif op == CLAMP: K.unary_fwd(CLAMP, t, chunks, i, par_min)
        elif op == ADD: K.binary_fwd(ADD, t, chunks, i, par_min)
        elif op == SUB: K.binary_fwd(SUB, t, chunks, i, par_min)
        elif op == MUL: K.binary_fwd(MUL, t, chunks, i, par_min)
        elif op == DIV: K.binary_fwd(DIV, t, chunks, i, par_min)
        elif op == POW: K.binary_fwd(POW, t, chunks, i, par_min)
        elif op == MAXIMUM: K.binary_fwd(MAXIMUM, t, chunks, i, par_min)
        elif op == MINIMUM: K.binary_fwd(MINIMUM, t, chunks, i, par_min)
        elif op == WHERE: K.where_fwd(t, chunks, i)
        elif SUM <= op <= LOG_SOFTMAX: K.reduce_fwd(t, chunks, i, par_min)
        elif op == RESHAPE: K.copy_fwd(t, chunks, i)
        elif op == GATHER: K.gather_fwd(t, chunks, i)
        elif op == CAT: K.cat_fwd(t, chunks, i)
        elif op == MATMUL: K.matmul_fwd(t, chunks, i)
        elif op == COMPARE: K.compare_fwd(t, chunks, i)


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
    for i in range(start, stop):
        if tan_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF: continue
        elif op == NEG: K.unary_jvp(NEG, t, chunks, tan, tan_off, i, par_min)
        elif op == EXP: K.unary_jvp(EXP, t, chunks, tan, tan_off, i, par_min)
        elif op == LOG: K.unary_jvp(LOG, t, chunks, tan, tan_off, i, par_min)
        elif op == SIN: K.unary_jvp(SIN, t, chunks, tan, tan_off, i, par_min)
        elif op == COS: K.unary_jvp(COS, t, chunks, tan, tan_off, i, par_min)
        elif op == TAN: K.unary_jvp(TAN, t, chunks, tan, tan_off, i, par_min)
        elif op == TANH: K.unary_jvp(TANH, t, chunks, tan, tan_off, i, par_min)
        elif op == SIGMOID: K.unary_jvp(SIGMOID, t, chunks, tan, tan_off, i, par_min)
        elif op == RELU: K.unary_jvp(RELU, t, chunks, tan, tan_off, i, par_min)
        elif op == SQRT: K.unary_jvp(SQRT, t, chunks, tan, tan_off, i, par_min)
        elif op == ABS: K.unary_jvp(ABS, t, chunks, tan, tan_off, i, par_min)
        elif op == ADD_C: K.unary_jvp(ADD_C, t, chunks, tan, tan_off, i, par_min)
        elif op == MUL_C: K.unary_jvp(MUL_C, t, chunks, tan, tan_off, i, par_min)
        elif op == DIV_C: K.unary_jvp(DIV_C, t, chunks, tan, tan_off, i, par_min)
        elif op == POW_C: K.unary_jvp(POW_C, t, chunks, tan, tan_off, i, par_min)
        elif op == RSUB_C: K.unary_jvp(RSUB_C, t, chunks, tan, tan_off, i, par_min)
        elif op == RDIV_C: K.unary_jvp(RDIV_C, t, chunks, tan, tan_off, i, par_min)
        elif op == RPOW_C: K.unary_jvp(RPOW_C, t, chunks, tan, tan_off, i, par_min)
        elif op == CLAMP: K.unary_jvp(CLAMP, t, chunks, tan, tan_off, i, par_min)
        elif op == ADD: K.binary_jvp(ADD, t, chunks, tan, tan_off, i, par_min)
        elif op == SUB: K.binary_jvp(SUB, t, chunks, tan, tan_off, i, par_min)
        elif op == MUL: K.binary_jvp(MUL, t, chunks, tan, tan_off, i, par_min)
        elif op == DIV: K.binary_jvp(DIV, t, chunks, tan, tan_off, i, par_min)
        elif op == POW: K.binary_jvp(POW, t, chunks, tan, tan_off, i, par_min)
        elif op == MAXIMUM: K.binary_jvp(MAXIMUM, t, chunks, tan, tan_off, i, par_min)
        elif op == MINIMUM: K.binary_jvp(MINIMUM, t, chunks, tan, tan_off, i, par_min)
        elif op == WHERE: K.where_jvp(t, chunks, tan, tan_off, i)
        elif SUM <= op <= LOG_SOFTMAX: K.reduce_jvp(t, chunks, tan, tan_off, i, par_min)
        elif op == RESHAPE: K.copy_jvp(t, tan, tan_off, i)
        elif op == GATHER: K.gather_jvp(t, tan, tan_off, i)
        elif op == CAT: K.cat_jvp(t, tan, tan_off, i)
        elif op == MATMUL: K.matmul_jvp(t, chunks, tan, tan_off, i)


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
    for i in range(top, -1, -1):
        if adj_off[i] < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF: continue
        elif op == NEG: K.unary_vjp(NEG, t, chunks, adjdot, adj_off, i, par_min)
        elif op == EXP: K.unary_hvp(EXP, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == LOG: K.unary_hvp(LOG, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == SIN: K.unary_hvp(SIN, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == COS: K.unary_hvp(COS, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == TAN: K.unary_hvp(TAN, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == TANH: K.unary_hvp(TANH, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == SIGMOID: K.unary_hvp(SIGMOID, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == RELU: K.unary_vjp(RELU, t, chunks, adjdot, adj_off, i, par_min)
        elif op == SQRT: K.unary_hvp(SQRT, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == ABS: K.unary_vjp(ABS, t, chunks, adjdot, adj_off, i, par_min)
        elif op == ADD_C: K.unary_vjp(ADD_C, t, chunks, adjdot, adj_off, i, par_min)
        elif op == MUL_C: K.unary_vjp(MUL_C, t, chunks, adjdot, adj_off, i, par_min)
        elif op == DIV_C: K.unary_vjp(DIV_C, t, chunks, adjdot, adj_off, i, par_min)
        elif op == POW_C: K.unary_hvp(POW_C, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == RSUB_C: K.unary_vjp(RSUB_C, t, chunks, adjdot, adj_off, i, par_min)
        elif op == RDIV_C: K.unary_hvp(RDIV_C, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == RPOW_C: K.unary_hvp(RPOW_C, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == CLAMP: K.unary_vjp(CLAMP, t, chunks, adjdot, adj_off, i, par_min)
        elif op == ADD: K.binary_vjp(ADD, t, chunks, adjdot, adj_off, i, par_min)
        elif op == SUB: K.binary_vjp(SUB, t, chunks, adjdot, adj_off, i, par_min)
        elif op == MUL: K.binary_hvp(MUL, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == DIV: K.binary_hvp(DIV, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == POW: K.binary_hvp(POW, t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == MAXIMUM: K.binary_vjp(MAXIMUM, t, chunks, adjdot, adj_off, i, par_min)
        elif op == MINIMUM: K.binary_vjp(MINIMUM, t, chunks, adjdot, adj_off, i, par_min)
        elif op == WHERE: K.where_vjp(t, chunks, adjdot, adj_off, i)
        elif SUM <= op <= LOG_SOFTMAX: K.reduce_hvp(t, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
        elif op == RESHAPE: K.copy_vjp(t, adjdot, adj_off, i, par_min)
        elif op == GATHER: K.gather_vjp(t, adjdot, adj_off, i)
        elif op == CAT: K.cat_vjp(t, adjdot, adj_off, i)
        elif op == MATMUL: K.matmul_hvp(t, chunks, tan, tan_off, adj, adjdot, adj_off, i)
