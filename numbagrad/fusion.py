"""Fused sweeps: runs of elementwise ops swept in one loop over elements (replays, and the
eager backward's runs of large tensors: ``autograd._eager_fusion``).

A *segment* is a run of consecutive elementwise ops on the tape whose operands
are either nodes of the same size or single values, optionally closed by a
full SUM or MEAN of one of its nodes.  A replay sweeps a segment block by block
(``BLOCK`` elements at a time): each op's loop runs over the block in scratch
that stays in cache, so intermediates never reach memory.  Only values read
outside the segment are written to the buffer.  The reverse pass recomputes
the block's forward values (cheaper than storing and reloading them) and then
walks the segment's ops backwards in scratch too; a closing SUM/MEAN feeds its
adjoint straight in, so W1-like graphs read the input once forward and once
backward.

The plan (``plan_segments``) is plain arrays made once per trace (per eager
backward); the block loops read each op from a row of integers (``_segment_rows``)
and each value from the tape chunk that holds it; the sweeps (``replay_forward``,
``replay_reverse``) run everything else through the per-op sweeps in
``sweeps.py``.  Blocks are split over threads (``prange``) when a segment has at
least ``par_min`` elements; callers pass ``numba.get_num_threads()`` (reading it
inside would make the sweeps uncachable).
"""
from collections import namedtuple

import numpy as np
from numba import njit, prange, literally

from . import kernels as K
from .kernels import arg, const, is_run
from .ops import (
    IEEE, PRANGE_ONLY, LEAF, GATHER, NEG, SIN, COS, ADD, SUB, MINIMUM, SUM, MEAN,
    unary_f, unary_d, unary_fd, binary_f, binary_da, binary_db,
    unary_f_inlined, unary_d_inlined, binary_f_inlined, binary_da_inlined, binary_db_inlined,
)
from . import dispatch as D
from .dispatch import (SMALL, LARGE, UBLOCK_FWD, UBLOCK_VJP, BBLOCK_FWD, BBLOCK_VJP, SEG_FWD,
                       SEG_REV, SCALAR_FWD, SCALAR_REV)
from .sweeps import forward_sweep, reverse_sweep, kernel

# Elements per block: each op of a block costs a fixed amount of calls besides its arithmetic,
# so wider blocks pay less of it; 1,024 float64 a node still sits in L2 (the widths measured:
# benchmarks/NOTES.md, "Eager backward fuses runs of large elementwise ops")
BLOCK = 1024


def plan_segments(t, keep=()):
    """Find the fusable runs of a replay tape: (seg_start, seg_stop, ext).

    ``ext[k]`` is 0 for a node no segment computes (a leaf may sit inside a
    segment's range), 1 for a fused node, 2 for a fused node whose value or
    adjoint is needed outside its segment (an operand of a later op, the
    output, or one of ``keep``).
    """
    n = len(t.opcodes)
    sizes, opcodes = t.sizes, t.opcodes
    starts, stops = [], []
    seg_of = np.full(n, -1, dtype=np.int64)
    cur, cur_n = -1, -1
    for i in range(n):
        op = int(opcodes[i])
        size = int(sizes[i])
        operands = t.args[t.arg_ptr[i]:t.arg_ptr[i + 1]]
        if op == LEAF and cur >= 0:
            continue  # an input recorded mid-run does not end it
        if (NEG <= op <= MINIMUM and size > 0 and all(
                sizes[a] == size or sizes[a] == 1 for a in operands)) \
                or (op == GATHER and size > 1 and _is_view(t, i)
                    and (cur < 0 or size != cur_n or seg_of[operands[0]] != cur)):
            if cur < 0 or size != cur_n:
                starts.append(i)
                stops.append(i + 1)
                cur, cur_n = len(starts) - 1, size
            else:
                stops[cur] = i + 1
            seg_of[i] = cur
            continue
        if (op == SUM or op == MEAN) and cur >= 0 and stops[cur] == i and size == 1 \
                and seg_of[operands[0]] == cur and sizes[operands[0]] == cur_n:
            stops[cur] = i + 1  # a closing reduction: accumulated in the block loop
            seg_of[i] = cur
        cur = -1
    ext = (seg_of >= 0).astype(np.int8)
    consumers = np.repeat(np.arange(n), np.diff(t.arg_ptr))
    operands = t.args
    outside = (seg_of[operands] >= 0) & (seg_of[consumers] != seg_of[operands])
    ext[operands[outside]] = 2
    for k in keep:
        if seg_of[k] >= 0:
            ext[k] = 2
    for start, stop in zip(starts, stops):
        if opcodes[stop - 1] in (SUM, MEAN):
            ext[stop - 1] = 2
        if sizes[start] == 1:  # scalar segments run from the buffers (scalar_forward)
            ext[start:stop][ext[start:stop] > 0] = 2
    return (np.array(starts, dtype=np.int64), np.array(stops, dtype=np.int64), ext)


def _is_view(t, i):
    """Whether GATHER node i reads a contiguous run of its operand (``x[a:b]``, ``x[2:]``):
    inside a segment it is then read in place, block by block, and its adjoint added in
    place.  A basic slice is recorded as its first position alone (kernels.gather_fwd); other
    positions cost a pass over them once per plan (``gather_vjp`` asks the same ``is_run``)."""
    idx = t.iparams[t.iparam_ptr[i]:t.iparam_ptr[i + 1]]
    return t.sizes[i] > 1 and is_run(idx)


FusionPlan = namedtuple("FusionPlan", "seg_start seg_stop ext prog pc")
FusionPlan.__doc__ = """What a fused replay needs besides the tape, made once per trace.

seg_start, seg_stop, ext: the segments (``plan_segments``).  prog, pc: the scalar
program (``plan_scalar``) for ops of one-element segments."""


def plan_fusion(t, adj_off, trash, keep=(), aux_base=-1):
    """The FusionPlan of a replay tape whose adjoints sit at ``adj_off`` (``trash``: a spare
    adjoint slot that takes partials nobody reads; ``aux_base``: see ``plan_scalar``)."""
    starts, stops, ext = plan_segments(t, keep)
    prog, pc = plan_scalar(t, adj_off, trash, starts, stops, aux_base)
    return FusionPlan(starts, stops, ext, prog, pc)


# columns of a scalar program row
P_OP, P_X, P_B, P_Y, P_GX, P_GB, P_GY, P_AUX = range(8)
# ops whose derivative costs a second transcendental of the same operand: computed with the
# value (one sincos instead of a sin now and a cos in the reverse) into an aux slot
AUX_OPS = (SIN, COS)


def plan_scalar(t, adj_off, trash, starts, stops, aux_base=-1):
    """One row per node of the one-element segments, with the buffer offsets resolved.

    Row k: opcode, value offsets of the operands and of the result, adjoint offsets of the
    operands (``trash`` where they take none) and of the result (-1: none), the value-buffer
    slot that keeps the derivative of an ``AUX_OPS`` row that takes an adjoint (from
    ``aux_base`` on, past the tape's values: the caller makes the buffer that much longer;
    -1: none, or ``aux_base`` < 0), and two constants (``pc``).  An interpreter over these
    rows does no lookups beyond the row it is on: about twice as fast as reading the tape's
    columns through their pointers.
    """
    n = len(t.opcodes)
    rows = np.zeros(n, dtype=np.bool_)
    for a, b in zip(starts, stops):
        if t.sizes[a] == 1:
            rows[a:b] = True
    if not rows.any():
        return np.zeros((0, 8), dtype=np.int64), np.zeros((0, 2))
    prog = np.full((n, 8), -1, dtype=np.int64)
    pc = np.zeros((n, 2))
    ops = np.flatnonzero(rows & (t.opcodes != LEAF))
    prog[rows, P_OP] = LEAF
    prog[ops, P_OP] = t.opcodes[ops]
    nargs = np.diff(t.arg_ptr)[ops]
    x = t.args[t.arg_ptr[ops]]
    prog[ops, P_X] = t.val_off[x]
    prog[ops, P_GX] = np.where(adj_off[x] >= 0, adj_off[x], trash)
    two = ops[nargs >= 2]
    b = t.args[t.arg_ptr[two] + 1]
    prog[two, P_B] = t.val_off[b]
    prog[two, P_GB] = np.where(adj_off[b] >= 0, adj_off[b], trash)
    prog[ops, P_Y] = t.val_off[ops]
    prog[ops, P_GY] = adj_off[ops]
    if aux_base >= 0:
        aux = ops[np.isin(t.opcodes[ops], AUX_OPS) & (adj_off[ops] >= 0)]
        prog[aux, P_AUX] = aux_base + np.arange(len(aux))
    nconst = np.diff(t.const_ptr)
    for r in range(2):
        has = ops[nconst[ops] > r]
        pc[has, r] = t.consts[t.const_ptr[has] + r]
    return prog, pc


# ---------------------------------------------------------------- block loops
# (array, offset, stride) names a block of values: stride 0 is one value repeated.
# Loops index slices with the loop counter: Numba then knows the index is not
# negative and skips its wraparound check, which would cost 10x by blocking SIMD.

@njit(**IEEE, cache=True)
def _unary_fwd(op, xa, xo, xs, ya, yo, m, c0, c1):
    literally(op)
    y = ya[yo:yo + m]
    if xs == 0:
        v = unary_f(op, xa[xo], c0, c1)
        for k in range(m):
            y[k] = v
    else:
        x = xa[xo:xo + m]
        for k in range(m):
            y[k] = unary_f(op, x[k], c0, c1)


@njit(**IEEE, cache=True)
def _unary_vjp(op, xa, xo, xs, ya, yo, ga, go, ta, to, ts, m, c0, c1):
    """Add g * dy/dx into the target block; a stride-0 target gets the block's sum returned."""
    literally(op)
    y, g = ya[yo:yo + m], ga[go:go + m]
    x = xa[xo:xo + m] if xs == 1 else xa[xo:xo + 1]
    x0 = xa[xo]
    acc = 0.0
    if ts == 0:
        for k in range(m):
            acc += g[k] * unary_d(op, x[k] if xs == 1 else x0, y[k], c0, c1)
    elif xs == 1:
        tx = ta[to:to + m]
        for k in range(m):
            tx[k] += g[k] * unary_d(op, x[k], y[k], c0, c1)
    else:
        tx = ta[to:to + m]
        for k in range(m):
            tx[k] += g[k] * unary_d(op, x0, y[k], c0, c1)
    return acc


@njit(**IEEE, cache=True)
def _binary_fwd(op, aa, ao, as_, ba, bo, bs, ya, yo, m):
    literally(op)
    y = ya[yo:yo + m]
    a0, b0 = aa[ao], ba[bo]
    if as_ == 1 and bs == 1:
        a, b = aa[ao:ao + m], ba[bo:bo + m]
        for k in range(m):
            y[k] = binary_f(op, a[k], b[k])
    elif as_ == 1:
        a = aa[ao:ao + m]
        for k in range(m):
            y[k] = binary_f(op, a[k], b0)
    elif bs == 1:
        b = ba[bo:bo + m]
        for k in range(m):
            y[k] = binary_f(op, a0, b[k])
    else:
        v = binary_f(op, a0, b0)
        for k in range(m):
            y[k] = v


@njit(**IEEE, cache=True)
def _binary_vjp(op, aa, ao, as_, ba, bo, bs, ya, yo, ga, go,
                ta, to, ts, tb, tbo, tbs, m):
    """Partials into both targets (ts/tbs: 1 a block, 0 a summed value, -1 none)."""
    literally(op)
    y, g = ya[yo:yo + m], ga[go:go + m]
    a = aa[ao:ao + m] if as_ == 1 else aa[ao:ao + 1]
    b = ba[bo:bo + m] if bs == 1 else ba[bo:bo + 1]
    a0, b0 = aa[ao], ba[bo]
    tx = ta[to:to + m] if ts == 1 else ta[to:to + 1]
    tz = tb[tbo:tbo + m] if tbs == 1 else tb[tbo:tbo + 1]
    acc_a, acc_b = 0.0, 0.0
    if as_ == 1 and bs == 1 and ts == 1 and tbs == 1:  # the common case, kept branch-free
        for k in range(m):
            tx[k] += g[k] * binary_da(op, a[k], b[k], y[k])
            tz[k] += g[k] * binary_db(op, a[k], b[k], y[k])
        return acc_a, acc_b
    for k in range(m):
        av = a[k] if as_ == 1 else a0
        bv = b[k] if bs == 1 else b0
        if ts == 1:
            tx[k] += g[k] * binary_da(op, av, bv, y[k])
        elif ts == 0:
            acc_a += g[k] * binary_da(op, av, bv, y[k])
        if tbs == 1:
            tz[k] += g[k] * binary_db(op, av, bv, y[k])
        elif tbs == 0:
            acc_b += g[k] * binary_db(op, av, bv, y[k])
    return acc_a, acc_b


# The block loops reach each op's kernel through dispatch.TABLE, as the sweeps do: a fused
# sweep compiles the block kernels of the ops it meets, not those of every op.

@njit(**IEEE, inline="always")
def unary_block_fwd(op, xa, xo, xs, ya, yo, m, c0, c1):
    a = kernel(UBLOCK_FWD, SMALL, ya, op)
    D.call_kernel(UBLOCK_FWD, a, op, (xa, np.int64(xo), np.int64(xs), ya, np.int64(yo),
                                        np.int64(m), np.float64(c0), np.float64(c1)))


@njit(**IEEE, inline="always")
def unary_block_vjp(op, xa, xo, xs, ya, yo, ga, go, ta, to, ts, m, c0, c1):
    a = kernel(UBLOCK_VJP, SMALL, ya, op)
    return D.call_kernel(UBLOCK_VJP, a, op, (
        xa, np.int64(xo), np.int64(xs), ya, np.int64(yo), ga, np.int64(go), ta, np.int64(to),
        np.int64(ts), np.int64(m), np.float64(c0), np.float64(c1)))


@njit(**IEEE, inline="always")
def binary_block_fwd(op, aa, ao, as_, ba, bo, bs, ya, yo, m):
    a = kernel(BBLOCK_FWD, SMALL, ya, op)
    D.call_kernel(BBLOCK_FWD, a, op, (aa, np.int64(ao), np.int64(as_), ba, np.int64(bo),
                                        np.int64(bs), ya, np.int64(yo), np.int64(m)))


@njit(**IEEE, inline="always")
def binary_block_vjp(op, aa, ao, as_, ba, bo, bs, ya, yo, ga, go, ta, to, ts, tb, tbo, tbs, m):
    a = kernel(BBLOCK_VJP, SMALL, ya, op)
    return D.call_kernel(BBLOCK_VJP, a, op, (
        aa, np.int64(ao), np.int64(as_), ba, np.int64(bo), np.int64(bs), ya, np.int64(yo), ga,
        np.int64(go), ta, np.int64(to), np.int64(ts), tb, np.int64(tbo), np.int64(tbs),
        np.int64(m)))


@njit(**IEEE, cache=True)
def _block_sum(a, o, m):
    # four accumulators: a single one serialises on the add's latency
    x = a[o:o + m]
    s0 = s1 = s2 = s3 = 0.0
    q = m // 4
    for k in range(q):
        s0 += x[4 * k]
        s1 += x[4 * k + 1]
        s2 += x[4 * k + 2]
        s3 += x[4 * k + 3]
    for k in range(4 * q, m):
        s0 += x[k]
    return (s0 + s1) + (s2 + s3)


# ---------------------------------------------------------------- segments of single values
# Scalar graphs (every node one element) run a row-per-op program (plan_scalar) whose
# offsets are resolved at plan time: no per-op pointer chasing, no block loops.

@njit(**IEEE, cache=True)
def scalar_forward_kernel(op, prog, pc, buf, start, stop):
    """``scalar_forward`` with a kernel slot's arguments (dispatch.SCALAR_FWD)."""
    scalar_forward(prog, pc, buf, start, stop)


@njit(**IEEE, cache=True)
def scalar_reverse_kernel(op, prog, pc, buf, adj, start, stop):
    """``scalar_reverse`` with a kernel slot's arguments (dispatch.SCALAR_REV)."""
    scalar_reverse(prog, pc, buf, adj, start, stop)


@njit(**IEEE, cache=True)
def scalar_forward(prog, pc, buf, start, stop):
    for i in range(start, stop):
        op = prog[i, P_OP]
        if op == LEAF:
            continue
        x = buf[prog[i, P_X]]
        if op < ADD:
            aux = prog[i, P_AUX]
            if aux >= 0:
                y, d = unary_fd(op, x, pc[i, 0], pc[i, 1])
                buf[aux] = d
            else:
                y = unary_f_inlined(op, x, pc[i, 0], pc[i, 1])
        elif op <= MINIMUM:
            y = binary_f_inlined(op, x, buf[prog[i, P_B]])
        elif op == SUM:
            y = x
        else:  # MEAN of one element (its constant is the count, 1)
            y = x / pc[i, 0]
        buf[prog[i, P_Y]] = y


@njit(**IEEE, cache=True)
def scalar_reverse(prog, pc, buf, adj, start, stop):
    for i in range(stop - 1, start - 1, -1):
        op = prog[i, P_OP]
        gy = prog[i, P_GY]
        if op == LEAF or gy < 0:
            continue
        g = adj[gy]
        # each branch loads only the values its partials read: W2's reverse (a third of its
        # ops adds) took 18% less once additions stopped loading three values
        if op < ADD:
            aux = prog[i, P_AUX]
            if aux >= 0:
                d = buf[aux]
            else:
                d = unary_d_inlined(op, buf[prog[i, P_X]], buf[prog[i, P_Y]], pc[i, 0], pc[i, 1])
            adj[prog[i, P_GX]] += g * d
        elif op <= SUB:  # constant partials
            adj[prog[i, P_GX]] += g * binary_da_inlined(op, 0.0, 0.0, 0.0)
            adj[prog[i, P_GB]] += g * binary_db_inlined(op, 0.0, 0.0, 0.0)
        elif op <= MINIMUM:
            x, b, y = buf[prog[i, P_X]], buf[prog[i, P_B]], buf[prog[i, P_Y]]
            adj[prog[i, P_GX]] += g * binary_da_inlined(op, x, b, y)
            adj[prog[i, P_GB]] += g * binary_db_inlined(op, x, b, y)
        elif op == SUM:
            adj[prog[i, P_GX]] += g
        else:
            adj[prog[i, P_GX]] += g / pc[i, 0]


# ---------------------------------------------------------------- one segment

@njit(**IEEE, inline="always")
def _view_offset(t, i):
    """Where a view (a GATHER node inside a segment, ``_is_view``) starts in its operand."""
    return t.iparams[t.iparam_ptr[i]]


@njit(**IEEE, inline="always")
def closing_seed(t, adj, adj_off, stop):
    """The adjoint a segment's closing SUM/MEAN feeds each element of its operand: 0 without
    one, or when it is dead (the segment's nodes used elsewhere still need their adjoints)."""
    tail = stop - 1
    op = t.opcodes[tail]
    if op != SUM and op != MEAN:
        return 0.0
    g = adj[adj_off[tail]] if adj_off[tail] >= 0 else 0.0
    return g / const(t, tail, 0) if op == MEAN else g


@njit(**IEEE, inline="always")
def store_closing(t, buf, stop, total):
    """Store a closing SUM/MEAN from the sum of its operand's blocks."""
    tail = stop - 1
    if t.opcodes[tail] == SUM:
        buf[t.val_off[tail]] = total
    elif t.opcodes[tail] == MEAN:
        buf[t.val_off[tail]] = total / const(t, tail, 0)


@njit(**IEEE, inline="always")
def add_single_value_sums(t, adj, adj_off, start, stop, sums):
    """Single-value operands outside the segment: their adjoint is the sum over all blocks
    (``sums``: one row per chunk of blocks, two columns per op)."""
    for i in range(start, stop):
        for r in range(min(2, t.arg_ptr[i + 1] - t.arg_ptr[i])):
            s = 0.0
            for c in range(sums.shape[0]):
                s += sums[c, 2 * (i - start) + r]
            if s != 0.0:
                adj[adj_off[arg(t, i, r)]] += s


# The block loops read each op of a segment from a row of plain integers made once per call
# (``_segment_rows``), not from the tape: every inlined helper handed the tape (a tuple of 14
# arrays) took and dropped a reference to each of them, 28 atomic operations, about 170 ns a
# call, so that W1's segment spent 1.5 us a block on bookkeeping against 0.4 on arithmetic.
# Columns of a row (one row per node of the segment): the opcode, where the value is stored
# when it is read outside the segment (else -1), the adjoint offset; then each operand r (0, 1)
# has a value source at R_SRC + 3 r (array: SV, or the index of the tape's chunk that holds it;
# offset; stride: 0 one value repeated, 1 a block) and an adjoint target at R_TGT + 3 r (array:
# GV, ADJ or NONE)
R_OP, R_STORE, R_GY = 0, 1, 2
R_SRC, R_TGT = 3, 9
R_WIDTH = 15
SV = -1
GV, ADJ, NONE = 0, 1, -1


@njit(**IEEE, cache=True)
def _segment_rows(t, ext, adj_off, start, stop, width):
    """The rows of the segment's nodes start..stop-1 and their two constants.

    A source or target in the segment's scratch (SV, GV) has the offset of its block row; one
    in a chunk of the tape or in the adjoint buffer (ADJ) with stride 1 is offset by the
    block's first element as well.  ``adj_off`` may be empty (a forward sweep: no targets)."""
    nops = stop - start
    rows = np.full((nops, R_WIDTH), NONE, dtype=np.int64)
    cs = np.zeros((nops, 2))
    reverse = adj_off.size > 0
    for i in range(start, stop):
        r = rows[i - start]
        op = t.opcodes[i]
        r[R_OP] = op
        r[R_STORE] = t.val_off[i] if ext[i] == 2 else -1
        if reverse:
            r[R_GY] = adj_off[i]
        cs[i - start, 0], cs[i - start, 1] = const(t, i, 0), const(t, i, 1)
        if op == LEAF:
            continue
        for q in range(min(2, t.arg_ptr[i + 1] - t.arg_ptr[i])):
            k = arg(t, i, q)
            src, tgt = R_SRC + 3 * q, R_TGT + 3 * q
            inside = start <= k < stop and ext[k] > 0
            if op == GATHER:  # a contiguous view (plan_segments) of a value in its chunk
                r[src], r[src + 1], r[src + 2] = (t.val_chunk[k], t.val_off[k] + _view_offset(t, i),
                                                  1)
            elif inside:
                r[src], r[src + 1], r[src + 2] = SV, (k - start) * width, 1
            else:
                r[src], r[src + 1], r[src + 2] = (t.val_chunk[k], t.val_off[k],
                                                  0 if t.sizes[k] == 1 else 1)
            if not reverse or adj_off[k] < 0:
                r[tgt], r[tgt + 1], r[tgt + 2] = GV, 0, -1
            elif op == GATHER:  # its adjoint adds into its operand's, in place
                r[tgt], r[tgt + 1], r[tgt + 2] = ADJ, adj_off[k] + _view_offset(t, i), 1
            elif inside:
                r[tgt], r[tgt + 1], r[tgt + 2] = GV, (k - start) * width, 1
            else:
                r[tgt], r[tgt + 1], r[tgt + 2] = ADJ, adj_off[k], 0 if t.sizes[k] == 1 else 1
    return rows, cs


@njit(**IEEE, inline="always")
def _source(rows, j, q, chunks, sv, lo):
    """(array, offset, stride) of row j's operand q's values for the block starting at lo."""
    c = R_SRC + 3 * q
    if rows[j, c] == SV:
        return sv, rows[j, c + 1], 1
    return chunks[rows[j, c]], rows[j, c + 1] + lo * rows[j, c + 2], rows[j, c + 2]


@njit(**IEEE, inline="always")
def _target(rows, j, q, adj, gv, lo):
    """(array, offset, stride) row j's operand q's adjoint adds into (stride -1: none)."""
    c = R_TGT + 3 * q
    if rows[j, c] == ADJ:
        return adj, rows[j, c + 1] + lo * rows[j, c + 2], rows[j, c + 2]
    return gv, rows[j, c + 1], rows[j, c + 2]


@njit(**IEEE, cache=True)
def plan_rows(t, ext, adj_off, seg_start, seg_stop):
    """``_segment_rows`` of every segment of a plan, row k node k's (and its constants): made
    once, for sweeps that must not allocate (``innumba``)."""
    n = len(t.opcodes)
    rows = np.full((n, R_WIDTH), NONE, dtype=np.int64)
    cs = np.zeros((n, 2))
    for s in range(len(seg_start)):
        a, b = seg_start[s], seg_stop[s]
        r, c = _segment_rows(t, ext, adj_off, a, b, min(BLOCK, t.sizes[a]))
        rows[a:b] = r
        cs[a:b] = c
    return rows, cs


@njit(**IEEE, cache=True)
def _blocks_forward(rows, cs, chunks, buf, sv, blk0, blk1, n, width, store):
    """The segment's values (its ``rows``) for blocks blk0..blk1-1, read from ``chunks`` and
    (``store``) those read outside it written to ``buf``."""
    acc = 0.0
    for blk in range(blk0, blk1):
        lo = blk * width
        acc += _block_forward(rows, cs, chunks, buf, sv, lo, min(width, n - lo), width, store)
    return acc


@njit(**IEEE, inline="always")
def _block_forward(rows, cs, chunks, buf, sv, lo, m, width, store):
    """Compute the segment's values for elements lo..lo+m into scratch; returns a closing sum."""
    acc = 0.0
    for j in range(rows.shape[0]):
        op = rows[j, R_OP]
        if op == LEAF:
            continue
        yo = j * width
        if op == SUM or op == MEAN:
            acc += _block_sum(sv, rows[j, R_SRC + 1], m)
            continue
        xa, xo, xs = _source(rows, j, 0, chunks, sv, lo)
        if op == GATHER:
            sv[yo:yo + m] = xa[xo:xo + m]
        elif op < ADD:
            unary_block_fwd(op, xa, xo, xs, sv, yo, m, cs[j, 0], cs[j, 1])
        else:
            ba, bo, bs = _source(rows, j, 1, chunks, sv, lo)
            binary_block_fwd(op, xa, xo, xs, ba, bo, bs, sv, yo, m)
        if store and rows[j, R_STORE] >= 0:
            off = rows[j, R_STORE] + lo
            buf[off:off + m] = sv[yo:yo + m]
    return acc


@njit(**IEEE, cache=True)
def _blocks_reverse(rows, cs, chunks, adj, sv, gv, blk0, blk1, n, width, g_tail, sums, clear):
    """``clear``: offsets of adjoints the segment adds to first and wholly (an eager backward's
    ``autograd.share_adjoints``; empty in a replay), each cleared here block by block just
    before its additions, in cache, instead of beforehand over the whole buffer."""
    for blk in range(blk0, blk1):
        lo = blk * width
        m = min(width, n - lo)
        for f in clear:
            z = adj[f + lo:f + lo + m]  # a slice: the loop vectorises (NOTES.md)
            for k in range(m):
                z[k] = 0.0
        _block_reverse(rows, cs, chunks, adj, sv, gv, lo, m, width, g_tail, sums)


@njit(**IEEE, inline="always")
def _block_reverse(rows, cs, chunks, adj, sv, gv, lo, m, width, g_tail, sums):
    """Adjoints of the segment's block lo..lo+m; single-value targets add into ``sums``."""
    _block_forward(rows, cs, chunks, sv, sv, lo, m, width, False)
    nops = rows.shape[0]
    last = nops
    if rows[nops - 1, R_OP] == SUM or rows[nops - 1, R_OP] == MEAN:
        last = nops - 1
    for j in range(last):
        go = j * width
        if rows[j, R_STORE] >= 0 and rows[j, R_GY] >= 0:  # read outside: adjoint from there
            src = rows[j, R_GY] + lo
            gv[go:go + m] = adj[src:src + m]
        else:
            gv[go:go + m] = 0.0
    if last < nops:
        xo = rows[last, R_SRC + 1]
        gx = gv[xo:xo + m]
        for k in range(m):  # a loop: ``gv[a:b] += g`` copies the aliased slice first (allocates)
            gx[k] += g_tail
    for j in range(last - 1, -1, -1):
        op = rows[j, R_OP]
        if rows[j, R_GY] < 0 or op == LEAF:
            continue
        go = j * width
        ta, to, ts = _target(rows, j, 0, adj, gv, lo)
        if op == GATHER:  # a view: its adjoint adds into its operand's, in place
            if ts >= 0:
                tx, gi = ta[to:to + m], gv[go:go + m]
                for k in range(m):
                    tx[k] += gi[k]
            continue
        aa, ao, as_ = _source(rows, j, 0, chunks, sv, lo)
        if op < ADD:
            s = unary_block_vjp(op, aa, ao, as_, sv, go, gv, go, ta, to, ts, m, cs[j, 0],
                                cs[j, 1])
            if ts == 0:
                sums[2 * j] += s
        else:
            tb, tbo, tbs = _target(rows, j, 1, adj, gv, lo)
            ba, bo, bs = _source(rows, j, 1, chunks, sv, lo)
            sa, sb = binary_block_vjp(op, aa, ao, as_, ba, bo, bs, sv, go, gv, go,
                                      ta, to, ts, tb, tbo, tbs, m)
            if ts == 0:
                sums[2 * j] += sa
            if tbs == 0:
                sums[2 * j + 1] += sb


@njit(**IEEE, cache=True)
def segment_forward(t, chunks, buf, plan, start, stop, par_min, nthreads):
    """The fused forward sweep of segment start..stop-1: its scalar program for single values,
    its serial form below ``par_min`` elements, its threaded one from there (each compiled at
    its first use)."""
    if t.sizes[start] == 1:
        a = kernel(SCALAR_FWD, SMALL, buf, LEAF)
        D.call_kernel(SCALAR_FWD, a, LEAF, (plan.prog, plan.pc, buf, np.int64(start),
                                            np.int64(stop)))
        return
    size = LARGE if t.sizes[start] >= par_min else SMALL
    a = kernel(SEG_FWD, size, buf, LEAF)
    D.call_kernel(SEG_FWD, a, LEAF, (t, chunks, buf, plan, np.int64(start), np.int64(stop),
                                       np.int64(par_min), np.int64(nthreads)))


@njit(**IEEE, cache=True)
def segment_reverse(t, chunks, adj, adj_off, plan, start, stop, par_min, nthreads, clear):
    """The fused reverse sweep of segment start..stop-1 (serial or threaded, as
    ``segment_forward``)."""
    if t.sizes[start] == 1:
        # a scalar program's offsets are into a replay's one buffer, its only chunk
        a = kernel(SCALAR_REV, SMALL, adj, LEAF)
        D.call_kernel(SCALAR_REV, a, LEAF, (plan.prog, plan.pc, chunks[0], adj, np.int64(start),
                                            np.int64(stop)))
        return
    size = LARGE if t.sizes[start] >= par_min else SMALL
    a = kernel(SEG_REV, size, adj, LEAF)
    D.call_kernel(SEG_REV, a, LEAF, (t, chunks, adj, adj_off, plan, np.int64(start),
                                       np.int64(stop), np.int64(par_min), np.int64(nthreads),
                                       np.ascontiguousarray(clear)))


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def segment_forward_impl(op, t, chunks, buf, plan, start, stop, par_min, nthreads):
    n = t.sizes[start]
    ext = plan.ext
    width = min(BLOCK, n)
    nblocks = (n + width - 1) // width
    nchunks = max(1, min(nthreads * 2, nblocks)) if n >= par_min else 1
    rows, cs = _segment_rows(t, ext, t.val_off[:0], start, stop, width)
    partial = np.zeros(nchunks)
    if nchunks > 1:
        for c in prange(nchunks):
            sv = np.empty((stop - start) * width, dtype=buf.dtype)
            partial[c] = _blocks_forward(rows, cs, chunks, buf, sv, c * nblocks // nchunks,
                                         (c + 1) * nblocks // nchunks, n, width, True)
    else:
        sv = np.empty((stop - start) * width, dtype=buf.dtype)
        partial[0] = _blocks_forward(rows, cs, chunks, buf, sv, np.int64(0), nblocks, n, width,
                                     True)
    store_closing(t, buf, stop, partial.sum())


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def segment_reverse_impl(op, t, chunks, adj, adj_off, plan, start, stop, par_min, nthreads,
                         clear):
    n = t.sizes[start]
    ext = plan.ext
    width = min(BLOCK, n)
    nblocks = (n + width - 1) // width
    nchunks = max(1, min(nthreads * 2, nblocks)) if n >= par_min else 1
    nops = stop - start
    g_tail = closing_seed(t, adj, adj_off, stop)
    # Views at different offsets of one operand (x[1:] and x[:-1]) add into overlapping parts
    # of its adjoint: a chunk of blocks reaches up to ``spread`` elements into the next
    # chunk's part.  Even chunks then run before odd ones; a spread beyond a chunk runs serial.
    lo_view, hi_view = n, -1
    for i in range(start, stop):
        if t.opcodes[i] == GATHER:
            o = _view_offset(t, i)
            lo_view, hi_view = min(lo_view, o), max(hi_view, o)
    phases = 1
    if hi_view > lo_view:
        phases = 2
        if hi_view - lo_view > (nblocks // max(nchunks, 1)) * width:
            nchunks = 1
    sums = np.zeros((nchunks, 2 * nops))
    rows, cs = _segment_rows(t, ext, adj_off, start, stop, width)
    if nchunks > 1:
        for phase in range(phases):
            for c in prange(nchunks):
                if c % phases == phase:
                    sv = np.empty(nops * width, dtype=adj.dtype)
                    gv = np.empty(nops * width, dtype=adj.dtype)
                    _blocks_reverse(rows, cs, chunks, adj, sv, gv, c * nblocks // nchunks,
                                    (c + 1) * nblocks // nchunks, n, width, g_tail, sums[c],
                                    clear)
    else:
        sv = np.empty(nops * width, dtype=adj.dtype)
        gv = np.empty(nops * width, dtype=adj.dtype)
        _blocks_reverse(rows, cs, chunks, adj, sv, gv, np.int64(0), nblocks, n, width, g_tail,
                        sums[0], clear)
    add_single_value_sums(t, adj, adj_off, start, stop, sums)


# ---------------------------------------------------------------- whole replays

@njit(**IEEE, cache=True)
def replay_forward(t, chunks, buf, plan, par_min, nthreads):
    """Recompute every node from the leaves: segments fused, other ops by ``forward_sweep``."""
    t, chunks, buf, plan = K.borrowed(t), K.borrowed_chunks(chunks), K.borrowed(buf), \
        K.borrowed(plan)  # nothing counts references below (kernels.borrowed)
    n = len(t.opcodes)
    seg_start, seg_stop = plan.seg_start, plan.seg_stop
    i = np.int64(0)  # not a literal 0: see sweeps.SERIAL
    for s in range(len(seg_start) + 1):
        nxt = seg_start[s] if s < len(seg_start) else n
        if i < nxt:
            forward_sweep(t, chunks, i, nxt, par_min)
        if s < len(seg_start):
            segment_forward(t, chunks, buf, plan, seg_start[s], seg_stop[s], par_min, nthreads)
            i = seg_stop[s]


@njit(**IEEE, cache=True)
def replay_reverse(t, chunks, adj, adj_off, plan, top, par_min, nthreads):
    """Adjoints from ``top`` down (seeds already in ``adj``): segments fused, others by op.
    ``adj_off`` must be the one ``plan`` was made with."""
    t, chunks, adj, adj_off, plan = K.borrowed(t), K.borrowed_chunks(chunks), K.borrowed(adj), \
        K.borrowed(adj_off), K.borrowed(plan)  # as in replay_forward
    seg_start, seg_stop = plan.seg_start, plan.seg_stop
    hi = top
    for s in range(len(seg_start) - 1, -1, -1):
        if seg_start[s] > hi:
            continue
        if seg_stop[s] - 1 < hi:
            reverse_sweep(t, chunks, adj, adj_off, hi, par_min, seg_stop[s])
        segment_reverse(t, chunks, adj, adj_off, plan, seg_start[s], min(seg_stop[s], hi + 1),
                        par_min, nthreads, seg_start[:0])
        hi = seg_start[s] - 1
    if hi >= 0:
        reverse_sweep(t, chunks, adj, adj_off, hi, par_min, np.int64(0))
