"""Derivatives callable from inside Numba code: ``Traced.numba()`` returns a ``NumbaHandle``.

A handle holds the replay tape, its plans (fused segments, adjoint and tangent offsets) and
work buffers allocated once, in one Numba ``structref``.  Its methods are Numba functions, so
user ``@njit`` code calls them in nopython mode with no Python per call:

>>> import numpy as np, numba, numbagrad as ng
>>> rosen = lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
>>> h = ng.trace(rosen, np.zeros(4)).numba()
>>> @numba.njit
... def descend(h, x, steps, lr):
...     g = np.empty_like(x)
...     for _ in range(steps):
...         h.grad_into(x, g)      # the value is returned, the gradient written into g
...         x -= lr * g
...     return x
>>> descend(h, np.zeros(4), 20000, 1e-3).round(2)
array([1., 1., 1., 1.])

Inputs and outputs are flat vectors: ``x`` is the function's arguments flattened and
concatenated (length ``h.n``), the output is flattened (length ``h.m``).  Methods, in Numba
code and from Python alike:

- ``h.value(x)``: the value of a scalar function; ``h.value_into(x, out)`` for any output;
- ``h.grad_into(x, out)``: the gradient into ``out`` (length ``n``), returns the value;
- ``h.vjp_into(x, v, out)``: ``v^T J`` into ``out`` (``v`` of length ``m``, ``out`` of ``n``);
- ``h.jvp_into(x, t, out)``: ``J t`` into ``out`` (``t`` of length ``n``, ``out`` of ``m``);
- ``h.hvp_into(x, v, out)``: ``H v`` of a scalar function into ``out``;
- ``h.copy()``: a handle on the same tape with its own work buffers (for ``prange``);
  ``h.copies(k)``: k of them in a typed list;
- ``h.n``, ``h.m``: the input and output lengths.

Arrays are used in place when they are C-contiguous and of the tape's dtype (``out`` must be);
another ``x``, ``v`` or ``t`` is copied first.  Sizes are checked (``ValueError``).

Where a handle can live:

- **As an argument** of a user function: works everywhere, including ``cache=True`` (the
  handle's Numba type depends only on the tape's dtype, so the cached machine code serves every
  handle) and ``parallel=True``.
- **As a global** (the issue's example): works; Numba freezes globals into the compiled code, so
  the handle's address is baked in (and the handle is kept alive for as long as the process
  runs).  An address is valid in this process only, so Numba refuses to cache such a function:
  with ``cache=True`` it warns ``NumbaWarning: Cannot cache compiled function ... as it uses
  dynamic globals`` and compiles it in every new process.  Pass the handle as an argument to
  cache.  Rebinding the global later does not change compiled code (Numba's rule for globals).
- **In ``prange`` loops**: a handle's buffers are shared by everyone calling it, so each
  iteration (or block of iterations) takes ``w = h.copy()`` and calls ``w``.  ``h.copies(k)``
  makes k copies ahead of time (a typed list; index it with ``numba.get_thread_id()``) so the
  parallel loop allocates nothing.

How it runs: one C entry point per handle type (``innumba_sweeps.py``) holds the library's own
sweeps, compiled once and cached on disk (about 30 s of CPU the first time on a 2-core machine;
a float32 tape has its own).  Methods call it through its address, so a user function that
calls a handle compiles in a fraction of a second instead of re-optimising the sweeps.  Every
sweep runs serially: a handle is called from the user's own loops, which may be ``prange``
loops (a kernel starting its own parallel region inside one would nest).

Allocation: value, grad and vjp run the fused replay with the handle's scratch, so a scalar
graph (W2) allocates nothing per call.  What still allocates, per call, is in the kernels:
a fused run closed by a sum or mean (Rosenbrock) allocates one scratch copy per block
(``fusion._block_reverse`` adds into a slice with ``+=``, which Numba copies first), binary ops
outside fused runs (broadcasting) allocate small index arrays (``kernels.broadcast_map``), and
matmul allocates its products; jvp and hvp run the unfused sweeps.

Values that ``f`` read while recording (guards) are checked on every call; a point where one
differs raises ``GuardError`` (the message cannot name the node from Numba code;
``Traced.grad`` at that point gives the full message).
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.extending import intrinsic, overload, overload_method
from numba.core.imputils import lower_constant
from numba.experimental import structref
from numba.typed import List

from . import dispatch
from .fusion import BLOCK, plan_rows
from .ops import IEEE
from .innumba_sweeps import VALUE, GRAD, VJP, JVP, HVP, FIELDS as _FIELDS, entry_for
from .sweeps import plan_tangents
from .tensor import GUARD_TRUTH, GUARD_VALUE, GUARD_CMP
from .trace import GuardError

__all__ = ["NumbaHandle", "handle_for"]

# The sweeps link kernels that hold parallel loops.  Numba starts its thread pool (and defines
# the symbols those loops call) when it compiles a parallel function, but not when it loads one
# from the cache as part of another function (our entry point, or a user's cache=True
# function): that load then fails with "Symbol not found: allocate_sched".  Start it up front.
numba.get_num_threads()


@structref.register
class NumbaHandleType(types.StructRef):
    """Numba type of a ``NumbaHandle``: one per tape dtype (the tape's arrays have fixed types)."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class NumbaHandle(structref.StructRefProxy):
    """A traced function's derivatives for use inside ``@njit`` code (see the module docstring).

    >>> import numpy as np, numbagrad as ng
    >>> h = ng.trace(lambda x: (x * x).sum(), np.ones(3)).numba()
    >>> g = np.empty(3)
    >>> h.grad_into(np.array([1.0, 2.0, 3.0]), g), g
    (14.0, array([2., 4., 6.]))
    """

    def __new__(cls, *args):
        raise TypeError("make a NumbaHandle with Traced.numba()")

    @property
    def n(self):
        return _py_n(self)

    @property
    def m(self):
        return _py_m(self)

    @property
    def dtype(self):
        return self._type.field_dict["buf"].dtype

    def value(self, x):
        return _py_value(self, self._input(x))

    def value_into(self, x, out):
        _py_value_into(self, self._input(x), self._output(out))

    def grad_into(self, x, out):
        return _py_grad(self, self._input(x), self._output(out))

    def vjp_into(self, x, v, out):
        _py_vjp(self, self._input(x), self._input(v), self._output(out))

    def jvp_into(self, x, t, out):
        _py_jvp(self, self._input(x), self._input(t), self._output(out))

    def hvp_into(self, x, v, out):
        _py_hvp(self, self._input(x), self._input(v), self._output(out))

    def copy(self):
        return _copy(self)

    def copies(self, k):
        """``k`` copies in a typed list, e.g. one per thread for a ``prange`` loop."""
        return _copies(self, k)

    def _input(self, a):
        return np.ascontiguousarray(a, dtype=str(self.dtype)).reshape(-1)

    def _output(self, out):
        if not (isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.writeable
                and out.dtype == str(self.dtype)):
            raise TypeError(f"out: expected a writable C-contiguous {self.dtype} array")
        return out.reshape(-1)

    def __repr__(self):
        return f"<NumbaHandle n={self.n} m={self.m} {self.dtype}>"


structref.define_boxing(NumbaHandleType, NumbaHandle)


# ---------------------------------------------------------------- construction

def _make(t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals,
          g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf, adj, adjdot,
          tan, sv, gv, sums):
    raise NotImplementedError("jit-code only: use Traced.numba()")


@overload(_make)
def _make_impl(t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals,
               g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf, adj,
               adjdot, tan, sv, gv, sums):
    ty = NumbaHandleType(list(zip(_FIELDS, [
        t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals,
        g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf, adj, adjdot, tan,
        sv, gv, sums])))

    def impl(t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals,
             g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf, adj, adjdot,
             tan, sv, gv, sums):
        h = structref.new(ty)
        h.t = t
        h.adj_off = adj_off
        h.tan_off = tan_off
        h.seg_start = seg_start
        h.seg_stop = seg_stop
        h.ext = ext
        h.prog = prog
        h.pc = pc
        h.rows = rows
        h.rcs = rcs
        h.zero = zero
        h.inputs = inputs
        h.g_off = g_off
        h.g_ptr = g_ptr
        h.g_vals = g_vals
        h.g_truth = g_truth
        h.n = n
        h.m = m
        h.out_node = out_node
        h.out_val = out_val
        h.out_adj = out_adj
        h.out_tan = out_tan
        h.entry = entry
        h.chunks = chunks
        h.buf = buf
        h.adj = adj
        h.adjdot = adjdot
        h.tan = tan
        h.sv = sv
        h.gv = gv
        h.sums = sums
        return h
    return impl


@njit(**IEEE, cache=True)
def _new(t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals,
         g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf, adj, adjdot, tan,
         sv, gv, sums):
    return _make(t, adj_off, tan_off, seg_start, seg_stop, ext, prog, pc, rows, rcs, zero, inputs, g_off, g_ptr,
                 g_vals, g_truth, n, m, out_node, out_val, out_adj, out_tan, entry, chunks, buf,
                 adj, adjdot, tan, sv, gv, sums)


@njit(**IEEE, cache=True)
def _own_buffers(buf, n_adj, n_tan, n_scratch, n_sums):
    """Fresh work buffers; the value buffer is copied (constants live in its leaf slots)."""
    b = buf.copy()
    chunks = List()
    chunks.append(b)
    z = np.zeros
    return (chunks, b, z(n_adj, b.dtype), z(n_adj, b.dtype), z(n_tan, b.dtype),
            z(n_scratch, b.dtype), z(n_scratch, b.dtype), z(n_sums, np.float64))


@njit(**IEEE, cache=True)
def _copy(h):
    chunks, buf, adj, adjdot, tan, sv, gv, sums = _own_buffers(
        h.buf, len(h.adj), len(h.tan), len(h.sv), len(h.sums))
    return _new(h.t, h.adj_off, h.tan_off, h.seg_start, h.seg_stop, h.ext, h.prog, h.pc, h.rows, h.rcs, h.zero, h.inputs,
                h.g_off, h.g_ptr, h.g_vals, h.g_truth, h.n, h.m, h.out_node, h.out_val,
                h.out_adj, h.out_tan, h.entry, chunks, buf, adj, adjdot, tan, sv, gv, sums)


@njit(**IEEE, cache=True)
def _copies(h, k):
    out = List()
    for _ in range(k):
        out.append(_copy(h))
    return out


@njit(**IEEE, cache=True)
def _set_entry(h, address):
    h.entry = address


def handle_for(traced):
    """The ``NumbaHandle`` of a ``Traced`` (what ``Traced.numba()`` returns).

    >>> import numpy as np, numbagrad as ng
    >>> f = ng.trace(lambda x, y: (x * y).sum(), np.ones(2), np.ones(2))
    >>> h = handle_for(f)
    >>> h.n, h.m, h.value(np.array([1.0, 2.0, 3.0, 4.0]))   # x = concat(x, y)
    (4, 1, 11.0)
    """
    t = traced._t
    out_node = traced._out_node
    plan = traced._plan
    starts, stops, ext = plan.seg_start, plan.seg_stop, plan.ext
    adj_off = traced._adj_off
    seeds = np.array([k for ns in traced._in_nodes for k in ns], dtype=np.int64)
    tan_off, n_tan = plan_tangents(t, seeds, out_node + 1)
    widths = [int(np.prod(s, dtype=np.int64)) for s in traced.arg_shapes]
    cols = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    inputs = np.array([(t.val_off[k], adj_off[k], tan_off[k], cols[i], widths[i])
                       for i, ns in enumerate(traced._in_nodes) for k in ns],
                      dtype=np.int64).reshape(-1, 5)
    zero = traced._zero_ranges
    # a comparison guard (an item() value only compared) is checked here as its exact value:
    # stricter than the replay's, never looser
    guards = [(k, GUARD_VALUE, v[:1], how) if kind >= GUARD_CMP else (k, kind, v, how)
              for k, kind, v, how in traced._guards]
    g_off = np.array([t.val_off[g[0]] for g in guards], dtype=np.int64)
    g_ptr = np.concatenate([[0], np.cumsum([g[2].size for g in guards])]).astype(np.int64)
    g_vals = np.concatenate([g[2] for g in guards] or [np.zeros(0)]).astype(np.float64)
    g_truth = np.array([g[1] == GUARD_TRUTH for g in guards], dtype=np.int8)
    # fused scratch: a segment's ops times its block width (1 for single values)
    nops = (stops - starts) if len(starts) else np.ones(1, dtype=np.int64)
    width = np.minimum(t.sizes[starts], BLOCK) if len(starts) else np.ones(1, dtype=np.int64)
    rows, rcs = plan_rows(t, ext, adj_off, starts, stops)
    chunks, buf, adj, adjdot, tan, sv, gv, sums = _own_buffers(
        traced._init, traced._total + 1, max(int(n_tan), 1), int(max(1, (nops * width).max())),
        int(2 * nops.max()))
    # a handle may run on the threads of the user's prange loop, where no kernel can be
    # compiled on demand: every kernel its serial sweeps reach is compiled now
    dispatch.ensure(t.opcodes, (dispatch.FWD, dispatch.VJP, dispatch.JVP, dispatch.HVP,
                                dispatch.UBLOCK_FWD, dispatch.UBLOCK_VJP, dispatch.BBLOCK_FWD,
                                dispatch.BBLOCK_VJP), dispatch.DTYPES.index(
                                    traced._init.dtype.type))
    h = _new(t, adj_off, tan_off, starts, stops, ext, plan.prog, plan.pc, rows, rcs, zero, inputs, g_off, g_ptr, g_vals, g_truth,
             int(cols[-1]), traced._out_size, int(out_node), int(t.val_off[out_node]),
             int(adj_off[out_node]), int(tan_off[out_node]), 0,
             chunks, buf, adj, adjdot, tan, sv, gv, sums)
    _set_entry(h, entry_for(h._type))
    return h


# ---------------------------------------------------------------- methods in Numba code

@intrinsic
def _call(typingctx, h, mode, x, a, out):
    """Call the handle's entry point on the data of C-contiguous arrays x, a and out."""
    sig = types.int32(h, types.int64, x, a, out)

    def codegen(context, builder, sig, args):
        hv, modev, xv, av, ov = args
        st = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=hv)
        data = [context.make_array(ty)(context, builder, value=v).data
                for ty, v in zip(sig.args[2:], (xv, av, ov))]
        fnty = ir.FunctionType(ir.IntType(32), [cgutils.voidptr_t, ir.IntType(64)] +
                               [d.type for d in data])
        entry = structref._Utils(context, builder, sig.args[0]).get_data_struct(hv).entry
        fn = builder.inttoptr(entry, fnty.as_pointer())
        return builder.call(fn, [builder.bitcast(st.meminfo, cgutils.voidptr_t), modev] + data)
    return sig, codegen


def _input(x, buf):
    pass


@overload(_input)
def _input_impl(x, buf):
    """x itself when its data can be handed over as is; else a C-contiguous copy of the tape's
    dtype (an allocation per call: pass C-contiguous arrays of the tape's dtype to avoid it)."""
    if not isinstance(x, types.Array):
        raise TypingError(f"expected an array, got {x}")
    if x.layout == "C" and x.dtype == buf.dtype:
        return lambda x, buf: x
    return lambda x, buf: np.ascontiguousarray(x).astype(buf.dtype)


def _check_out(h, out):
    dt = h.field_dict["buf"].dtype
    if not (isinstance(out, types.Array) and out.layout == "C" and out.dtype == dt
            and out.mutable):
        raise TypingError(f"out: expected a writable C-contiguous {dt} array, got {out}")


@njit(**IEEE, cache=True)
def _guard_failed():
    raise GuardError("a value the traced function read while recording differs at this point "
                     "(it may take another branch): trace again there")


@overload_method(NumbaHandleType, "value")
def _value(h, x):
    def impl(h, x):
        if h.m != 1:
            raise ValueError("value() is for scalar outputs; use value_into")
        xc = _input(x, h.buf)
        if xc.size != h.n:
            raise ValueError("x: wrong size (expected h.n, the arguments' total size)")
        if _call(h, VALUE, xc, xc, xc) != 0:
            _guard_failed()
        return float(h.buf[h.out_val])
    return impl


@overload_method(NumbaHandleType, "value_into")
def _value_into(h, x, out):
    _check_out(h, out)

    def impl(h, x, out):
        xc = _input(x, h.buf)
        if xc.size != h.n or out.size != h.m:
            raise ValueError("x, out: wrong size (expected h.n, h.m)")
        if _call(h, VALUE, xc, xc, xc) != 0:
            _guard_failed()
        of = out.reshape(h.m)
        for j in range(h.m):
            of[j] = h.buf[h.out_val + j]
    return impl


@overload_method(NumbaHandleType, "grad_into")
def _grad_into(h, x, out):
    _check_out(h, out)

    def impl(h, x, out):
        if h.m != 1:
            raise ValueError("grad_into needs a scalar output; use vjp_into")
        xc = _input(x, h.buf)
        if xc.size != h.n or out.size != h.n:
            raise ValueError("x, out: wrong size (expected h.n)")
        if _call(h, GRAD, xc, xc, out) != 0:
            _guard_failed()
        return float(h.buf[h.out_val])
    return impl


@overload_method(NumbaHandleType, "vjp_into")
def _vjp_into(h, x, v, out):
    _check_out(h, out)

    def impl(h, x, v, out):
        xc, vc = _input(x, h.buf), _input(v, h.buf)
        if xc.size != h.n or vc.size != h.m or out.size != h.n:
            raise ValueError("x, v, out: wrong size (expected h.n, h.m, h.n)")
        if _call(h, VJP, xc, vc, out) != 0:
            _guard_failed()
    return impl


@overload_method(NumbaHandleType, "jvp_into")
def _jvp_into(h, x, t, out):
    _check_out(h, out)

    def impl(h, x, t, out):
        xc, tc = _input(x, h.buf), _input(t, h.buf)
        if xc.size != h.n or tc.size != h.n or out.size != h.m:
            raise ValueError("x, t, out: wrong size (expected h.n, h.n, h.m)")
        if _call(h, JVP, xc, tc, out) != 0:
            _guard_failed()
    return impl


@overload_method(NumbaHandleType, "hvp_into")
def _hvp_into(h, x, v, out):
    _check_out(h, out)

    def impl(h, x, v, out):
        if h.m != 1:
            raise ValueError("hvp_into needs a scalar output")
        xc, vc = _input(x, h.buf), _input(v, h.buf)
        if xc.size != h.n or vc.size != h.n or out.size != h.n:
            raise ValueError("x, v, out: wrong size (expected h.n)")
        if _call(h, HVP, xc, vc, out) != 0:
            _guard_failed()
    return impl


@overload_method(NumbaHandleType, "copy")
def _copy_method(h):
    return lambda h: _copy(h)


@overload_method(NumbaHandleType, "copies")
def _copies_method(h, k):
    return lambda h, k: _copies(h, k)


# the same methods from Python: small compiled wrappers (cached)
@njit(**IEEE, cache=True)
def _py_n(h):
    return h.n


@njit(**IEEE, cache=True)
def _py_m(h):
    return h.m


@njit(**IEEE, cache=True)
def _py_value(h, x):
    return h.value(x)


@njit(**IEEE, cache=True)
def _py_value_into(h, x, out):
    h.value_into(x, out)


@njit(**IEEE, cache=True)
def _py_grad(h, x, out):
    return h.grad_into(x, out)


@njit(**IEEE, cache=True)
def _py_vjp(h, x, v, out):
    h.vjp_into(x, v, out)


@njit(**IEEE, cache=True)
def _py_jvp(h, x, t, out):
    h.jvp_into(x, t, out)


@njit(**IEEE, cache=True)
def _py_hvp(h, x, v, out):
    h.hvp_into(x, v, out)


# ---------------------------------------------------------------- handles as globals

@intrinsic
def _meminfo_address(typingctx, h):
    def codegen(context, builder, sig, args):
        st = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        return builder.ptrtoint(st.meminfo, cgutils.intp_t)
    return types.intp(h), codegen


@njit(**IEEE, cache=True)
def _address(h):
    return _meminfo_address(h)


_PINNED = {}   # handles frozen into compiled code live as long as the process


@lower_constant(NumbaHandleType)
def _handle_constant(context, builder, ty, pyval):
    """A handle used as a global: its MemInfo address becomes a constant of the function.
    ``add_dynamic_addr`` also marks the function uncachable (the address is this process's)."""
    addr = int(_address(pyval))
    _PINNED[addr] = pyval
    ptr = context.add_dynamic_addr(builder, addr, info="numbagrad.NumbaHandle")
    st = cgutils.create_struct_proxy(ty)(context, builder)
    st.meminfo = builder.bitcast(ptr, st.meminfo.type)
    return st._getvalue()
