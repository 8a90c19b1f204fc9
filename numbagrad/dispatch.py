"""The sweeps' dispatch: a table of compiled kernels, filled with only the ops a tape uses.

A sweep does not link every op's kernel into itself.  It looks up the address of node ``i``'s
kernel in ``TABLE`` (one slot per mode, size class, dtype and opcode) and calls it there; an
empty slot calls back into Python once (:func:`kernel_address`), which compiles that kernel
(or loads it from Numba's disk cache), writes its address into the slot and returns it.  So
the first sweep of a tape compiles the kernels of the opcodes on that tape, for that dtype and
mode, and nothing else, and the sweeps themselves compile once, whatever ops exist.

Every kernel of a mode takes the same arguments (``SIGNATURE``); which function runs an op in a
mode follows from its row's family (``ops.OPS[op].family``, ``KERNELS`` below).  A node below
``par_min`` elements runs its kernel compiled serially (a fraction of the compile time of the
``prange`` form, and the same loop); at or above, the parallel form.  An opcode without a row
raises ``ValueError``: no dispatch falls through to a zero gradient.

The table lives at a fixed address that compiled code reaches by a symbol
(``numbagrad_kernel_table``), registered with LLVM before any sweep is compiled or loaded from
the cache, so cached sweeps need no argument for it.
"""
import ctypes
import sys
import threading
import types as pytypes

import numpy as np
from llvmlite import binding as llvm, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import kernels as K
from .ops import (IEEE, OPS, N_OPCODES, OPCODE_NAME, LEAF_F, UNARY_F, BINARY_F, WHERE_F,
                  SUM_F, REDUCE_F, RESHAPE_F, GATHER_F, CAT_F, MATMUL_F, COMPARE_F)

FWD, VJP, JVP, HVP = range(4)        # the sweeps' modes: one kernel per op and mode
# the fused sweeps' (fusion.py): an elementwise op over one block of a segment, by op; and a
# whole segment, forward or reverse, or a segment of single values (one function for every op:
# slot 0)
UBLOCK_FWD, UBLOCK_VJP, BBLOCK_FWD, BBLOCK_VJP, SEG_FWD, SEG_REV, SCALAR_FWD, SCALAR_REV = \
    range(4, 12)
N_MODES = 12
WHOLE = (SEG_FWD, SEG_REV, SCALAR_FWD, SCALAR_REV)  # modes of one function for every op
MODE_NAMES = ("forward", "reverse", "tangent", "hvp", "fused forward", "fused reverse",
              "fused forward", "fused reverse", "segment forward", "segment reverse",
              "scalar program forward", "scalar program reverse")
SMALL, LARGE = 0, 1                  # size class: serial kernel, or its prange form
DTYPES = (np.float64, np.float32)    # value dtypes, by index

TABLE = np.zeros((N_MODES, 2, len(DTYPES), N_OPCODES), dtype=np.int64)
_SYMBOL = "numbagrad_kernel_table"
llvm.add_symbol(_SYMBOL, TABLE.ctypes.data)


# ---------------------------------------------------------------- the kernels of each family
# Every kernel of a mode takes the same arguments, so that one call site in a sweep runs any op:
#   forward  (op, tp, chunks, i, par_min)
#   reverse  (op, tp, chunks, adj, adj_off, i, par_min)
#   tangent  (op, tp, chunks, tan, tan_off, i, par_min)
#   hvp      (op, tp, chunks, tan, tan_off, adj, adjdot, adj_off, i, par_min)
# ``tp`` is the address of the sweep's tape (kernels.tape_address, tape_at).
# Elementwise kernels take ``op`` as a compile-time constant (one loop per op); the others read
# what they need from the tape.

jit = njit(**IEEE, cache=True)


@jit
def no_tangent(op, tp, chunks, tan, tan_off, i, par_min):
    """A comparison's tangent: zero (0/1 values do not move with their operands)."""
    to = tan_off[i]
    if to >= 0:
        tan[to:to + K.tape_at(tp).sizes[i]] = 0.0


@jit
def no_adjoint(op, tp, chunks, adj, adj_off, i, par_min):
    """A comparison passes no adjoint to its operands (its derivative is zero)."""
    return


# family -> (forward, reverse, tangent, hvp); None in hvp: linear, the reverse kernel runs on
# the adjoints' tangents.  ``literal``: the kernel takes the opcode as a compile-time constant.
KERNELS = {
    UNARY_F: (K.unary_fwd, K.unary_vjp, K.unary_jvp, K.unary_hvp),
    BINARY_F: (K.binary_fwd, K.binary_vjp, K.binary_jvp, K.binary_hvp),
    WHERE_F: (K.where_fwd, K.where_vjp, K.where_jvp, None),
    SUM_F: (K.sum_fwd, K.sum_vjp, K.sum_jvp, None),
    REDUCE_F: (K.reduce_fwd, K.reduce_vjp, K.reduce_jvp, K.reduce_hvp),
    RESHAPE_F: (K.copy_fwd, K.copy_vjp, K.copy_jvp, None),
    GATHER_F: (K.gather_fwd, K.gather_vjp, K.gather_jvp, None),
    CAT_F: (K.cat_fwd, K.cat_vjp, K.cat_jvp, None),
    MATMUL_F: (K.matmul_fwd, K.matmul_vjp, K.matmul_jvp, K.matmul_hvp),
    COMPARE_F: (K.compare_fwd, no_adjoint, no_tangent, None),
}
LITERAL = {UNARY_F, BINARY_F}

# Whether each opcode's HVP runs its reverse kernel on adjdot (linear ops), for the sweeps.
HVP_AS_VJP = np.zeros(N_OPCODES, dtype=np.bool_)
for _o in OPS:
    if _o is not None and _o.family != LEAF_F:
        if not _o.linear and KERNELS[_o.family][HVP] is None:
            raise AssertionError(f"{OPCODE_NAME[_o.code]} is not linear: it needs an HVP kernel")
        HVP_AS_VJP[_o.code] = _o.linear


# ---------------------------------------------------------------- argument types
_types_cache = {}


def _plan_type():
    from .fusion import FusionPlan
    from numba import typeof
    return typeof(FusionPlan(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8),
                             np.zeros((0, 8), np.int64), np.zeros((0, 2))))


def signature(mode, dtype_index):
    """(argument types after ``op``, return type) of every kernel of ``mode`` for values of a
    dtype."""
    key = (mode, dtype_index)
    sig = _types_cache.get(key)
    if sig is None:
        vals = types.Array(types.float32 if dtype_index else types.float64, 1, "C")
        offs = types.Array(types.int64, 1, "C")
        chunks = types.ListType(vals)
        i, f = types.int64, types.float64
        if mode <= HVP:
            t = types.int64  # the address of the sweep's tape (kernels.tape_address)
            sig = {FWD: (t, chunks, i, i),
                   VJP: (t, chunks, vals, offs, i, i),
                   JVP: (t, chunks, vals, offs, i, i),
                   HVP: (t, chunks, vals, offs, vals, vals, offs, i, i)}[mode], types.none
        elif mode == UBLOCK_FWD:
            sig = (vals, i, i, vals, i, i, f, f), types.none
        elif mode == UBLOCK_VJP:
            sig = (vals, i, i, vals, i, vals, i, vals, i, i, i, f, f), f
        elif mode == BBLOCK_FWD:
            sig = (vals, i, i, vals, i, i, vals, i, i), types.none
        elif mode == BBLOCK_VJP:
            sig = ((vals, i, i, vals, i, i, vals, i, vals, i, vals, i, i, vals, i, i, i),
                   types.UniTuple(f, 2))
        else:
            t, plan = K.tape_type(), _plan_type()
            prog, pc = types.Array(types.int64, 2, "C"), types.Array(types.float64, 2, "C")
            sig = {SEG_FWD: (t, chunks, vals, plan, i, i, i, i),
                   SEG_REV: (t, chunks, vals, offs, plan, i, i, i, i, offs),
                   SCALAR_FWD: (prog, pc, vals, i, i),
                   SCALAR_REV: (prog, pc, vals, vals, i, i)}[mode], types.none
        _types_cache[key] = sig
    return sig


# ---------------------------------------------------------------- compiling a slot
_serial_copies = {}
_lock = threading.RLock()


def _serial(dispatcher):
    """The same kernel compiled without threads: a ``prange`` loop runs as a plain loop.

    A function of its own (its own name, so its own entry in Numba's disk cache) made from
    the parallel kernel's code."""
    copy = _serial_copies.get(dispatcher)
    if copy is None:
        f = dispatcher.py_func
        g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial",
                                 f.__defaults__, f.__closure__)
        g.__qualname__ = f.__qualname__ + "_serial"
        g.__module__ = f.__module__
        g.__doc__ = f.__doc__
        copy = _serial_copies[dispatcher] = njit(**IEEE, cache=True)(g)
    return copy


def _is_parallel(dispatcher):
    return bool(dispatcher.targetoptions.get("parallel"))


def _fused_kernels():
    from . import fusion as F
    return {UNARY_F: {UBLOCK_FWD: F._unary_fwd, UBLOCK_VJP: F._unary_vjp},
            BINARY_F: {BBLOCK_FWD: F._binary_fwd, BBLOCK_VJP: F._binary_vjp}}, \
        {SEG_FWD: F.segment_forward_impl, SEG_REV: F.segment_reverse_impl,
         SCALAR_FWD: F.scalar_forward_kernel, SCALAR_REV: F.scalar_reverse_kernel}


def kernel_function(mode, op):
    """The dispatcher that runs opcode ``op`` in ``mode`` (ValueError for an unknown opcode)."""
    if mode in WHOLE:
        return _fused_kernels()[1][mode]
    row = OPS[op] if 0 <= op < N_OPCODES else None
    if row is None or row.family == LEAF_F:
        raise ValueError(f"opcode {op} has no row in numbagrad.ops: no kernel to run it")
    if mode > HVP:
        fn = _fused_kernels()[0].get(row.family, {}).get(mode)
        if fn is None:
            raise ValueError(f"{OPCODE_NAME[op]} has no {MODE_NAMES[mode]} block kernel")
        return fn
    fn = KERNELS[row.family][mode]
    if fn is None or (mode == HVP and row.linear):
        raise ValueError(f"{OPCODE_NAME[op]} is linear: its {MODE_NAMES[mode]} sweep runs its "
                         "reverse kernel")
    return fn


def compile_slot(mode, size, dtype_index, op):
    """Compile (or load from the disk cache) one kernel and write its address into TABLE."""
    with _lock:
        addr = int(TABLE[mode, size, dtype_index, op])
        if addr:
            return addr
        fn = kernel_function(mode, op)
        if size == SMALL and _is_parallel(fn):
            fn = _serial(fn)
        literal = mode not in WHOLE and OPS[op].family in LITERAL
        first = types.IntegerLiteral(op) if literal else types.int64
        argtypes, restype = signature(mode, dtype_index)
        args = (first,) + argtypes
        fn.compile(args)
        cres = fn.overloads[args]
        if cres.signature.return_type != restype:
            raise TypeError(f"kernel {fn.py_func.__qualname__} returns "
                            f"{cres.signature.return_type}, not {restype}")
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        if not addr:
            raise RuntimeError(f"no address for the compiled {fn.py_func.__qualname__}")
        TABLE[mode, size, dtype_index, op] = addr
        return int(addr)


def kernel_address(mode, size, dtype_index, op):
    """Compile one slot's kernel, saying so on stderr when that takes long."""
    from . import compile_notice
    what = (f"the {MODE_NAMES[mode]} of fused segments" if mode in WHOLE
            else f"the {MODE_NAMES[mode]} kernel of {OPCODE_NAME.get(op, op)}")
    with compile_notice.compiling(what):
        return compile_slot(mode, size, dtype_index, op)


# Compiled code asks for an empty slot through a C callback into Python (ctypes takes the
# interpreter lock, which the thread running the sweep already holds).  An object-mode block
# would do the same, but Numba recompiles a function holding one in every process.
_FILL_SLOT = "numbagrad_fill_slot"
_errors = []


@ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
def _fill_slot_callback(mode, size, dtype_index, op):
    try:
        return kernel_address(mode, size, dtype_index, op)
    except BaseException as e:  # an exception cannot cross the C frame: kept for the message
        _errors.append(e)
        print(f"numbagrad: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 0


llvm.add_symbol(_FILL_SLOT, ctypes.cast(_fill_slot_callback, ctypes.c_void_p).value)


def last_error():
    """The exception of the last kernel that could not be had for a sweep (None if none)."""
    return _errors[-1] if _errors else None


def all_slots():
    """Every slot of TABLE that some kernel fills: (mode, size, dtype index, op)."""
    for op, row in enumerate(OPS):
        if row is None or row.family == LEAF_F:
            continue
        for mode in range(N_MODES):
            if mode in WHOLE:
                continue
            try:
                kernel_function(mode, op)
            except ValueError:  # a linear op's HVP, an op with no block kernel
                continue
            for size in (SMALL, LARGE) if mode <= HVP else (SMALL,):
                for d in range(len(DTYPES)):
                    yield mode, size, d, op
    for mode in WHOLE:
        for size in (SMALL, LARGE) if mode in (SEG_FWD, SEG_REV) else (SMALL,):
            for d in range(len(DTYPES)):
                yield mode, size, d, 0


def ensure(opcodes, modes, dtype_index, sizes=(SMALL,)):
    """Fill the slots of every op in ``opcodes`` for ``modes`` before compiled code that cannot
    call back into Python needs them (sweeps run on the threads of a ``prange`` loop: the
    callback would wait for the interpreter lock their caller holds).

    >>> import numpy as np
    >>> from numbagrad import dispatch, ops
    >>> dispatch.ensure(np.array([ops.LEAF, ops.NEG]), (dispatch.VJP,), 0)
    >>> bool(dispatch.TABLE[dispatch.VJP, dispatch.SMALL, 0, ops.NEG])
    True
    """
    present = np.unique(np.asarray(opcodes))
    blocks = _fused_kernels()[0]
    for op in present.tolist():
        row = OPS[op] if 0 <= op < N_OPCODES else None
        if row is None:
            raise ValueError(f"opcode {op} has no row in numbagrad.ops: no kernel to run it")
        if row.family == LEAF_F:
            continue
        for mode in modes:
            if mode == HVP and HVP_AS_VJP[op]:
                mode = VJP
            if mode > HVP and mode not in blocks.get(row.family, {}):
                continue  # a unary op has no binary block kernel, a reduction none
            for size in sizes:
                if not TABLE[mode, size, dtype_index, op]:
                    compile_slot(mode, size, dtype_index, op)


# ---------------------------------------------------------------- what the sweeps call
def _dtype_index_of(typ):
    if isinstance(typ, types.ListType):
        typ = typ.item_type
    if not isinstance(typ, types.Array):
        return None
    return DTYPES.index(np.dtype(str(typ.dtype)).type)


@intrinsic
def table_slot(typingctx, mode, size, dtype_of, op):
    """The address in TABLE[mode, size, dtype of ``dtype_of``, op] (0 while not compiled);
    ``dtype_of``: an array of the values' dtype, or the typed list of value chunks."""
    d = _dtype_index_of(dtype_of)
    if d is None:
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        g = builder.module.globals.get(_SYMBOL)
        if g is None:
            g = ir.GlobalVariable(builder.module, i64, _SYMBOL)
            g.linkage = "external"
        m, s, o = (context.cast(builder, args[k], sig.args[k], types.int64) for k in (0, 1, 3))
        k = builder.add(builder.mul(builder.add(builder.mul(builder.add(builder.mul(
            m, i64(2)), s), i64(len(DTYPES))), i64(d)), i64(N_OPCODES)), o)
        return builder.load(builder.gep(g, [k]))
    return types.int64(mode, size, dtype_of, op), codegen


@intrinsic
def dtype_index(typingctx, values):
    """The index in DTYPES of an array's (or a typed list of arrays') dtype, a constant."""
    d = _dtype_index_of(values)
    if d is None:
        return None
    return types.int64(values), lambda context, builder, sig, args: ir.IntType(64)(d)


@intrinsic
def call_kernel(typingctx, mode, addr, op, args):
    """Call the kernel at ``addr`` with ``(op, *args)``; ``args`` must be the mode's types."""
    if not isinstance(mode, types.IntegerLiteral):
        return None
    m = mode.literal_value
    restype = None
    for d in range(len(DTYPES)):
        argtypes, res = signature(m, d)
        if tuple(args) == argtypes:
            restype = res
    if restype is None:
        from numba.core.errors import TypingError
        raise TypingError(f"numbagrad: a {MODE_NAMES[m]} kernel called with {tuple(args)}; "
                          f"kernels are compiled for {signature(m, 0)[0]}")

    def codegen(context, builder, sig, llargs):
        argtys = (types.int64,) + tuple(sig.args[3])
        vals = [context.cast(builder, llargs[2], sig.args[2], types.int64)]
        vals += cgutils.unpack_tuple(builder, llargs[3])
        fnty = context.call_conv.get_function_type(restype, argtys)
        fptr = builder.inttoptr(llargs[1], fnty.as_pointer())
        _, res = context.call_conv.call_function(builder, fptr, restype, argtys, vals)
        return res if restype != types.none else context.get_dummy_value()
    return restype(mode, addr, op, args), codegen


@intrinsic
def call_fill_slot(typingctx, mode, size, dtype_index, op):
    """The address of a slot's kernel from Python (``_fill_slot_callback``; 0 on failure)."""
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64] * 4)
        fn = cgutils.get_or_insert_function(builder.module, fnty, _FILL_SLOT)
        vals = [context.cast(builder, v, ty, types.int64) for v, ty in zip(args, sig.args)]
        return builder.call(fn, vals)
    return types.int64(mode, size, dtype_index, op), codegen
