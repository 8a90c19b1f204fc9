"""backward() and grad(): seed the outputs, run the Numba reverse sweep, hand out gradients.

The whole backward idea in one page:

1. the outputs' tape is turned into flat arrays (``Tape.arrays``);
2. ``plan_adjoints`` marks the nodes reachable from the outputs that require
   grad, gives each a slot in one adjoint buffer, and refuses to go on if a
   value it would read was overwritten in place or freed by an earlier backward;
3. the seeds go into the outputs' slots, and ``reverse_sweep`` walks the tape
   backwards once, each op adding its operands' share (``kernels.py``);
4. the leaves' slots are read out into ``.grad`` (or returned, for ``grad``).
"""
import threading
from collections import namedtuple

import numba
import numpy as np
from numba import njit, types
from numba.core.extending import overload
from numba.typed import List

from .sweeps import plan_adjoints, reverse_sweep, PAR_MIN, FREED, REQUIRES_GRAD, DIRTY, \
    MODIFIED, SECOND_BACKWARD, OK, NEED_BUFFER
from .ops import (IEEE, LEAF, GATHER, NEG, CLAMP, ADD, MINIMUM, unary_d_inlined,
                  binary_da_inlined, binary_db_inlined)
from . import kernels as K
from .kernels import const
from .codegen import zero_fill
from .fusion import FusionPlan, plan_segments, segment_reverse
from .tape import Tape, TapeArrays, resolve, version_counter
from .tensor import Tensor, as_tensor
from . import anomaly, pool

SECOND_BACKWARD_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


class Node:
    """A recorded op as PyTorch shows it: ``grad_fn.name()``, ``grad_fn.next_functions``."""

    __slots__ = ("tape", "index")

    def __init__(self, tape, index):
        self.tape, self.index = tape, index

    def name(self):
        return self.tape.name(self.index)

    @property
    def next_functions(self):
        t = self.tape
        out = []
        for p in range(t.arg_ptr[self.index], t.arg_ptr[self.index + 1]):
            a = t.args[p]
            if t.opcodes[a] != LEAF:
                out.append((Node(t, a), 0))
            elif t.flags[a] & REQUIRES_GRAD:
                out.append((AccumulateGrad(_leaf_tensor(t, a)), 0))
            else:
                out.append((None, 0))
        return tuple(out)

    def __eq__(self, other):
        return isinstance(other, Node) and other.tape is self.tape and other.index == self.index

    def __hash__(self):
        return hash((id(self.tape), self.index))

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"


class AccumulateGrad:
    """The end of a path: adds the gradient into a leaf's ``.grad``."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "AccumulateGrad"

    next_functions = ()

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


def _leaf_tensor(tape, node):
    for k, tensor, _ in tape.leaves:
        if k == node:
            return tensor
    return None


_ONE = np.ones(1)  # the implicit seed of a scalar output (only read)
_NO_NODES = np.zeros(0, dtype=np.int64)


def _seed(out, g, i):
    """The gradient that ``out`` is seeded with (ones for a scalar)."""
    if g is None:
        if out._data.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return _ONE
    if isinstance(g, Tensor):
        g = g._data
    else:
        try:
            g = np.asarray(g, dtype=out.dtype)
        except (TypeError, ValueError):
            raise TypeError(f"grad_output[{i}] must be a Tensor or an array of numbers, got "
                            f"{type(g).__name__}") from None
    if g.shape != out._data.shape:
        raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {tuple(g.shape)} "
                           f"and output[{i}] has a shape of {tuple(out.shape)}.")
    if g.dtype.kind != "f":
        raise TypeError(f"grad_output[{i}] must be a floating point tensor, got {g.dtype}")
    if np.isnan(g).any():
        raise ValueError(f"grad_output[{i}] contains NaN")
    return g


# Above this many adjoint elements the buffer comes from NumPy: np.zeros is calloc there, whose
# pages arrive zeroed as the parallel sweep first touches them, where Numba's np.zeros fills
# them serially (4e7 elements: 175 ms against 35-70 for calloc and a first touch; W1 at n =
# 10^7 took 210 ms to backward instead of 67 when backward_sweep allocated its own)
CALLOC_MIN = 1 << 17
# ... but fresh pages cost a fault each here, two where a sweep adds into a calloc'd page (a
# read maps the zero page, the write copies it): W1 at 10^5, 2.4 MB of adjoints, faulted 1,170
# times per backward, 1.7 ms against 0.1 of sweeping. So the buffer comes from the pool (pool.py:
# a block no view holds any more, warm) and is cleared on both cores, and the gradients are views
# of it. Up to SCRATCH_MAX elements it can instead be a scratch array each thread keeps, the
# gradients copied out of it: a gradient kept alive then holds only itself, where a view holds
# its whole backward's buffer when pooled (512 KB or more; a smaller one is cut down to what is
# read afterwards), about 2-3 times the gradients. The copies cost 5-14% of an eager step
# (benchmarks/NOTES.md, "Mid-size adjoints in a per-thread scratch buffer"). 0: no scratch.
SCRATCH_MAX = 0


class _Scratch(threading.local):
    float64 = float32 = None


_scratch = _Scratch()


def _adjoint_buffer(n, dtype):
    """A buffer of ``n`` adjoints (``backward_sweep`` clears it) and whether it is fresh (ours
    to hand out)."""
    if n > SCRATCH_MAX:
        # a pooled block (pool.py): calloc's pages fault in on the sweep's first touch, 4 KB at
        # a time when the kernel has no huge page to give
        return pool.empty(n, dtype), True
    name = np.dtype(dtype).name
    buf = getattr(_scratch, name)
    if buf is None or buf.size < n:
        grown = 2 * buf.size if buf is not None else 0  # a few sizes, not one per backward
        buf = np.empty(min(max(n, grown), SCRATCH_MAX), dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:n], False


# Adjoint slots of at least SHARE_MIN elements are laid out by liveness (share_adjoints) once
# the adjoints of a backward add up to CALLOC_MIN elements or more
SHARE_MIN = np.int64(1 << 14)  # np.int64: see sweeps.SERIAL


@njit(**IEEE, cache=True)
def share_adjoints(t, adj_off, seed_nodes, keep, min_size, fused):
    """Lay the adjoint slots that ``plan_adjoints`` gave out (``adj_off``) over less memory.

    A node's adjoint is live from the sweep's first addition into it (at its highest consumer
    that is swept) until the node itself is swept; a slot of ``min_size`` elements or more is
    given back then and handed to the next node that needs one no larger, unless the node is
    a leaf or in ``keep`` (read after the sweep).  A chain of n large ops then needs two slots
    instead of n: PyTorch too frees a gradient once it is passed on.  Returns (adj_off, total,
    front, zero_at, zero_off, zero_len): the leaves' and ``keep``'s slots come first, in
    ``[0, front)``; a reused slot holds stale adjoints and is cleared just before node
    ``zero_at[e]`` is swept (``zero_at`` descending); new slots come zeroed.
    With ``fused`` (an EagerFusion, or None) a fused segment is swept as one: its internal
    nodes take no memory (their adjoints live in the segment's scratch), a slot is cleared
    before the segment of its first consumer, and a segment's nodes keep their slots.
    Returns ``clear_seg`` as well: for each node, the fused segment that clears its slot block
    by block (``fusion._blocks_reverse``), or -1 where the slot is cleared beforehand.
    """
    n = adj_off.size
    out = np.full(n, -1, dtype=np.int64)
    kept = np.zeros(n, dtype=np.bool_)
    for k in keep:
        kept[k] = True
    first = np.full(n, -1, dtype=np.int64)  # the unit that adds into a node's adjoint first
    reused = np.zeros(n, dtype=np.bool_)
    free_off = np.empty(n, dtype=np.int64)
    free_len = np.empty(n, dtype=np.int64)
    n_free = 0
    zero_at = np.empty(n, dtype=np.int64)
    zero_off = np.empty(n, dtype=np.int64)
    zero_len = np.empty(n, dtype=np.int64)
    n_zero = 0
    total = 0
    for k in range(n):  # read after the sweep: first, so that _run can cut the rest off
        if adj_off[k] >= 0 and (kept[k] or t.opcodes[k] == LEAF):
            out[k] = total
            total += t.sizes[k]
    front = total
    top = -1
    for s in seed_nodes:  # seeded before the sweep: live from the start
        if adj_off[s] >= 0 and out[s] < 0:
            out[s] = total
            total += t.sizes[s]
        top = max(top, s)
    for i in range(top, -1, -1):
        if adj_off[i] < 0 or t.opcodes[i] == LEAF:
            continue
        unit = i
        if fused is not None:
            unit = fused.unit_top[i]
        for p in range(t.arg_ptr[i], t.arg_ptr[i + 1]):
            a = t.args[p]
            if first[a] < 0:
                first[a] = unit
            if adj_off[a] < 0 or out[a] >= 0:
                continue
            if fused is not None and fused.internal[a]:
                out[a] = 0  # any slot: the fused sweep never reads or writes it
                continue
            size = t.sizes[a]
            best = -1
            if size >= min_size:  # the smallest free slot that fits
                for f in range(n_free - 1, -1, -1):
                    if free_len[f] >= size and (best < 0 or free_len[f] < free_len[best]):
                        best = f
                        if free_len[f] == size:
                            break
            if best < 0:
                out[a] = total
                total += size
                continue
            out[a] = free_off[best]
            reused[a] = True
            zero_at[n_zero], zero_off[n_zero], zero_len[n_zero] = unit, free_off[best], size
            n_zero += 1
            if free_len[best] > size:  # the rest stays free
                free_off[best] += size
                free_len[best] -= size
            else:
                n_free -= 1
                free_off[best], free_len[best] = free_off[n_free], free_len[n_free]
        if t.sizes[i] >= min_size and not kept[i] and unit == i:  # swept: its slot is free
            free_off[n_free], free_len[n_free] = out[i], t.sizes[i]
            n_free += 1
    # A segment that adds into an operand's adjoint first (nothing above it does), wholly (of
    # the segment's size, not through a view: each block then writes its own part only) clears
    # it block by block, in cache: W1's gradient at 10^7 was 80 MB cleared beforehand (4 ms)
    clear_seg = np.full(n, -1, dtype=np.int64)
    if fused is not None:
        plan = fused.plan
        for s in range(plan.seg_start.size):
            a0, b0 = plan.seg_start[s], plan.seg_stop[s]
            for i in range(a0, b0):
                if adj_off[i] < 0 or t.opcodes[i] == LEAF:
                    continue
                for p in range(t.arg_ptr[i], t.arg_ptr[i + 1]):
                    a = t.args[p]
                    if a >= a0 or adj_off[a] < 0 or first[a] != b0 - 1 or clear_seg[a] == -2:
                        continue  # (uses in segments below add afterwards)
                    if not reused[a] and t.sizes[a] == t.sizes[a0] and t.opcodes[i] != GATHER:
                        clear_seg[a] = s
                    else:
                        clear_seg[a] = -2  # a view or a part of it: cleared beforehand
        for s in seed_nodes:  # seeded before the sweep
            clear_seg[s] = -1
        for a in range(n):
            if clear_seg[a] == -2:
                clear_seg[a] = -1
    return (out, total, front, zero_at[:n_zero], zero_off[:n_zero], zero_len[:n_zero],
            clear_seg)


# Scalar code sweeps one-element ops: a kernel call for each (unary_vjp, binary_vjp: typed-list
# lookups, slicing, the parallel test) cost about 170 ns an op, 1.7 ms of W2's 10,000-op
# backward, against a few ns of arithmetic.  Same rules, same additions in the same order.
# (Kept apart from reverse_sweep, which backward_sweep calls for the other ops: a function that
# calls reverse_sweep compiles it into itself again, 20 s on a cold cache.)
@njit(**IEEE, cache=True)
def sweep_scalars(t, chunks, adj, adj_off, top, bottom):
    """Sweep the elementwise ops on single elements from ``top`` down to ``bottom`` in line
    (float64 adjoints), stopping at the first other op that takes an adjoint: returns its index,
    or ``bottom - 1``."""
    # Two chunks at hand: the node's own (nodes are swept in order, so it changes once per
    # chunk) and the last one an operand came from (scalar code's operands are recent nodes or
    # its leaves, recorded first).  Taking a chunk from the typed list costs 70 ns (a reference
    # count each way): with one chunk at hand W2 took two a step, 0.45 ms of 1.1.
    cid = t.val_chunk[top]
    cur = chunks[cid]
    oid = cid
    ocur = chunks[oid]
    for i in range(top, bottom - 1, -1):
        go = adj_off[i]
        if go < 0:
            continue
        op = t.opcodes[i]
        if op == LEAF:
            continue
        p = t.arg_ptr[i]
        a = t.args[p]
        # not on one element (ops NEG..CLAMP and ADD..MINIMUM follow each other), spelled out
        # as in other_ops_below: an inlined helper with branches cost 35 ns a node here
        if t.sizes[i] != 1 or op > MINIMUM or (op >= ADD and (
                t.sizes[a] != 1 or t.sizes[t.args[p + 1]] != 1)):
            return i
        if t.val_chunk[i] != cid:
            cid = t.val_chunk[i]
            cur = chunks[cid]
        y = cur[t.val_off[i]]
        c = t.val_chunk[a]
        if c == cid:  # statements, not a conditional expression: that one cost 20 ns a node
            av = cur[t.val_off[a]]
        else:
            if c != oid:
                oid = c
                ocur = chunks[oid]
            av = ocur[t.val_off[a]]
        ga = adj_off[a]
        g = adj[go]
        if op <= CLAMP:
            if ga >= 0:
                adj[ga] += g * unary_d_inlined(op, av, y, const(t, i, 0), const(t, i, 1))
            continue
        b = t.args[p + 1]
        c = t.val_chunk[b]
        if c == cid:
            bv = cur[t.val_off[b]]
        else:
            if c != oid:
                oid = c
                ocur = chunks[oid]
            bv = ocur[t.val_off[b]]
        gb = adj_off[b]
        if ga >= 0 and ga == gb:  # x (op) x, as binary_vjp
            adj[ga] += g * (binary_da_inlined(op, av, bv, y) + binary_db_inlined(op, av, bv, y))
        else:
            if ga >= 0:
                adj[ga] += g * binary_da_inlined(op, av, bv, y)
            if gb >= 0:
                adj[gb] += g * binary_db_inlined(op, av, bv, y)
    return bottom - 1


@njit(**IEEE, cache=True)
def other_ops_below(t, adj_off, top, bottom):
    """The index below the run of ops from ``top`` down that ``sweep_scalars`` leaves to
    ``reverse_sweep`` (the next one it takes, or ``bottom - 1``)."""
    for i in range(top - 1, bottom - 1, -1):
        op = t.opcodes[i]
        if adj_off[i] < 0 or op == LEAF or t.sizes[i] != 1 or op > MINIMUM:
            continue
        p = t.arg_ptr[i]
        if op <= CLAMP or (t.sizes[t.args[p]] == 1 and t.sizes[t.args[p + 1]] == 1):
            return i
    return bottom - 1


@njit(**IEEE, inline="always")
def _sweep(t, chunks, adj, adj_off, top, par_min, bottom):
    """``reverse_sweep`` from ``top`` down to ``bottom``, the ops on single elements swept in
    line (float64)."""
    if adj.itemsize != 8:  # float32: a rule's float32 result is multiplied in float32 there,
        reverse_sweep(t, chunks, adj, adj_off, top, par_min, bottom)  # float64 here
        return
    i = top
    while i >= bottom:
        i = sweep_scalars(t, chunks, adj, adj_off, i, bottom)
        if i >= bottom:
            j = other_ops_below(t, adj_off, i, bottom)
            reverse_sweep(t, chunks, adj, adj_off, i, par_min, j + 1)
            i = j


@njit(**IEEE, inline="always")
def _sweep_units(t, chunks, adj, adj_off, top, par_min, bottom, fused, clear_ptr, clear_off):
    """``_sweep`` from ``top`` down to ``bottom``, with ``fused``'s segments (``bottom`` never
    falls inside one) each swept in one pass over its elements (``fusion.segment_reverse``);
    segment s clears the adjoints at ``clear_off[clear_ptr[s]:clear_ptr[s + 1]]`` itself."""
    if fused is None:
        _sweep(t, chunks, adj, adj_off, top, par_min, bottom)
        return
    plan = fused.plan
    hi = top
    for s in range(len(plan.seg_start) - 1, -1, -1):
        a, b = plan.seg_start[s], plan.seg_stop[s]
        if a > hi:
            continue
        if b <= bottom:
            break
        stop = min(b, hi + 1)
        reached = False
        for i in range(a, stop):
            if adj_off[i] >= 0:
                reached = True
                break
        if not reached:  # nothing in it takes an adjoint: swept (skipped) op by op
            continue
        if stop < hi + 1:
            _sweep(t, chunks, adj, adj_off, hi, par_min, stop)
        segment_reverse(t, chunks, adj, adj_off, plan, a, stop, par_min, fused.nthreads,
                        clear_off[clear_ptr[s]:clear_ptr[s + 1]])
        hi = a - 1
    if hi >= bottom:
        _sweep(t, chunks, adj, adj_off, hi, par_min, bottom)


def _borrowed_chunk_list(chunks):
    """``chunks`` as a typed list of borrowed arrays (``kernels.borrowed_chunks``), from a typed
    list or from the one array given."""
    raise NotImplementedError("jit-code only")


@overload(_borrowed_chunk_list)
def _borrowed_chunk_list_impl(chunks):
    if isinstance(chunks, types.Array):
        def one(chunks):
            out = List()
            out.append(K.borrowed(chunks))
            return out
        return one
    return lambda chunks: K.borrowed_chunks(chunks)


def _tape_arrays(t):
    """``t`` as a TapeArrays: the one given, or one made from the same arrays as a plain tuple."""
    raise NotImplementedError("jit-code only")


@overload(_tape_arrays)
def _tape_arrays_impl(t):
    if isinstance(t, types.NamedTuple):
        return lambda t: t
    return lambda t: TapeArrays(*t)


@njit(**IEEE, inline="always")
def _clears(t, adj_off, clear_seg, fused):
    """``clear_seg`` by segment: (ptr, offsets, lengths), segment s's slots at
    ``offsets[ptr[s]:ptr[s + 1]]``."""
    nseg = fused.plan.seg_start.size
    ptr = np.zeros(nseg + 1, dtype=np.int64)
    for k in range(clear_seg.size):
        if clear_seg[k] >= 0:
            ptr[clear_seg[k] + 1] += 1
    for s in range(nseg):
        ptr[s + 1] += ptr[s]
    offs = np.empty(ptr[nseg], dtype=np.int64)
    lens = np.empty(ptr[nseg], dtype=np.int64)
    fill = ptr[:nseg].copy()
    for k in range(clear_seg.size):
        if clear_seg[k] >= 0:
            e = fill[clear_seg[k]]
            offs[e], lens[e] = adj_off[k], t.sizes[k]
            fill[clear_seg[k]] += 1
    return ptr, offs, lens


@njit(**IEEE, inline="always")
def _clear_but(adj, offs, lens, par_min):
    """adj[:] = 0 on both cores but the slots ``offs[e]:offs[e] + lens[e]``."""
    at = 0
    for e in np.argsort(offs):
        if offs[e] > at:
            gap = adj[at:offs[e]]
            zero_fill(gap, gap.size // par_min + 1)
        at = max(at, offs[e] + lens[e])
    if at < adj.size:
        rest = adj[at:]
        zero_fill(rest, rest.size // par_min + 1)


@njit(**IEEE, cache=True)
def backward_sweep(t, values, flag_column, seed_nodes, seeds, free, par_min, adj_buf, keep,
                   share, fused):
    """Steps 2-3 above in one compiled call: plan, seed, sweep, and (``free``) mark every swept
    op FREED in ``t.flags`` and in ``flag_column`` (the tape's own column, or empty).

    ``seeds`` holds the seed of each of ``seed_nodes`` flattened, one after another.  Returns
    (adj_off, adj, status, op, node) as ``plan_adjoints`` does, with the swept adjoints, and
    ``front``: where the adjoints read afterwards end when they were laid out first, or -1.
    ``adj_buf`` is a buffer of exactly the adjoints' size, cleared here (but the slots fused
    segments clear themselves), or anything else to have one allocated here; for CALLOC_MIN
    elements or more it returns NEED_BUFFER with the size in ``op`` instead (call again with
    ``np.empty(op)``). With ``share``, large adjoints share memory (``share_adjoints``): only
    the leaves' and ``keep``'s adjoints are read afterwards, and they come first. ``fused``: an
    EagerFusion (``_eager_fusion``) or None; Numba compiles the two apart, so small graphs
    never load the fused sweep. ``t``: the TapeArrays, or their arrays as a plain tuple
    (``tuple(arrays)``): Numba types a namedtuple's arguments in Python, a tuple's in C, 1.9
    against 0.9 us a call (W1 at n = 3 sweeps in 4 us). ``values``: the tape's typed chunk
    list, or its one chunk (a typed list made and boxed in Python costs 4 us, W1 at n = 3).
    A small tensor's backward used to pay for each step's call and NumPy temporaries
    separately: 30 us, against 4 us of sweeping.
    """
    # the tape and values borrowed (kernels.borrowed): counting references to them was a fifth
    # of a small backward's sweep
    t = K.borrowed(_tape_arrays(t))
    chunks = _borrowed_chunk_list(values)
    adj_off, total, status, op, node = plan_adjoints(t, seed_nodes)
    if status != OK:
        return adj_off, adj_buf[:0], status, op, node, -1
    zero_at = seed_nodes[:0]
    zero_off, zero_len = zero_at, zero_at
    front = -1
    clear_seg = seed_nodes[:0]  # nothing fused: no slot clears itself
    if share and (total >= CALLOC_MIN or fused is not None):
        adj_off, total, front, zero_at, zero_off, zero_len, clear_seg = share_adjoints(
            t, adj_off, seed_nodes, keep, SHARE_MIN, fused)
    given = adj_buf.size == total
    if given:
        adj = adj_buf
    elif total >= CALLOC_MIN:
        return adj_off, adj_buf[:0], NEED_BUFFER, total, -1, front
    else:
        adj = np.zeros(total, dtype=seeds.dtype)
    out, adj = adj, K.borrowed(adj)  # the caller's, or returned: out keeps it alive
    clear_ptr = clear_off = clear_len = seed_nodes[:0]
    if fused is not None:
        clear_ptr, clear_off, clear_len = _clears(t, adj_off, clear_seg, fused)
    if given:
        _clear_but(adj, clear_off, clear_len, par_min)
    pos, top = 0, np.int64(-1)  # np.int64: see sweeps.SERIAL
    for s in seed_nodes:
        off, n = adj_off[s], t.sizes[s]
        if off >= 0:
            for j in range(n):
                adj[off + j] += seeds[pos + j]
        pos += n
        top = max(top, s)
    hi = top
    for e in range(zero_at.size):  # reused slots cleared just before their first addition
        if zero_at[e] < hi:
            _sweep_units(t, chunks, adj, adj_off, hi, par_min, zero_at[e] + 1, fused, clear_ptr,
                         clear_off)
            hi = zero_at[e]
        slot = adj[zero_off[e]:zero_off[e] + zero_len[e]]
        zero_fill(slot, slot.size // par_min + 1)
    _sweep_units(t, chunks, adj, adj_off, hi, par_min, np.int64(0), fused, clear_ptr, clear_off)
    if free:
        marked = flag_column.size == t.flags.size
        for i in range(top + 1):
            if adj_off[i] >= 0 and t.opcodes[i] != LEAF:
                t.flags[i] |= FREED
                if marked:
                    flag_column[i] |= FREED
    return adj_off, out, status, op, node, front


# Eager backward sweeps each run of elementwise ops on FUSE_MIN elements or more in one pass over
# its elements (fusion.py, as a replay does): block by block it recomputes the run's values from
# its inputs and walks its ops back in scratch that stays in cache, so the run's inner adjoints
# never reach memory.  Op by op, W1 at 10^7 wrote and read four 80 MB adjoints and cleared three
# (48 ms); fused it reads x and adds into its gradient.  Planning is Python (plan_segments, a few
# us a node), so only tapes of at most FUSE_MAX_NODES nodes are planned. Below FUSE_MIN the
# op-by-op sweep runs from cache and wins (the fused run recomputes its values: tanh and exp
# twice); above it fusion wins (benchmarks/NOTES.md, "Eager backward fuses runs of large
# elementwise ops").
FUSE_MIN = 1 << 18
FUSE_MAX_NODES = 1024

EagerFusion = namedtuple("EagerFusion", "plan unit_top internal nthreads")
EagerFusion.__doc__ = """The fused segments of an eager backward (``_eager_fusion``).

plan: their FusionPlan (no scalar program: one-element runs are swept op by op); unit_top[k]:
the top node of k's segment (k itself outside them); internal[k]: k lives inside its segment
alone (ext 1), so its adjoint needs no slot."""
_NO_PROGRAM = np.zeros((0, 8), dtype=np.int64), np.zeros((0, 2))


def _eager_fusion(tape, t, seed_nodes, keep):
    """The EagerFusion of the tape ``tape`` (arrays ``t``), or None where nothing is fused."""
    n = len(t.opcodes)
    if len(tape.chunks) < 2 or n > FUSE_MAX_NODES or t.sizes.max() < FUSE_MIN:
        return None  # values of FUSE_MIN elements are chunks of their own (Tape.store)
    starts, stops, ext = plan_segments(t, keep=seed_nodes.tolist() + keep.tolist())
    read = set(keep.tolist())
    sizes, opcodes, flags = t.sizes, t.opcodes.tolist(), t.flags.tolist()
    arg_ptr, args = t.arg_ptr.tolist(), t.args.tolist()
    chosen = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if sizes[a] < FUSE_MIN:
            continue
        # the values it recomputes from as recorded (a value changed in place since is swept
        # op by op, which reads what each op saved or says MODIFIED), and no adjoint read
        # afterwards inside it (retain_grad, grad's inputs): a segment's adjoints end in its
        # scratch
        sources = {k for i in range(a, b) if opcodes[i] != LEAF
                   for k in args[arg_ptr[i]:arg_ptr[i + 1]] if not (a <= k < b and ext[k] > 0)}
        if not any(flags[k] & DIRTY for k in sources.union(range(a, b))) \
                and read.isdisjoint(range(a, b)):
            chosen.append((a, b))
    if not chosen:
        return None
    unit_top = np.arange(n, dtype=np.int64)
    internal = np.zeros(n, dtype=np.bool_)
    for a, b in chosen:
        unit_top[a:b] = b - 1
        internal[a:b] = ext[a:b] == 1
    a, b = (np.array(col, dtype=np.int64) for col in zip(*chosen))
    return EagerFusion(FusionPlan(a, b, ext, *_NO_PROGRAM), unit_top, internal,
                       numba.get_num_threads())


def _run(outputs, grad_outputs, retain_graph, read=()):
    """Steps 1-3 above.  Returns (tape, adj, adj_off, own): the adjoints of the leaves, of the
    retained tensors and of the tensors in ``read`` (others may share memory); ``own``: ``adj``
    holds only those and nothing else refers to it, so they may be handed out as views."""
    outputs = [as_tensor(o) for o in outputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad_tensors should have the same length as tensors: got "
                           f"{len(grad_outputs)} and {len(outputs)}")
    for i, o in enumerate(outputs):
        if not o._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               "a grad_fn")
    seeds = [_seed(o, g, i) for i, (o, g) in enumerate(zip(outputs, grad_outputs))]
    # all outputs onto one tape (a leaf output gets a tape of its own)
    tape = None
    for o in outputs:
        t = o._tape
        if t is None:
            continue
        if t.forward_to is not None:
            t, k = resolve(t, o._node)
            o._tape, o._node = t, k
        if tape is None:
            tape = t
        elif t is not tape:
            small, big = sorted((tape, t), key=len)
            big.absorb(small)
            tape = big
    if tape is None:
        tape = Tape(outputs[0].dtype)
    nodes = []
    for o in outputs:
        t = o._tape
        if t is None:
            nodes.append(tape.leaf(o))
        else:
            if t is not tape:  # on a tape merged into this one since the loop above
                o._tape, o._node = resolve(t, o._node)
            nodes.append(o._node)
    tape.check_leaf_versions()
    tape.swept = True
    arrays = tape.arrays()
    seed_nodes = np.array(nodes, dtype=np.int64)
    if len(seeds) == 1:
        seed = seeds[0]
        if seed is not _ONE or tape.dtype != np.float64:
            seed = np.ascontiguousarray(seed.reshape(-1), dtype=tape.dtype)
    else:
        seed = np.concatenate([s.reshape(-1) for s in seeds]).astype(tape.dtype, copy=False)
    # inside ng.detect_anomaly() the adjoints are checked before anything is freed
    anomalous = anomaly.is_anomaly_enabled()
    free = not retain_graph and not anomalous
    # a tape of one chunk (every value small) hands over the chunk, not a typed list
    chunks = tape.chunks[0] if len(tape.chunks) == 1 and tape._typed_chunks is None \
        else tape.typed_chunks()
    flag_column = tape.flag_column()
    # large adjoints share memory (share_adjoints) but those read afterwards, and all of them
    # inside ng.detect_anomaly(), which checks every adjoint
    keep = _NO_NODES
    if tape.retained or read:
        keep = list(tape.retained)
        for x in read:
            if x._tape is not None:
                t, k = resolve(x._tape, x._node)
                if t is tape:
                    keep.append(k)
        keep = np.array(keep, dtype=np.int64)
    share = not anomalous
    fused = None if anomalous else _eager_fusion(tape, arrays, seed_nodes, keep)
    adj_off, adj, status, op, node, front = backward_sweep(
        tuple(arrays), chunks, flag_column, seed_nodes, seed, free, PAR_MIN, seed[:0], keep,
        share, fused)
    fresh = False
    if status == NEED_BUFFER:
        buf, fresh = _adjoint_buffer(op, tape.dtype)
        adj_off, adj, status, op, node, front = backward_sweep(
            tuple(arrays), chunks, flag_column, seed_nodes, seed, free, PAR_MIN, buf, keep,
            share, fused)
        del buf  # adj is the same array: the resize below needs it to be the only name
    if status == SECOND_BACKWARD:
        raise RuntimeError(SECOND_BACKWARD_MESSAGE)
    if status == MODIFIED:
        shape = tuple(tape.shapes[tape.shape_ptr[node]:tape.shape_ptr[node + 1]])
        what = "an input" if tape.opcodes[node] == LEAF else f"output 0 of {tape.name(node)}"
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: [{tape.dtype} tensor of shape {list(shape)}], which is {what}, "
            f"was saved for {tape.name(op)} (node {op} of the tape) and has been changed since. "
            f"Hint: make the change out of place (x = x + 1), or clone() the value first.")
    if not free:
        anomaly.check_reverse(arrays, adj, adj_off, seed_nodes)  # only inside ng.detect_anomaly()
        if not retain_graph:
            freed = (adj_off >= 0) & (arrays.opcodes != LEAF)
            np.frombuffer(tape.flags, dtype=np.int8)[freed] |= FREED  # a view: writes through
            arrays.flags[freed] |= FREED
    own = False
    if front >= 0 and fresh:
        # what is read from here on comes first: the buffer is cut down to it (realloc, no
        # copy) and the gradients handed out are views of it, not copies (W1 at 10^7: a
        # 12 ms copy).  Only when nothing else refers to the buffer (else resize refuses).
        if adj.base is not None:  # a pooled block: not reused while a view of it is alive
            own = True
        else:
            try:
                adj.resize((front,), refcheck=True)
                own = True
            except ValueError:
                pass
    return tape, adj, adj_off, own


def _adjoint(tape, adj, adj_off, k, like, own=False):
    """Node k's adjoint shaped like ``like``: a copy, or with ``own`` a view of ``adj``."""
    off = adj_off[k]
    if off < 0:
        return None
    d = like._data
    g = adj[off:off + d.size].reshape(d.shape)
    if g.dtype != d.dtype:
        return g.astype(d.dtype)
    return g if own else g.copy()


def backward(tensors, grad_tensors=None, retain_graph=None):
    """Accumulate the gradients of ``tensors`` into the ``.grad`` of every leaf they depend on.

    >>> import numbagrad as ng
    >>> x = ng.tensor(3.0, requires_grad=True)
    >>> ng.autograd.backward([x * x])
    >>> x.grad
    tensor(6.)
    """
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    if isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    tape, adj, adj_off, own = _run(list(tensors), grad_tensors, retain_graph)
    for k, leaf, _ in tape.leaves:
        if leaf._requires_grad and leaf._tape is None and adj_off[k] >= 0:
            _accumulate(leaf, _adjoint(tape, adj, adj_off, k, leaf, own))
    for k, t in tape.retained.items():
        if adj_off[k] >= 0:
            _accumulate(t, _adjoint(tape, adj, adj_off, k, t, own))


def _accumulate(t, g):
    if t._grad is None:
        t._grad = Tensor(g)
    else:
        t._grad._data += g
        version_counter(t._grad)[0] += 1


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as a tuple; ``.grad`` is untouched.

    >>> import numbagrad as ng
    >>> x = ng.tensor([1.0, 2.0], requires_grad=True)
    >>> ng.grad((x ** 2).sum(), x)
    (tensor([2., 4.]),)
    """
    if create_graph:
        raise NotImplementedError(
            "create_graph=True (differentiating a gradient eagerly) is not supported; use "
            "ng.trace(f, x).hessian / .hvp for second derivatives")
    if isinstance(outputs, Tensor):
        outputs = [outputs]
    if isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{i}] must be a Tensor, got {type(x).__name__}")
        if not x._requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (inputs[{i}]) does not require "
                               "grad")
    tape, adj, adj_off, own = _run(list(outputs), grad_outputs, retain_graph, read=inputs)
    result = []
    handed = set()  # nodes whose adjoint went out as a view: an input given twice gets a copy

    def adjoint(k, x):
        g = _adjoint(tape, adj, adj_off, k, x, own and k not in handed)
        handed.add(k)
        return g

    for i, x in enumerate(inputs):
        g = None
        if x._tape is None:
            for k, leaf, _ in tape.leaves:
                if leaf is x and adj_off[k] >= 0:
                    gk = adjoint(k, x)
                    g = gk if g is None else g + gk
        else:
            t, k = resolve(x._tape, x._node)
            if t is tape:
                g = adjoint(k, x)
        if g is None and not allow_unused:
            raise RuntimeError("One of the differentiated Tensors appears to not have been used in "
                               "the graph. Set allow_unused=True if this is the desired behavior.")
        result.append(None if g is None else Tensor(g))
    return tuple(result)
