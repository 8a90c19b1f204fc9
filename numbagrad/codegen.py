"""Large fused segments compiled to straight loops.

The block interpreter of ``fusion.py`` sweeps any segment with a fixed set of compiled
kernels, but each op still loads and stores a block of scratch: on W1 and W3 that is 10x
the cost of a hand-written loop that keeps every intermediate in a register.  For segments
of many elements a replay therefore writes the segment out as Python source, one line per
op calling the same rule functions (``ops.unary_f``, ``ops.binary_da``, ...) with the
opcode as a literal so that LLVM folds each call to its one line, and compiles it with
Numba: the loop a person would write by hand.

The source depends only on the segment's structure (opcodes, which operands are inside the
segment, single values or views, which nodes are read outside it, the dtype and the small
integer exponents); offsets and constants are arguments.  It is written to a file named by
its hash in the kernel directory (``NUMBAGRAD_KERNEL_DIR``, by default
``~/.cache/numbagrad/kernels``) and compiled there with ``cache=True``, so a later process,
or another trace of the same shape of graph, loads the machine code instead of compiling it
(5-10 s per kernel on a cold cache, about 0.1 s to load).

Nothing from the tape but integers reaches the source: opcodes select fixed templates and
every offset is read at run time from arrays the tape's validator has already checked.
"""
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading

import numpy as np
from numba import njit, prange

from .ops import (IEEE, PRANGE_ONLY, LEAF, GATHER, POW_C, ADD, SUM, MEAN, EXP, LOG, SIN, COS,
                  TAN, TANH, SIGMOID, RPOW_C, POW)
from .sweeps import PAR_MIN

# segments of at least this many elements are compiled (``ng.trace(..., codegen=...)``)
MIN_ELEMENTS = 1 << 16
VERSION = 5  # bump when the templates change: old kernel files are then never loaded
# a segment closed by a SUM/MEAN that computes a transcendental runs in blocks of this many
# elements: the loop stores the summed values into a block of scratch (so it vectorises) and a
# second loop adds them in order
SUM_BLOCK = 512
# a batch kernel whose gradient views of the row lie at most this far apart carries the row's
# pending adjoints in registers instead of adding into the row (see _source)
BATCH_WINDOW = 4

# the kernels inline ops.py's rules, and Numba re-validates a cached kernel against its own
# file only: a kernel's name carries ops.py's digest, so an edited rule means a new kernel
with open(os.path.join(os.path.dirname(__file__), "ops.py"), "rb") as _fh:
    _OPS_DIGEST = hashlib.sha1(_fh.read()).hexdigest()[:12]

_lock = threading.Lock()
_modules = {}


@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)
def zero_fill(a, nchunks):
    """a[:] = 0 in ``nchunks`` parallel chunks: a gradient that compiled loops add into is
    cleared at both cores' bandwidth (W3's 8 MB: 137 -> 45 us, a tenth of its replay)."""
    n = a.size
    for c in prange(nchunks):
        lo = c * n // nchunks
        hi = (c + 1) * n // nchunks
        s = a[lo:hi]
        for k in range(hi - lo):
            s[k] = 0.0


def kernel_dir():
    """Where generated kernel sources (and, next to them, Numba's caches) live."""
    d = os.environ.get("NUMBAGRAD_KERNEL_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "numbagrad", "kernels")
    try:
        os.makedirs(d, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else 0
    d = os.path.join(tempfile.gettempdir(), f"numbagrad-kernels-{uid}")
    os.makedirs(d, exist_ok=True)
    return d


def consumers_of(t):
    """For each entry of ``t.args``, the node that reads it."""
    return np.repeat(np.arange(len(t.opcodes)), np.diff(t.arg_ptr))


class Segment:
    """A fused segment (``fusion.plan_segments``) compiled to straight loops.

    Its kernels take ``XS``, a tuple of the arrays its vector inputs are read from (the value
    buffer, or an argument's own array), ``TS``, the arrays its adjoints are added into (the
    adjoint buffer, or a gradient's output array), the value and adjoint buffers themselves
    (single values, stored values, adjoints read in) and ``O``, every offset.
    ``inputs``/``targets`` say which node each slot of ``XS``/``TS`` stands for.
    """

    def __init__(self, t, ext, adj_off, start, stop, dtype, batch_node=-1):
        self.start, self.stop = start, stop
        self.n = int(t.sizes[start])
        self.dtype = np.dtype(dtype)
        opcodes = t.opcodes
        tail = stop - 1
        self.closing = int(opcodes[tail]) if opcodes[tail] in (SUM, MEAN) else -1
        last = tail if self.closing >= 0 else stop

        def operands(i):
            return [int(a) for a in t.args[t.arg_ptr[i]:t.arg_ptr[i + 1]]]

        def consts(i):
            c = [float(v) for v in t.consts[t.const_ptr[i]:t.const_ptr[i + 1]]]
            return c + [0.0] * (2 - len(c))

        nodes = [i for i in range(start, last) if opcodes[i] != LEAF and ext[i] > 0]
        inside = set(nodes)
        O, C = [], []                   # offsets and constants, read at run time
        inputs, targets = {}, {}        # (node, shift) -> slot of XS / TS
        one_in, one_tgt = {}, {}        # node -> index into O / slot of the sums
        src, tgt, cexpr = {}, {}, {}

        def slot(table, key):
            if key not in table:
                table[key] = len(table)
            return table[key]

        for i in nodes:
            op = int(opcodes[i])
            if op == GATHER:  # a contiguous view of an outside value (fusion._is_view)
                a = operands(i)[0]
                shift = int(t.iparams[t.iparam_ptr[i]])
                src[i, 0] = f"x{slot(inputs, (a, shift))}"
                tgt[i, 0] = None if adj_off[a] < 0 else ("v", slot(targets, (a, shift)))
                continue
            for r, a in enumerate(operands(i)[:2]):
                if a in inside:
                    src[i, r], tgt[i, r] = f"v{a}", None if adj_off[a] < 0 else ("g", a)
                elif t.sizes[a] == 1:
                    if a not in one_in:
                        one_in[a] = len(O)
                        O.append(int(t.val_off[a]))
                    src[i, r] = f"u{one_in[a]}"
                    tgt[i, r] = None if adj_off[a] < 0 else ("s", slot(one_tgt, a))
                else:
                    src[i, r] = f"x{slot(inputs, (a, 0))}"
                    tgt[i, r] = None if adj_off[a] < 0 else ("v", slot(targets, (a, 0)))
            c = consts(i)
            for r in range(2 if op < ADD else 0):  # binary rules take no constants
                if op == POW_C and r == 0 and c[0] in (0.0, 1.0, 2.0, 3.0):
                    cexpr[i, r] = repr(c[0])  # folded: x * x instead of pow()
                else:
                    cexpr[i, r] = f"c{len(C)}"
                    C.append(c[r])

        # a target all of whose node's consumers are in this segment, covering the node's whole
        # adjoint, and the node's only target here, is assigned (no zeroing, no read)
        consumers = consumers_of(t)
        sole = set()
        for (a, shift), j in targets.items():
            users = consumers[t.args == a]
            if shift == 0 and t.sizes[a] == self.n and all(start <= u < stop for u in users) \
                    and sum(1 for (b, _) in targets if b == a) == 1:
                sole.add(j)
        self.assigned = {a for (a, _), j in targets.items() if j in sole}
        # every target a view of one node whose adjoint only this segment writes, at shifts
        # within BATCH_WINDOW of each other (Rosenbrock's x[1:] and x[:-1]): the element loop
        # keeps the pending sums of the next few elements in registers and assigns each element
        # once, as the batch kernel does for a row, instead of adding into an adjoint cleared
        # by a pass of its own (W3 from memory: twice the hand-written loop's traffic); the
        # sums pending at each chunk's end are added after the parallel loop
        self.window = None
        nodes_hit = {a for (a, _) in targets}
        if len(nodes_hit) == 1 and not sole:
            a = next(iter(nodes_hit))
            shifts = [sh for (_, sh) in targets]
            if all(start <= u < stop for u in consumers[t.args == a]) \
                    and max(shifts) - min(shifts) <= BATCH_WINDOW:
                self.window = (min(shifts), max(shifts), len(O))
                O.append(int(t.sizes[a]))  # the adjoint's size: what no view reaches is cleared
                self.assigned = {a}

        x_off = [0] * len(inputs)
        for (a, shift), j in inputs.items():
            x_off[j] = len(O)
            O.append(int(t.val_off[a]) + shift)
        t_off = [0] * len(targets)
        for (a, shift), j in targets.items():
            t_off[j] = len(O)
            O.append(int(adj_off[a]) + shift)
        stored = {i: len(O) + k for k, i in enumerate(i for i in nodes if ext[i] == 2)}
        O.extend(int(t.val_off[i]) for i in stored)
        adj_in = {i: len(O) + k for k, i in enumerate(i for i in stored if adj_off[i] >= 0)}
        O.extend(int(adj_off[i]) for i in adj_in)
        closed = operands(tail)[0] if self.closing >= 0 else -1
        if self.closing >= 0:
            self.closing_count = consts(tail)[0]
            self.closing_off = int(t.val_off[tail])
            self.closing_adj = int(adj_off[tail])

        self.O = np.array(O, dtype=np.int64)
        self.C = np.array(C, dtype=dtype)
        self.inputs = sorted(inputs, key=inputs.get)      # slot j: (node, shift)
        self.targets = sorted(targets, key=targets.get)
        self.x_off = [int(self.O[k]) for k in x_off]      # default: in the value buffer
        self.t_off = [int(self.O[k]) for k in t_off]      # default: in the adjoint buffer
        self._x_at, self._t_at = x_off, t_off
        self.one_targets = np.array([int(adj_off[a]) for a in sorted(one_tgt, key=one_tgt.get)],
                                    dtype=np.int64)
        # views at different offsets of one operand add into overlapping adjoint elements:
        # chunks of the parallel loop then run in two phases, each wider than the spread
        shifts = [s for (_, s) in targets] or [0]
        self.spread = max(shifts) - min(shifts)

        # a batch kernel (rows of one argument in parallel, each row's value and gradient in one
        # pass) for a graph that is this segment over one argument ``batch_node`` and constants
        self.batch = batch_node >= 0 and self.closing >= 0 and not one_tgt \
            and all(a == batch_node for a, _ in self.targets) \
            and batch_node not in one_in
        batch_x = [j for (a, _), j in inputs.items() if a == batch_node] if self.batch else None
        text = "\n".join(_source(nodes, opcodes, src, tgt, cexpr, x_off, t_off, sole, stored,
                                 adj_in, closed, self.closing, len(one_tgt), batch_x,
                                 sorted(one_in.values()), len(C),
                                 [sh for _, sh in self.targets], self.window)) + "\n"
        key = hashlib.sha1(f"{VERSION} {_OPS_DIGEST} {self.dtype.str}\n{text}".encode()
                           ).hexdigest()[:20]
        self.module = _load(key, text)

    def chunks(self, nthreads):
        """(chunks, phases) of the element loop: serial below PAR_MIN, two phases where views
        add into overlapping adjoint elements (one phase where ``window`` assigns them)."""
        if self.n < PAR_MIN or nthreads < 2:
            return 1, 1
        if self.spread == 0 or self.window is not None:
            return nthreads, 1
        return (2 * nthreads, 2) if self.n // (2 * nthreads) > self.spread else (1, 1)

    def _offsets(self, xs_off, ts_off):
        """``O`` with the input and adjoint slots moved to ``xs_off``/``ts_off`` (None: kept)."""
        O = self.O
        if xs_off is not None or ts_off is not None:
            O = O.copy()
            for k, off in zip(self._x_at, xs_off or ()):
                O[k] = off
            for k, off in zip(self._t_at, ts_off or ()):
                O[k] = off
        return O

    def _run(self, kernel, buf, adj, g_tail, nthreads, XS, xs_off, TS, ts_off, phased=True):
        """Call one of the module's kernels; inputs default to ``buf``, targets to ``adj``."""
        nchunks, phases = self.chunks(nthreads)
        XS = XS if XS is not None else (buf,) * len(self.inputs) or (buf,)
        TS = TS if TS is not None else (adj,) * len(self.targets) or (adj,)
        return kernel(XS, TS, buf, adj, self._offsets(xs_off, ts_off), self.C, self.n, nchunks,
                      phases if phased else 1, self.dtype.type(g_tail))

    def forward(self, buf, nthreads, XS=None, xs_off=None):
        """Values from the inputs in ``XS`` (default: all in ``buf``)."""
        total, _ = self._run(self.module.forward, buf, buf, 0.0, nthreads, XS, xs_off, (buf,),
                             None, phased=False)
        self._store_closing(buf, total)

    def reverse(self, buf, adj, g_tail, nthreads, XS=None, xs_off=None, TS=None, ts_off=None):
        """Adjoints into ``TS`` (default: all in ``adj``), the closing seed ``g_tail``."""
        _, sums = self._run(self.module.reverse, buf, adj, g_tail, nthreads, XS, xs_off, TS,
                            ts_off)
        self._add_sums(adj, sums)

    def value_and_grad(self, buf, adj, g_tail, nthreads, XS=None, xs_off=None, TS=None,
                       ts_off=None):
        """forward and reverse in one pass, for a segment whose closing sum is the output."""
        total, sums = self._run(self.module.value_and_grad, buf, adj, g_tail, nthreads, XS,
                                xs_off, TS, ts_off)
        self._store_closing(buf, total)
        self._add_sums(adj, sums)

    def value_and_grad_batch(self, X, G, vals, buf, g_tail, shifts):
        """Rows of X (B, w) in parallel: ``vals`` the closing sums, ``G`` the gradients (any
        contents: each row is cleared before it is swept); ``shifts``: offsets of the batched
        argument's input slots."""
        O = self._offsets([shifts.get(j, off) for j, off in enumerate(self.x_off)],
                          [sh for _, sh in self.targets])
        self.module.batch(X, G, vals, buf, O, self.C, self.n, self.dtype.type(g_tail))
        if self.closing == MEAN:
            vals /= self.closing_count

    def closing_seed(self, adj):
        """The adjoint the closing SUM/MEAN feeds each element (``fusion.closing_seed``)."""
        if self.closing < 0 or self.closing_adj < 0:
            return 0.0
        g = float(adj[self.closing_adj])
        return g / self.closing_count if self.closing == MEAN else g

    def _store_closing(self, buf, total):
        if self.closing == SUM:
            buf[self.closing_off] = total
        elif self.closing == MEAN:
            buf[self.closing_off] = total / self.closing_count

    def _add_sums(self, adj, sums):
        if len(self.one_targets):
            np.add.at(adj, self.one_targets, sums.sum(axis=0).astype(adj.dtype))


# ops whose rule is a transcendental (a libm call or a long polynomial): a stored value of
# theirs is loaded, not recomputed, where a reverse needs it
_TRANSCENDENTAL = {EXP, LOG, SIN, COS, TAN, TANH, SIGMOID, RPOW_C, POW}


def _costly(cexpr, opcodes, i):
    op = int(opcodes[i])
    return op in _TRANSCENDENTAL or (op == POW_C and not cexpr[i, 0][0].isdigit())


def _source(nodes, opcodes, src, tgt, cexpr, x_off, t_off, sole, stored, adj_in, closed, closing,
            n_one, batch_x=None, one_in=(), n_const=0, t_shift=(), window=None):
    """The kernel module's text: forward, reverse and value_and_grad of one segment, and
    batch when ``batch_x`` lists the input slots that read the batched argument (``t_shift``:
    where in the argument each target view starts).  ``window``: (lowest shift, highest
    shift, where ``O`` holds the adjoint's size) when the reverse assigns the targets' one
    adjoint element by element (``Segment.window``)."""
    L = []
    emit = L.append
    emit("# generated by numbagrad.codegen from a fused segment's structure; do not edit")
    emit("import numpy as np")
    emit("from numba import njit, prange")
    emit("from numbagrad.ops import (IEEE, PRANGE_ONLY, unary_f, unary_d, binary_f, binary_da,\n"
         "                           binary_db)")

    def single_values(ind):
        # single values and constants read once, before the loops: the loops store into arrays
        # LLVM cannot tell apart from these, so it would load them again for every element
        for k in one_in:
            emit(f"{ind}u{k} = buf[O[{k}]]")
        for k in range(n_const):
            emit(f"{ind}c{k} = C[{k}]")

    def forward_body(ind, store, load=(), into_block=False):
        for j in range(len(x_off)):
            emit(f"{ind}x{j} = X{j}[k]")
        for i in nodes:
            op = int(opcodes[i])
            if i in load:
                emit(f"{ind}v{i} = Y{i}[k]")
            elif op == GATHER:
                emit(f"{ind}v{i} = {src[i, 0]}")
            elif op < ADD:
                emit(f"{ind}v{i} = unary_f({op}, {src[i, 0]}, {cexpr[i, 0]}, {cexpr[i, 1]})")
            else:
                emit(f"{ind}v{i} = binary_f({op}, {src[i, 0]}, {src[i, 1]})")
            if store and i in stored:
                emit(f"{ind}Y{i}[k] = v{i}")
        if closing >= 0:
            emit(f"{ind}R[k] = v{closed}" if into_block else f"{ind}acc += v{closed}")

    def reverse_body(ind, outside=True, window=None):
        have, started = set(), set()
        for i in nodes:
            if i in adj_in and outside:
                emit(f"{ind}g{i} = GI{i}[k]")
                have.add(i)
        if closing >= 0:
            emit(f"{ind}g{closed} = " + (f"g{closed} + g_tail" if closed in have else "g_tail"))
            have.add(closed)

        def add(target, expr):
            kind, key = target
            if kind == "g":
                emit(f"{ind}g{key} = g{key} + {expr}" if key in have else f"{ind}g{key} = {expr}")
                have.add(key)
            elif kind == "v":
                emit(f"{ind}a{key} = a{key} + {expr}" if key in started else f"{ind}a{key} = {expr}")
                started.add(key)
            else:
                emit(f"{ind}s{key} += {expr}")

        for i in reversed(nodes):
            if i not in have:
                continue  # no adjoint reaches it
            op = int(opcodes[i])
            if op == GATHER:
                if tgt[i, 0] is not None:
                    add(tgt[i, 0], f"g{i}")
            elif op < ADD:
                if tgt[i, 0] is not None:
                    add(tgt[i, 0], f"g{i} * unary_d({op}, {src[i, 0]}, v{i}, {cexpr[i, 0]}, "
                                   f"{cexpr[i, 1]})")
            else:
                a, b = src[i, 0], src[i, 1]
                if tgt[i, 0] is not None:
                    add(tgt[i, 0], f"g{i} * binary_da({op}, {a}, {b}, v{i})")
                if tgt[i, 1] is not None:
                    add(tgt[i, 1], f"g{i} * binary_db({op}, {a}, {b}, v{i})")
        for j in range(len(t_off)):
            if window is not None:
                if j in started:
                    emit(f"{ind}w{window[j]} = w{window[j]} + a{j}")
            elif j in sole:
                emit(f"{ind}T{j}[k] = a{j}" if j in started else f"{ind}T{j}[k] = 0.0")
            elif j in started:
                emit(f"{ind}T{j}[k] += a{j}")

    def window_start(ind, spread):
        # pending sums of elements k + lo .. k + hi, in registers (see the batch kernel below)
        for i in range(spread + 1):
            emit(f"{ind}w{i} = 0.0")

    def window_step(ind, spread):
        # element k + lo is complete: written once, the window moves on by one
        emit(f"{ind}GW[k] = w0")
        for i in range(spread):
            emit(f"{ind}w{i} = w{i + 1}")
        emit(f"{ind}w{spread} = 0.0")

    def header(signature):
        emit("")
        emit("")
        emit("@njit(**IEEE, cache=True, parallel=PRANGE_ONLY)")
        emit(f"def {signature}:")
        single_values("    ")

    def kernel(name, fwd, rev):
        header(f"{name}(XS, TS, buf, adj, O, C, n, nchunks, phases, g_tail)")
        emit("    partial = np.zeros(nchunks)")
        emit(f"    sums = np.zeros((nchunks, {max(n_one, 1)}))")
        win = window is not None and rev
        if win:
            w_lo, w_hi, k_size = window
            spread = w_hi - w_lo
            slots = {j: sh - w_lo for j, sh in enumerate(t_shift)}
            emit(f"    tails = np.zeros((nchunks, {spread + 1}))")
            emit(f"    B = O[{t_off[0]}] - {t_shift[0]}")  # element 0 of the adjoint in TS[0]
        emit("    for phase in range(phases):")
        emit("        for c in prange(nchunks):")
        emit("            if c % phases == phase:")
        ind = " " * 16
        emit(f"{ind}lo = c * n // nchunks")
        emit(f"{ind}hi = (c + 1) * n // nchunks")
        emit(f"{ind}acc = 0.0")
        if rev:
            for j in range(n_one):
                emit(f"{ind}s{j} = 0.0")
        if win:
            window_start(ind, spread)
        blocked = closing >= 0 and any(_costly(cexpr, opcodes, i) for i in nodes)
        if blocked:
            # a sum in the element loop keeps it from vectorising (the additions must stay in
            # order): the loop stores the summed values, a second loop adds them in the same
            # order (W4's first layer closed by a sum: tanh at 13.6 ns per element, not 3.6).
            # Only where a transcendental is computed: cheap memory-bound loops (W1, W3) hide
            # the in-order sum behind their loads, and a second pass over the block cost them
            # 1.1x -> 1.7x the hand-written loop
            emit(f"{ind}R = np.empty({SUM_BLOCK})")
            emit(f"{ind}for blo in range(lo, hi, {SUM_BLOCK}):")
            ind += "    "
            emit(f"{ind}bhi = min(blo + {SUM_BLOCK}, hi)")
            lo_, hi_ = "blo", "bhi"
        else:
            lo_, hi_ = "lo", "hi"
        # slices indexed by the loop counter: Numba then drops its negative-index wraparound
        # check, which would keep the loop from vectorising
        for j, k in enumerate(x_off):
            emit(f"{ind}X{j} = XS[{j}][O[{k}] + {lo_}:O[{k}] + {hi_}]")
        # the reverse reads the stored values that cost more to recompute than to load (W4's
        # tanh: 245 -> 44 us); LLVM drops the computations only they needed
        load = {} if fwd else {i: k for i, k in stored.items() if _costly(cexpr, opcodes, i)}
        for i, k in (stored if fwd else load).items():
            emit(f"{ind}Y{i} = buf[O[{k}] + {lo_}:O[{k}] + {hi_}]")
        if rev:
            for i, k in adj_in.items():
                emit(f"{ind}GI{i} = adj[O[{k}] + {lo_}:O[{k}] + {hi_}]")
            if win:  # element k + w_lo is complete after iteration k (but at a chunk's start)
                emit(f"{ind}GW = TS[0][B + {w_lo} + {lo_}:B + {w_lo} + {hi_}]")
            else:
                for j, k in enumerate(t_off):
                    emit(f"{ind}T{j} = TS[{j}][O[{k}] + {lo_}:O[{k}] + {hi_}]")
        emit(f"{ind}for k in range({hi_} - {lo_}):")
        forward_body(ind + "    ", fwd, load, into_block=blocked)
        if rev:
            reverse_body(ind + "    ", window=slots if win else None)
        if win:
            window_step(ind + "    ", spread)
        if blocked:
            emit(f"{ind}for k in range(bhi - blo):")
            emit(f"{ind}    acc += R[k]")
            ind = ind[:-4]
        emit(f"{ind}partial[c] = acc")
        for j in range(n_one if rev else 0):
            emit(f"{ind}sums[c, {j}] = s{j}")
        if win:
            for i in range(spread):
                emit(f"{ind}tails[c, {i}] = w{i}")
            # what no chunk assigns is cleared (below the lowest view, past the last element
            # assigned), then each chunk's pending sums go to the elements after its end
            emit("    T = TS[0]")
            emit(f"    for p in range({w_lo}):")
            emit("        T[B + p] = 0.0")
            emit(f"    for p in range(n + {w_lo}, O[{k_size}]):")
            emit("        T[B + p] = 0.0")
            emit("    for c in range(nchunks):")
            emit(f"        e = B + (c + 1) * n // nchunks + {w_lo}")
            for i in range(spread):
                emit(f"        T[e + {i}] += tails[c, {i}]")
        emit("    return partial.sum(), sums")

    kernel("forward", True, False)
    kernel("reverse", False, True)
    kernel("value_and_grad", True, True)
    if batch_x is not None:
        # one row per iteration: the argument's row and its gradient's row stand in for the
        # buffers; nothing is read outside the segment, so nothing is stored or read in
        header("batch(X, G, vals, buf, O, C, n, g_tail)")
        emit("    for r in prange(X.shape[0]):")
        ind = " " * 8
        emit(f"{ind}Xr = X[r]")
        emit(f"{ind}Gr = G[r]")
        # Views of the row at shifts lo..hi (Rosenbrock's x[:-1] and x[1:]) add into element
        # p at iterations p - hi .. p - lo, so after iteration k element k + lo is complete:
        # the pending sums ride in registers w0..w{hi - lo} and each element is written once.
        # Adding into a cleared row instead (one pass to clear it, a load and a store per view
        # and element) took W6 785 us against 678 (hand-written 651).  Same additions, same
        # order, from the same 0.0.
        lo = min(t_shift) if len(t_shift) else 0
        hi = max(t_shift) if len(t_shift) else 0
        window = None
        if len(t_shift) and not sole and hi - lo <= BATCH_WINDOW:
            window = {j: sh - lo for j, sh in enumerate(t_shift)}
            # loops, not slice assignments: an empty slice's view costs more than the loop
            if lo > 0:
                emit(f"{ind}for p in range({lo}):")
                emit(f"{ind}    Gr[p] = 0.0")
            emit(f"{ind}for p in range(n + {hi}, Gr.size):")
            emit(f"{ind}    Gr[p] = 0.0")
            emit(f"{ind}GW = Gr[{lo}:{lo} + n]")
            window_start(ind, hi - lo)
        else:
            emit(f"{ind}Gr[:] = 0.0")  # here, in cache, not as a pass over all of G first
        for j, k in enumerate(x_off):
            arr = "Xr" if j in batch_x else "buf"
            emit(f"{ind}X{j} = {arr}[O[{k}]:O[{k}] + n]")
        if window is None:
            for j, k in enumerate(t_off):
                emit(f"{ind}T{j} = Gr[O[{k}]:O[{k}] + n]")
        emit(f"{ind}acc = 0.0")
        emit(f"{ind}for k in range(n):")
        forward_body(ind + "    ", False)
        reverse_body(ind + "    ", outside=False, window=window)
        if window is not None:
            window_step(ind + "    ", hi - lo)
            for i in range(hi - lo):
                emit(f"{ind}Gr[n + {lo + i}] = w{i}")
        emit(f"{ind}vals[r] = acc")
    return L


def _load(key, text):
    """The module compiled from ``text``, written once to the kernel directory as
    ``ng_<key>.py`` (atomically, so processes sharing the directory never read half a file,
    and never rewritten, so Numba's on-disk cache of it stays valid)."""
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        name = f"ng_{key}"
        path = os.path.join(kernel_dir(), name + ".py")
        try:
            with open(path) as fh:
                same = fh.read() == text
        except OSError:
            same = False
        if not same:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        # registered under its name before it runs: Numba finds a function's module through
        # sys.modules, and a cached kernel's environment is rebuilt by importing it by name
        modname = f"numbagrad_kernel_{key}"
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        _modules[key] = mod
        return mod
