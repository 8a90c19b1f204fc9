"""The Wengert tape: every recorded op as integers and floats in flat buffers.

One op is one node.  For node ``k``:

- ``opcodes[k]`` what it computes (``ops.py``), ``name_ids[k]`` its grad_fn name,
  ``flags[k]`` REQUIRES_GRAD / DIRTY / FREED bits (``sweeps.py``);
- ``args[arg_ptr[k]:arg_ptr[k+1]]`` its operand nodes (all earlier than ``k``);
- ``shapes[shape_ptr[k]:shape_ptr[k+1]]`` its shape, ``sizes[k]`` its element count;
- ``consts[const_ptr[k]:...]`` float constants, ``iparams[iparam_ptr[k]:...]``
  integer parameters (reduction layouts, gather indices, matmul sizes);
- its value lives at ``chunks[val_chunk[k]][val_off[k]:val_off[k] + sizes[k]]``.

While recording, the integer columns grow as ``array.array`` (an append costs
tens of nanoseconds); ``arrays()`` hands the sweeps NumPy copies.  Values are
kept in chunks: a large result is its own chunk (no copy), small ones are
packed into a shared chunk, so the storage never moves once written.

A tape holds one connected graph.  An op whose operands sit on two tapes merges
the smaller into the larger; tensors of the absorbed tape follow a forwarding
pointer (``resolve``).
"""
from array import array
from collections import namedtuple
from itertools import chain
from math import copysign

import numpy as np
from numba import njit
from numba.typed import List

from .ops import IEEE, LEAF, NAMES, OPS
from .sweeps import REQUIRES_GRAD, DIRTY

TapeArrays = namedtuple("TapeArrays", [
    "opcodes", "name_ids", "flags", "arg_ptr", "args", "shape_ptr", "shapes", "sizes",
    "const_ptr", "consts", "iparam_ptr", "iparams", "val_chunk", "val_off",
])

_INT_COLUMNS = {  # column: array.array typecode, NumPy dtype
    "opcodes": ("i", np.int32), "name_ids": ("h", np.int16), "flags": ("b", np.int8),
    "arg_ptr": ("q", np.int64), "args": ("q", np.int64), "shape_ptr": ("q", np.int64),
    "shapes": ("q", np.int64), "sizes": ("q", np.int64), "const_ptr": ("q", np.int64),
    "consts": ("d", np.float64), "iparam_ptr": ("q", np.int64), "iparams": ("q", np.int64),
    "val_chunk": ("i", np.int32), "val_off": ("q", np.int64),
}
_POINTERS = ("arg_ptr", "shape_ptr", "const_ptr", "iparam_ptr")

# A queued node is ROW consecutive items of Tape._rows: opcode, name id, flags, its number of
# operands, shape, size, constants, integer parameters, value chunk, value offset.  Its operand
# nodes follow the earlier rows' in Tape._args (a flat list of ints): a tuple of them per row
# would outlive the collector's young generations, and in scalar code those tuples alone set
# off a collection every 230 steps (13 a 10,000-op recording, 7% of it)
ROW = 10
N_OPERANDS, SHAPE, SIZE, CONSTS, IPARAMS, CHUNK, OFF = 3, 4, 5, 6, 7, 8, 9
_FIXED_FIELDS = {"opcodes": 0, "name_ids": 1, "flags": 2, "sizes": SIZE, "val_chunk": CHUNK,
                 "val_off": OFF}
_RAGGED_FIELDS = (("shapes", "shape_ptr", SHAPE), ("consts", "const_ptr", CONSTS),
                  ("iparams", "iparam_ptr", IPARAMS))

_EMPTY_COLUMNS = {name: array(code, [0] if name in _POINTERS else [])
                  for name, (code, _) in _INT_COLUMNS.items()}

# A typed list made in compiled code with its first chunk costs 3 us; List.empty_list from
# Python 11 us, and each len() or append() on it from Python 1-3 us: together a tenth of a
# small tensor's whole backward.  Its item type is the first chunk's (C-contiguous float64 or
# float32, as every chunk is), one compiled version per dtype.
@njit(**IEEE, cache=True)
def chunk_list(first):
    """A Numba typed list of value chunks holding ``first``, made by cached compiled code:
    ``numba.typed.List([first])`` compiles Numba's own (uncached) list functions at its first
    call in a process, 140 ms."""
    chunks = List()
    chunks.append(first)
    return chunks


# and append() from Python goes through a jitted function of Numba's own that is compiled (not
# cached) at its first call in a process: 100-130 ms added to the first backward of a graph
# with a large value; this one is cached
@njit(**IEEE, cache=True)
def append_chunk(chunks, chunk):
    chunks.append(chunk)


OWN_CHUNK = 4096       # results at least this large are stored without a copy
SMALL_CHUNK_MAX = 1 << 16
_SMALL_ABSORB = 16  # absorb() node by node up to this many nodes (measured: see NOTES.md)


class Tape:
    """A graph being recorded.  ``len(tape)`` is its number of nodes."""

    # Immutable defaults live on the class: eager scalar code makes a tape per op on leaves,
    # and each attribute set in __init__ costs about 25 ns
    _columns = None
    _base = None               # or the TapeArrays that hold the columns' nodes (see arrays())
    _bulky = False             # whether a queued node holds an ndarray of parameters
    _n_columns = 0             # nodes already in the columns
    _small = None              # the chunk small values are packed into
    _small_used = 0
    _small_size = 0            # _small.size, or 0 with no chunk
    _small_slots = None        # a memoryview of _small: writing a float through it costs 30
                               # ns, through NumPy's __setitem__ 100 (record_scalar)
    _small_id = -1
    forward_to = None          # set when this tape was merged into another
    shift = 0                  # ... and where its nodes start there
    remap = None               # ... or, for a small tape, where each of its nodes went
    _arrays = None             # cached arrays(), valid while len(self) is unchanged
    _typed_chunks = None
    _n_typed = 0               # chunks already in _typed_chunks
    swept = False              # a backward ran on it (tensor.start_tape starts a new tape then)
    large = False              # it holds a value of OWN_CHUNK elements or more

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        # The columns are built lazily: append() queues a node as ROW fields at the end of
        # _rows (one list extend instead of fourteen column appends) and reading any column
        # flushes the queue into them in bulk.  Eager scalar code records a node every
        # microsecond or two.  Flat, not a tuple per node: a tuple holding a tuple (the
        # operands) outlives the collector's first pass over it, and scalar code's rows made
        # a tenth of its recording time garbage collection.
        self._rows = []
        self._args = []            # the queued rows' operands, end to end
        self._len = 0
        self.chunks = []           # value storage, arrays of self.dtype
        self.leaves = []           # (node, tensor, version when recorded)
        self._leaf_node = {}       # id(tensor) -> (node, version) of its latest record
        self.retained = {}         # node -> non-leaf tensor that asked retain_grad()
        # values Python looked at while recording (item(), bool(), ...): (node, kind, value,
        # how it was read);
        # a replay where one differs would have taken another path (trace.py checks them)
        self.guards = []

    def __getstate__(self):  # copy and pickle: a memoryview is neither, so it is made again
        state = self.__dict__.copy()
        state.pop("_small_slots", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._use_small(self._small)

    def _use_small(self, chunk):
        """Pack small values into ``chunk`` from now on (None: the next one starts a chunk)."""
        self._small = chunk
        self._small_size = 0 if chunk is None else chunk.size
        self._small_slots = None if chunk is None else memoryview(chunk)

    def __len__(self):
        return self._len

    def _flush(self):
        """Move the queued nodes into the columns."""
        cols = self._columns
        if cols is None:
            base, self._base = self._base, None
            if base is None:
                cols = {name: col.__copy__() for name, col in _EMPTY_COLUMNS.items()}
            else:  # the nodes arrays() took straight from the queue (flags as they are now)
                cols = {name: array(code, getattr(base, name).tobytes())
                        for name, (code, _) in _INT_COLUMNS.items()}
            self._columns = cols
        rows, self._rows = self._rows, []
        args, self._args = self._args, []
        bulky, self._bulky = self._bulky, False
        self._n_columns += len(rows) // ROW
        if not rows:
            return cols
        for name, field in _FIXED_FIELDS.items():
            cols[name].fromlist(rows[field::ROW])
        ends = _ends(rows[N_OPERANDS::ROW])
        cols["arg_ptr"].frombytes((ends[1:] + len(cols["args"])).tobytes())
        cols["args"].fromlist(args)
        for name, ptr, field in _RAGGED_FIELDS:
            values, ends = _ragged(rows[field::ROW], _INT_COLUMNS[name][1], bulky)
            col = cols[name]
            cols[ptr].frombytes((ends[1:] + len(col)).tobytes())
            col.frombytes(values.tobytes())
        return cols

    def _row(self, k):
        """Node k's (chunk, offset, size), queued or not, without flushing."""
        j = (k - self._n_columns) * ROW
        if j >= 0:
            r = self._rows
            return r[j + CHUNK], r[j + OFF], r[j + SIZE]
        c = self._columns
        if c is None:
            c = self._base
            return int(c.val_chunk[k]), int(c.val_off[k]), int(c.sizes[k])
        return c["val_chunk"][k], c["val_off"][k], c["sizes"][k]

    # ------------------------------------------------------------ values

    def store(self, value):
        """Keep ``value`` (any array of this tape's size) for the sweeps; returns (chunk, offset)."""
        n = value.size
        if n >= OWN_CHUNK:
            self.large = True
            self.chunks.append(np.ascontiguousarray(value, dtype=self.dtype).reshape(-1))
            return len(self.chunks) - 1, 0
        if self._small is None or self._small_used + n > self._small.size:
            # room for 16 values like this one: an eager graph of 100-element arrays made a
            # chunk every second op, and a backward of several chunks makes them a typed list
            # (8-10 us; W3's step at n = 100 92 -> 78 us with its 12 values in one chunk).  At
            # most 512 KB a chunk (16 values just below OWN_CHUNK)
            grown = min(SMALL_CHUNK_MAX, 2 * (self._small.size if self._small is not None else 0))
            self._use_small(np.empty(max(256, 16 * n, grown), dtype=self.dtype))
            self._small_used = 0
            self._small_id = len(self.chunks)
            self.chunks.append(self._small)
        off = self._small_used
        if value.ndim == 0:  # the common case in scalar code, without a reshape
            self._small[off] = value
        else:
            self._small[off:off + n] = value.reshape(-1)  # casts like astype
        self._small_used += n
        return self._small_id, off

    def typed_chunks(self):
        """The chunks as a Numba typed list (built once, extended as chunks are added)."""
        tc = self._typed_chunks
        chunks = self.chunks
        if tc is None:
            if not chunks:  # a tape of no values still hands the sweeps a typed list
                chunks.append(np.empty(0, dtype=self.dtype))
            tc = self._typed_chunks = chunk_list(chunks[0])
            self._n_typed = 1
        if self._n_typed < len(chunks):
            for c in chunks[self._n_typed:]:
                append_chunk(tc, c)
            self._n_typed = len(chunks)
        return tc

    def value(self, k):
        """The stored value of node k (a flat view)."""
        chunk, off, size = self._row(k)
        return self.chunks[chunk][off:off + size]

    # ------------------------------------------------------------ recording

    def append(self, opcode, name_id, operands, shape, loc, flags, consts=(), iparams=()):
        """Add one node; ``loc`` is its value's (chunk, offset).  Returns its index."""
        size = 1
        for s in shape:
            size *= s
        if type(iparams) is np.ndarray:
            # kept as it is now: an array nobody can change (read-only, owning its memory) as
            # it is, anything else (a view of the caller's array) copied
            if iparams.flags.writeable or iparams.base is not None:
                iparams = iparams.copy()
            self._bulky = True
        if type(consts) is np.ndarray:
            consts = consts.copy()
            self._bulky = True
        self._args.extend(operands)
        self._rows.extend((opcode, name_id, flags, len(operands), shape, size, consts, iparams,
                           loc[0], loc[1]))
        k = self._len
        self._len = k + 1
        return k

    def record(self, opcode, name_id, operands, value, consts=(), iparams=(), alias_of=None,
               flags=REQUIRES_GRAD):
        """Record an op whose eager result is ``value``; ``alias_of`` shares that node's storage.

        ``flags=0`` records a value that carries no gradient (a comparison, or anything
        computed from one) so that a replay still recomputes it.
        """
        n = value.size
        if alias_of is not None:
            chunk, off = self._row(alias_of)[:2]
        elif n < OWN_CHUNK and self._small is not None and self._small_used + n <= self._small.size:
            chunk, off = self._small_id, self._small_used  # store(), inlined for small values
            if value.ndim == 0:
                self._small[off] = value
            else:
                self._small[off:off + n] = value if value.ndim == 1 else value.reshape(-1)
            self._small_used = off + n
        else:
            chunk, off = self.store(value)
        if type(iparams) is np.ndarray or type(consts) is np.ndarray:
            return self.append(opcode, name_id, operands, value.shape, (chunk, off), flags,
                               consts, iparams)
        self._args.extend(operands)  # append(), inlined
        self._rows.extend((opcode, name_id, flags, len(operands), value.shape, n, consts,
                           iparams, chunk, off))
        k = self._len
        self._len = k + 1
        return k

    def record_scalar(self, opcode, name_id, operands, v, consts, flags):
        """``record`` for the scalar lane (``lane.py``): a 0-d float64 result held as the
        Python float ``v``, on a float64 tape.  Returns the new node's index.

        ``lane._binary`` and ``lane._record_tree`` run this in line (scalar code's commonest
        ops): a change here is a change there."""
        off = self._small_used
        if off < self._small_size:
            self._small_slots[off] = v
            self._small_used = off + 1
            chunk = self._small_id
        else:
            chunk, off = self.store(np.array(v))
        self._args.extend(operands)
        self._rows.extend((opcode, name_id, flags, len(operands), (), 1, consts, (), chunk, off))
        k = self._len
        self._len = k + 1
        return k

    def leaf(self, tensor):
        """The node holding ``tensor`` (a leaf or constant), recording it on first use."""
        seen = self._leaf_node.get(id(tensor))
        version = version_counter(tensor)[0]
        if seen is not None and seen[1] == version:
            return seen[0]
        k = self.record(LEAF, _LEAF_NAME, (), tensor._data,
                        flags=REQUIRES_GRAD if tensor._requires_grad else 0)
        self._leaf_node[id(tensor)] = (k, version)
        self.leaves.append((k, tensor, version))
        return k

    def set_flag(self, k, bit):
        self._flush()
        self.flags[k] |= bit
        if self._arrays is not None:
            self._arrays.flags[k] |= bit

    def flag_column(self):
        """The flags column as a writable int8 view, or an empty array while there are no
        columns (the nodes then live in ``arrays()`` alone, whose flags are the ones to set)."""
        if self._columns is None:
            return _NO_FLAGS
        return np.frombuffer(self._columns["flags"], dtype=np.int8)

    # ------------------------------------------------------------ handing over

    def arrays(self):
        """The tape as a TapeArrays of NumPy arrays, the form every sweep takes.

        A tape read for the first time (an eager backward, mostly) builds them straight from
        the queued nodes, and they stand for the columns until a column is read or more nodes
        are flushed (``_flush`` then copies them into columns): the columns cost as much
        again, and most eager tapes are read once.
        """
        if self._arrays is not None and len(self._arrays.opcodes) == self._len:
            return self._arrays
        if self._columns is None and self._n_columns == 0:
            rows, args, bulky = self._rows, self._args, self._bulky
            self._rows, self._args, self._bulky = [], [], False
            self._n_columns = len(rows) // ROW
            self._arrays = self._base = _arrays_of_rows(rows, args, bulky)
            return self._arrays
        cols = self._flush()
        self._arrays = TapeArrays(**{
            name: np.array(cols[name], dtype=dt) if len(cols[name]) else np.zeros(0, dtype=dt)
            for name, (_, dt) in _INT_COLUMNS.items()})
        return self._arrays

    def check_leaf_versions(self):
        """Mark leaves that were modified in place since they were recorded."""
        for k, tensor, version in self.leaves:
            if tensor._version[0] != version:
                self.set_flag(k, DIRTY)

    # ------------------------------------------------------------ merging

    def upcast(self, dtype):
        """Store values in ``dtype`` from now on (float32 graphs meeting float64 ones)."""
        self.dtype = np.dtype(dtype)
        # the small chunk's unused tail is uninitialised memory: a signalling NaN there raises
        # the invalid flag as it is converted (NumPy's RuntimeWarning), on values nobody reads
        with np.errstate(invalid="ignore"):
            self.chunks = [c.astype(self.dtype) for c in self.chunks]
        self._use_small(None)  # the next small value starts a fresh chunk of the new dtype
        self._typed_chunks = None
        self._n_typed = 0

    def absorb(self, other):
        """Append ``other``'s nodes to this tape; ``other`` then forwards here."""
        if other.dtype is not self.dtype and other.dtype != self.dtype:
            wide = np.promote_types(self.dtype, other.dtype)
            self.upcast(wide) if self.dtype != wide else None
            other.upcast(wide) if other.dtype != wide else None
        shift, chunk_shift = len(self), len(self.chunks)
        self.large = self.large or other.large
        self.swept = self.swept or other.swept
        # a leaf recorded on both tapes keeps one node: the other tape's uses point at ours
        remap = list(range(shift, shift + len(other)))
        duplicates = set()
        for k, tensor, version in other.leaves:
            seen = self._leaf_node.get(id(tensor))
            if seen is not None and seen[1] == version:
                remap[k] = seen[0]
                duplicates.add(k)
        if len(other) <= _SMALL_ABSORB and not other._n_columns:  # all still queued
            self._append_nodes(other, remap, duplicates)
            other.remap = remap
        else:
            self._flush()
            other._flush()
            self._append_columns(other, np.array(remap, dtype=np.int64), chunk_shift)
            self._len = self._n_columns = shift + len(other)
            self.chunks.extend(other.chunks)
        for k, tensor, version in other.leaves:
            if k in duplicates:
                continue
            self.leaves.append((remap[k], tensor, version))
            if id(tensor) not in self._leaf_node:
                self._leaf_node[id(tensor)] = (remap[k], version)
        if other.retained:
            for k, tensor in other.retained.items():
                self.retained[remap[k]] = tensor
            other.retained = {}
        if other.guards:
            self.guards.extend((remap[k], kind, value, how) for k, kind, value, how in other.guards)
            other.guards = []
        other.forward_to, other.shift = self, shift
        other.chunks, other.leaves, other._leaf_node = [], [], {}
        other._rows, other._args = [], []
        other._arrays = other._typed_chunks = other._base = None
        other._use_small(None)
        other._n_typed = 0
        return shift

    def _append_nodes(self, other, remap, duplicates):
        """absorb() for a tape of a few queued nodes: row by row (NumPy calls cost more here).

        Leaves recorded on both tapes are not copied (``remap`` sends their uses to ours and
        then says where each of ``other``'s nodes went), so scalar code that merges a small
        tape per step does not leave a dead copy of its inputs on the tape at every step.

        Its packed chunk of small values (mostly empty: a new tape reserves 256 values) is
        copied into ours, so that scalar code merging thousands of small tapes does not leave
        thousands of chunks; its large values' chunks are adopted as they are.
        """
        where = []
        for c, chunk in enumerate(other.chunks):
            if c == other._small_id and other._small is chunk:
                where.append(self.store(chunk[:other._small_used]))
            else:
                self.chunks.append(chunk)
                where.append((len(self.chunks) - 1, 0))
        self._bulky = self._bulky or other._bulky
        out, out_args = self._rows, self._args
        k_new = self._len
        rows, args = other._rows, other._args
        end = 0
        for k in range(len(rows) // ROW):
            r = rows[k * ROW:(k + 1) * ROW]
            start, end = end, end + r[N_OPERANDS]
            if k in duplicates:
                continue
            remap[k] = k_new
            k_new += 1
            chunk, base = where[r[CHUNK]]
            out_args.extend([remap[a] for a in args[start:end]])
            out.extend((r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], chunk, base + r[OFF]))
        self._len = k_new

    def _append_columns(self, other, remap, chunk_shift):
        """absorb() for a large tape: whole columns at once."""
        for name in _INT_COLUMNS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name in _POINTERS:
                base = mine[-1]
                col = np.frombuffer(theirs, dtype=np.int64)[1:] + base
            elif name == "args":
                col = remap[np.frombuffer(theirs, dtype=np.int64)] if len(theirs) else \
                    np.zeros(0, np.int64)
            elif name == "val_chunk":
                col = np.frombuffer(theirs, dtype=np.int32) + chunk_shift
            else:
                mine.extend(theirs)
                continue
            mine.frombytes(col.astype(_INT_COLUMNS[name][1]).tobytes())

    # ------------------------------------------------------------ reading

    def name(self, k):
        return NAMES[self.name_ids[k]]

    def __str__(self):
        """One line per node: index, grad_fn name, operands, shape."""
        lines = [f"Tape: {len(self)} nodes, {self.dtype}"]
        for k in range(len(self)):
            ops_ = list(self.args[self.arg_ptr[k]:self.arg_ptr[k + 1]])
            shape = tuple(self.shapes[self.shape_ptr[k]:self.shape_ptr[k + 1]])
            name = self.name(k)
            if self.opcodes[k] == LEAF:
                name = "Input" if self.flags[k] & REQUIRES_GRAD else "Constant"
            lines.append(f"{k:5d}  {name:<22s} {str(ops_):<16s} {shape}")
        return "\n".join(lines)


_NO_FLAGS = np.zeros(0, dtype=np.int8)


def _arrays_from_rows(rows, args, bulky):
    """TapeArrays of queued rows and their operands (see ``Tape.append``), without going through
    the columns."""
    out = {name: np.array(rows[field::ROW], dtype=_INT_COLUMNS[name][1])
           for name, field in _FIXED_FIELDS.items()}
    out["args"] = np.array(args, dtype=np.int64)
    out["arg_ptr"] = _ends(rows[N_OPERANDS::ROW])
    for name, ptr, field in _RAGGED_FIELDS:
        out[name], out[ptr] = _ragged(rows[field::ROW], _INT_COLUMNS[name][1], bulky)
    return TapeArrays(**out)


def _ends(counts):
    """Where each of the rows' runs of ``counts`` items ends, from a 0 (an int64 array)."""
    ends = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ends[1:])
    return ends


def _ragged(ragged, dtype, bulky):
    """The rows' fields ``ragged`` end to end as a ``dtype`` array, and where each ends (from
    a 0).  ``bulky``: some are ndarrays (gather indices and the like), joined by NumPy.

    Scalar code's shapes and integer parameters are all empty: list.count finds that at half a
    nanosecond a row, where walking them cost 45 (a tenth of turning a row into columns)."""
    n = len(ragged)
    ends = np.zeros(n + 1, dtype=np.int64)
    if not bulky and ragged.count(()) == n:  # (count would compare ndarrays elementwise)
        return np.zeros(0, dtype=dtype), ends
    np.cumsum(np.fromiter(map(len, ragged), dtype=np.int64, count=n), out=ends[1:])
    if bulky:
        return np.concatenate([np.asarray(r, dtype=dtype).reshape(-1) for r in ragged]), ends
    return np.array(list(chain.from_iterable(ragged)), dtype=dtype), ends


# The last tape read from its queued rows: [rows, its flags as recorded, its arrays, the rows
# holding a zero constant (listed at the first hit), its operands].  Eager code records the same
# graph again and again (a training step, a loop body), and comparing the rows with the last tape's
# costs a tenth of building the arrays (W1 n = 3: 0.3 against 12 us; W2 at K = 10^4: 0.6 against
# 4.9 ms).  A hit shares every column but the flags, which the sweeps mark (FREED) and which each
# tape gets a copy of; nothing writes another column once built (trace.py copies the ones it
# changes).  Threads share it: an entry is replaced whole, and its list of zero constants, filled
# in at most once, comes out the same from any thread.
_last_read = None
REUSE_MAX = 1 << 16  # rows; the cache holds the last tape's rows alive


def _arrays_of_rows(rows, args, bulky):
    """``_arrays_from_rows``, reusing the last tape's arrays when the rows are the same."""
    global _last_read
    last = _last_read
    # (rows holding an ndarray are neither kept nor compared: == on one is elementwise)
    if not bulky and last is not None and len(last[0]) == len(rows) and last[0] == rows \
            and last[4] == args and not _signed_zero_differs(last, rows):
        a = last[2]
        return TapeArrays(a[0], a[1], last[1].copy(), *a[3:])  # _replace costs 1 us more
    arrays = _arrays_from_rows(rows, args, bulky)
    if not bulky and len(rows) <= REUSE_MAX * ROW:  # an ndarray in a row cannot be compared with ==
        _last_read = [rows, arrays.flags.copy(), arrays, None, args]
    return arrays


def _signed_zero_differs(last, rows):
    """Whether a constant is 0.0 in the last tape's rows and -0.0 in ``rows`` or the other way
    (== cannot tell).  The rows holding a zero constant are listed at the first hit."""
    old = last[0]
    if last[3] is None:  # rows equal to old have their zero constants in the same places
        last[3] = [i for i in range(CONSTS, len(old), ROW) if old[i] and 0.0 in old[i]]
    for i in last[3]:
        for c, d in zip(old[i], rows[i]):
            if c == 0.0 and copysign(1.0, c) != copysign(1.0, d):
                return True
    return False


def _column(name):
    def read(self):
        if self._rows or self._columns is None:
            self._flush()
        return self._columns[name]
    return property(read, doc=f"The ``{name}`` column (queued nodes flushed first).")


for _name in _INT_COLUMNS:
    setattr(Tape, _name, _column(_name))


def version_counter(tensor):
    """``tensor``'s version counter, a one-item list that its views share, made at the first
    need: the scalar lane's results start without one (a list is 36 ns of a 1 us op)."""
    v = tensor._version
    if v is None:
        v = tensor._version = [0]
    return v


def resolve(tape, node):
    """Follow merges: the tape and index where a recorded node lives now."""
    while tape.forward_to is not None:
        node = tape.remap[node] if tape.remap is not None else node + tape.shift
        tape = tape.forward_to
    return tape, node


_LEAF_NAME = NAMES.index(OPS[LEAF].name)
