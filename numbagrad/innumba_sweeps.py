"""The compiled side of a ``NumbaHandle`` (``innumba.py``): one C entry point per handle type
that computes a value or one derivative at a point, using the handle's own buffers.

``entry_for(handle_type)`` compiles (once, cached on disk) the C function

    int32 entry(void *handle_meminfo, int64 mode, T *x, T *a, T *out)

with ``mode`` one of VALUE, GRAD, VJP, JVP, HVP and ``a`` the vector of a VJP (length m), JVP or
HVP (length n).  It returns 0, or GUARD_FAILED when a value the traced function read while
recording (a guard) differs at x.  Handle methods in user code call it through its address
(``innumba._call``): compiling a user function then never links or optimises the sweeps' code
again, which is what made every user function take tens of seconds to compile when they were
called directly.

The sweeps are the library's own cached ones (``sweeps.py``, ``fusion.py``), all run serially.
The fused drivers here are the serial branch of ``fusion.replay_forward``/``replay_reverse``
with the handle's scratch in place of the arrays ``fusion.segment_forward``/``segment_reverse``
allocate per call, so a call on a graph whose binary ops are all fused allocates nothing; the
closing reduction and single-value sums are fusion's own helpers (``closing_seed``,
``store_closing``, ``add_single_value_sums``).
Everything is ``inline="always"`` into the entry point, so Numba links and optimises the sweeps
once per handle type.

This file is kept apart from ``innumba.py`` because Numba re-validates a cached function against
its own source file: editing the handle's Python side must not recompile the sweeps (minutes).
"""
from collections import namedtuple

import numpy as np
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload

from . import kernels as K

from .fusion import (BLOCK, scalar_forward, scalar_reverse, _blocks_forward, _blocks_reverse,
                     closing_seed, store_closing, add_single_value_sums)
from .ops import IEEE
# every sweep here runs with par_min SERIAL: a handle may be called from inside the user's prange
# loop, where a kernel's own parallel region would nest
from .sweeps import forward_sweep, reverse_sweep, tangent_sweep, hvp_sweep, SERIAL
# columns of a handle's ``inputs``: value / adjoint / tangent offset of an input leaf node, its
# first column in x, its element count
IN_VAL, IN_ADJ, IN_TAN, IN_COL, IN_SIZE = range(5)
# what an entry point computes
VALUE, GRAD, VJP, JVP, HVP = range(5)
GUARD_FAILED = 1

# Every field of a handle.  Tape and plans are shared between copies; the buffers are per copy.
FIELDS = (
    "t",                     # the replay tape (TapeArrays)
    "adj_off", "tan_off",    # per-node adjoint / tangent offsets (-1: none)
    "seg_start", "seg_stop", "ext", "prog", "pc",   # fused plan (fusion.plan_fusion)
    "rows", "rcs",           # its segments' rows and constants (fusion.plan_rows)
    "zero",                  # (lo, hi) adjoint ranges a fused reverse reads, zeroed before it
    "inputs",                # one row per input leaf node (innumba_sweeps.IN_* columns)
    "g_off", "g_ptr", "g_vals", "g_truth",   # guards: value offset, recorded values, kind
    "n", "m",                # input length (arguments flattened, concatenated), output length
    "out_node", "out_val", "out_adj", "out_tan",   # the output node and its offsets
    "entry",                 # address of the compiled sweeps for this handle's type
    # work buffers, one set per copy
    "chunks", "buf", "adj", "adjdot", "tan", "sv", "gv", "sums",
)

# A handle's fields as one call reads them: arrays (the tape among them) borrowed
# (kernels.borrowed), numbers and the chunk list as they are (a borrowed list would be a new
# one each call, and a call allocates nothing).  Each read of a structref's field takes a
# reference, and each inlined helper handed the handle took one of every member: reference
# counting was most of a call on a small tape (benchmarks/NOTES.md, "A handle's call reads
# borrowed fields").  The handle
# outlives the call (its caller holds it), so the borrowed arrays stay valid.
HandleView = namedtuple("HandleView", FIELDS)


def _borrow_field(x):
    raise NotImplementedError("jit-code only")


@overload(_borrow_field)
def _borrow_field_impl(x):
    if isinstance(x, (types.Array, types.BaseTuple)):
        return lambda x: K.borrowed(x)
    return lambda x: x


@njit(**IEEE, inline="always")
def _view(h):
    """The ``HandleView`` of the handle ``h`` for one call."""
    return HandleView(
        _borrow_field(h.t), _borrow_field(h.adj_off), _borrow_field(h.tan_off),
        _borrow_field(h.seg_start), _borrow_field(h.seg_stop), _borrow_field(h.ext),
        _borrow_field(h.prog), _borrow_field(h.pc), _borrow_field(h.rows),
        _borrow_field(h.rcs), _borrow_field(h.zero), _borrow_field(h.inputs),
        _borrow_field(h.g_off), _borrow_field(h.g_ptr), _borrow_field(h.g_vals),
        _borrow_field(h.g_truth), _borrow_field(h.n), _borrow_field(h.m),
        _borrow_field(h.out_node), _borrow_field(h.out_val), _borrow_field(h.out_adj),
        _borrow_field(h.out_tan), _borrow_field(h.entry), _borrow_field(h.chunks),
        _borrow_field(h.buf), _borrow_field(h.adj), _borrow_field(h.adjdot),
        _borrow_field(h.tan), _borrow_field(h.sv), _borrow_field(h.gv),
        _borrow_field(h.sums))



@njit(**IEEE, inline="always")
def _fused_forward(h):
    t, buf, sv = h.t, h.buf, h.sv
    nseg = len(h.seg_start)
    i = np.int64(0)  # not a literal 0: see sweeps.SERIAL
    for s in range(nseg + 1):
        nxt = h.seg_start[s] if s < nseg else len(t.opcodes)
        if i < nxt:
            forward_sweep(t, h.chunks, i, nxt, SERIAL)
        if s == nseg:
            break
        start, stop = h.seg_start[s], h.seg_stop[s]
        n = t.sizes[start]
        i = stop
        if n == 1:  # the scalar program stores every value, closing sums included
            scalar_forward(h.prog, h.pc, buf, start, stop)
            continue
        width = min(BLOCK, n)
        acc = _blocks_forward(h.rows[start:stop], h.rcs[start:stop], h.chunks, buf, sv,
                              np.int64(0), (n + width - 1) // width, n, width, True)
        store_closing(t, buf, stop, acc)


@njit(**IEEE, inline="always")
def _segment_reverse(h, start, stop):
    t, buf, adj, adj_off = h.t, h.buf, h.adj, h.adj_off
    n = t.sizes[start]
    if n == 1:
        scalar_reverse(h.prog, h.pc, buf, adj, start, stop)
        return
    nops = stop - start
    width = min(BLOCK, n)
    sums = h.sums[:2 * nops]
    sums[:] = 0.0
    _blocks_reverse(h.rows[start:stop], h.rcs[start:stop], h.chunks, adj, h.sv, h.gv,
                    np.int64(0), (n + width - 1) // width, n, width,
                    closing_seed(t, adj, adj_off, stop), sums, h.seg_start[:0])
    add_single_value_sums(t, adj, adj_off, start, stop, sums.reshape((1, 2 * nops)))


@njit(**IEEE, inline="always")
def _fused_reverse(h, top):
    hi = top
    for s in range(len(h.seg_start) - 1, -1, -1):
        if h.seg_start[s] > hi:
            continue
        if h.seg_stop[s] - 1 < hi:
            reverse_sweep(h.t, h.chunks, h.adj, h.adj_off, hi, SERIAL, h.seg_stop[s])
        _segment_reverse(h, h.seg_start[s], min(h.seg_stop[s], hi + 1))
        hi = h.seg_start[s] - 1
    if hi >= 0:
        reverse_sweep(h.t, h.chunks, h.adj, h.adj_off, hi, SERIAL, np.int64(0))


@njit(**IEEE, inline="always")
def _load(h, x, fused):
    """Write x into the input leaves' slots and sweep forward.  False when a guard differs."""
    buf = h.buf
    for q in range(len(h.inputs)):
        o, c = h.inputs[q, IN_VAL], h.inputs[q, IN_COL]
        for j in range(h.inputs[q, IN_SIZE]):
            buf[o + j] = x[c + j]
    if fused:
        _fused_forward(h)
    else:
        forward_sweep(h.t, h.chunks, np.int64(0), len(h.t.opcodes), SERIAL)
    for g in range(len(h.g_off)):
        lo, hi, o = h.g_ptr[g], h.g_ptr[g + 1], h.g_off[g]
        same = True
        if h.g_truth[g]:
            now_true = False
            then_true = False
            for j in range(hi - lo):
                now_true = now_true or buf[o + j] != 0
                then_true = then_true or h.g_vals[lo + j] != 0
            same = now_true == then_true
        else:
            for j in range(hi - lo):
                same = same and buf[o + j] == h.g_vals[lo + j]
        if not same:
            return False
    return True


@njit(**IEEE, inline="always")
def _gather(h, src, out):
    """out = the input leaves' slots of ``src`` (adjoints, or their tangents: both are laid out
    by adj_off), summed per column (an argument recorded as several leaves gets all of them)."""
    out[:] = 0.0
    for q in range(len(h.inputs)):
        a, c = h.inputs[q, IN_ADJ], h.inputs[q, IN_COL]
        if a >= 0:
            for j in range(h.inputs[q, IN_SIZE]):
                out[c + j] += src[a + j]


@njit(**IEEE, inline="always")
def _seed_tangents(h, t):
    tan = h.tan
    for q in range(len(h.inputs)):
        a, c = h.inputs[q, IN_TAN], h.inputs[q, IN_COL]
        if a >= 0:   # -1: a leaf recorded after the output, which it cannot reach
            for j in range(h.inputs[q, IN_SIZE]):
                tan[a + j] = t[c + j]
    # tangent_sweep assigns every non-leaf slot it reaches: no zeroing needed
    tangent_sweep(h.t, h.chunks, tan, h.tan_off, np.int64(0), h.out_node + 1, SERIAL)


@njit(**IEEE, inline="always")
def _run(h, mode, x, a, out):
    """One derivative at x; ``a`` is v (VJP, HVP) or t (JVP).  Returns 0, or GUARD_FAILED."""
    fused = mode <= VJP   # tangents read every node's value: no fusion for JVP and HVP
    if not _load(h, x, fused):
        return GUARD_FAILED
    if mode == VALUE:
        return 0
    if fused:
        adj = h.adj
        for r in range(len(h.zero)):   # the fused reverse reads only these ranges
            adj[h.zero[r, 0]:h.zero[r, 1]] = 0.0
        if h.out_adj >= 0:
            if mode == GRAD:
                adj[h.out_adj] = 1.0
            else:
                for j in range(h.m):
                    adj[h.out_adj + j] = a[j]
            _fused_reverse(h, h.out_node)
        _gather(h, adj, out)
        return 0
    _seed_tangents(h, a)
    if mode == JVP:
        for j in range(h.m):
            out[j] = h.tan[h.out_tan + j] if h.out_tan >= 0 else 0.0
        return 0
    h.adj[:] = 0.0
    h.adjdot[:] = 0.0
    if h.out_adj >= 0:
        h.adj[h.out_adj] = 1.0
        reverse_sweep(h.t, h.chunks, h.adj, h.adj_off, h.out_node, SERIAL, np.int64(0))
        hvp_sweep(h.t, h.chunks, h.tan, h.tan_off, h.adj, h.adjdot, h.adj_off, h.out_node,
                  SERIAL)
    _gather(h, h.adjdot, out)
    return 0


@intrinsic
def _borrow(typingctx, address, handle_type):
    """The handle whose MemInfo sits at ``address`` (the entry point's first argument)."""
    ty = handle_type.instance_type

    def codegen(context, builder, sig, args):
        st = cgutils.create_struct_proxy(ty)(context, builder)
        st.meminfo = builder.bitcast(args[0], st.meminfo.type)
        context.nrt.incref(builder, ty, st._getvalue())   # Numba releases it at the end
        return st._getvalue()
    return ty(address, handle_type), codegen


_ENTRIES = {}


def entry_for(ty):
    """Address of the compiled sweeps for handles of Numba type ``ty`` (a C function, compiled
    once and cached on disk).  User code calls it through this address, so compiling a user
    function never links or optimises the sweeps again: it stays a fraction of a second."""
    fn = _ENTRIES.get(ty)
    if fn is None:
        p = types.CPointer(ty.field_dict["buf"].dtype)
        sig = types.int32(types.voidptr, types.int64, p, p, p)

        def entry(address, mode, xp, ap, op):
            h = _view(_borrow(address, ty))
            na = h.m if mode == VJP else h.n
            no = h.m if mode == JVP else h.n
            return _run(h, mode, carray(xp, h.n), carray(ap, na), carray(op, no))
        fn = _ENTRIES[ty] = cfunc(sig, cache=True)(entry)
    return fn.address


