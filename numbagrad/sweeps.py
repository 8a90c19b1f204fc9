"""The sweeps: Numba loops over a tape that dispatch on each op's opcode.

``reverse_sweep`` walks the tape backwards accumulating adjoints (backward,
``grad``, VJPs); ``forward_sweep`` recomputes every value from the leaves
(replay).  The dispatch is one line per opcode; the rules live in ``ops.py``
(scalar formulas) and ``kernels.py`` (loops).
"""
import numpy as np
from numba import njit

from . import kernels as K
from .ops import (
    LEAF, NEG, EXP, LOG, SIN, COS, TAN, TANH, SIGMOID, RELU, SQRT, ABS,
    ADD_C, MUL_C, DIV_C, POW_C, RSUB_C, RDIV_C, RPOW_C, CLAMP,
    ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM, WHERE,
    SUM, LOG_SOFTMAX, RESHAPE, GATHER, CAT, MATMUL, SAVES
)

# node flags (Tape.flags)
REQUIRES_GRAD = 1  # the node depends on an input that requires grad
DIRTY = 2          # its value was overwritten in place after it was recorded
FREED = 4          # a backward without retain_graph went through it

# what plan_adjoints reports
OK, MODIFIED, SECOND_BACKWARD = 0, 1, 2

# Below this many elements a kernel loops serially: the parallel region's start-up
# costs more than it saves (measured in benchmarks/NOTES.md).
PAR_MIN = 1 << 17


@njit(cache=True)
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


@njit(cache=True)
def reverse_sweep(t, chunks, adj, adj_off, top, par_min):
    """Accumulate adjoints from node ``top`` down to the leaves (seeds already in ``adj``)."""
    for i in range(top, -1, -1):
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


@njit(cache=True)
def forward_sweep(t, chunks, start, stop, par_min):
    """Recompute the values of ops start..stop-1 from their operands (leaves are given)."""
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
