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

import numpy as np
from numba import types
from numba.typed import List

from .ops import LEAF, NAMES, OPS
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

OWN_CHUNK = 4096       # results at least this large are stored without a copy
SMALL_CHUNK_MAX = 1 << 16


class Tape:
    """A graph being recorded.  ``len(tape)`` is its number of nodes."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        for name, (code, _) in _INT_COLUMNS.items():
            setattr(self, name, array(code, [0] if name in _POINTERS else []))
        self.chunks = []           # value storage, arrays of self.dtype
        self._small = None         # the chunk small values are packed into
        self._small_used = 0
        self._small_id = -1
        self.leaves = []           # (node, tensor, version when recorded)
        self._leaf_node = {}       # id(tensor) -> (node, version) of its latest record
        self.retained = {}         # node -> non-leaf tensor that asked retain_grad()
        # values Python looked at while recording (item(), bool(), ...): (node, kind, value,
        # how it was read);
        # a replay where one differs would have taken another path (trace.py checks them)
        self.guards = []
        self.forward_to = None     # set when this tape was merged into another
        self.shift = 0             # ... and where its nodes start there
        self._arrays = None        # cached arrays(), valid while len(self) is unchanged
        self._typed_chunks = None

    def __len__(self):
        return len(self.opcodes)

    # ------------------------------------------------------------ values

    def store(self, value):
        """Keep ``value`` (any array of this tape's size) for the sweeps; returns (chunk, offset)."""
        flat = np.ascontiguousarray(value, dtype=self.dtype).reshape(-1)
        n = flat.size
        if n >= OWN_CHUNK:
            self.chunks.append(flat)
            return len(self.chunks) - 1, 0
        if self._small is None or self._small_used + n > self._small.size:
            size = max(256, min(SMALL_CHUNK_MAX, 2 * (self._small.size if self._small is not None else 0)))
            self._small = np.empty(max(size, n), dtype=self.dtype)
            self._small_used = 0
            self._small_id = len(self.chunks)
            self.chunks.append(self._small)
        off = self._small_used
        self._small[off:off + n] = flat
        self._small_used += n
        return self._small_id, off

    def typed_chunks(self):
        """The chunks as a Numba typed list (built once, extended as chunks are added)."""
        tc = self._typed_chunks
        if tc is None:
            item = types.float32[::1] if self.dtype == np.float32 else types.float64[::1]
            tc = self._typed_chunks = List.empty_list(item)
        for c in self.chunks[len(tc):]:
            tc.append(c)
        return tc

    def value(self, k):
        """The stored value of node k (a flat view)."""
        off = self.val_off[k]
        return self.chunks[self.val_chunk[k]][off:off + self.sizes[k]]

    # ------------------------------------------------------------ recording

    def append(self, opcode, name_id, operands, shape, loc, flags, consts=(), iparams=()):
        """Add one node; ``loc`` is its value's (chunk, offset).  Returns its index."""
        k = len(self.opcodes)
        self.opcodes.append(opcode)
        self.name_ids.append(name_id)
        self.flags.append(flags)
        self.args.extend(operands)
        self.arg_ptr.append(len(self.args))
        self.shapes.extend(shape)
        self.shape_ptr.append(len(self.shapes))
        size = 1
        for s in shape:
            size *= s
        self.sizes.append(size)
        if consts:
            self.consts.extend(consts)
        self.const_ptr.append(len(self.consts))
        if len(iparams):
            self.iparams.extend(iparams)
        self.iparam_ptr.append(len(self.iparams))
        self.val_chunk.append(loc[0])
        self.val_off.append(loc[1])
        return k

    def record(self, opcode, name_id, operands, value, consts=(), iparams=(), alias_of=None,
               flags=REQUIRES_GRAD):
        """Record an op whose eager result is ``value``; ``alias_of`` shares that node's storage.

        ``flags=0`` records a value that carries no gradient (a comparison, or anything
        computed from one) so that a replay still recomputes it.
        """
        if alias_of is not None:
            loc = (self.val_chunk[alias_of], self.val_off[alias_of])
        else:
            loc = self.store(value)
        return self.append(opcode, name_id, operands, value.shape, loc, flags, consts, iparams)

    def leaf(self, tensor):
        """The node holding ``tensor`` (a leaf or constant), recording it on first use."""
        seen = self._leaf_node.get(id(tensor))
        if seen is not None and seen[1] == tensor._version[0]:
            return seen[0]
        data = tensor._data
        rg = tensor._requires_grad
        k = self.append(LEAF, _LEAF_NAME, (), data.shape, self.store(data),
                        REQUIRES_GRAD if rg else 0)
        self._leaf_node[id(tensor)] = (k, tensor._version[0])
        self.leaves.append((k, tensor, tensor._version[0]))
        return k

    def set_flag(self, k, bit):
        self.flags[k] |= bit
        if self._arrays is not None:
            self._arrays.flags[k] |= bit

    # ------------------------------------------------------------ handing over

    def arrays(self):
        """The tape as a TapeArrays of NumPy arrays, the form every sweep takes."""
        if self._arrays is None or len(self._arrays.opcodes) != len(self):
            self._arrays = TapeArrays(**{
                name: np.frombuffer(getattr(self, name), dtype=dt).copy()
                if len(getattr(self, name)) else np.zeros(0, dtype=dt)
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
        self.chunks = [c.astype(self.dtype) for c in self.chunks]
        self._small = None  # the next small value starts a fresh chunk of the new dtype
        self._typed_chunks = None

    def absorb(self, other):
        """Append ``other``'s nodes to this tape; ``other`` then forwards here."""
        if other.dtype != self.dtype:
            wide = np.promote_types(self.dtype, other.dtype)
            self.upcast(wide) if self.dtype != wide else None
            other.upcast(wide) if other.dtype != wide else None
        shift, chunk_shift = len(self), len(self.chunks)
        # a leaf recorded on both tapes keeps one node: the other tape's uses point at ours
        remap = np.arange(shift, shift + len(other), dtype=np.int64)
        duplicates = set()
        for k, tensor, version in other.leaves:
            seen = self._leaf_node.get(id(tensor))
            if seen is not None and seen[1] == version:
                remap[k] = seen[0]
                duplicates.add(k)
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
        self.chunks.extend(other.chunks)
        for k, tensor, version in other.leaves:
            if k in duplicates:
                continue
            self.leaves.append((k + shift, tensor, version))
            if id(tensor) not in self._leaf_node:
                self._leaf_node[id(tensor)] = (k + shift, version)
        for k, tensor in other.retained.items():
            self.retained[k + shift] = tensor
        self.guards.extend((k + shift, kind, value, how) for k, kind, value, how in other.guards)
        other.forward_to, other.shift = self, shift
        other.chunks, other.leaves, other.retained, other._leaf_node = [], [], {}, {}
        other.guards = []
        other._arrays = other._typed_chunks = other._small = None
        return shift

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


def resolve(tape, node):
    """Follow merges: the tape and index where a recorded node lives now."""
    while tape.forward_to is not None:
        node += tape.shift
        tape = tape.forward_to
    return tape, node


_LEAF_NAME = NAMES.index(OPS[LEAF].name)
