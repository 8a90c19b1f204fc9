"""Record once, replay many: ``trace(f, *example_args)`` turns one eager run of ``f`` into a tape
that the Numba sweeps replay at new inputs without running any Python per op.

>>> import numpy as np, numbagrad as ng
>>> f = ng.trace(lambda x: (x * x).sum(), np.ones(3))
>>> f(np.array([1.0, 2.0, 3.0]))
14.0
>>> f.grad(np.array([1.0, 2.0, 3.0]))
array([2., 4., 6.])

How a replay works:

1. ``f`` runs once eagerly on leaf tensors made from the example arguments; the output's tape is
   the recording.  Leaves of that tape that are not the arguments are constants (captured data):
   their recorded values are kept as they are.
2. The recording is given a *replay layout*: every node gets its own slot in one flat value
   buffer (views too, which alias their operand eagerly; in replay the reshape kernel copies, so
   no slot is ever shared and the layout is the same for every call).  The initial buffer image
   holds every value of the recording, so constants are already in place.
3. A call writes the arguments into their leaf slots and runs ``forward_sweep`` over the tape;
   a gradient then runs ``reverse_sweep`` with adjoint offsets planned once, at trace time.

Shapes, dtypes and control flow are fixed by the recording: a replay at arguments of another
shape raises ``ValueError``, and a Python branch on values takes the branch of the example.
Captured data (tensors and arrays ``f`` closes over) is copied at trace time: changing it
afterwards does not change the replay.  Values ``f`` derives from its arguments without
recording them (a comparison used as a ``where`` mask, indices, ``.item()``) are frozen too;
``trace`` runs ``f`` a second time at random arguments and warns (``TraceWarning``) when such a
value, or the recorded structure, changes.
"""
import hashlib
import inspect
import os
import threading
import warnings

import numpy as np
from numba import njit, prange
from numba.typed import List

from . import dispatch
from . import anomaly, grad_mode
from .ops import (IEEE, PRANGE_ONLY, LEAF, NAMES, NAME_ID, OPS, COMPARE, SUM, MEAN, MATMUL,
                  OPCODE_NAME, OPCODE_OF)
from . import kernels as K
import numba

from . import codegen
from .fusion import (plan_fusion, replay_forward, replay_reverse, segment_forward,
                     segment_reverse, scalar_forward, scalar_reverse, P_OP, P_AUX)
from .sweeps import (plan_adjoints, reverse_sweep, forward_sweep, plan_tangents, tangent_sweep,
                     hvp_sweep, PAR_MIN, SERIAL, REQUIRES_GRAD)
from .tape import Tape, TapeArrays, resolve, chunk_list, append_chunk
from .tensor import (Tensor, as_tensor, GUARD_TRUTH, GUARD_CMP, GUARD_KINDS, CMP_OPS, guard_watch,
                     forget_recent_tape, settle_guards)
from .validate import validate

__all__ = ["trace", "Traced", "value_and_grad", "TraceWarning", "GuardError", "load"]


class GuardError(RuntimeError):
    """A replay where a value Python looked at while recording differs: ``f`` may have taken
    another branch there.  ``ng.value_and_grad`` traces again; a plain ``Traced`` raises."""

SMALL_IO_MAX = 4096  # arguments with at most this many elements in all move in one NumPy call
# jacobian and grad_batch spread their rows over threads from this many rows on
PARALLEL_ROWS = 16


# ---------------------------------------------------------------- Numba drivers

@njit(**IEEE, cache=True)
def _jacobian_rows(t, chunks, adj_off, total, out_node, spans, jac, nblocks):
    """Row r of ``jac`` is the gradient of output element r: one reverse sweep per row.

    The values in ``chunks`` were computed by one forward sweep and are only read here, so the
    rows share them; each block of rows has its own adjoint buffer.  Each row of ``spans`` is
    (adjoint offset, first column, width, add): an input's adjoint and the columns of ``jac`` it
    goes to (an argument recorded as several leaf nodes adds all of them).
    """
    # the threads share these: borrowed (kernels.borrowed), so that nothing counts references.
    # (The parallel loop is a function of its own: Numba's parfors find a tuple such as the
    # tape only where it is an argument.)
    _jacobian_blocks(K.borrowed(t), K.borrowed_chunks(chunks), K.borrowed(adj_off), total,
                     out_node, K.borrowed(spans), K.borrowed(jac), nblocks)


@njit(**IEEE, parallel=PRANGE_ONLY, cache=True)
def _jacobian_blocks(t, chunks, adj_off, total, out_node, spans, jac, nblocks):
    m = jac.shape[0]
    o = adj_off[out_node]
    for b in prange(nblocks):
        own = np.zeros(total, dtype=jac.dtype)
        adj = K.borrowed(own)
        for r in range(b, m, nblocks):
            adj[:] = 0.0
            adj[o + r] = 1.0
            reverse_sweep(t, chunks, adj, adj_off, out_node, SERIAL, np.int64(0))
            _add_spans(adj, spans, jac, r)
        K.keep_alive(own)


@njit(**IEEE, cache=True)
def _batch_rows(t, init, X, in_off, adj_off, total, out_node, spans, vals, grads, nblocks):
    """Value and gradient of a scalar output at each row of ``X``, one forward and one reverse
    sweep per row, rows spread over threads.

    Each block of rows has a private copy of the value buffer ``init`` and its own adjoint
    buffer.  ``in_off`` are the value offsets of the argument's leaf nodes (a row is written into
    each); ``spans`` map adjoint positions to columns of ``grads`` as in ``_jacobian_rows``.
    """
    # borrowed as in _jacobian_rows (init is copied per block, so it stays counted)
    _batch_blocks(K.borrowed(t), init, K.borrowed(X), K.borrowed(in_off), K.borrowed(adj_off),
                  total, out_node, K.borrowed(spans), K.borrowed(vals), K.borrowed(grads),
                  nblocks)


@njit(**IEEE, parallel=PRANGE_ONLY, cache=True)
def _batch_blocks(t, init, X, in_off, adj_off, total, out_node, spans, vals, grads, nblocks):
    B, n = X.shape
    vo = t.val_off[out_node]
    o = adj_off[out_node]
    for b in prange(nblocks):
        own_buf = init.copy()
        own_adj = np.zeros(max(total, 1), dtype=init.dtype)
        buf, adj = K.borrowed(own_buf), K.borrowed(own_adj)
        chunks = List()
        chunks.append(buf)
        for r in range(b, B, nblocks):
            # kernels overwrite every non-leaf slot, so only the input slots need writing
            for q in range(len(in_off)):
                for j in range(n):
                    buf[in_off[q] + j] = X[r, j]
            forward_sweep(t, chunks, np.int64(0), out_node + 1, SERIAL)
            vals[r] = buf[vo]
            if o >= 0:
                adj[:] = 0.0
                adj[o] = 1.0
                reverse_sweep(t, chunks, adj, adj_off, out_node, SERIAL, np.int64(0))
                _add_spans(adj, spans, grads, r)
        K.keep_alive(own_buf)
        K.keep_alive(own_adj)


@njit(**IEEE, cache=True)
def _add_spans(adj, spans, out, r):
    """Write the adjoint ``spans`` (rows of (offset, first column, width, add)) into row ``r``
    of ``out``, assigning or adding: one 1-d view each side, so the loops vectorise (an index
    per element did not, nor did 2-d indexing: W5's 1,000-wide rows took 0.9 us instead of
    0.5)."""
    row = out[r]
    for s in range(spans.shape[0]):
        a, c, w = spans[s, 0], spans[s, 1], spans[s, 2]
        dst, src = row[c:c + w], adj[a:a + w]
        if spans[s, 3]:
            for j in range(w):
                dst[j] += src[j]
        else:
            for j in range(w):
                dst[j] = src[j]


@njit(**IEEE, cache=True)
def _matmul_grad_into(held, i, side, out):
    """The adjoint of operand ``side`` of matrix product ``i`` (one batch) assigned into
    ``out``: ``kernels.matmul_vjp`` for a slot nobody else writes, with beta = 0 (no zeroing
    pass, no copy out of the adjoint buffer) and its sparse-row rule; the tape and buffers as
    ``_hold`` holds them (see ``_held_forward``)."""
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    p = K.iparams_of(t, i)
    m, k, n = p[1], p[2], p[3]
    a, b = K.arg(t, i, 0), K.arg(t, i, 1)
    av, ao = chunks[t.val_chunk[a]], t.val_off[a]
    bv, bo = chunks[t.val_chunk[b]], t.val_off[b]
    g = adj_off[i]
    if K.few_nonzero_rows(adj, g, m, n):
        out[:] = 0.0
        K.matmul_vjp_rows(adj, g, av, ao, bv, bo, m, k, n, out, 0 if side == 0 else -1,
                          0 if side == 1 else -1)
    elif side == 0:  # dA = G @ B.T
        K.gemm(out, 0, adj, g, 0, bv, bo, 1, m, n, k, 0.0)
    else:  # dB = A.T @ G
        K.gemm(out, 0, av, ao, 1, adj, g, 0, k, m, n, 0.0)


@njit(**IEEE, cache=True)
def _hold(t, chunks, buf, adj, adj_off, plan, zero):
    """What ``_replay_value_and_grad`` reads, as a typed list of one tuple (``Traced._held``)."""
    held = List()
    held.append((t, chunks, buf, adj, adj_off, plan, zero))
    return held


# The interpreted pieces of a replay through compiled segments (Traced._run_forward and
# _run_reverse), each taking the tape and buffers as ``_hold``'s one typed list: Numba took the
# tape's 14 arrays across one by one in every call, 3.3 us a call, six to ten calls a replay.
@njit(**IEEE, cache=True)
def _held_forward(held, start, stop, par_min):
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    forward_sweep(t, chunks, start, stop, par_min)


@njit(**IEEE, cache=True)
def _held_segment_forward(held, start, stop, par_min, nthreads):
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    segment_forward(t, chunks, buf, plan, start, stop, par_min, nthreads)


@njit(**IEEE, cache=True)
def _held_reverse(held, top, par_min, bottom):
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    reverse_sweep(t, chunks, adj, adj_off, top, par_min, bottom)


@njit(**IEEE, cache=True)
def _held_segment_reverse(held, start, stop, par_min, nthreads):
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    segment_reverse(t, chunks, adj, adj_off, plan, start, stop, par_min, nthreads,
                    plan.seg_start[:0])


@njit(**IEEE, inline="always")
def _clear_ranges(adj, ranges):
    """Zero the adjoint ``ranges`` ((lo, hi) rows)."""
    for r in range(ranges.shape[0]):
        adj[ranges[r, 0]:ranges[r, 1]] = 0.0


@njit(**IEEE, cache=True)
def _held_seed(held, ranges, o):
    """Clear the adjoint ``ranges``, then seed slot ``o`` with 1."""
    adj = held[0][3]
    _clear_ranges(adj, ranges)
    adj[o] = 1.0


@njit(**IEEE, cache=True)
def _replay_value_and_grad(held, out_node, par_min, nthreads):
    """Traced.value_and_grad's sweeps in one compiled call.  The tape, the plan and the buffers
    come in ``held`` (``_hold``): Numba takes a typed list from Python in about a microsecond,
    and the 22 arrays inside it one by one in 4 (W1 at n = 3: 7.8 against 4.0 us a call).
    The fused sweeps never read a segment-internal node's adjoint slot, so only ``zero``'s
    ranges are cleared; the output is a single value (seed 1)."""
    t, chunks, buf, adj, adj_off, plan, zero = held[0]
    replay_forward(t, chunks, buf, plan, par_min, nthreads)
    _clear_ranges(adj, zero)
    o = adj_off[out_node]
    if o >= 0:
        adj[o] = 1.0
        replay_reverse(t, chunks, adj, adj_off, plan, out_node, par_min, nthreads)


@njit(**IEEE, cache=True)
def _scalar_value_and_grad(prog, pc, buf, adj, zero, segs, gy):
    """``_replay_value_and_grad`` for a scalar graph (``Traced._plan_scalar_only``): the
    scalar program of each segment, forward then back, from a handful of arrays (unboxing the
    tape's fourteen costs about 5 us a call); ``gy`` is the output's adjoint offset."""
    for s in range(segs.shape[0]):
        scalar_forward(prog, pc, buf, segs[s, 0], segs[s, 1])
    _clear_ranges(adj, zero)
    if gy >= 0:
        adj[gy] = 1.0
        for s in range(segs.shape[0] - 1, -1, -1):
            scalar_reverse(prog, pc, buf, adj, segs[s, 0], segs[s, 1])


# Tape files (``Traced.save``, ``load``; pickles hold the same arrays).  Format 2 names every
# opcode and grad_fn name by its stable name (``op_names``, ``grad_fn_names``: the tables the
# file's numbers index), so renumbering or adding ops in ops.py never changes what a saved file
# means, and it carries ``digest``, the SHA-256 of every other array with its name, dtype and
# shape: a value changed after saving (a constant, an opcode, an index that still passes
# validation) is refused before anything reads the tape.  Format 1 files have neither and
# numbered ops as the two frozen tables below do.
_FORMAT = 2
_FORMAT1_OPCODES = (
    "LEAF", "NEG", "EXP", "LOG", "SIN", "COS", "TAN", "TANH", "SIGMOID", "RELU", "SQRT", "ABS",
    "ADD_C", "MUL_C", "DIV_C", "POW_C", "RSUB_C", "RDIV_C", "RPOW_C", "CLAMP", "ADD", "SUB",
    "MUL", "DIV", "POW", "MAXIMUM", "MINIMUM", "WHERE", "", "", "SUM", "MEAN", "MAX", "MIN",
    "LOGSUMEXP", "SOFTMAX", "LOG_SOFTMAX", "", "", "", "RESHAPE", "GATHER", "CAT", "MATMUL",
    "COMPARE")
_FORMAT1_NAMES = (
    "AccumulateGrad", "NegBackward0", "ExpBackward0", "LogBackward0", "SinBackward0",
    "CosBackward0", "TanBackward0", "TanhBackward0", "SigmoidBackward0", "ReluBackward0",
    "SqrtBackward0", "AbsBackward0", "AddBackward0", "SubBackward0", "MulBackward0",
    "DivBackward0", "PowBackward0", "PowBackward1", "RsubBackward1", "ClampBackward1",
    "ClampMinBackward0", "ClampMaxBackward0", "MaximumBackward0", "MinimumBackward0",
    "WhereBackward0", "SumBackward0", "SumBackward1", "MeanBackward0", "MeanBackward1",
    "MaxBackward0", "MaxBackward1", "MinBackward0", "MinBackward1", "LogsumexpBackward0",
    "SoftmaxBackward0", "LogSoftmaxBackward0", "ViewBackward0", "ReshapeAliasBackward0",
    "UnsqueezeBackward0", "SqueezeBackward0", "CloneBackward0", "ToCopyBackward0",
    "SelectBackward0", "SliceBackward0", "IndexBackward0", "TransposeBackward0",
    "PermuteBackward0", "TBackward0", "ExpandBackward0", "CatBackward0", "StackBackward0",
    "MmBackward0", "MvBackward0", "DotBackward0", "BmmBackward0", "Compare")


def tape_digest(d):
    """SHA-256 (hex) of the arrays of a tape file: each one's name, dtype, shape and bytes, in
    name order; the entry ``digest`` itself is left out."""
    h = hashlib.sha256()
    for k in sorted(d):
        if k == "digest":
            continue
        a = np.ascontiguousarray(d[k])
        h.update(repr((str(k), a.dtype.str, tuple(a.shape))).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _op_table():
    """The current opcode -> stable name table as a string array (gaps are '')."""
    return np.array([OPCODE_NAME.get(i, "") for i in range(max(OPCODE_NAME) + 1)])


def _renumber(column, table, current, what):
    """``column`` (numbers indexing the file's name ``table``) in this numbagrad's numbering."""
    column = np.asarray(column)
    if column.dtype.kind not in "iu":
        raise ValueError(f"invalid tape: {what} numbers of dtype {column.dtype}")
    if column.size and (column.min() < 0 or column.max() >= len(table)):
        raise ValueError(f"invalid tape: a {what} number outside the file's table of "
                         f"{len(table)} {what} names")
    codes = np.array([current.get(str(nm), -1) for nm in table] or [-1], dtype=np.int64)
    now = codes[column.astype(np.int64)] if column.size else column.astype(np.int64)
    if np.any(now < 0):
        bad = str(table[int(column.reshape(-1)[np.flatnonzero(now.reshape(-1) < 0)[0]])])
        raise ValueError(f"tape file uses the {what} {bad!r}, which this numbagrad does not "
                         f"have (a file from another version?)")
    return now.astype(column.dtype)


_CMP = (float.__lt__, float.__le__, float.__gt__, float.__ge__, float.__eq__, float.__ne__)
assert len(_CMP) == len(CMP_OPS)


def _show(v):
    v = np.asarray(v)
    return repr(v.item()) if v.size == 1 else np.array2string(v, threshold=6)


def _checked(tape, init, in_nodes, out_node, guards):
    """A replay tape from outside (a file, a pickle): every array checked before any sweep."""
    replay = validate(tape, len(init))
    if np.any(replay.val_chunk != 0):
        raise ValueError("invalid tape: a replay keeps every value in one buffer (chunk 0)")
    init = np.asarray(init)
    if init.ndim != 1 or init.dtype not in (np.float32, np.float64):
        raise ValueError(f"invalid tape: the value buffer must be 1-D float32 or float64, got "
                         f"{init.dtype} of shape {init.shape}")
    n = len(replay.opcodes)
    if not (isinstance(out_node, (int, np.integer)) and 0 <= out_node < n):
        raise ValueError(f"invalid tape: output node {out_node} is not a node")
    from .ops import LEAF as _LEAF
    for ns in in_nodes:
        for k in ns:
            if not 0 <= k < n or replay.opcodes[k] != _LEAF:
                raise ValueError(f"invalid tape: input node {k} is not a leaf")
    for k, kind, v, how in guards:
        if kind not in GUARD_KINDS:
            raise ValueError(f"invalid tape: guard on node {k} of unknown kind {kind}")
        size = replay.sizes[k] if 0 <= k < n else -1
        if not 0 <= k < n or (np.asarray(v).size != size if kind < GUARD_CMP else
                              (size != 1 or np.asarray(v).size != 3)):
            raise ValueError(f"invalid tape: guard on node {k} does not fit it")
    # flags: a replay keeps only REQUIRES_GRAD, and a node has it exactly when one of its
    # operands has it (comparisons never): otherwise the reverse sweep would drop a path the
    # tangent sweep follows, and a gradient would be silently wrong
    if np.any(replay.flags & ~REQUIRES_GRAD):
        raise ValueError("invalid tape: replay node flags other than requires-grad")
    rg = (replay.flags & REQUIRES_GRAD).astype(np.int8)
    consumer = np.repeat(np.arange(n), np.diff(replay.arg_ptr))
    from_operands = np.zeros(n, dtype=np.int8)
    np.maximum.at(from_operands, consumer, rg[replay.args])
    from_operands[replay.opcodes == COMPARE] = 0
    wrong = (replay.opcodes != _LEAF) & (rg != from_operands)
    if wrong.any():
        raise ValueError(f"invalid tape: node {int(np.flatnonzero(wrong)[0])}: its requires-grad "
                         f"flag does not follow from its operands")
    # a replay gives every node a slot of its own: overlapping slots would let one node's
    # value overwrite another's (a tape that runs, answering wrong numbers)
    order = np.argsort(replay.val_off, kind="stable")
    order = order[replay.sizes[order] > 0]
    lo, hi = replay.val_off[order], replay.val_off[order] + replay.sizes[order]
    if len(lo) > 1 and np.any(lo[1:] < hi[:-1]):
        j = int(np.flatnonzero(lo[1:] < hi[:-1])[0])
        raise ValueError(f"invalid tape: the values of nodes {int(order[j])} and "
                         f"{int(order[j + 1])} overlap in the buffer")
    return replay, np.ascontiguousarray(init)


def _checked_meta(replay, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes, arg_names):
    """The per-argument data of a replay from outside, checked against its tape: one name,
    shape and dtype per argument, shapes whose exact element counts (Python ints: no overflow)
    are the sizes of the argument's leaf nodes and of the output node.  The sweeps write an
    argument's elements into its nodes' slots and read the output's: a size that did not fit
    would reach outside them."""
    import math
    arg_shapes = [tuple(int(d) for d in s) for s in arg_shapes]
    out_shape = tuple(int(d) for d in out_shape)
    arg_dtypes = [np.dtype(d) for d in arg_dtypes]
    arg_names = [str(x) for x in arg_names]
    if not len(arg_shapes) == len(arg_dtypes) == len(arg_names) == len(in_nodes):
        raise ValueError(f"invalid tape: {len(in_nodes)} argument(s) with {len(arg_shapes)} "
                         f"shapes, {len(arg_dtypes)} dtypes and {len(arg_names)} names")
    if any(dt not in (np.float32, np.float64) for dt in arg_dtypes):
        raise ValueError("invalid tape: argument dtypes must be float32 or float64")
    if any(d < 0 for s in arg_shapes + [out_shape] for d in s):
        raise ValueError("invalid tape: negative dimension in an argument or output shape")
    if math.prod(out_shape) != replay.sizes[out_node]:
        raise ValueError("invalid tape: the output shape does not fit the output node")
    for shape, ns in zip(arg_shapes, in_nodes):
        for k in ns:
            if replay.sizes[k] != math.prod(shape):
                raise ValueError(f"invalid tape: argument shape {shape} does not fit input "
                                 f"node {k}")
    return out_shape, arg_shapes, arg_dtypes, arg_names


def load(path):
    """Read a traced function written by ``Traced.save`` from exactly ``path`` (or a file
    object); everything is checked first, so a truncated, changed or tampered file raises
    ValueError.  A file saved by an older numbagrad under ``path + ".npz"`` (its ``save``
    appended the suffix) is read when ``path`` itself does not exist.

    >>> import numpy as np, numbagrad as ng, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f.ngtape")
    >>> ng.trace(lambda x: (x * 3).sum(), np.ones(2)).save(p)
    >>> ng.load(p)(np.array([1.0, 2.0]))
    9.0
    """
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path = path + ".npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError) as e:
        raise ValueError(f"not a numbagrad tape file: {path}: {e}") from None
    except Exception as e:  # zipfile and zlib errors of damaged files
        raise ValueError(f"not a numbagrad tape file: {path}: {type(e).__name__}: {e}") from None
    return _from_arrays(d, f"tape file {path}")


def _from_arrays(d, where):
    """A Traced from the arrays of a tape file (or of a pickle): digest, then every array
    checked before any sweep can read it."""
    try:
        if not isinstance(d, dict):
            raise TypeError(f"{type(d).__name__} instead of a dict of arrays")
        fmt = int(np.asarray(d["format"]).reshape(-1)[0])
        if fmt not in (1, _FORMAT):
            raise ValueError(f"{where}: tape file format {fmt}, expected 1 or {_FORMAT}")
        if fmt >= 2:
            digest = str(np.asarray(d["digest"]).reshape(-1)[0])
            if digest != tape_digest(d):
                raise ValueError(f"{where}: the digest does not match the content: the file was "
                                 "changed after it was saved (or damaged)")
            op_table, name_table = [str(x) for x in d["op_names"]], \
                [str(x) for x in d["grad_fn_names"]]
        else:
            op_table, name_table = _FORMAT1_OPCODES, _FORMAT1_NAMES
        tape = {name: d[f"tape_{name}"] for name in TapeArrays._fields}
        tape["opcodes"] = _renumber(tape["opcodes"], op_table, OPCODE_OF, "op")
        tape["name_ids"] = _renumber(tape["name_ids"], name_table, NAME_ID, "grad_fn name")
        in_ptr, flat = d["in_ptr"], d["in_nodes"]
        if len(in_ptr) < 1 or in_ptr[0] != 0 or in_ptr[-1] != len(flat) or np.any(np.diff(in_ptr) < 0):
            raise ValueError("input node pointers are inconsistent")
        in_nodes = [[int(k) for k in flat[in_ptr[i]:in_ptr[i + 1]]] for i in range(len(in_ptr) - 1)]
        ndims, dims = d["arg_ndim"], d["arg_shapes"]
        if len(ndims) != len(in_nodes) or ndims.sum() != len(dims) or np.any(ndims < 0) \
                or np.any(dims < 0):
            raise ValueError("argument shapes are inconsistent")
        ends = np.cumsum(ndims)
        arg_shapes = [tuple(int(x) for x in dims[e - n_:e]) for n_, e in zip(ndims, ends)]
        arg_dtypes = [np.dtype(str(x)) for x in d["arg_dtypes"]]
        if len(arg_dtypes) != len(in_nodes) or any(dt not in (np.float32, np.float64)
                                                   for dt in arg_dtypes):
            raise ValueError("argument dtypes are inconsistent")
        gptr, gvals = d["guard_ptr"], d["guard_values"]
        gn, gk = d["guard_nodes"], d["guard_kinds"]
        if len(gptr) != len(gn) + 1 or gptr[0] != 0 or gptr[-1] != len(gvals) \
                or np.any(np.diff(gptr) < 0) or len(gk) != len(gn):
            raise ValueError("guards are inconsistent")
        hows = [str(h) for h in d["guard_hows"]]
        guards = [(int(gn[i]), int(gk[i]), gvals[gptr[i]:gptr[i + 1]].astype(np.float64),
                   hows[i] if i < len(hows) else "a read") for i in range(len(gn))]
        out_node = int(d["out_node"][0])
        out_shape = tuple(int(x) for x in d["out_shape"])
        replay, init = _checked(tape, d["init"], in_nodes, out_node, guards)
        out_shape, arg_shapes, arg_dtypes, arg_names = _checked_meta(
            replay, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes, d["arg_names"])
        name = str(d["name"][0])
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"not a valid numbagrad tape file: {where}: {type(e).__name__}: {e}") \
            from None
    traced = Traced.__new__(Traced)
    traced._restore(replay, init, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes,
                    arg_names, name, guards)
    return traced


def _tape_arrays(tape, init, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes, arg_names,
                 name, guards, fmt=_FORMAT):
    """The arrays of a tape file (format ``fmt``; format 2 with its name tables and digest)."""
    d = {f"tape_{k}": np.asarray(tape[k]) for k in TapeArrays._fields}
    gval = [np.asarray(g[2], dtype=np.float64).reshape(-1) for g in guards]
    in_ptr = np.concatenate([[0], np.cumsum([len(ns) for ns in in_nodes])])
    d.update(
        init=np.asarray(init), format=np.array([fmt], dtype=np.int64),
        in_nodes=np.array([k for ns in in_nodes for k in ns], dtype=np.int64),
        in_ptr=in_ptr.astype(np.int64), out_node=np.array([out_node], dtype=np.int64),
        out_shape=np.array(out_shape, dtype=np.int64),
        arg_ndim=np.array([len(s_) for s_ in arg_shapes], dtype=np.int64),
        arg_shapes=np.array([d_ for s_ in arg_shapes for d_ in s_], dtype=np.int64),
        arg_dtypes=np.array([np.dtype(dt).str for dt in arg_dtypes]),
        arg_names=np.array(arg_names), name=np.array([name]),
        guard_nodes=np.array([g[0] for g in guards], dtype=np.int64),
        guard_kinds=np.array([g[1] for g in guards], dtype=np.int64),
        guard_ptr=np.concatenate([[0], np.cumsum([v.size for v in gval])]).astype(np.int64),
        guard_values=np.concatenate(gval) if gval else np.zeros(0),
        guard_hows=np.array([str(g[3]) for g in guards] or [""]))
    if fmt >= 2:
        d.update(op_names=_op_table(), grad_fn_names=np.array(NAMES))
        d["digest"] = np.array([tape_digest(d)])
    return d


def _nblocks(m):
    import numba
    return max(1, min(m, 4 * numba.get_num_threads()))


# ---------------------------------------------------------------- the recording, as shown

class TraceTape:
    """The replay tape of a ``Traced``: the ``TapeArrays`` columns as attributes.

    ``len(tape)`` is its number of nodes; ``str(tape)`` lists one op per line.

    >>> import numpy as np, numbagrad as ng
    >>> f = ng.trace(lambda x: (x * 2).sum(), np.ones(3))
    >>> len(f.tape)
    3
    """

    def __init__(self, arrays, dtype, input_names):
        self._arrays = arrays
        self.dtype = np.dtype(dtype)
        self._input_names = input_names   # node -> argument name
        for name in TapeArrays._fields:
            setattr(self, name, getattr(arrays, name))

    def __len__(self):
        return len(self.opcodes)

    def operands(self, k):
        return [int(a) for a in self.args[self.arg_ptr[k]:self.arg_ptr[k + 1]]]

    def shape(self, k):
        return tuple(int(s) for s in self.shapes[self.shape_ptr[k]:self.shape_ptr[k + 1]])

    def name(self, k):
        if self.opcodes[k] == LEAF:
            if k in self._input_names:
                return f"Input {self._input_names[k]}"
            return "Constant"
        return NAMES[self.name_ids[k]]

    def __str__(self):
        lines = [f"TraceTape: {len(self)} nodes, {self.dtype}"]
        for k in range(len(self)):
            lines.append(f"{k:5d}  {self.name(k):<22s} {str(self.operands(k)):<16s} "
                         f"{self.shape(k)}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<TraceTape of {len(self)} nodes, {self.dtype}>"


# ---------------------------------------------------------------- tracing

def _example_array(a, name):
    """An example argument as an ndarray of the dtype its leaf will have."""
    if isinstance(a, Tensor):
        a = a._data
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument {name}: expected an array or number, got {type(a).__name__}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)   # ints, bools, float16: the default float dtype
    return np.array(arr, order="C")  # a copy: the caller's array is not the leaf's storage


class TraceWarning(UserWarning):
    """A trace that may not replay ``f`` faithfully at other arguments."""


def _record(f, examples):
    """Run ``f`` once on leaf tensors holding ``examples``.

    Returns (tape, output node, output tensor, leaf nodes of each argument); an argument can
    be several leaf nodes (one per graph it was recorded on before those graphs merged).
    Graphs whose values Python read while ``f`` ran (``.item()``, ``bool()``) are merged into
    the output's tape, so that a replay recomputes and checks them.
    """
    leaves = [Tensor(a, requires_grad=True) for a in examples]
    guard_watch.tapes = watched = []
    forget_recent_tape()  # f's graph on tapes of its own, before and after
    try:
        with grad_mode.enable_grad():
            out = f(*leaves)
    finally:
        guard_watch.tapes = None
        forget_recent_tape()
    if not isinstance(out, Tensor):
        out = as_tensor(out)
    if out.dtype.kind != "f":
        raise TypeError(f"trace: f must return a floating point tensor, got {out.dtype}")
    if out._tape is None:
        # a leaf (an argument returned as is, or a constant): a tape of that one node
        tape = Tape(out.dtype)
        node = tape.leaf(out)
        out = Tensor(out._data, tape, node, True)
    for t in watched:
        t, _ = resolve(t, 0)
        tape, _ = resolve(out._tape, out._node)
        if t is not tape:
            small, big = sorted((tape, t), key=len)
            big.absorb(small)
    tape, node = resolve(out._tape, out._node)
    in_nodes = [[] for _ in leaves]
    for k, tensor, _ in tape.leaves:
        for i, leaf in enumerate(leaves):
            if tensor is leaf:
                in_nodes[i].append(int(k))
    return tape, node, out, in_nodes


_STRUCTURE = ("opcodes", "args", "shapes", "consts", "iparams")


def _merge_repeats(t, keep):
    """The replay tape ``t`` with every op that repeats an earlier one (the same opcode on the
    same operands, with the same shape, constants and integer parameters) read from that one:
    its consumers are pointed at the first, and it becomes a leaf nothing reads, which no sweep
    computes.  Every op is a function of its operands and parameters, so the values are the same
    and the first's adjoint gathers all the partials.  Scalar code repeats itself (W2 takes
    ``sin`` of 10 inputs 3,333 times).  ``keep``: nodes left as they are (the output, guards).

    >>> import numpy as np, numbagrad as ng
    >>> f = ng.trace(lambda x: (ng.sin(x) * ng.sin(x)).sum(), np.ones(2))
    >>> [f.tape.name(k) for k in range(len(f.tape))]  # the second sin, a leaf now
    ['Input x', 'SinBackward0', 'Constant', 'MulBackward0', 'SumBackward0']
    >>> f.tape.operands(3)
    [1, 1]
    """
    n = len(t.opcodes)
    opcodes, ap, sp, cp, ip = t.opcodes, t.arg_ptr, t.shape_ptr, t.const_ptr, t.iparam_ptr
    first_of = np.arange(n)
    args = t.args.copy()
    seen = {}
    for k in np.flatnonzero(opcodes != LEAF).tolist():
        a = args[ap[k]:ap[k + 1]]
        a[:] = first_of[a]
        key = (int(opcodes[k]), a.tobytes(), t.shapes[sp[k]:sp[k + 1]].tobytes(),
               t.consts[cp[k]:cp[k + 1]].tobytes(), t.iparams[ip[k]:ip[k + 1]].tobytes())
        j = seen.setdefault(key, k)
        if j != k and k not in keep:
            first_of[k] = j
    dead = first_of != np.arange(n)
    if not dead.any():
        return t._replace(args=args)

    def ragged(values, ptr):
        counts = np.diff(ptr)
        live = np.repeat(~dead, counts)
        counts[dead] = 0
        return values[live], np.concatenate([[0], np.cumsum(counts)]).astype(ptr.dtype)

    args, arg_ptr = ragged(args, ap)
    consts, const_ptr = ragged(t.consts, cp)
    iparams, iparam_ptr = ragged(t.iparams, ip)
    return t._replace(
        opcodes=np.where(dead, LEAF, opcodes).astype(opcodes.dtype),
        name_ids=np.where(dead, NAMES.index(OPS[LEAF].name), t.name_ids).astype(t.name_ids.dtype),
        flags=np.where(dead, 0, t.flags).astype(t.flags.dtype),
        args=args, arg_ptr=arg_ptr, consts=consts, const_ptr=const_ptr, iparams=iparams,
        iparam_ptr=iparam_ptr)


def _reachable(t, out_node):
    """Which nodes the output is computed from."""
    used = np.zeros(len(t.opcodes), dtype=bool)
    used[out_node] = True
    for k in range(out_node, -1, -1):
        if used[k]:
            used[t.args[t.arg_ptr[k]:t.arg_ptr[k + 1]]] = True
    return used


def _check_constants(f, examples, tape, traced):
    """Run ``f`` again at random arguments of the same shapes; warn when the recording changes.

    A replay recomputes recorded ops only.  Whatever ``f`` computes from its arguments without
    recording it (a comparison used as a ``where`` mask, indices, a number read with
    ``.item()``, a Python branch on a value) is frozen at its example value, and the replay is
    silently wrong elsewhere.  Such values show up as constants (or a structure) that differ
    between two recordings.  A random constant made inside ``f`` is reported too, rightly: the
    replay keeps its traced draw.
    """
    rng = np.random.default_rng(12345)
    probes = [(rng.standard_normal(a.shape) * 2).astype(a.dtype) for a in examples]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tape2, node2, _, in_nodes2 = _record(f, probes)
    except Exception:   # f may reject the probe values (asserts, domains): no verdict
        return
    if tape2 is tape:
        return  # both runs went onto one tape (captured tensors carrying a graph): no verdict
    a1 = traced._t
    a2 = _merge_repeats(tape2.arrays(), {int(node2)} | {int(g[0]) for g in tape2.guards})
    n = len(a1.opcodes)
    same = (len(a2.opcodes) >= node2 + 1 and node2 == traced._out_node and in_nodes2 ==
            traced._in_nodes and len(a2.opcodes) == n)
    if same:
        for name in _STRUCTURE:
            c1, c2 = getattr(a1, name), getattr(a2, name)
            if c1.shape != c2.shape or not np.array_equal(c1, c2, equal_nan=True):
                same = False
                break
    if not same:
        warnings.warn(f"trace of {traced.__name__}: the ops f records depend on the values of "
                      "its arguments (Python control flow on values?); the replay follows the "
                      "branch taken at the example arguments", TraceWarning, stacklevel=4)
        return
    inputs = {k for ns in traced._in_nodes for k in ns}
    used = _reachable(a1, traced._out_node)
    for k in range(traced._out_node + 1):
        if a1.opcodes[k] != LEAF or k in inputs or not used[k]:
            continue   # a leaf nothing reads (a merge can leave one behind) does not matter
        o, size = a1.val_off[k], a1.sizes[k]
        v1, v2 = traced._init[o:o + size], tape2.value(k)
        if not np.array_equal(v1, v2, equal_nan=True):
            warnings.warn(
                f"trace of {traced.__name__}: constant node {k} of shape {traced.tape.shape(k)} "
                "changes with the arguments: f computes it from them without recording it (a "
                "comparison used as a mask, indices, .item(), or a random draw); the replay "
                "keeps its value at the example arguments", TraceWarning, stacklevel=4)
            return


def _arg_names(f, n):
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY,
                                                  params[i].POSITIONAL_OR_KEYWORD):
            names.append(params[i].name)
        else:
            names.append(f"args[{i}]")
    return names


class Traced:
    """A function recorded once by ``trace`` and replayed by the Numba sweeps.

    >>> import numpy as np, numbagrad as ng
    >>> f = ng.trace(lambda x, y: (x * y).sum(), np.ones(2), np.ones(2))
    >>> f(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    11.0
    >>> f.grad(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    (array([3., 4.]), array([1., 2.]))
    """

    def __init__(self, f, *example_args, check=True, codegen=None):
        self.__name__ = getattr(f, "__name__", "traced")
        self.codegen = codegen
        self.arg_names = _arg_names(f, len(example_args))
        examples = [_example_array(a, nm) for a, nm in zip(example_args, self.arg_names)]
        tape, node, out, in_nodes = _record(f, examples)
        arrays = tape.arrays()
        n = len(arrays.opcodes)
        sizes = arrays.sizes
        offsets = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(sizes[:-1], out=offsets[1:])
        init = np.empty(int(sizes.sum()), dtype=tape.dtype)
        for k in range(n):
            init[offsets[k]:offsets[k] + sizes[k]] = tape.value(k)
        replay = arrays._replace(
            flags=(arrays.flags & REQUIRES_GRAD).astype(np.int8),
            val_chunk=np.zeros(n, dtype=np.int32), val_off=offsets)
        guards = [(int(k), int(kind), np.asarray(v, dtype=np.float64).reshape(-1), how)
                  for k, kind, v, how in settle_guards(tape.guards)]
        replay = _merge_repeats(replay, {int(node)} | {g[0] for g in guards})
        self._setup(replay, init, in_nodes, int(node), tuple(out.shape),
                    [a.shape for a in examples], [a.dtype for a in examples], guards)
        if check:
            _check_constants(f, examples, tape, self)

    def _setup(self, replay, init, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes,
               guards=()):
        """Everything a replay needs, from plain arrays (shared by __init__ and unpickling)."""
        self._guards = list(guards)
        # runs of elementwise ops swept fused (fusion.py); the output and guarded values are
        # always written out
        self._t = replay
        self._init = init
        self.dtype = init.dtype
        self._in_nodes = [list(map(int, ns)) for ns in in_nodes]
        self._out_node = out_node
        self.out_shape = tuple(out_shape)
        self.arg_shapes = [tuple(s) for s in arg_shapes]
        self.arg_dtypes = [np.dtype(d) for d in arg_dtypes]
        self._arg_sizes = [int(np.prod(s, dtype=np.int64)) for s in self.arg_shapes]
        self._out_size = int(np.prod(self.out_shape, dtype=np.int64))
        adj_off, total, _, _, _ = plan_adjoints(replay, np.array([out_node], dtype=np.int64))
        self._adj_off, self._total = adj_off, int(total)
        # one spare adjoint slot at the end takes partials for operands without an adjoint
        self._plan = plan_fusion(replay, adj_off, self._total,
                                 keep=[out_node] + [g[0] for g in self._guards],
                                 aux_base=len(init))
        # the scalar program's aux slots (fusion.plan_scalar) follow the values in every buffer
        n_aux = int((self._plan.prog[:, P_AUX] >= 0).sum())
        self._n_values = len(init)
        if n_aux:
            self._init = np.concatenate([init, np.zeros(n_aux, dtype=init.dtype)])
        ext = self._plan.ext
        self._zero_ranges = np.array(self._ranges(np.flatnonzero((adj_off >= 0) & (ext != 1))),
                                     dtype=np.int64).reshape(-1, 2)  # (lo, hi) rows
        # where each argument's gradient sits in the adjoint buffer: (adjoint offset) per node
        self._in_adj = [[int(adj_off[k]) for k in ns if adj_off[k] >= 0] for ns in in_nodes]
        self._small_io = self._plan_small_io(replay, adj_off)
        # every argument a single value (W2's scalars): moved with one NumPy call each way
        self._scalar_args = self._small_io is not None and all(s == () for s in self.arg_shapes)
        self._scalar_segs = self._plan_scalar_only(replay)
        self._seg_bounds = list(zip(self._plan.seg_start.tolist(), self._plan.seg_stop.tolist()))
        # ... whose value_and_grad takes Python floats as they are (_check(floats=True))
        self._takes_floats = self._scalar_segs is not None and self._scalar_args \
            and self.dtype == np.float64
        self._local = threading.local()
        self._segments = None  # compiled segments (codegen.py), made on first use
        self._batch_segment = None
        self._jac_layout = None  # _jacobian_layout(), made on first use
        names = {}
        for i, ns in enumerate(self._in_nodes):
            for k in ns:
                names[k] = self.arg_names[i]
        self.tape = TraceTape(replay, self.dtype, names)

    def _plan_scalar_only(self, replay):
        """The (start, stop) rows of the fused segments when every op is a row of the scalar
        program (``fusion.plan_scalar`` gives rows to the ops of single-value segments only): a
        scalar graph, whose ``value_and_grad`` then runs that program alone, without unboxing
        the tape.  None otherwise."""
        p = self._plan
        if not len(p.prog) or np.any((p.prog[:, P_OP] < 0) & (replay.opcodes != LEAF)):
            return None
        return np.stack([p.seg_start, p.seg_stop], axis=1).astype(np.int64)

    def _plan_small_io(self, replay, adj_off):
        """Index arrays that move all arguments into the value buffer, and all gradients out
        of the adjoint buffer, with one NumPy call each: (value index, adjoint index, where
        each argument's elements start), or None.  For functions of many small arguments
        (W2's ten scalars) a loop over arguments costs more than the sweeps."""
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.arg_shapes]
        if not self._in_nodes or sum(sizes) > SMALL_IO_MAX \
                or any(d != self.dtype for d in self.arg_dtypes) \
                or any(len(ns) != 1 or adj_off[ns[0]] < 0 for ns in self._in_nodes):
            return None
        val = np.concatenate([replay.val_off[ns[0]] + np.arange(n)
                              for ns, n in zip(self._in_nodes, sizes)]).astype(np.int64)
        adj = np.concatenate([adj_off[ns[0]] + np.arange(n)
                              for ns, n in zip(self._in_nodes, sizes)]).astype(np.int64)
        return val, adj, np.cumsum([0] + sizes).tolist()

    # ------------------------------------------------------------ pickling

    def _restore(self, replay, init, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes,
                 arg_names, name, guards):
        self.__name__ = name
        self.arg_names = arg_names
        self.codegen = None
        self._setup(replay, init, in_nodes, out_node, out_shape, arg_shapes, arg_dtypes, guards)

    def _file_arrays(self):
        return _tape_arrays({k: getattr(self._t, k) for k in TapeArrays._fields},
                            self._init[:self._n_values], self._in_nodes, self._out_node,
                            self.out_shape, self.arg_shapes, self.arg_dtypes, self.arg_names,
                            self.__name__, self._guards)

    def __getstate__(self):
        # the arrays of a tape file, digest included: unpickling checks them like load
        return self._file_arrays()

    def __setstate__(self, state):
        if isinstance(state, dict) and "tape" in state and "format" not in state:
            # a pickle of format 1 (a state of plain objects, no digest): as its file
            try:
                state = _tape_arrays(
                    state["tape"], state["init"], state["in_nodes"], state["out_node"],
                    state["out_shape"], state["arg_shapes"], state["arg_dtypes"],
                    state["arg_names"], state["name"], state["guards"], fmt=1)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise ValueError(f"not a valid pickled Traced: {type(e).__name__}: {e}") \
                    from None
        g = _from_arrays(state, "pickled Traced")
        self.__dict__.update(g.__dict__)

    def save(self, path):
        """Write the recording to exactly ``path`` (or a file object): an ``.npz`` archive of
        plain arrays (no pickle), whatever the name's suffix.

        >>> import numpy as np, numbagrad as ng, tempfile, os
        >>> f = ng.trace(lambda x: (x * x).sum(), np.ones(2))
        >>> p = os.path.join(tempfile.mkdtemp(), "model.ngtape"); f.save(p)
        >>> os.path.exists(p), ng.load(p).grad(np.array([1.0, 2.0]))
        (True, array([2., 4.]))
        """
        d = self._file_arrays()
        if isinstance(path, (str, os.PathLike)):
            with open(path, "wb") as fh:  # np.savez(str) would append ".npz" to the name
                np.savez(fh, **d)
        else:
            np.savez(path, **d)

    # ------------------------------------------------------------ replay

    def _check(self, args, floats=False):
        """The arguments as arrays of the traced shapes and the tape's dtype.  ``floats``: a
        scalar graph's Python float arguments come back as they are (``_load`` takes them)."""
        if len(args) != len(self.arg_shapes):
            raise TypeError(f"{self.__name__} was traced with {len(self.arg_shapes)} "
                            f"argument(s), got {len(args)}")
        if floats and self._takes_floats and all(type(a) is float for a in args):
            return args
        out = []
        for a, name, shape, dtype in zip(args, self.arg_names, self.arg_shapes, self.arg_dtypes):
            if isinstance(a, Tensor):
                a = a._data
            arr = np.asarray(a)
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"argument {name}: expected a numeric array, got dtype "
                                 f"{arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"argument {name}: expected shape {shape}, got {arr.shape} "
                                 "(the trace is for fixed shapes; trace again for new ones)")
            if arr.dtype.kind == "f" and arr.dtype != dtype:
                raise ValueError(f"argument {name}: expected dtype {dtype}, got {arr.dtype}")
            out.append(arr)
        return out

    def _buffers(self):
        """This thread's value buffer (as a one-chunk typed list) and adjoint buffer."""
        loc = self._local
        if getattr(loc, "buf", None) is None:
            # constants sit in the buffer from here on: sweeps never write a leaf's slot
            loc.buf = self._init.copy()
            loc.chunks = chunk_list(loc.buf)
            loc.adj = np.zeros(self._total + 1, dtype=self.dtype)
        return loc.buf, loc.chunks, loc.adj

    def _held(self):
        """This thread's ``_hold`` of the tape, plan and buffers (made once, as the buffers)."""
        loc = self._local
        held = getattr(loc, "held", None)
        if held is None:
            buf, chunks, adj = self._buffers()
            held = loc.held = _hold(self._t, chunks, buf, adj, self._adj_off, self._plan,
                                    self._zero_ranges)
        return held

    def _forward(self, arrs, fused=False):
        """Values at ``arrs``.  ``fused`` sweeps elementwise runs fused, which writes only the
        values read outside them: fine for value, grad and vjp (whose reverse is fused too),
        not for sweeps that read every node (jacobian, jvp, hvp)."""
        buf, chunks, adj = self._buffers()
        fused = fused and not anomaly.is_anomaly_enabled()  # per-node values for the check
        self._load(arrs, buf)
        if fused and self._compiled():
            self._run_forward(self._held(), buf, {})
        elif fused:
            replay_forward(self._t, chunks, buf, self._plan, PAR_MIN, numba.get_num_threads())
        else:
            forward_sweep(self._t, chunks, 0, len(self._t.opcodes), PAR_MIN)
        anomaly.check_forward(self._t, buf)  # only inside ng.detect_anomaly()
        self._check_guards(buf)
        return buf, chunks, adj

    def _load(self, arrs, buf, skip=()):
        """Write the arguments into their leaf slots (but those of the nodes in ``skip``)."""
        if self._scalar_args:
            buf[self._small_io[0]] = arrs
            return
        if self._small_io is not None:
            buf[self._small_io[0]] = np.concatenate([arr.reshape(-1) for arr in arrs])
            return
        for arr, nodes in zip(arrs, self._in_nodes):
            flat = arr.reshape(-1)
            for k in nodes:
                if k in skip:
                    continue
                o = self._t.val_off[k]
                buf[o:o + flat.size] = flat

    def _check_guards(self, buf):
        for i, (k, kind, recorded, how) in enumerate(self._guards):
            o = self._t.val_off[k]
            if kind >= GUARD_CMP:  # an item() value only compared: the outcome must hold
                now = buf[o:o + 1]
                if _CMP[kind - GUARD_CMP](float(now[0]), recorded[1]) == bool(recorded[2]):
                    continue
                raise GuardError(
                    f"guard {i} of {self.__name__}: {how} of node {k} ({self.tape.name(k)}) "
                    f"was {bool(recorded[2])} when traced (at {_show(recorded[0])}) and is "
                    f"{not recorded[2]} here (at {_show(now)}), so f takes another path; trace "
                    f"again at these arguments (ng.value_and_grad does)")
            now = buf[o:o + recorded.size]
            same = bool(now.any()) == bool(recorded.any()) if kind == GUARD_TRUTH else \
                np.array_equal(now, recorded)
            if not same:
                raise GuardError(
                    f"guard {i} of {self.__name__}: {how} of node {k} ({self.tape.name(k)}) read "
                    f"{_show(recorded)} when traced and is {_show(now)} here, so f may take "
                    f"another path; trace again at these arguments (ng.value_and_grad does)")

    def _value(self, buf):
        o = self._t.val_off[self._out_node]
        v = buf[o:o + self._out_size]
        if not self.out_shape:
            return float(v[0])
        return v.reshape(self.out_shape).copy()

    def _reverse(self, chunks, adj, seed, fused=False):
        fused = fused and not anomaly.is_anomaly_enabled()  # as in _forward
        compiled = fused and self._compiled()
        if fused:
            # the fused sweeps never read a segment-internal node's slot: zero only the rest
            for a, b in (self._cg_zero if compiled else self._zero_ranges):
                adj[a:b] = 0
        else:
            adj[:] = 0
        o = self._adj_off[self._out_node]
        if o < 0:  # the output does not depend on any argument: zeros
            return self._collect(adj)
        adj[o:o + self._out_size] = seed
        if compiled:
            self._run_reverse(self._held(), self._local.buf, adj, {}, {})
        elif fused:
            replay_reverse(self._t, chunks, adj, self._adj_off, self._plan,
                           self._out_node, PAR_MIN, numba.get_num_threads())
        else:
            reverse_sweep(self._t, chunks, adj, self._adj_off, self._out_node, PAR_MIN, 0)
        anomaly.check_reverse(self._t, adj, self._adj_off, self._out_node)
        return self._collect(adj)

    def _collect(self, adj, skip=()):
        """The gradients, one array per argument, from a swept adjoint buffer (None for the
        arguments in ``skip``)."""
        if self._adj_off[self._out_node] < 0:  # the output does not depend on any argument
            return [np.zeros(s, dtype=d) for s, d in zip(self.arg_shapes, self.arg_dtypes)]
        if self._scalar_args:
            flat = adj[self._small_io[1]]
            return [flat[i, ...] for i in range(len(flat))]  # 0-d arrays
        if self._small_io is not None:
            flat, at = adj[self._small_io[1]], self._small_io[2]
            return [flat[at[i]:at[i + 1]].reshape(s) for i, s in enumerate(self.arg_shapes)]
        grads = []
        for i, (s, d, offs) in enumerate(zip(self.arg_shapes, self.arg_dtypes, self._in_adj)):
            if i in skip:
                grads.append(None)
            elif len(offs) == 1:  # one pass (a copy) instead of zeros and an add
                a = offs[0]
                grads.append(adj[a:a + self._arg_sizes[i]].reshape(s).astype(d))
            else:
                g = np.zeros(s, dtype=d)
                for a in offs:
                    g += adj[a:a + g.size].reshape(s)
                grads.append(g)
        return grads

    @staticmethod
    def _pack(grads):
        return grads[0] if len(grads) == 1 else tuple(grads)

    def __call__(self, *args):
        """The value of ``f`` at ``args`` (an ndarray, or a float for a 0-d output)."""
        buf, _, _ = self._forward(self._check(args), fused=True)
        return self._value(buf)

    def value_and_grad(self, *args, out=None):
        """``(f(*args), grad(*args))`` from one forward and one reverse sweep.  ``out``: arrays
        shaped like the arguments (a tuple for several) that receive the gradient and are
        returned, as NumPy's ``out=`` (large gradients then cost no allocation).

        >>> import numpy as np, numbagrad as ng
        >>> ng.trace(lambda x: (x ** 3).sum(), np.ones(2)).value_and_grad(np.array([1.0, 2.0]))
        (9.0, array([ 3., 12.]))
        """
        if self._out_size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs; use vjp "
                               "or jacobian")
        arrs = self._check(args, floats=True)
        outs = self._check_out(out)
        if anomaly.is_anomaly_enabled():  # the unfused sweeps, with per-node checks
            buf, chunks, adj = self._forward(arrs, fused=True)
            grads = self._reverse(chunks, adj, 1.0, fused=True)
        elif self._compiled():
            buf, grads = self._compiled_value_and_grad(arrs, outs)
        elif self._scalar_segs is not None:
            buf, chunks, adj = self._buffers()
            self._load(arrs, buf)
            _scalar_value_and_grad(self._plan.prog, self._plan.pc, buf, adj, self._zero_ranges,
                                   self._scalar_segs, self._adj_off[self._out_node])
            self._check_guards(buf)
            grads = self._collect(adj)
        else:
            buf, chunks, adj = self._buffers()
            self._load(arrs, buf)
            _replay_value_and_grad(self._held(), self._out_node, PAR_MIN,
                                   numba.get_num_threads())
            self._check_guards(buf)
            grads = self._collect(adj)
        if outs is not None:
            for o, g in zip(outs, grads):
                if g is not o:
                    o[...] = g
            grads = outs
        value = self._value(buf)
        if not isinstance(value, float):
            value = value.reshape(()).item() if value.size == 1 else value
        return value, self._pack(grads)

    def grad(self, *args, out=None):
        """The gradient of a scalar ``f`` at ``args``: an ndarray per argument (a tuple for
        several); ``out`` as in ``value_and_grad``.

        >>> import numpy as np, numbagrad as ng
        >>> ng.trace(lambda x: (x * x).sum(), np.ones(2)).grad(np.array([1.0, -1.0]))
        array([ 2., -2.])
        """
        return self.value_and_grad(*args, out=out)[1]

    def _check_out(self, out, jacobian=False, batch=None):
        """``out`` as a list of one writable array per argument (shaped as the argument, as
        the output's shape followed by the argument's for a ``jacobian``, or as ``(batch,)``
        followed by it for ``grad_batch``), or None."""
        if out is None:
            return None
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(self.arg_shapes):
            raise ValueError(f"out: expected {len(self.arg_shapes)} array(s), one per argument, "
                             f"got {len(outs)}")
        for o, name, shape, dtype in zip(outs, self.arg_names, self.arg_shapes, self.arg_dtypes):
            shape = self.out_shape + shape if jacobian else shape
            shape = shape if batch is None else (batch,) + shape
            if not isinstance(o, np.ndarray) or o.shape != shape or o.dtype != dtype \
                    or not o.flags.writeable:
                got = f"{o.dtype}{list(o.shape)}" if isinstance(o, np.ndarray) else type(o).__name__
                raise ValueError(f"out for {name}: expected a writable {dtype} array of shape "
                                 f"{shape}, got {got}")
        return outs

    # ------------------------------------------------------------ compiled segments

    def _compiled(self):
        """{segment index: codegen.Segment} for the segments compiled to straight loops: those
        of at least ``codegen.MIN_ELEMENTS`` elements (``codegen=True``: all but one-element
        ones; ``False``: none).  Made on first use; empty when none qualifies."""
        if self._segments is None:
            segs = {}
            if self.codegen is not False:
                least = 2 if self.codegen else codegen.MIN_ELEMENTS
                p = self._plan
                for s, (a, b) in enumerate(zip(p.seg_start.tolist(), p.seg_stop.tolist())):
                    if self._t.sizes[a] >= least:
                        segs[s] = codegen.Segment(self._t, p.ext, self._adj_off, a, b,
                                                  self.dtype)
            if segs:
                self._plan_compiled(segs)
            self._segments = segs
        return self._segments

    def _plan_compiled(self, segs):
        """What a replay through compiled segments reads, skips and writes where."""
        t, p, adj_off = self._t, self._plan, self._adj_off
        n = len(t.opcodes)
        last = len(p.seg_start) - 1
        # the last segment, closed by a SUM/MEAN that is the output: forward and reverse in one
        # pass (the closing seed is known before its forward has run)
        self._cg_final = last if last in segs and segs[last].closing >= 0 \
            and segs[last].stop == n and self._out_node == n - 1 else -1
        # adjoints a segment assigns (codegen.Segment.assigned) need no zeroing
        # (only in segments every reverse sweeps whole: a segment past the output is left to the
        # interpreter, which adds)
        assigned = np.zeros(n, dtype=bool)
        for seg in segs.values():
            if seg.stop - 1 <= self._out_node:
                assigned[list(seg.assigned)] = True
        # arguments read straight from the caller's array (every reader a compiled segment) and
        # gradients written straight into the returned array (every reader in one compiled
        # segment that the reverse sweeps whole): (node, whether the segment assigns it)
        consumers = codegen.consumers_of(t)
        home = np.full(n, -1, dtype=np.int64)
        for s, seg in segs.items():
            home[seg.start:seg.stop] = s
        guarded = {g[0] for g in self._guards} | {self._out_node}
        self._cg_in, self._cg_out = {}, {}
        for i, ns in enumerate(self._in_nodes):
            if len(ns) != 1 or self.arg_dtypes[i] != self.dtype or self._small_io is not None:
                continue
            k = ns[0]
            users = home[consumers[t.args == k]]
            if len(users) == 0 or (users < 0).any() or t.sizes[k] < 2:
                continue
            if k not in guarded:
                self._cg_in[i] = k
            s = int(users[0])
            if (users == s).all() and adj_off[k] >= 0 and segs[s].stop - 1 <= self._out_node:
                self._cg_out[i] = (k, bool(assigned[k]))
        out_nodes = np.zeros(n, dtype=bool)
        out_nodes[[k for k, _ in self._cg_out.values()]] = True
        # arguments whose one reader is a matrix product (a layer's weights): read through a
        # chunk of their own (the caller's array), and their gradient assigned into the
        # returned array by one gemm once the reverse sweep is done (_matmul_grad_into): no
        # copy in, no zeroing, no copy out, which was a tenth of an MLP's replay (W4)
        self._mm_direct = {}  # argument -> (node, matrix product, operand side)
        for i, ns in enumerate(self._in_nodes):
            if i in self._cg_in or i in self._cg_out or len(ns) != 1 \
                    or self.arg_dtypes[i] != self.dtype or self._small_io is not None:
                continue
            k = ns[0]
            readers = consumers[t.args == k]
            if k in guarded or adj_off[k] < 0 or len(readers) != 1:
                continue
            m = int(readers[0])
            if t.opcodes[m] == MATMUL and t.iparams[t.iparam_ptr[m]] == 1 and home[m] < 0 \
                    and adj_off[m] >= 0 and m <= self._out_node:
                self._mm_direct[i] = (k, m, 0 if t.args[t.arg_ptr[m]] == k else 1)
        if self._mm_direct:
            val_chunk, val_off, mm_adj_off = t.val_chunk.copy(), t.val_off.copy(), adj_off.copy()
            for j, (k, _, _) in enumerate(self._mm_direct.values()):
                val_chunk[k], val_off[k] = 1 + j, 0  # chunk 0 is the value buffer
                mm_adj_off[k] = -1  # the sweeps leave its adjoint to _matmul_grad_into
                out_nodes[k] = True
            self._mm_t = t._replace(val_chunk=val_chunk, val_off=val_off)
            self._mm_adj_off = mm_adj_off
        self._cg_zero = self._ranges(np.flatnonzero((adj_off >= 0) & (p.ext != 1) & ~assigned))
        self._cg_zero_vg = np.array(self._ranges(
            np.flatnonzero((adj_off >= 0) & (p.ext != 1) & ~assigned & ~out_nodes)),
            dtype=np.int64).reshape(-1, 2)  # (lo, hi) rows

    def _ranges(self, nodes):
        """The adjoint slots of ``nodes`` as merged (lo, hi) ranges."""
        lo = self._adj_off[nodes]
        ranges = []
        for a, b in sorted(zip(lo.tolist(), (lo + self._t.sizes[nodes]).tolist())):
            if ranges and ranges[-1][1] == a:
                ranges[-1][1] = b
            else:
                ranges.append([a, b])
        return ranges

    def _slots(self, seg, buf, adj, direct, gout):
        """The arrays and offsets a compiled segment's input and adjoint slots use (all None
        where they are the segment's own: its slots in ``buf`` and ``adj``)."""
        if not direct and not gout:
            return None, None, None, None
        XS, xo, TS, to = [], [], [], []
        for (k, shift), off in zip(seg.inputs, seg.x_off):
            a = direct.get(k)
            XS.append(buf if a is None else a)
            xo.append(off if a is None else shift)
        for (k, shift), off in zip(seg.targets, seg.t_off):
            g = gout.get(k)
            TS.append(adj if g is None else g)
            to.append(off if g is None else shift)
        return tuple(XS) or (buf,), xo, tuple(TS) or (adj,), to

    def _run_forward(self, held, buf, direct, skip_final=False):
        """replay_forward with the compiled segments run by their own kernels; ``held``: the
        tape and chunks the interpreted ops read (``_held``, or ``_mm_held`` when arguments
        have chunks of their own)."""
        segs = self._segments
        nt = numba.get_num_threads()
        i = 0
        for s, (a, b) in enumerate(self._seg_bounds):
            if i < a:
                _held_forward(held, i, a, PAR_MIN)
            seg = segs.get(s)
            if seg is None:
                _held_segment_forward(held, a, b, PAR_MIN, nt)
            elif not (skip_final and s == self._cg_final):
                XS, xo, _, _ = self._slots(seg, buf, buf, direct, {})
                seg.forward(buf, nt, XS, xo)
            i = b
        if i < len(self._t.opcodes):
            _held_forward(held, i, len(self._t.opcodes), PAR_MIN)

    def _run_reverse(self, held, buf, adj, direct, gout, final=False):
        """replay_reverse with the compiled segments run by their own kernels; ``final``: the
        last segment's forward was left to this pass (``_run_forward(skip_final=True)``);
        ``held``: as in ``_run_forward``, with the adjoint offsets the interpreted ops use."""
        segs = self._segments
        nt = numba.get_num_threads()
        hi = self._out_node
        for s in range(len(self._seg_bounds) - 1, -1, -1):
            a, b = self._seg_bounds[s]
            if a > hi:
                continue
            if b - 1 < hi:
                _held_reverse(held, hi, PAR_MIN, b)
            seg = segs.get(s)
            if seg is None or b - 1 > hi:  # only part of it is reached: the interpreter
                _held_segment_reverse(held, a, min(b, hi + 1), PAR_MIN, nt)
            else:
                XS, xo, TS, to = self._slots(seg, buf, adj, direct, gout)
                if final and s == self._cg_final:
                    seg.value_and_grad(buf, adj, seg.closing_seed(adj), nt, XS, xo, TS, to)
                else:
                    seg.reverse(buf, adj, seg.closing_seed(adj), nt, XS, xo, TS, to)
            hi = a - 1
        if hi >= 0:
            _held_reverse(held, hi, PAR_MIN, 0)

    def _mm_held(self, arrs, buf, adj):
        """``_held`` with the tape and chunks that read the value buffer, then the arguments
        read in place by their matrix product (``_mm_direct``).  A thread keeps the last one
        with the arrays in it: a training loop passes the same weight arrays every step, and
        building the chunk list took 17-22 us of W4's replay."""
        loc = self._local
        own = [arrs[i] for i in self._mm_direct]
        last = getattr(loc, "mm_args", None)
        if last is not None and all(a is b and a.flags.writeable for a, b in zip(own, last)):
            return loc.mm_held
        mm_chunks = chunk_list(buf)
        in_place = True
        for a in own:
            if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
                a = np.array(a, order="C")  # a typed list holds writable C arrays only
                in_place = False
            append_chunk(mm_chunks, a.reshape(-1))
        # a copy is not kept: the next call's values may differ
        loc.mm_args = own if in_place else None
        loc.mm_held = _hold(self._mm_t, mm_chunks, buf, adj, self._mm_adj_off, self._plan,
                            self._zero_ranges)
        return loc.mm_held

    def _compiled_value_and_grad(self, arrs, outs):
        """value_and_grad through compiled segments: arguments read in place where only
        compiled segments read them, gradients assigned into their output arrays where one
        segment writes them all, and the last segment's two passes made one."""
        buf, chunks, adj = self._buffers()
        direct = {}
        for i, k in self._cg_in.items():
            a = arrs[i]
            if a.dtype == self.dtype and a.flags.c_contiguous and a.flags.aligned \
                    and a.flags.writeable:
                direct[k] = a.reshape(-1)
        held = self._mm_held(arrs, buf, adj) if self._mm_direct else self._held()
        self._load(arrs, buf, skip=direct.keys() | {k for k, _, _ in self._mm_direct.values()})
        gout, grads = {}, {}
        for i, (k, assigned) in self._cg_out.items():
            g = outs[i] if outs is not None and outs[i].flags.c_contiguous else \
                np.empty(self.arg_shapes[i], dtype=self.dtype)
            flat = g.reshape(-1)
            if not assigned:  # the segment adds into it
                if flat.size >= codegen.PAR_MIN and numba.get_num_threads() > 1:
                    codegen.zero_fill(flat, numba.get_num_threads())
                else:
                    flat[:] = 0
            gout[k], grads[i] = flat, g
        o = self._adj_off[self._out_node]
        final = self._cg_final >= 0 and o >= 0
        self._run_forward(held, buf, direct, skip_final=final)
        if o < 0:  # the output does not depend on any argument
            self._check_guards(buf)
            return buf, self._collect(adj)
        _held_seed(held, self._cg_zero_vg, o)
        self._run_reverse(held, buf, adj, direct, gout, final=final)
        for i, (k, m, side) in self._mm_direct.items():
            g = outs[i] if outs is not None and outs[i].flags.c_contiguous else \
                np.empty(self.arg_shapes[i], dtype=self.dtype)
            _matmul_grad_into(held, m, side, g.reshape(-1))
            grads[i] = g
        self._check_guards(buf)  # guarded values of the last segment are known only now
        rest = self._collect(adj, skip=grads)
        return buf, [grads.get(i, g) for i, g in enumerate(rest)]

    def vjp(self, args, v):
        """The vector-Jacobian product ``v^T J`` at ``args`` (a tuple), ``v`` shaped like the
        output; a tuple with one array per argument.

        >>> import numpy as np, numbagrad as ng
        >>> f = ng.trace(lambda x: x * x, np.ones(2))
        >>> f.vjp((np.array([1.0, 2.0]),), np.array([1.0, 10.0]))
        (array([ 2., 40.]),)
        """
        if not isinstance(args, (tuple, list)):
            args = (args,)
        v = np.asarray(v._data if isinstance(v, Tensor) else v)
        if v.shape != self.out_shape:
            raise ValueError(f"v: expected the output's shape {self.out_shape}, got {v.shape}")
        if v.dtype.kind not in "biuf" or np.isnan(v).any():
            raise ValueError(f"v: expected finite-or-inf numbers (no NaN), got {_show(v)}")
        _, chunks, adj = self._forward(self._check(args), fused=True)
        return tuple(self._reverse(chunks, adj, v.reshape(-1), fused=True))

    # ------------------------------------------------------------ forward mode and curvature

    def _tangents(self, arrs, ts):
        """Forward values, then tangents seeded with ``ts`` (one per argument)."""
        buf, chunks, adj = self._forward(arrs)
        seeds = np.array([k for ns in self._in_nodes for k in ns], dtype=np.int64)
        tan_off, total = plan_tangents(self._t, seeds, self._out_node + 1)
        tan = np.zeros(max(int(total), 1), dtype=self.dtype)
        for t_, ns in zip(ts, self._in_nodes):
            flat = np.asarray(t_, dtype=self.dtype).reshape(-1)
            for k in ns:
                tan[tan_off[k]:tan_off[k] + flat.size] = flat
        tangent_sweep(self._t, chunks, tan, tan_off, 0, self._out_node + 1, PAR_MIN)
        return buf, chunks, adj, tan, tan_off

    def _tangent_args(self, args, t):
        if not isinstance(args, (tuple, list)):
            args = (args,)
        if not isinstance(t, (tuple, list)):
            t = (t,)
        arrs = self._check(args)
        if len(t) != len(arrs):
            raise ValueError(f"expected {len(arrs)} tangent(s), got {len(t)}")
        ts = []
        for ti, a, name in zip(t, arrs, self.arg_names):
            ti = np.asarray(ti._data if isinstance(ti, Tensor) else ti)
            if ti.shape != a.shape:
                raise ValueError(f"tangent for {name}: expected shape {a.shape}, got {ti.shape}")
            if ti.dtype.kind not in "biuf" or np.isnan(ti).any():
                raise ValueError(f"tangent for {name}: expected numbers without NaN, got "
                                 f"{_show(ti)}")
            ts.append(ti)
        return arrs, ts

    def jvp(self, args, t):
        """``(f(args), J t)``: the Jacobian-vector product by one forward tangent sweep.

        >>> import numpy as np, numbagrad as ng
        >>> f = ng.trace(lambda x: x * x, np.ones(2))
        >>> f.jvp((np.array([1.0, 2.0]),), (np.array([1.0, 1.0]),))
        (array([1., 4.]), array([2., 4.]))
        """
        arrs, ts = self._tangent_args(args, t)
        buf, _, _, tan, tan_off = self._tangents(arrs, ts)
        o = tan_off[self._out_node]
        jt = np.zeros(self.out_shape, dtype=self.dtype) if o < 0 else \
            tan[o:o + self._out_size].reshape(self.out_shape).copy()
        value = self._value(buf)
        return value, (float(jt) if not self.out_shape else jt)

    def hvp(self, args, v):
        """The Hessian-vector product ``H v`` of a scalar ``f`` at ``args``: forward-over-reverse
        on the tape (a tangent sweep, a reverse sweep and their product), no finite differences.

        >>> import numpy as np, numbagrad as ng
        >>> f = ng.trace(lambda x: (x ** 3).sum(), np.ones(2))
        >>> f.hvp((np.array([1.0, 2.0]),), (np.array([1.0, 0.0]),))
        array([6., 0.])
        """
        if self._out_size != 1:
            raise RuntimeError("hvp needs a scalar output")
        arrs, vs = self._tangent_args(args, v)
        return self._pack(self._hvp(arrs, vs))

    def _hvp(self, arrs, vs):
        buf, chunks, adj, tan, tan_off = self._tangents(arrs, vs)
        adj[:] = 0
        out = [np.zeros(s, dtype=self.dtype) for s in self.arg_shapes]
        o = self._adj_off[self._out_node]
        if o < 0:
            return out
        adj[o] = 1.0
        reverse_sweep(self._t, chunks, adj, self._adj_off, self._out_node, PAR_MIN, 0)
        anomaly.check_reverse(self._t, adj, self._adj_off, self._out_node)
        adjdot = np.zeros_like(adj)
        hvp_sweep(self._t, chunks, tan, tan_off, adj, adjdot, self._adj_off, self._out_node,
                  PAR_MIN)
        for g, offs in zip(out, self._in_adj):
            for a in offs:
                g += adjdot[a:a + g.size].reshape(g.shape)
        return [g.astype(d, copy=False) for g, d in zip(out, self.arg_dtypes)]

    def hessian(self, *args):
        """The Hessian of a scalar ``f`` of one argument: shape ``arg.shape * 2``, one
        Hessian-vector product per column.

        >>> import numpy as np, numbagrad as ng
        >>> ng.trace(lambda x: (x[0] * x[1]) ** 2, np.ones(2)).hessian(np.array([1.0, 2.0]))
        array([[8., 8.],
               [8., 2.]])
        """
        if len(args) != 1:
            raise TypeError("hessian takes one argument; use hvp for several")
        arrs = self._check(args)
        shape = arrs[0].shape
        n = int(np.prod(shape, dtype=np.int64))
        H = np.zeros((n, n), dtype=self.dtype)
        e = np.zeros(n, dtype=self.dtype)
        for j in range(n):
            e[:] = 0
            e[j] = 1
            H[:, j] = self._hvp(arrs, [e.reshape(shape)])[0].reshape(-1)
        return H.reshape(shape + shape)

    def jacobian(self, *args, out=None):
        """The Jacobian at ``args``: shape ``out.shape + arg.shape`` (a tuple for several
        arguments).  One forward sweep, then one reverse sweep per output element, in parallel.
        ``out`` (an array, or a tuple of one per argument) receives it instead of fresh arrays,
        as NumPy's ``out=``: a fresh Jacobian costs its page faults.

        >>> import numpy as np, numbagrad as ng
        >>> ng.trace(lambda x: x * x, np.ones(2)).jacobian(np.array([1.0, 2.0]))
        array([[2., 0.],
               [0., 4.]])
        """
        arrs = self._check(args)
        outs = self._check_out(out, jacobian=True)
        buf, chunks, adj = self._forward(arrs)
        m = self._out_size
        cols, spans, covered = self._jacobian_layout()
        inplace = outs is not None and len(outs) == 1 and outs[0].dtype == self.dtype \
            and outs[0].flags.c_contiguous
        if inplace:
            jac = outs[0].reshape(m, int(cols[-1]))  # written in place (a view)
            if not covered or self._adj_off[self._out_node] < 0:
                jac[...] = 0
        else:
            jac = np.zeros((m, int(cols[-1])), dtype=self.dtype)
        if m < PARALLEL_ROWS:
            # a few rows: starting a parallel region costs more than the sweeps themselves
            seed = np.zeros(m, dtype=self.dtype)
            for r in range(m):
                seed[:] = 0
                seed[r] = 1
                grads = self._reverse(chunks, adj, seed)
                for i, g in enumerate(grads):
                    jac[r, cols[i]:cols[i + 1]] = g.reshape(-1)
        elif self._adj_off[self._out_node] >= 0:
            # the rows only read the values, so they share this thread's buffer
            # the rows run on threads, where no kernel can be compiled on demand
            dispatch.ensure(self._t.opcodes, (dispatch.VJP,), self._dtype_index())
            _jacobian_rows(self._t, chunks, self._adj_off, self._total, self._out_node, spans,
                           jac, _nblocks(m))
        if inplace:
            return self._pack(outs)
        result = []
        for i, (s, d) in enumerate(zip(self.arg_shapes, self.arg_dtypes)):
            part = jac[:, cols[i]:cols[i + 1]].reshape(self.out_shape + s)
            if outs is not None:
                outs[i][...] = part
                result.append(outs[i])
            else:  # one argument: its Jacobian is the whole array, returned without a copy
                result.append(part.astype(d, copy=len(arrs) > 1))
        return self._pack(result)

    def _jacobian_layout(self):
        """``(cols, spans, covered)``: each argument's first column in the Jacobian (and the
        total); the spans that write its leaves' adjoints there (see ``_jacobian_rows``: the
        first span of an argument assigns, later ones add); whether every argument has one,
        so that the rows write every column.  Built once."""
        if self._jac_layout is None:
            widths = [int(np.prod(s, dtype=np.int64)) for s in self.arg_shapes]
            cols = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
            spans = [(a, cols[i], widths[i], int(j > 0))
                     for i in range(len(widths)) for j, a in enumerate(self._in_adj[i])]
            self._jac_layout = (cols, np.array(spans, dtype=np.int64).reshape(-1, 4),
                                all(len(a) for a in self._in_adj))
        return self._jac_layout

    def grad_batch(self, X, out=None):
        """Gradients of a scalar one-argument ``f`` at each row of ``X`` (shape ``(B,) +
        arg.shape``), rows in parallel; returns an array shaped like ``X``, or writes into
        ``out`` (shaped like ``X``, the argument's dtype) and returns it, as ``grad(out=)``.

        >>> import numpy as np, numbagrad as ng
        >>> f = ng.trace(lambda x: (x * x).sum(), np.ones(2))
        >>> f.grad_batch(np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([[2., 4.],
               [6., 8.]])
        """
        return self.value_and_grad_batch(X, out=out)[1]

    def value_and_grad_batch(self, X, out=None):
        """``(values, grads)`` of a scalar one-argument ``f`` at each row of ``X``; ``out`` as
        in ``grad_batch``."""
        if len(self.arg_shapes) != 1:
            raise TypeError("grad_batch is for functions of one argument")
        if self._out_size != 1:
            raise RuntimeError("grad_batch needs a scalar output")
        X = np.asarray(X._data if isinstance(X, Tensor) else X)
        shape, name = self.arg_shapes[0], self.arg_names[0]
        if X.ndim != len(shape) + 1 or X.shape[1:] != shape:
            raise ValueError(f"argument {name}: expected a batch of shape (B,) + {shape}, got "
                             f"{X.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"argument {name}: expected a numeric array, got dtype {X.dtype}")
        if X.dtype.kind == "f" and X.dtype != self.arg_dtypes[0]:
            raise ValueError(f"argument {name}: expected dtype {self.arg_dtypes[0]}, got "
                             f"{X.dtype}")
        B = X.shape[0]
        out = self._check_out(out, batch=B)
        w = int(np.prod(shape, dtype=np.int64))
        X2 = np.ascontiguousarray(X.reshape(B, w), dtype=self.dtype)
        if not X2.flags.writeable:  # a read-only array is another Numba type: one more compile
            X2 = X2.copy()
        vals = np.zeros(B, dtype=self.dtype)
        kernel = B >= PARALLEL_ROWS and self._batch_kernel(B) is not None
        # only _batch_rows adds into zeros: the row loop assigns every row, and the batch
        # kernel clears each row itself, in cache
        adds = B >= PARALLEL_ROWS and not kernel
        in_place = out is not None and out[0].dtype == self.dtype and out[0].flags.c_contiguous
        if in_place:
            grads = out[0].reshape(B, w)
            if adds:
                grads[...] = 0
        else:
            grads = (np.zeros if adds else np.empty)((B, w), dtype=self.dtype)
        if 0 < B < PARALLEL_ROWS:
            for r in range(B):
                v, g = self.value_and_grad(X[r])
                vals[r] = v
                grads[r] = g.reshape(-1)
        elif kernel:
            seg = self._batch_segment
            k = self._in_nodes[0][0]
            shifts = {j: sh for j, (a, sh) in enumerate(seg.inputs) if a == k}
            g_tail = 1.0 / seg.closing_count if seg.closing == MEAN else 1.0
            seg.value_and_grad_batch(X2, grads, vals, self._init, g_tail, shifts)
        elif B:
            in_off = np.array([self._t.val_off[k] for k in self._in_nodes[0]], dtype=np.int64)
            dispatch.ensure(self._t.opcodes, (dispatch.FWD, dispatch.VJP), self._dtype_index())
            _batch_rows(self._t, self._init, X2, in_off, self._adj_off, self._total,
                        self._out_node, self._jacobian_layout()[1], vals, grads, _nblocks(B))
        if out is not None:
            if not in_place:
                out[0][...] = grads.reshape(X.shape)
            return vals, out[0]
        return vals, grads.reshape(X.shape).astype(self.arg_dtypes[0], copy=False)

    def _batch_kernel(self, B):
        """The compiled segment that sweeps whole rows of a batch (``codegen.Segment.batch``):
        for a graph that is one elementwise run over the argument and constants, closed by a
        SUM/MEAN that is the output, when the batch has at least ``codegen.MIN_ELEMENTS``
        elements (``codegen=True``: any batch).  None otherwise."""
        if self._batch_segment is None:
            seg, t, p = False, self._t, self._plan
            n = len(t.opcodes)
            if self.codegen is not False and not anomaly.is_anomaly_enabled() \
                    and len(self._in_nodes[0]) == 1 and len(p.seg_start) \
                    and int(p.seg_stop[-1]) == n and self._out_node == n - 1 \
                    and t.opcodes[n - 1] in (SUM, MEAN) and t.sizes[p.seg_start[-1]] > 1 \
                    and (t.opcodes[:p.seg_start[-1]] == LEAF).all():
                seg = codegen.Segment(t, p.ext, self._adj_off, int(p.seg_start[-1]), n,
                                      self.dtype, batch_node=self._in_nodes[0][0])
                seg = seg if seg.batch else False
            self._batch_segment = seg
        seg = self._batch_segment
        if not seg or anomaly.is_anomaly_enabled() or \
                (not self.codegen and B * seg.n < codegen.MIN_ELEMENTS):
            return None
        return seg

    def _dtype_index(self):
        """The index in ``dispatch.DTYPES`` of the values' dtype."""
        return dispatch.DTYPES.index(self._init.dtype.type)

    def numba(self):
        """A handle for calling this function's derivatives from inside ``@njit`` code
        (``numbagrad/innumba.py``): ``h.grad_into(x, out)``, ``value``, ``vjp_into``,
        ``jvp_into``, ``hvp_into``, ``copy``; ``x`` is the arguments flattened and concatenated.

        >>> import numpy as np, numbagrad as ng
        >>> h = ng.trace(lambda x: (x * x).sum(), np.ones(2)).numba()
        >>> h.value(np.array([1.0, 2.0]))
        5.0
        """
        from .innumba import handle_for
        return handle_for(self)

    def __repr__(self):
        args = ", ".join(f"{n}: {d}{list(s)}" for n, s, d in
                         zip(self.arg_names, self.arg_shapes, self.arg_dtypes))
        return f"<Traced {self.__name__}({args}) -> {list(self.out_shape)}, {len(self.tape)} nodes>"


def trace(f, *example_args, check=True, codegen=None):
    """Record ``f`` once at ``example_args`` (ndarrays or numbers) for fast replay.

    Returns a ``Traced``: call it for the value, ``.grad``, ``.value_and_grad``, ``.vjp``,
    ``.jacobian`` and ``.grad_batch`` for derivatives; ``.tape`` shows the recording.  Arguments
    keep float32/float64; ints and Python numbers become float64.

    The replay recomputes recorded ops only: values ``f`` derives from its arguments without
    recording them (comparison masks, indices, ``.item()``, Python branches) keep their traced
    values.  With ``check=True`` ``f`` runs a second time at random arguments and a
    ``TraceWarning`` says when such a value or the recorded structure changed.

    Runs of elementwise ops over at least 65,536 elements are compiled into loops of their own
    on first use (``numbagrad/codegen.py``: about 5-10 s per kernel the first time on a
    machine, cached on disk after); ``codegen=False`` keeps them interpreted, ``True``
    compiles runs of any size.

    >>> import numpy as np, numbagrad as ng
    >>> rosen = ng.trace(lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
    ...                  np.zeros(3))
    >>> rosen.grad(np.ones(3))
    array([0., 0., 0.])
    """
    if not callable(f):
        raise TypeError(f"trace: f must be callable, got {type(f).__name__}")
    return Traced(f, *example_args, check=check, codegen=codegen)


def _key(a):
    """What a trace is specific to: an argument's shape and the dtype its leaf gets."""
    if isinstance(a, Tensor):
        a = a._data
    if isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64):
        return a.shape, a.dtype
    return np.shape(a), _example_array(a, "argument").dtype


def value_and_grad(f, argnums=0):
    """``f`` as a function returning ``(value, gradient)``, traced on the first call and
    replayed after (traced again when an argument's shape or dtype changes).  Plugs into
    ``scipy.optimize.minimize(fun, x0, jac=True)``.

    ``argnums`` (an int or a tuple) picks the arguments differentiated; the value is a float.

    >>> import numpy as np, numbagrad as ng
    >>> fg = ng.value_and_grad(lambda x: (x * x).sum())
    >>> fg(np.array([1.0, 2.0]))
    (5.0, array([2., 4.]))
    """
    single = isinstance(argnums, int)
    picks = (argnums,) if single else tuple(argnums)
    if not callable(f):
        raise TypeError(f"value_and_grad: f must be callable, got {type(f).__name__}")
    if not picks or not all(isinstance(i, int) and i >= 0 for i in picks):
        raise ValueError(f"argnums must be a non-negative int or a non-empty tuple of them, got "
                         f"{argnums!r}")
    cache = {}

    def fg(*args):
        if max(picks) >= len(args):
            raise ValueError(f"argnums {argnums!r} is out of range for {len(args)} argument(s)")
        key = tuple(_key(a) for a in args)
        traced = cache.get(key)
        if traced is None:
            traced = cache[key] = Traced(f, *args)
        try:
            value, grads = traced.value_and_grad(*args)
        except GuardError:  # f branches differently here: record it again at this point
            traced = cache[key] = Traced(f, *args, check=False)
            value, grads = traced.value_and_grad(*args)
        if len(args) == 1:
            grads = (grads,)
        chosen = tuple(grads[i] for i in picks)
        return float(value), (chosen[0] if single else chosen)

    fg.__name__ = getattr(f, "__name__", "value_and_grad")
    fg.__doc__ = f"value and gradient of {fg.__name__} (numbagrad.value_and_grad)"
    return fg
