"""Loops over elements: the forward and reverse rule of each op family, side by side.

Elementwise kernels take the opcode as a compile-time constant
(``numba.literally``): each op gets its own loop with its rule inlined from
the tables in ``ops.py``.  Every kernel takes the tape ``t`` (a ``TapeArrays`` of flat arrays), the value
storage ``chunks`` (a typed list of 1-D arrays; node ``k`` lives at
``chunks[t.val_chunk[k]][t.val_off[k]:]``), the op index ``i`` and the
adjoint buffer with its per-node offsets.  Loops run under ``prange`` when a
node has at least ``par_min`` elements; below that the parallel start-up costs
more than it saves.

Adjoint offsets are -1 for nodes that carry no gradient; a kernel skips them.

Beside each family's forward (``_fwd``) and reverse (``_vjp``) rule sit its
forward-mode rule (``_jvp``: the op's tangent from its operands' tangents, in
a buffer ``tan`` with per-node offsets ``tan_off``) and its forward-over-reverse
rule (``_hvp``: the tangent ``adjdot`` of the operands' adjoints, given the
op's adjoint ``adj``, its tangent-of-adjoint ``adjdot`` and the operands'
tangents).  An ``_hvp`` rule is the ``_vjp`` rule applied to ``adjdot`` plus a
curvature term ``adj * (d Jacobian along the tangent)``; ops whose Jacobian is
piecewise constant (where, sum, mean, max, min, reshape, gather, cat, and the
piecewise-linear elementwise ops) have no curvature, so the sweep runs their
``_vjp`` kernel on ``adjdot``.  A tangent
offset of -1 means a zero tangent; a ``_jvp`` kernel assigns (never accumulates)
the op's whole tangent.  ``tan`` and ``adjdot`` have the values' dtype.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, literally, types
from numba.typed import List
from numba.core import cgutils
from numba.extending import intrinsic

from . import blas
from .ops import (IEEE, PRANGE_ONLY, MEAN, MAX, MIN, LOGSUMEXP, SOFTMAX, unary_f, unary_d,
                  unary_dd, binary_f, binary_da, binary_db, binary_dd, _exp)

jit = njit(**IEEE, cache=True)
pjit = njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
inline = njit(**IEEE, inline="always", cache=True)


# ---------------------------------------------------------------- tape access

@inline
def arg(t, i, r):
    """Node index of operand r of op i."""
    return t.args[t.arg_ptr[i] + r]


@inline
def shape_of(t, k):
    return t.shapes[t.shape_ptr[k]:t.shape_ptr[k + 1]]


@inline
def iparams_of(t, i):
    return t.iparams[t.iparam_ptr[i]:t.iparam_ptr[i + 1]]


# A helper that takes the tape (a tuple of 14 arrays) and branches inside costs 50-130 ns a
# call: Numba increfs every member where it is inlined and its reference-count pruner cannot
# pair the increfs with the decrefs across the branch (a branch-free helper, or one handed
# two arrays, costs nothing).  So const hands its two arrays to the helper that branches
# (it was most of W2's eager backward: benchmarks/NOTES.md).
@inline
def const(t, i, r):
    return const_at(t.const_ptr, t.consts, i, r)


@inline
def const_at(const_ptr, consts, i, r):
    """Constant r of op i (0.0 where the op has fewer)."""
    p = const_ptr[i] + r
    return consts[p] if p < const_ptr[i + 1] else 0.0


# ---------------------------------------------------------------- borrowed arrays
# Numba counts references to an array's memory with atomic operations: every view a kernel slices,
# every chunk it takes from the typed list and every call handed the tape (14 arrays) adds and
# drops one.  On small ops that is most of the work, and where threads share the arrays (W5's
# Jacobian rows) the counters bounce between cores (benchmarks/NOTES.md, "Reference counts: the
# eager scalar sweep and the Jacobian rows").  A borrowed array is the same array without its
# reference counter (a null meminfo, which Numba's incref and decref skip), so a sweep handed
# borrowed arrays counts nothing.  It must not outlive its owner: borrow only what the caller holds
# for the whole call (the arguments of a compiled entry point), or what the function itself keeps
# alive (``keep_alive``), and never return a borrowed array.

def _borrow_value(context, builder, typ, value):
    if isinstance(typ, types.Array):
        ary = context.make_array(typ)(context, builder, value)
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    return context.make_tuple(builder, typ, [
        _borrow_value(context, builder, ty, builder.extract_value(value, k))
        for k, ty in enumerate(typ)])


@intrinsic
def borrowed(typingctx, x):
    """``x`` (an array, or a tuple of arrays and tuples of arrays, the tape among them) without
    reference counting."""
    def borrowable(typ):
        return isinstance(typ, types.Array) or isinstance(typ, types.BaseTuple) and all(
            borrowable(ty) for ty in typ)

    if not borrowable(x):
        return None
    return x(x), lambda context, builder, sig, args: _borrow_value(context, builder,
                                                                    sig.args[0], args[0])


@intrinsic
def keep_alive(typingctx, x):
    """A use of ``x`` that keeps it alive up to here (the owner of arrays borrowed from it)."""
    return types.none(x), lambda context, builder, sig, args: context.get_dummy_value()


# A kernel called through the dispatch table gets the tape as the address of the sweep's copy
# of it (``tape_address``): passed by value, its 14 arrays are about a hundred words copied
# onto the stack for every node, most of a small node's cost (benchmarks/NOTES.md, "Kernel
# table").  ``tape_at`` reads it back, borrowed: the sweep holds the tape for the call.

def tape_type():
    """Numba's type of a tape (a ``TapeArrays`` of C-contiguous columns), as sweeps receive it."""
    from .tape import TapeArrays, _INT_COLUMNS  # tape.py imports this module
    from numba import typeof
    return typeof(TapeArrays(**{name: np.zeros(0, dtype=dt)
                                for name, (_, dt) in _INT_COLUMNS.items()}))


@intrinsic
def tape_address(typingctx, t):
    """The address of a copy of the tape ``t`` in the caller's frame (valid until it returns)."""
    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once_value(builder, args[0])
        return builder.ptrtoint(ptr, ir.IntType(64))
    return types.int64(t), codegen


@intrinsic
def tape_at(typingctx, address):
    """The tape whose copy is at ``address`` (``tape_address``), its arrays borrowed."""
    ty = tape_type()

    def codegen(context, builder, sig, args):
        llty = context.get_value_type(ty)
        value = builder.load(builder.inttoptr(args[0], llty.as_pointer()))
        return _borrow_value(context, builder, ty, value)
    return ty(address), codegen


@jit
def borrowed_chunks(chunks):
    """A typed list of the arrays in ``chunks``, borrowed (the caller holds ``chunks``)."""
    out = List()
    for c in chunks:
        out.append(borrowed(c))
    return out


# ---------------------------------------------------------------- broadcasting

@jit
def broadcast_map(out_shape, in_shape):
    """How an operand's flat index follows the output's: (mode, period, strides).

    mode 0: same shape (index j); 1: one element (index 0); 2: the operand is a
    trailing block of the output, repeated (index j % period); 3: general,
    unravel j over out_shape and dot with strides (0 on broadcast axes).
    """
    nd, ni = len(out_shape), len(in_shape)
    size = 1
    for d in range(ni):
        size *= in_shape[d]
    total = 1
    for d in range(nd):
        total *= out_shape[d]
    # modes 0-2 never read the strides: an empty view stands in, so that the common case
    # allocates nothing (two np.zeros per binary op were a third of a small op's cost)
    if size == total:
        return 0, size, in_shape[:0]
    if size == 1:
        return 1, 1, in_shape[:0]
    # trailing block: every axis from the first non-1 operand axis on matches the output
    lead = 0
    while lead < ni and in_shape[lead] == 1:
        lead += 1
    suffix = True
    for d in range(lead, ni):
        if in_shape[d] != out_shape[nd - ni + d]:
            suffix = False
    if suffix:
        return 2, size, in_shape[:0]
    strides = np.zeros(nd, dtype=np.int64)
    s = 1
    for d in range(1, ni + 1):
        if in_shape[ni - d] != 1:
            strides[nd - d] = s
        s *= in_shape[ni - d]
    return 3, size, strides


@inline
def bidx(j, mode, period, out_shape, strides):
    if mode == 0:
        return j
    if mode == 1:
        return 0
    if mode == 2:
        return j % period
    r = 0
    for d in range(len(out_shape) - 1, -1, -1):
        q = out_shape[d]
        r += (j % q) * strides[d]
        j //= q
    return r


# ---------------------------------------------------------------- unary elementwise

@pjit
def unary_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    literally(op)
    x = arg(t, i, 0)
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    c0, c1 = const(t, i, 0), const(t, i, 1)
    n = t.sizes[i]
    if n >= par_min:
        for j in prange(n):
            yv[yo + j] = unary_f(op, xv[xo + j], c0, c1)
    else:
        # serial loops index slices with the loop counter: Numba then drops its negative-index
        # check, which blocks SIMD (10x).  Not in prange loops: there slices of one array
        # passed to the parallel region lost their writes (Numba 0.68).
        xs, ys = xv[xo:xo + n], yv[yo:yo + n]
        for j in range(n):
            ys[j] = unary_f(op, xs[j], c0, c1)


@pjit
def unary_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    x = arg(t, i, 0)
    gx = adj_off[x]
    if gx < 0:
        return
    go = adj_off[i]
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    c0, c1 = const(t, i, 0), const(t, i, 1)
    n = t.sizes[i]
    if n >= par_min:
        for j in prange(n):
            adj[gx + j] += adj[go + j] * unary_d(op, xv[xo + j], yv[yo + j], c0, c1)
    else:
        xs, ys, gs, gxs = xv[xo:xo + n], yv[yo:yo + n], adj[go:go + n], adj[gx:gx + n]
        for j in range(n):
            gxs[j] += gs[j] * unary_d(op, xs[j], ys[j], c0, c1)


@pjit
def unary_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    ty = tan_off[i]
    if ty < 0:
        return
    x = arg(t, i, 0)
    tx = tan_off[x]
    n = t.sizes[i]
    if tx < 0:
        tan[ty: ty + n] = 0.0
        return
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    c0, c1 = const(t, i, 0), const(t, i, 1)
    if n >= par_min:
        for j in prange(n):
            tan[ty + j] = unary_d(op, xv[xo + j], yv[yo + j], c0, c1) * tan[tx + j]
    else:
        for j in range(n):
            tan[ty + j] = unary_d(op, xv[xo + j], yv[yo + j], c0, c1) * tan[tx + j]


@pjit
def unary_hvp(op, tp, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    x = arg(t, i, 0)
    gx = adj_off[x]
    if gx < 0:
        return
    go = adj_off[i]
    tx = tan_off[x]
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    c0, c1 = const(t, i, 0), const(t, i, 1)
    n = t.sizes[i]
    if n >= par_min:
        for j in prange(n):
            _unary_hvp_at(op, j, xv[xo + j], yv[yo + j], c0, c1, tan, tx, adj, adjdot, gx, go)
    else:
        for j in range(n):
            _unary_hvp_at(op, j, xv[xo + j], yv[yo + j], c0, c1, tan, tx, adj, adjdot, gx, go)


@inline
def _unary_hvp_at(op, j, x, y, c0, c1, tan, tx, adj, adjdot, gx, go):
    h = adjdot[go + j] * unary_d(op, x, y, c0, c1)
    if tx >= 0:
        h += adj[go + j] * unary_dd(op, x, y, c0, c1) * tan[tx + j]
    adjdot[gx + j] += h


# ---------------------------------------------------------------- binary elementwise

@pjit
def binary_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    literally(op)
    a, b = arg(t, i, 0), arg(t, i, 1)
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    out_shape = shape_of(t, i)
    ma, pa, sa = broadcast_map(out_shape, shape_of(t, a))
    mb, pb, sb = broadcast_map(out_shape, shape_of(t, b))
    n = t.sizes[i]
    if ma == 0 and mb == 0:
        if n >= par_min:
            for j in prange(n):
                yv[yo + j] = binary_f(op, av[ao + j], bv[bo + j])
        else:
            as_, bs_, ys = av[ao:ao + n], bv[bo:bo + n], yv[yo:yo + n]
            for j in range(n):
                ys[j] = binary_f(op, as_[j], bs_[j])
    elif _by_rows(ma, pa, mb, pb):
        # a trailing block (a bias row) against a full operand: row by row, without the
        # per-element division of bidx (2.3 ns per element), so the loop vectorises
        p = pa if ma == 2 else pb
        for r in range(n // p):
            ra, rb = (r * p if ma == 0 else 0), (r * p if mb == 0 else 0)
            as_, bs_ = av[ao + ra:ao + ra + p], bv[bo + rb:bo + rb + p]
            ys = yv[yo + r * p:yo + (r + 1) * p]
            for c in range(p):
                ys[c] = binary_f(op, as_[c], bs_[c])
    else:
        for j in range(n):
            ja = bidx(j, ma, pa, out_shape, sa)
            jb = bidx(j, mb, pb, out_shape, sb)
            yv[yo + j] = binary_f(op, av[ao + ja], bv[bo + jb])


@inline
def _by_rows(ma, pa, mb, pb):
    """Whether binary operands with these broadcast modes run row by row: each is the whole
    output (mode 0) or a trailing block (mode 2) of one period, at least one a block."""
    return (ma == 2 or mb == 2) and (ma == 0 or ma == 2) and (mb == 0 or mb == 2) \
        and (ma != 2 or mb != 2 or pa == pb)


@pjit
def binary_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    a, b = arg(t, i, 0), arg(t, i, 1)
    ga, gb, go = adj_off[a], adj_off[b], adj_off[i]
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    out_shape = shape_of(t, i)
    ma, pa, sa = broadcast_map(out_shape, shape_of(t, a))
    mb, pb, sb = broadcast_map(out_shape, shape_of(t, b))
    n = t.sizes[i]
    if ma == 0 and mb == 0:
        # no operand is broadcast, so no two elements add into the same slot
        if n >= par_min:
            for j in prange(n):
                _binary_vjp_at(op, j, j, j, av, ao, bv, bo, yv, yo, adj, ga, gb, go)
        else:
            as_, bs_, ys, gs = av[ao:ao + n], bv[bo:bo + n], yv[yo:yo + n], adj[go:go + n]
            if ga >= 0 and ga == gb:  # x (op) x: both partials into one slice
                tas = adj[ga:ga + n]
                for j in range(n):
                    tas[j] += gs[j] * (binary_da(op, as_[j], bs_[j], ys[j])
                                       + binary_db(op, as_[j], bs_[j], ys[j]))
            else:  # one loop per operand: a test inside the loop stops it vectorising
                if ga >= 0:
                    tas = adj[ga:ga + n]
                    for j in range(n):
                        tas[j] += gs[j] * binary_da(op, as_[j], bs_[j], ys[j])
                if gb >= 0:
                    tbs = adj[gb:gb + n]
                    for j in range(n):
                        tbs[j] += gs[j] * binary_db(op, as_[j], bs_[j], ys[j])
    elif _by_rows(ma, pa, mb, pb):  # as in binary_fwd; a block's adjoint sums over rows
        p = pa if ma == 2 else pb
        for r in range(n // p):
            ra, rb = (r * p if ma == 0 else 0), (r * p if mb == 0 else 0)
            as_, bs_ = av[ao + ra:ao + ra + p], bv[bo + rb:bo + rb + p]
            ys, gs = yv[yo + r * p:yo + (r + 1) * p], adj[go + r * p:go + (r + 1) * p]
            if ga >= 0:
                tas = adj[ga + ra:ga + ra + p]
                for c in range(p):
                    tas[c] += gs[c] * binary_da(op, as_[c], bs_[c], ys[c])
            if gb >= 0:
                tbs = adj[gb + rb:gb + rb + p]
                for c in range(p):
                    tbs[c] += gs[c] * binary_db(op, as_[c], bs_[c], ys[c])
    else:
        for j in range(n):
            ja = bidx(j, ma, pa, out_shape, sa)
            jb = bidx(j, mb, pb, out_shape, sb)
            _binary_vjp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, adj, ga, gb, go)


@inline
def _binary_vjp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, adj, ga, gb, go):
    g = adj[go + j]
    x, z, y = av[ao + ja], bv[bo + jb], yv[yo + j]
    if ga >= 0:
        adj[ga + ja] += g * binary_da(op, x, z, y)
    if gb >= 0:
        adj[gb + jb] += g * binary_db(op, x, z, y)


@pjit
def binary_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    to = tan_off[i]
    if to < 0:
        return
    a, b = arg(t, i, 0), arg(t, i, 1)
    ta, tb = tan_off[a], tan_off[b]
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    out_shape = shape_of(t, i)
    ma, pa, sa = broadcast_map(out_shape, shape_of(t, a))
    mb, pb, sb = broadcast_map(out_shape, shape_of(t, b))
    n = t.sizes[i]
    if ma == 0 and mb == 0:
        if n >= par_min:
            for j in prange(n):
                _binary_jvp_at(op, j, j, j, av, ao, bv, bo, yv, yo, tan, ta, tb, to)
        else:
            for j in range(n):
                _binary_jvp_at(op, j, j, j, av, ao, bv, bo, yv, yo, tan, ta, tb, to)
    else:  # serial, as binary_fwd: bidx rebinds its index argument, which prange forbids
        for j in range(n):
            ja = bidx(j, ma, pa, out_shape, sa)
            jb = bidx(j, mb, pb, out_shape, sb)
            _binary_jvp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, tan, ta, tb, to)


@inline
def _binary_jvp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, tan, ta, tb, to):
    x, z, y = av[ao + ja], bv[bo + jb], yv[yo + j]
    s = 0.0
    if ta >= 0:
        s += binary_da(op, x, z, y) * tan[ta + ja]
    if tb >= 0:
        s += binary_db(op, x, z, y) * tan[tb + jb]
    tan[to + j] = s


@pjit
def binary_hvp(op, tp, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min):
    t = tape_at(tp)
    literally(op)
    a, b = arg(t, i, 0), arg(t, i, 1)
    ga, gb, go = adj_off[a], adj_off[b], adj_off[i]
    ta, tb = tan_off[a], tan_off[b]
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    out_shape = shape_of(t, i)
    ma, pa, sa = broadcast_map(out_shape, shape_of(t, a))
    mb, pb, sb = broadcast_map(out_shape, shape_of(t, b))
    n = t.sizes[i]
    if ma == 0 and mb == 0:
        if n >= par_min:
            for j in prange(n):
                _binary_hvp_at(op, j, j, j, av, ao, bv, bo, yv, yo, tan, ta, tb,
                               adj, adjdot, ga, gb, go)
        else:
            for j in range(n):
                _binary_hvp_at(op, j, j, j, av, ao, bv, bo, yv, yo, tan, ta, tb,
                               adj, adjdot, ga, gb, go)
    else:
        for j in range(n):  # serial: a broadcast operand's slot takes many elements
            ja = bidx(j, ma, pa, out_shape, sa)
            jb = bidx(j, mb, pb, out_shape, sb)
            _binary_hvp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, tan, ta, tb,
                           adj, adjdot, ga, gb, go)


@inline
def _binary_hvp_at(op, j, ja, jb, av, ao, bv, bo, yv, yo, tan, ta, tb, adj, adjdot, ga, gb, go):
    g, gd = adj[go + j], adjdot[go + j]
    x, z, y = av[ao + ja], bv[bo + jb], yv[yo + j]
    daa, dab, dbb = binary_dd(op, x, z, y)
    va = tan[ta + ja] if ta >= 0 else 0.0
    vb = tan[tb + jb] if tb >= 0 else 0.0
    if ga >= 0:
        adjdot[ga + ja] += gd * binary_da(op, x, z, y) + g * (daa * va + dab * vb)
    if gb >= 0:
        adjdot[gb + jb] += gd * binary_db(op, x, z, y) + g * (dab * va + dbb * vb)


# ---------------------------------------------------------------- comparisons (no derivative)

@jit
def compare_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    a, b = arg(t, i, 0), arg(t, i, 1)
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    out_shape = shape_of(t, i)
    ma, pa, sa = broadcast_map(out_shape, shape_of(t, a))
    mb, pb, sb = broadcast_map(out_shape, shape_of(t, b))
    kind = const(t, i, 0)
    for j in range(t.sizes[i]):
        x = av[ao + bidx(j, ma, pa, out_shape, sa)]
        z = bv[bo + bidx(j, mb, pb, out_shape, sb)]
        if kind == 0: r = x < z
        elif kind == 1: r = x <= z
        elif kind == 2: r = x > z
        elif kind == 3: r = x >= z
        elif kind == 4: r = x == z
        else: r = x != z
        yv[yo + j] = 1.0 if r else 0.0


# ---------------------------------------------------------------- where(cond, b, c)

@jit
def where_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    out_shape = shape_of(t, i)
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    k0, k1, k2 = arg(t, i, 0), arg(t, i, 1), arg(t, i, 2)
    cv, co = chunks[t.val_chunk[k0]], t.val_off[k0]
    bv, bo = chunks[t.val_chunk[k1]], t.val_off[k1]
    ev, eo = chunks[t.val_chunk[k2]], t.val_off[k2]
    m0, p0, s0 = broadcast_map(out_shape, shape_of(t, k0))
    m1, p1, s1 = broadcast_map(out_shape, shape_of(t, k1))
    m2, p2, s2 = broadcast_map(out_shape, shape_of(t, k2))
    for j in range(t.sizes[i]):
        if cv[co + bidx(j, m0, p0, out_shape, s0)] != 0:
            yv[yo + j] = bv[bo + bidx(j, m1, p1, out_shape, s1)]
        else:
            yv[yo + j] = ev[eo + bidx(j, m2, p2, out_shape, s2)]


@jit
def where_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    out_shape = shape_of(t, i)
    go = adj_off[i]
    k0, k1, k2 = arg(t, i, 0), arg(t, i, 1), arg(t, i, 2)
    g1, g2 = adj_off[k1], adj_off[k2]
    cv, co = chunks[t.val_chunk[k0]], t.val_off[k0]
    m0, p0, s0 = broadcast_map(out_shape, shape_of(t, k0))
    m1, p1, s1 = broadcast_map(out_shape, shape_of(t, k1))
    m2, p2, s2 = broadcast_map(out_shape, shape_of(t, k2))
    for j in range(t.sizes[i]):
        if cv[co + bidx(j, m0, p0, out_shape, s0)] != 0:
            if g1 >= 0:
                adj[g1 + bidx(j, m1, p1, out_shape, s1)] += adj[go + j]
        elif g2 >= 0:
            adj[g2 + bidx(j, m2, p2, out_shape, s2)] += adj[go + j]


@jit
def where_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    # the hvp rule is where_vjp on adjdot: the choice does not move with the operands
    to = tan_off[i]
    if to < 0:
        return
    out_shape = shape_of(t, i)
    k0, k1, k2 = arg(t, i, 0), arg(t, i, 1), arg(t, i, 2)
    t1, t2 = tan_off[k1], tan_off[k2]
    cv, co = chunks[t.val_chunk[k0]], t.val_off[k0]
    m0, p0, s0 = broadcast_map(out_shape, shape_of(t, k0))
    m1, p1, s1 = broadcast_map(out_shape, shape_of(t, k1))
    m2, p2, s2 = broadcast_map(out_shape, shape_of(t, k2))
    for j in range(t.sizes[i]):
        if cv[co + bidx(j, m0, p0, out_shape, s0)] != 0:
            tan[to + j] = tan[t1 + bidx(j, m1, p1, out_shape, s1)] if t1 >= 0 else 0.0
        else:
            tan[to + j] = tan[t2 + bidx(j, m2, p2, out_shape, s2)] if t2 >= 0 else 0.0


# ---------------------------------------------------------------- reductions over (outer, n, inner)
# iparams: outer, n, inner[, split_ties]; MEAN's constant is the count it divides by.
# SUM and MEAN have kernels of their own (sum_*): the general reduction kernels (reduce_*)
# run MAX, MIN, LOGSUMEXP, SOFTMAX and LOG_SOFTMAX, whose rows take several times as long to
# compile (ops.py's rows give SUM and MEAN the family that picks sum_*).

@inline
def _sum_row(op, xv, xo, yv, yo, o, l, n, inner, scale):
    base = xo + o * n * inner + l
    s = 0.0
    for k in range(n):
        s += xv[base + k * inner]
    yv[yo + o * inner + l] = s / scale if op == MEAN else s


@inline
def _sum_row_vjp(op, adj, gx, go, o, l, n, inner, scale):
    gb = gx + o * n * inner + l          # adjoint of x[o, 0, l]
    r = o * inner + l                    # the reduced row's slot
    g = adj[go + r] / scale if op == MEAN else adj[go + r]
    for k in range(n):
        adj[gb + k * inner] += g


@inline
def _sum_row_jvp(op, tan, tx, ty, o, l, n, inner, scale):
    tb = tx + o * n * inner + l          # tangent of x[o, 0, l]
    s = 0.0
    for k in range(n):
        s += tan[tb + k * inner]
    tan[ty + o * inner + l] = s / scale if op == MEAN else s


@inline
def _reduction(t, chunks, i):
    """What a reduction kernel reads of node i: its parameters (outer, n, inner[, split]),
    its operand's and its own values, and its constant (MEAN's count)."""
    x = arg(t, i, 0)
    p = iparams_of(t, i)
    return (p, p[0], p[1], p[2], chunks[t.val_chunk[x]], t.val_off[x], chunks[t.val_chunk[i]],
            t.val_off[i], const(t, i, 0))


@pjit
def sum_fwd(op, tp, chunks, i, par_min):
    """SUM and MEAN over (outer, n, inner)."""
    t = tape_at(tp)
    op = t.opcodes[i]
    p, outer, n, inner, xv, xo, yv, yo, scale = _reduction(t, chunks, i)
    m = outer * inner
    if m * n >= par_min and m > 1:
        nb = min(m, ROW_BLOCKS)
        for c in prange(nb):
            for r in range(c * m // nb, (c + 1) * m // nb):
                _sum_row(op, xv, xo, yv, yo, r // inner, r % inner, n, inner, scale)
    else:
        for r in range(m):
            _sum_row(op, xv, xo, yv, yo, r // inner, r % inner, n, inner, scale)


@pjit
def sum_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    """SUM and MEAN's adjoint: each row's share to its elements."""
    t = tape_at(tp)
    x = arg(t, i, 0)
    gx = adj_off[x]
    if gx < 0:
        return
    op = t.opcodes[i]
    p = iparams_of(t, i)
    outer, n, inner = p[0], p[1], p[2]
    go = adj_off[i]
    scale = const(t, i, 0)
    if outer == 1 and inner == 1:
        # the whole tensor: every element gets the same share, in parallel when large
        g = adj[go] / scale if op == MEAN else adj[go]
        if n >= par_min:
            for j in prange(n):
                adj[gx + j] += g
        else:
            gxs = adj[gx:gx + n]
            for j in range(n):
                gxs[j] += g
        return
    m = outer * inner
    if m * n >= par_min and m > 1:
        nb = min(m, ROW_BLOCKS)
        for c in prange(nb):
            for r in range(c * m // nb, (c + 1) * m // nb):
                _sum_row_vjp(op, adj, gx, go, r // inner, r % inner, n, inner, scale)
    else:
        for r in range(m):
            _sum_row_vjp(op, adj, gx, go, r // inner, r % inner, n, inner, scale)


@pjit
def sum_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    """SUM and MEAN's tangent: the sums of their operand's tangents."""
    t = tape_at(tp)
    ty = tan_off[i]
    if ty < 0:
        return
    x = arg(t, i, 0)
    tx = tan_off[x]
    if tx < 0:
        tan[ty: ty + t.sizes[i]] = 0.0
        return
    op = t.opcodes[i]
    p = iparams_of(t, i)
    outer, n, inner = p[0], p[1], p[2]
    scale = const(t, i, 0)
    m = outer * inner
    if m * n >= par_min and m > 1:
        for r in prange(m):
            _sum_row_jvp(op, tan, tx, ty, r // inner, r % inner, n, inner, scale)
    else:
        for r in range(m):
            _sum_row_jvp(op, tan, tx, ty, r // inner, r % inner, n, inner, scale)



@pjit
def reduce_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    op = t.opcodes[i]
    p, outer, n, inner, xv, xo, yv, yo, scale = _reduction(t, chunks, i)
    m = outer * inner
    if m * n >= par_min and m > 1:
        nb = min(m, ROW_BLOCKS)
        for c in prange(nb):
            e = np.empty(EXP_BLOCK)
            for r in range(c * m // nb, (c + 1) * m // nb):
                _reduce_row(op, xv, xo, yv, yo, r // inner, r % inner, n, inner, scale, e)
    else:
        e = np.empty(EXP_BLOCK)
        for r in range(m):
            _reduce_row(op, xv, xo, yv, yo, r // inner, r % inner, n, inner, scale, e)


# Rows of softmax, log_softmax and logsumexp sum exponentials.  ``s += _exp(x[k] - mx)`` keeps
# the loop from vectorising (the sum must add in order), so each _exp ran alone: 13 ns an
# element (W4's log_softmax over 256 x 10: 36 us).  _exps fills a block of a scratch array with
# them in a loop that vectorises, and the sum then adds the block in the row's order, so the
# results are the same bits.
EXP_BLOCK = 256  # elements of scratch (float64) per thread
ROW_BLOCKS = 64  # a parallel row loop's blocks, each with its scratch


@inline
def _exps(xv, base, inner, k0, k1, shift, e):
    """``e[:k1 - k0] = exp(x[k] - shift)`` for k in k0..k1 of the row at ``base``."""
    # a slice indexed by the loop counter: no wraparound check, so it vectorises (inner = 1)
    xs = xv[base + k0 * inner:base + k1 * inner:inner]
    for k in range(k1 - k0):
        e[k] = _exp(xs[k] - shift)


@inline
def _reduce_row(op, xv, xo, yv, yo, o, l, n, inner, scale, e):
    base = xo + o * n * inner + l
    if op == MAX or op == MIN:
        best = xv[base]
        for k in range(1, n):
            v = xv[base + k * inner]
            if (op == MAX and v > best) or (op == MIN and v < best) or v != v:
                best = v
                if v != v:
                    break
        yv[yo + o * inner + l] = best
    else:  # LOGSUMEXP, SOFTMAX, LOG_SOFTMAX share the max-shifted sum of exponentials
        mx = xv[base]
        for k in range(1, n):
            mx = max(mx, xv[base + k * inner])
        if np.isinf(mx):
            mx = 0.0  # as torch: no shift when the max is infinite
        s = 0.0
        for k0 in range(0, n, EXP_BLOCK):
            k1 = min(k0 + EXP_BLOCK, n)
            _exps(xv, base, inner, k0, k1, mx, e)
            for k in range(k1 - k0):
                s += e[k]
        lse = mx + np.log(s)
        if op == LOGSUMEXP:
            yv[yo + o * inner + l] = lse
        elif op == SOFTMAX:
            for k in range(n):
                yv[yo + o * n * inner + l + k * inner] = _exp(xv[base + k * inner] - lse)
        else:
            for k in range(n):
                yv[yo + o * n * inner + l + k * inner] = xv[base + k * inner] - lse


@pjit
def reduce_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    x = arg(t, i, 0)
    gx = adj_off[x]
    if gx < 0:
        return
    op = t.opcodes[i]
    p, outer, n, inner, xv, xo, yv, yo, scale = _reduction(t, chunks, i)
    split = len(p) > 3 and p[3] != 0
    go = adj_off[i]
    m = outer * inner
    if m * n >= par_min and m > 1:
        nb = min(m, ROW_BLOCKS)
        for c in prange(nb):
            e = np.empty(EXP_BLOCK)
            for r in range(c * m // nb, (c + 1) * m // nb):
                _reduce_row_vjp(op, xv, xo, yv, yo, adj, gx, go, r // inner, r % inner, n,
                                inner, scale, split, e)
    else:
        e = np.empty(EXP_BLOCK)
        for r in range(m):
            _reduce_row_vjp(op, xv, xo, yv, yo, adj, gx, go, r // inner, r % inner, n, inner,
                            scale, split, e)


@inline
def _reduce_row_vjp(op, xv, xo, yv, yo, adj, gx, go, o, l, n, inner, scale, split, e):
    xb = xo + o * n * inner + l          # x[o, 0, l]
    gb = gx + o * n * inner + l          # adjoint of x[o, 0, l]
    r = o * inner + l                    # the reduced row's slot
    if op == MAX or op == MIN:  # to the first extremum, or shared among ties
        y = yv[yo + r]
        g = adj[go + r]
        if split:
            count = 0
            for k in range(n):
                if xv[xb + k * inner] == y:
                    count += 1
            if count > 0:
                g = g / count
                for k in range(n):
                    if xv[xb + k * inner] == y:
                        adj[gb + k * inner] += g
        else:
            for k in range(n):
                v = xv[xb + k * inner]
                if v == y or (v != v and y != y):
                    adj[gb + k * inner] += g
                    break
    elif op == LOGSUMEXP:
        y = yv[yo + r]
        g = adj[go + r]
        for k in range(n):
            adj[gb + k * inner] += g * _exp(xv[xb + k * inner] - y)
    elif op == SOFTMAX:  # gx = y * (g - sum(g * y))
        yb = yo + o * n * inner + l
        ob = go + o * n * inner + l
        s = 0.0
        for k in range(n):
            s += adj[ob + k * inner] * yv[yb + k * inner]
        for k in range(n):
            adj[gb + k * inner] += yv[yb + k * inner] * (adj[ob + k * inner] - s)
    else:  # LOG_SOFTMAX: gx = g - softmax * sum(g)
        yb = yo + o * n * inner + l
        ob = go + o * n * inner + l
        s = 0.0
        for k in range(n):
            s += adj[ob + k * inner]
        for k0 in range(0, n, EXP_BLOCK):
            k1 = min(k0 + EXP_BLOCK, n)
            _exps(yv, yb, inner, k0, k1, 0.0, e)
            for k in range(k1 - k0):
                j = (k0 + k) * inner
                adj[gb + j] += adj[ob + j] - e[k] * s


@pjit
def reduce_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    ty = tan_off[i]
    if ty < 0:
        return
    x = arg(t, i, 0)
    tx = tan_off[x]
    if tx < 0:
        tan[ty: ty + t.sizes[i]] = 0.0
        return
    op = t.opcodes[i]
    p, outer, n, inner, xv, xo, yv, yo, scale = _reduction(t, chunks, i)
    split = len(p) > 3 and p[3] != 0
    m = outer * inner
    if m * n >= par_min and m > 1:
        for r in prange(m):
            _reduce_row_jvp(op, xv, xo, yv, yo, tan, tx, ty, r // inner, r % inner, n, inner,
                            scale, split)
    else:
        for r in range(m):
            _reduce_row_jvp(op, xv, xo, yv, yo, tan, tx, ty, r // inner, r % inner, n, inner,
                            scale, split)


@inline
def _reduce_row_jvp(op, xv, xo, yv, yo, tan, tx, ty, o, l, n, inner, scale, split):
    xb = xo + o * n * inner + l          # x[o, 0, l]
    tb = tx + o * n * inner + l          # tangent of x[o, 0, l]
    r = o * inner + l                    # the reduced row's slot
    if op == MAX or op == MIN:  # the transpose of reduce_vjp's choice: first extremum or tie mean
        y = yv[yo + r]
        s = 0.0
        if split:
            count = 0
            for k in range(n):
                if xv[xb + k * inner] == y:
                    count += 1
                    s += tan[tb + k * inner]
            if count > 0:
                s = s / count
        else:
            for k in range(n):
                v = xv[xb + k * inner]
                if v == y or (v != v and y != y):
                    s = tan[tb + k * inner]
                    break
        tan[ty + r] = s
    elif op == LOGSUMEXP:  # dy = sum(softmax * dx)
        y = yv[yo + r]
        s = 0.0
        for k in range(n):
            s += _exp(xv[xb + k * inner] - y) * tan[tb + k * inner]
        tan[ty + r] = s
    elif op == SOFTMAX:  # dy = y * (dx - sum(y * dx))
        yb = yo + o * n * inner + l
        ob = ty + o * n * inner + l
        s = 0.0
        for k in range(n):
            s += yv[yb + k * inner] * tan[tb + k * inner]
        for k in range(n):
            tan[ob + k * inner] = yv[yb + k * inner] * (tan[tb + k * inner] - s)
    else:  # LOG_SOFTMAX: dy = dx - sum(softmax * dx)
        yb = yo + o * n * inner + l
        ob = ty + o * n * inner + l
        s = 0.0
        for k in range(n):
            s += _exp(yv[yb + k * inner]) * tan[tb + k * inner]
        for k in range(n):
            tan[ob + k * inner] = tan[tb + k * inner] - s


@pjit
def reduce_hvp(op, tp, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min):
    t = tape_at(tp)
    x = arg(t, i, 0)
    gx = adj_off[x]
    if gx < 0:
        return
    op = t.opcodes[i]
    p = iparams_of(t, i)
    outer, n, inner = p[0], p[1], p[2]
    split = len(p) > 3 and p[3] != 0
    go = adj_off[i]
    tx = tan_off[x]
    curved = tx >= 0 and op >= LOGSUMEXP   # sum, mean, max and min are linear in x
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    scale = const(t, i, 0)
    m = outer * inner
    if m * n >= par_min and m > 1:
        nb = min(m, ROW_BLOCKS)
        for c in prange(nb):
            e = np.empty(EXP_BLOCK)
            for r in range(c * m // nb, (c + 1) * m // nb):
                o, l = r // inner, r % inner
                _reduce_row_vjp(op, xv, xo, yv, yo, adjdot, gx, go, o, l, n, inner, scale,
                                split, e)
                if curved:
                    _reduce_row_curvature(op, xv, xo, yv, yo, tan, tx, adj, adjdot, gx, go, o,
                                          l, n, inner)
    else:
        e = np.empty(EXP_BLOCK)
        for r in range(m):
            o, l = r // inner, r % inner
            _reduce_row_vjp(op, xv, xo, yv, yo, adjdot, gx, go, o, l, n, inner, scale, split, e)
            if curved:
                _reduce_row_curvature(op, xv, xo, yv, yo, tan, tx, adj, adjdot, gx, go, o, l, n,
                                      inner)


@inline
def _reduce_row_curvature(op, xv, xo, yv, yo, tan, tx, adj, adjdot, gx, go, o, l, n, inner):
    # adj_y times the change of the row's Jacobian along the tangent (adj held fixed)
    xb = xo + o * n * inner + l
    tb = tx + o * n * inner + l
    gb = gx + o * n * inner + l
    if op == LOGSUMEXP:  # gx = g * p, p = softmax(x): d gx = g * p * (dx - sum(p * dx))
        r = o * inner + l
        y = yv[yo + r]
        g = adj[go + r]
        s = 0.0
        for k in range(n):
            s += _exp(xv[xb + k * inner] - y) * tan[tb + k * inner]
        for k in range(n):
            adjdot[gb + k * inner] += g * _exp(xv[xb + k * inner] - y) * (tan[tb + k * inner] - s)
    elif op == SOFTMAX:  # gx = y * (g - sum(g * y)): d gx = dy * (g - sum(g * y)) - y * sum(g * dy)
        yb = yo + o * n * inner + l
        ob = go + o * n * inner + l
        st = 0.0
        sg = 0.0
        for k in range(n):
            st += yv[yb + k * inner] * tan[tb + k * inner]
            sg += adj[ob + k * inner] * yv[yb + k * inner]
        sgd = 0.0
        for k in range(n):
            sgd += adj[ob + k * inner] * yv[yb + k * inner] * (tan[tb + k * inner] - st)
        for k in range(n):
            y = yv[yb + k * inner]
            dy = y * (tan[tb + k * inner] - st)
            adjdot[gb + k * inner] += dy * (adj[ob + k * inner] - sg) - y * sgd
    else:  # LOG_SOFTMAX: gx = g - p * sum(g): d gx = -p * (dx - sum(p * dx)) * sum(g)
        yb = yo + o * n * inner + l
        ob = go + o * n * inner + l
        st = 0.0
        sg = 0.0
        for k in range(n):
            st += _exp(yv[yb + k * inner]) * tan[tb + k * inner]
            sg += adj[ob + k * inner]
        for k in range(n):
            adjdot[gb + k * inner] -= _exp(yv[yb + k * inner]) * (tan[tb + k * inner] - st) * sg


# ---------------------------------------------------------------- reshape, gather, cat

@jit
def copy_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    x = arg(t, i, 0)
    xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    if xv is yv and xo == yo:
        return  # a view of its operand's storage
    for j in range(t.sizes[i]):
        yv[yo + j] = xv[xo + j]


@pjit
def copy_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    gx = adj_off[arg(t, i, 0)]
    if gx < 0:
        return
    go = adj_off[i]
    n = t.sizes[i]
    if n >= par_min:
        for j in prange(n):
            adj[gx + j] += adj[go + j]
    else:
        gs, gxs = adj[go:go + n], adj[gx:gx + n]
        for j in range(n):
            gxs[j] += gs[j]


@jit
def copy_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    # reshape, clone and dtype copies are linear: the hvp rule is copy_vjp on adjdot
    ty = tan_off[i]
    if ty < 0:
        return
    tx = tan_off[arg(t, i, 0)]
    n = t.sizes[i]
    if tx < 0:
        tan[ty: ty + n] = 0.0
    else:
        tan[ty: ty + n] = tan[tx: tx + n]


# GATHER iparams: the position in its operand of each element, or one position alone, where
# the elements are a contiguous run from there (a basic slice, ``x[1:]``, ``X[2:5]``): a slice
# of 10^6 elements then costs no 8 MB of positions to make, keep and check.  With one element
# both read alike.

@inline
def _gather_into(dst, do, src, so, idx, n):
    """dst[do + j] = src[so + the j-th position] for j < n, the positions given either way."""
    if len(idx) == 1:
        so += idx[0]
        for j in range(n):
            dst[do + j] = src[so + j]
    else:
        for j in range(n):
            dst[do + j] = src[so + idx[j]]


@jit
def gather_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    x = arg(t, i, 0)
    _gather_into(chunks[t.val_chunk[i]], t.val_off[i], chunks[t.val_chunk[x]], t.val_off[x],
                 iparams_of(t, i), t.sizes[i])


@jit
def is_run(idx):
    """Whether a GATHER with the iparams ``idx`` reads one contiguous run of its operand
    (``x[a:b]``, ``x[2:]``): one position (the run's first), or ``lo, lo + 1, ...``.  One pass
    without early exit, so that it vectorises: the reverse sweep asks at every GATHER."""
    run = True
    lo = idx[0] if len(idx) else 0
    for j in range(len(idx)):
        run &= idx[j] == lo + j
    return run


@jit
def gather_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    gx = adj_off[arg(t, i, 0)]
    if gx < 0:
        return
    go = adj_off[i]
    idx = iparams_of(t, i)
    n = t.sizes[i]
    if n == 0:
        return
    lo = idx[0]
    gs = adj[go:go + n]
    if is_run(idx):  # a basic slice: its adjoint is a loop that vectorises
        gxs = adj[gx + lo:gx + lo + n]
        for j in range(n):
            gxs[j] += gs[j]
    else:
        for j in range(n):  # serial: an index may repeat
            adj[gx + idx[j]] += gs[j]


@jit
def gather_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    ty = tan_off[i]
    if ty < 0:
        return
    tx = tan_off[arg(t, i, 0)]
    if tx < 0:
        tan[ty: ty + t.sizes[i]] = 0.0
        return
    _gather_into(tan, ty, tan, tx, iparams_of(t, i), t.sizes[i])


# CAT iparams: outer, inner, then each operand's length along the axis.

@jit
def cat_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    p = iparams_of(t, i)
    outer, inner = p[0], p[1]
    total = 0
    for r in range(2, len(p)):
        total += p[r]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    start = 0
    for r in range(len(p) - 2):
        x = arg(t, i, r)
        xv, xo = chunks[t.val_chunk[x]], t.val_off[x]
        w = p[2 + r] * inner
        for o in range(outer):
            for j in range(w):
                yv[yo + o * total * inner + start + j] = xv[xo + o * w + j]
        start += w


@jit
def cat_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    p = iparams_of(t, i)
    outer, inner = p[0], p[1]
    total = 0
    for r in range(2, len(p)):
        total += p[r]
    go = adj_off[i]
    start = 0
    for r in range(len(p) - 2):
        gx = adj_off[arg(t, i, r)]
        w = p[2 + r] * inner
        if gx >= 0:
            for o in range(outer):
                for j in range(w):
                    adj[gx + o * w + j] += adj[go + o * total * inner + start + j]
        start += w


@jit
def cat_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    to = tan_off[i]
    if to < 0:
        return
    p = iparams_of(t, i)
    outer, inner = p[0], p[1]
    total = 0
    for r in range(2, len(p)):
        total += p[r]
    start = 0
    for r in range(len(p) - 2):
        tx = tan_off[arg(t, i, r)]
        w = p[2 + r] * inner
        for o in range(outer):
            for j in range(w):
                tan[to + o * total * inner + start + j] = tan[tx + o * w + j] if tx >= 0 else 0.0
        start += w


# ---------------------------------------------------------------- matmul
# iparams: batch, m, k, n, a_batched, b_batched.  a is (m, k), b is (k, n) per batch.

@intrinsic
def _xxgemm(typingctx, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """BLAS ``c = op(a) op(b) + beta c`` (column-major, ``ta``/``tb`` 0 or 1 for op = the
    transpose) on the data of the 1-D arrays ``a``, ``b``, ``c``, through ``blas.SYMBOL``
    (NumPy's BLAS where found, so NumPy's products and ours share one thread pool; found by
    name, so callers cache).  ``np.dot`` can only assign a product into a new array: a beta
    of 1 adds it in place, without the temporary, its page faults and the extra pass.
    Returns 0, or -1 where no BLAS was found."""
    if not (isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)
            and b == a and c == a):
        return None
    dtype = a.dtype
    sig = types.int32(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        from numba.np.linalg import get_blas_kind
        char, intp = ir.IntType(8), context.get_value_type(types.intp)
        vp = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.IntType(32), [char, char, char, intp, intp, intp, vp, vp, intp, vp, intp, vp,
                             vp, intp]), blas.SYMBOL)
        (ta_, tb_, m_, n_, k_, a_, lda_, b_, ldb_, be, c_, ldc_) = args
        sty = sig.args

        def flag(v, ty):  # 0/1 -> 'n'/'t'
            v = context.cast(builder, v, ty, types.intp)
            is_t = builder.icmp_signed("!=", v, ir.Constant(intp, 0))
            return builder.select(is_t, ir.Constant(char, ord("t")), ir.Constant(char, ord("n")))

        def size(v, ty):
            return context.cast(builder, v, ty, types.intp)

        def by_ref(v):  # BLAS takes alpha and beta by reference
            p = cgutils.alloca_once(builder, context.get_value_type(dtype))
            builder.store(v, p)
            return builder.bitcast(p, vp)

        def data(v, ty):
            return builder.bitcast(context.make_array(ty)(context, builder, v).data, vp)

        kind = ir.Constant(char, ord(get_blas_kind(dtype)))
        return builder.call(fn, [
            kind, flag(ta_, sty[0]), flag(tb_, sty[1]), size(m_, sty[2]), size(n_, sty[3]),
            size(k_, sty[4]), by_ref(context.get_constant(dtype, 1.0)), data(a_, sty[5]),
            size(lda_, sty[6]), data(b_, sty[7]), size(ldb_, sty[8]),
            by_ref(context.cast(builder, be, sty[9], dtype)),
            data(c_, sty[10]), size(ldc_, sty[11])])
    return sig, codegen


@inline
def gemm(c, co, a, ao, ta, b, bo, tb, m, k, n, beta):
    """``C = op(A) @ op(B) + beta C`` for the row-major blocks of the flat arrays ``a`` at
    ``ao``, ``b`` at ``bo`` and ``c`` at ``co``: C is (m, n), op(A) (m, k), op(B) (k, n), and
    ``ta``/``tb`` say that A is stored (k, m) or B (n, k).  Row-major C is column-major C^T =
    op(B)^T op(A)^T, so BLAS gets B first.  Empty products are done here (BLAS rejects a
    leading dimension of 0)."""
    if m == 0 or n == 0:
        return
    if k == 0:
        for j in range(co, co + m * n):
            c[j] = 0.0 if beta == 0.0 else c[j] * beta
        return
    status = _xxgemm(tb, ta, n, m, k, b[bo:], k if tb else n, a[ao:], m if ta else k, beta,
                     c[co:], n)
    if status != 0:
        raise RuntimeError("no BLAS found: neither NumPy's nor SciPy's (numbagrad.blas)")


@jit
def matmul_fwd(op, tp, chunks, i, par_min):
    t = tape_at(tp)
    p = iparams_of(t, i)
    batch, m, k, n, sa, sb = p[0], p[1], p[2], p[3], p[4], p[5]
    a, b = arg(t, i, 0), arg(t, i, 1)
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    yv, yo = chunks[t.val_chunk[i]], t.val_off[i]
    for q in range(batch):
        gemm(yv, yo + q * m * n, av, ao + q * sa * m * k, 0, bv, bo + q * sb * k * n, 0,
             m, k, n, 0.0)


@jit
def matmul_vjp(op, tp, chunks, adj, adj_off, i, par_min):
    t = tape_at(tp)
    p = iparams_of(t, i)
    batch, m, k, n, sa, sb = p[0], p[1], p[2], p[3], p[4], p[5]
    a, b = arg(t, i, 0), arg(t, i, 1)
    ga, gb, go = adj_off[a], adj_off[b], adj_off[i]
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    for q in range(batch):
        g = go + q * m * n
        qa, qb = ao + q * sa * m * k, bo + q * sb * k * n
        qga = ga + q * sa * m * k if ga >= 0 else -1
        qgb = gb + q * sb * k * n if gb >= 0 else -1
        if few_nonzero_rows(adj, g, m, n):
            matmul_vjp_rows(adj, g, av, qa, bv, qb, m, k, n, adj, qga, qgb)
            continue
        if qga >= 0:  # dA += G @ B.T
            gemm(adj, qga, adj, g, 0, bv, qb, 1, m, n, k, 1.0)
        if qgb >= 0:  # dB += A.T @ G
            gemm(adj, qgb, av, qa, 1, adj, g, 0, k, m, n, 1.0)


@inline
def few_nonzero_rows(adj, g, m, n):
    """Whether at most an eighth of the rows of G (``adj[g:g + m*n]`` as m x n) are non-zero.
    A vector (n = 1) is counted in one pass that vectorises; wider rows stop counting past
    the eighth."""
    most = m // 8
    rows = 0
    if n == 1:
        gs = adj[g:g + m]
        for r in range(m):
            rows += gs[r] != 0.0
        return rows <= most
    for r in range(m):
        rows += not row_is_zero(adj, g + r * n, n)
        if rows > most:
            return False
    return True


@inline
def row_is_zero(v, o, n):
    """Whether ``v[o:o + n]`` is all zero (stops at the first non-zero)."""
    for j in range(o, o + n):
        if v[j] != 0.0:
            return False
    return True


@inline
def matmul_vjp_rows(adj, g, av, ao, bv, bo, m, k, n, out, sa, sb):
    """A @ B's adjoints from the non-zero rows of G (``adj[g:g + m*n]``) only, added into
    ``out`` at ``sa`` (dA) and ``sb`` (dB; -1: none); A is ``av[ao:]`` (m x k), B ``bv[bo:]``
    (k x n).  A Jacobian row of an elementwise map after a matrix product (W5's
    ``tanh(A @ x)``) seeds one row, so a row costs O(k n) instead of the dense product's
    O(m k n).  The zero rows are structural zeros, as JAX's symbolic zeros: a 0 there times an
    inf in A or B adds nothing where BLAS would add NaN.  Flat indices and one view per row:
    2-d views of the buffers cost more than a small row's arithmetic."""
    for r in range(m):
        gr = g + r * n
        if row_is_zero(adj, gr, n):
            continue
        Gr = adj[gr:gr + n]
        if sa >= 0:  # dA[r, :] += G[r, :] @ B.T
            dA = out[sa + r * k:sa + (r + 1) * k]
            for c in range(k):
                Bc = bv[bo + c * n:bo + (c + 1) * n]
                acc = 0.0
                for j in range(n):
                    acc += Gr[j] * Bc[j]
                dA[c] += acc
        if sb >= 0:  # dB += outer(A[r, :], G[r, :])
            Ar = av[ao + r * k:ao + (r + 1) * k]
            if n == 1:  # a matrix-vector product: one axpy
                gv = Gr[0]
                dB1 = out[sb:sb + k]
                for c in range(k):
                    dB1[c] += Ar[c] * gv
            else:
                for c in range(k):
                    w = Ar[c]
                    dBc = out[sb + c * n:sb + (c + 1) * n]
                    for j in range(n):
                        dBc[j] += w * Gr[j]


@jit
def matmul_jvp(op, tp, chunks, tan, tan_off, i, par_min):
    t = tape_at(tp)
    to = tan_off[i]
    if to < 0:
        return
    p = iparams_of(t, i)
    batch, m, k, n, sa, sb = p[0], p[1], p[2], p[3], p[4], p[5]
    a, b = arg(t, i, 0), arg(t, i, 1)
    ta, tb = tan_off[a], tan_off[b]
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    for q in range(batch):  # dY = dA @ B + A @ dB
        s = to + q * m * n
        beta = 0.0
        if ta >= 0:
            gemm(tan, s, tan, ta + q * sa * m * k, 0, bv, bo + q * sb * k * n, 0, m, k, n, beta)
            beta = 1.0
        if tb >= 0:
            gemm(tan, s, av, ao + q * sa * m * k, 0, tan, tb + q * sb * k * n, 0, m, k, n, beta)
            beta = 1.0
        if beta == 0.0:
            tan[s: s + m * n] = 0.0


@jit
def matmul_hvp(op, tp, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min):
    """dGa = dG @ B.T + G @ dB.T and dGb = A.T @ dG + dA.T @ G (G the adjoint, d its tangent)."""
    t = tape_at(tp)
    matmul_vjp(op, tp, chunks, adjdot, adj_off, i, par_min)  # the dG terms
    p = iparams_of(t, i)
    batch, m, k, n, sa, sb = p[0], p[1], p[2], p[3], p[4], p[5]
    a, b = arg(t, i, 0), arg(t, i, 1)
    ga, gb, go = adj_off[a], adj_off[b], adj_off[i]
    ta, tb = tan_off[a], tan_off[b]
    for q in range(batch):
        g = go + q * m * n
        if ga >= 0 and tb >= 0:
            gemm(adjdot, ga + q * sa * m * k, adj, g, 0, tan, tb + q * sb * k * n, 1, m, n, k, 1.0)
        if gb >= 0 and ta >= 0:
            gemm(adjdot, gb + q * sb * k * n, tan, ta + q * sa * m * k, 1, adj, g, 0, k, m, n, 1.0)
