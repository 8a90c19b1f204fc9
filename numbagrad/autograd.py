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
import numpy as np
from numba import njit

from .sweeps import plan_adjoints, reverse_sweep, PAR_MIN, FREED, REQUIRES_GRAD, MODIFIED, \
    SECOND_BACKWARD, OK, NEED_BUFFER
from .ops import IEEE, LEAF
from .tape import Tape, resolve
from .tensor import Tensor, as_tensor
from . import anomaly

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


@njit(**IEEE, cache=True)
def backward_sweep(t, chunks, flag_column, seed_nodes, seeds, free, par_min, adj_buf):
    """Steps 2-3 above in one compiled call: plan, seed, sweep, and (``free``) mark every swept
    op FREED in ``t.flags`` and in ``flag_column`` (the tape's own column, or empty).

    ``seeds`` holds the seed of each of ``seed_nodes`` flattened, one after another.  Returns
    (adj_off, adj, status, op, node) as ``plan_adjoints`` does, with the swept adjoints.
    ``adj_buf`` is a zeroed buffer of exactly the adjoints' size, or anything else to have one
    allocated here; for CALLOC_MIN elements or more it returns NEED_BUFFER with the size in
    ``op`` instead (call again with ``np.zeros(op)``).
    A small tensor's backward used to pay for each step's call and NumPy temporaries
    separately: 30 us, against 4 us of sweeping.
    """
    adj_off, total, status, op, node = plan_adjoints(t, seed_nodes)
    if status != OK:
        return adj_off, adj_buf[:0], status, op, node
    if adj_buf.size == total:
        adj = adj_buf
    elif total >= CALLOC_MIN:
        return adj_off, adj_buf[:0], NEED_BUFFER, total, -1
    else:
        adj = np.zeros(total, dtype=seeds.dtype)
    pos, top = 0, -1
    for s in seed_nodes:
        off, n = adj_off[s], t.sizes[s]
        if off >= 0:
            for j in range(n):
                adj[off + j] += seeds[pos + j]
        pos += n
        top = max(top, s)
    reverse_sweep(t, chunks, adj, adj_off, top, par_min)
    if free:
        marked = flag_column.size == t.flags.size
        for i in range(top + 1):
            if adj_off[i] >= 0 and t.opcodes[i] != LEAF:
                t.flags[i] |= FREED
                if marked:
                    flag_column[i] |= FREED
    return adj_off, adj, status, op, node


def _run(outputs, grad_outputs, retain_graph):
    """Steps 1-3 above.  Returns (tape, adj, adj_off)."""
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
        if o._tape is None:
            continue
        o._tape, o._node = resolve(o._tape, o._node)
        if tape is None:
            tape = o._tape
        elif o._tape is not tape:
            small, big = sorted((tape, o._tape), key=len)
            big.absorb(small)
            tape = big
    if tape is None:
        tape = Tape(outputs[0].dtype)
    nodes = []
    for o in outputs:
        if o._tape is None:
            nodes.append(tape.leaf(o))
        else:
            o._tape, o._node = resolve(o._tape, o._node)
            nodes.append(o._node)
    tape.check_leaf_versions()
    arrays = tape.arrays()
    seed_nodes = np.array(nodes, dtype=np.int64)
    if len(seeds) == 1:
        seed = seeds[0]
        if seed is not _ONE or tape.dtype != np.float64:
            seed = np.ascontiguousarray(seed.reshape(-1), dtype=tape.dtype)
    else:
        seed = np.concatenate([s.reshape(-1) for s in seeds]).astype(tape.dtype, copy=False)
    # inside ng.detect_anomaly() the adjoints are checked before anything is freed
    free = not retain_graph and not anomaly.is_anomaly_enabled()
    chunks, flag_column = tape.typed_chunks(), tape.flag_column()
    adj_off, adj, status, op, node = backward_sweep(
        arrays, chunks, flag_column, seed_nodes, seed, free, PAR_MIN, seed[:0])
    if status == NEED_BUFFER:
        adj_off, adj, status, op, node = backward_sweep(
            arrays, chunks, flag_column, seed_nodes, seed, free, PAR_MIN,
            np.zeros(op, dtype=tape.dtype))
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
    return tape, adj, adj_off


def _adjoint(tape, adj, adj_off, k, like):
    off = adj_off[k]
    if off < 0:
        return None
    d = like._data
    g = adj[off:off + d.size].reshape(d.shape)
    return g.astype(d.dtype) if g.dtype != d.dtype else g.copy()


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
    tape, adj, adj_off = _run(list(tensors), grad_tensors, retain_graph)
    for k, leaf, _ in tape.leaves:
        if leaf._requires_grad and leaf._tape is None and adj_off[k] >= 0:
            _accumulate(leaf, _adjoint(tape, adj, adj_off, k, leaf))
    for k, t in tape.retained.items():
        if adj_off[k] >= 0:
            _accumulate(t, _adjoint(tape, adj, adj_off, k, t))


def _accumulate(t, g):
    if t._grad is None:
        t._grad = Tensor(g)
    else:
        t._grad._data += g
        t._grad._version[0] += 1


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
    tape, adj, adj_off = _run(list(outputs), grad_outputs, retain_graph)
    result = []
    for i, x in enumerate(inputs):
        g = None
        if x._tape is None:
            for k, leaf, _ in tape.leaves:
                if leaf is x and adj_off[k] >= 0:
                    gk = _adjoint(tape, adj, adj_off, k, x)
                    g = gk if g is None else g + gk
        else:
            t, k = resolve(x._tape, x._node)
            if t is tape:
                g = _adjoint(tape, adj, adj_off, k, x)
        if g is None and not allow_unused:
            raise RuntimeError("One of the differentiated Tensors appears to not have been used in "
                               "the graph. Set allow_unused=True if this is the desired behavior.")
        result.append(None if g is None else Tensor(g))
    return tuple(result)
