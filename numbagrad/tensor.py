"""The Tensor: a NumPy array plus the node that recorded it.

A Tensor holds its value eagerly (``_data``), so ``print(y)`` shows numbers as
in PyTorch.  When grad mode is on and an op has an operand that requires grad,
``record`` appends one node to the operands' tape and the result points at it
(``_tape``, ``_node``).  Leaves have no tape; they are recorded on a tape the
first time an op uses them.
"""
import math
import numbers
import threading
import warnings
import weakref

import numpy as np

from . import anomaly, bulk, grad_mode, pool
from .ops import NAME_ID
from .printing import tensor_repr
from .sweeps import DIRTY, REQUIRES_GRAD
from .tape import Tape, resolve, version_counter

float32, float64 = np.float32, np.float64
int32, int64, bool_ = np.int32, np.int64, np.bool_
_default = [np.dtype(np.float64)]


def get_default_dtype():
    """The float dtype of tensors made from Python floats (float64 unless changed).

    >>> import numbagrad as ng
    >>> ng.get_default_dtype()
    dtype('float64')
    """
    return _default[0]


def set_default_dtype(dtype):
    """Set the float dtype used for Python floats and float factories (float32 or float64).

    >>> import numbagrad as ng
    >>> ng.set_default_dtype(ng.float32); ng.ones(2).dtype
    dtype('float32')
    >>> ng.set_default_dtype(ng.float64)
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"only float32 and float64 can be the default dtype, got {dt}")
    _default[0] = dt


# kinds of Tape.guards entries: the exact values were read, or only their truth
GUARD_VALUE, GUARD_TRUTH = 0, 1
# ... or only the outcome of one comparison of a single value with a number: kind
# GUARD_CMP + i for the operator CMP_OPS[i], recorded as [value, number, outcome (0 or 1)]
GUARD_CMP = 2
CMP_OPS = ("<", "<=", ">", ">=", "==", "!=")
GUARD_KINDS = (GUARD_VALUE, GUARD_TRUTH) + tuple(GUARD_CMP + i for i in range(len(CMP_OPS)))
# while ``trace`` records, ``guard_watch.tapes`` collects the tapes that got guards
guard_watch = threading.local()


class Size(tuple):
    """A tensor's shape: a tuple that prints as ``Size([2, 3])``."""

    def __repr__(self):
        return f"Size({list(self)})"

    def numel(self):
        return math.prod(self)


def _check_grad_dtype(dtype):
    if np.dtype(dtype).kind != "f":
        raise RuntimeError("only Tensors of floating point dtype can require gradients")


class Tensor:
    """An n-dimensional array that records the ops applied to it for differentiation.

    >>> import numbagrad as ng
    >>> x = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    tensor([2., 4., 6.])
    """

    # A 0-d float64 result of the scalar lane (lane.py) holds its value as the Python float
    # ``_scalar`` with ``_array`` None until ``_data`` is read; one whose operands were all
    # untaped leaves waits in ``_pending`` until it meets a tape or ``_tape`` or ``_node`` is
    # read.  Those three are properties over the slots ``_array``, ``_tape_`` and ``_node_``
    # (the lane reads the slots).  Not a __getattr__ for unset slots: a class with one has
    # every attribute read take CPython's slow path (29 against 10 ns a slot, 48 a property).
    __slots__ = ("_array", "_tape_", "_node_", "_requires_grad", "_grad", "_version",
                 "_retains_grad", "_scalar", "_pending", "__weakref__")
    # NumPy calls on tensors (np.exp(t), ndarray * t, np.sum(t)) record like the ng functions
    # (interop.py); np.asarray(t) goes through __array__, which refuses a tensor that requires
    # grad while grad mode is on (PyTorch's numpy() rule)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return interop.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return interop.array_function(func, types, args, kwargs)

    def __init__(self, data, tape=None, node=-1, requires_grad=False, version=None):
        self._array = data
        self._tape_ = tape
        self._node_ = node
        self._requires_grad = requires_grad
        self._grad = None
        self._version = [0] if version is None else version
        self._retains_grad = False
        self._scalar = None
        self._pending = None

    @property
    def _data(self):
        """The value as an ndarray (a lane tensor's is made at the first read)."""
        d = self._array
        return d if d is not None else lane.materialize(self)

    @_data.setter
    def _data(self, d):
        self._array = d
        self._scalar = None  # a lane tensor's float is not its value any more

    @property
    def _tape(self):
        """The tape this tensor's node is on (a waiting lane tensor is recorded first)."""
        if self._pending is not None:
            lane.attach(self)
        return self._tape_

    @_tape.setter
    def _tape(self, tape):
        self._tape_ = tape

    @property
    def _node(self):
        """This tensor's node on ``_tape``."""
        if self._pending is not None:
            lane.attach(self)
        return self._node_

    @_node.setter
    def _node(self, node):
        self._node_ = node

    # ------------------------------------------------------------ attributes
    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        """The shape, or its length along ``dim``."""
        return self.shape if dim is None else self._data.shape[_dim(dim, self.ndim)]

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def numel(self):
        return self._data.size

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if not self.is_leaf:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use "
                "a computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().")
        if flag:
            _check_grad_dtype(self.dtype)
        self._requires_grad = bool(flag)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self._tape is None or not self._requires_grad

    @property
    def grad(self):
        if not self.is_leaf and not self._retains_grad:
            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
                ".grad attribute won't be populated during autograd.backward(). If you indeed "
                "want the .grad field to be populated for a non-leaf Tensor, use .retain_grad() "
                "on the non-leaf Tensor.", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            value = as_tensor(value)
            if value.shape != self.shape:
                raise RuntimeError(f"assigned grad has data of a different size: {tuple(value.shape)} "
                                   f"vs {tuple(self.shape)}")
        self._grad = value

    @property
    def grad_fn(self):
        if self.is_leaf:
            return None
        from .autograd import Node
        self._tape, self._node = resolve(self._tape, self._node)
        return Node(self._tape, self._node)

    @property
    def data(self):
        """The same values, detached from the graph (shares memory)."""
        return self.detach()

    @property
    def T(self):
        return F.permute(self, tuple(range(self.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return F.transpose(self, -2, -1)

    # ------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (seeded by ``gradient``).

        >>> import numbagrad as ng
        >>> x = ng.tensor([1.0, 2.0], requires_grad=True)
        >>> (2 * x).backward(ng.tensor([1.0, 0.5]))
        >>> x.grad
        tensor([2., 1.])
        """
        autograd.backward([self], None if gradient is None else [gradient], retain_graph)

    def detach(self):
        """A tensor with the same values (shared memory) and no history."""
        return Tensor(self._data, version=version_counter(self))

    def detach_(self):
        version_counter(self)  # a leaf from now on (tape.leaf reads its version)
        self._tape, self._node, self._requires_grad, self._pending = None, -1, False, None
        return self

    def retain_grad(self):
        """Keep this non-leaf tensor's ``.grad`` after backward."""
        if self.is_leaf:
            return
        self._tape, self._node = resolve(self._tape, self._node)
        self._tape.retained[self._node] = self
        self._retains_grad = True

    @property
    def retains_grad(self):
        return self._retains_grad

    # ------------------------------------------------------------ conversion
    def numpy(self):
        """The values as an ndarray sharing memory (PyTorch: detach first if it requires grad)."""
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        # PyTorch's rule (numpy()): no silent detach of a tensor whose gradient is at stake.
        # NumPy reaches here for np.asarray(t) and np.array(t), and for every tensor inside a
        # list it converts (np.mean([x, y]), np.r_[x, y]): NumPy's protocols never show those
        # lists to __array_function__, so raising is the only way not to drop the gradient.
        if self._requires_grad and grad_mode.is_grad_enabled():
            raise RuntimeError(interop.array_refusal())
        a = self._data
        if dtype is not None and a.dtype != dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def _guard(self, kind, how):
        """Python is about to look at a recorded value: note it on the tape (see Tape.guards).
        True when a guard was noted."""
        if self._tape is not None:
            self._tape, self._node = resolve(self._tape, self._node)
            self._tape.guards.append((self._node, kind, self._data.copy(), how))
            watching = getattr(guard_watch, "tapes", None)
            if watching is not None:  # a trace is recording: it must replay this value too
                watching.append(self._tape)
            return True
        return False

    def item(self):
        """The single value as a Python number.

        A float read from a recorded tensor is an ``ItemFloat``: while it is only compared with
        numbers, ``trace`` checks only those comparisons' outcomes on a replay (the branch
        taken); any other use makes the replay check the exact value (see ItemFloat)."""
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted "
                               "to Scalar")
        v = self._data.reshape(()).item()
        if isinstance(v, float):
            read = ItemRead("item()")
            if self._guard(GUARD_VALUE, read):
                return ItemFloat(v, read)
            return v
        self._guard(GUARD_VALUE, "item()")
        return v

    def tolist(self):
        self._guard(GUARD_VALUE, "tolist()")
        return self._data.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous")
        self._guard(GUARD_TRUTH, "bool()")
        return bool(self._data.reshape(()).item())

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    __hash__ = object.__hash__

    def __repr__(self):
        suffixes = []
        dt = self.dtype
        if dt.kind == "f" and dt != _default[0] or dt.kind in "iu" and dt != np.int64 \
                or dt.kind not in "fiub":
            suffixes.append(f"dtype={dt.name}")
        if not self.is_leaf:
            suffixes.append(f"grad_fn=<{grad_mode_name(self)}>")
        elif self._requires_grad:
            suffixes.append("requires_grad=True")
        return tensor_repr(self._data, suffixes)

    def __str__(self):
        return self.__repr__()

    def __format__(self, spec):
        if self.ndim == 0 and spec:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def to(self, dtype):
        """A copy in ``dtype`` (differentiable between float dtypes)."""
        return F.to_dtype(self, dtype)

    def float(self):
        return F.to_dtype(self, np.float32)

    def double(self):
        return F.to_dtype(self, np.float64)

    def clone(self):
        return F.clone(self)

    def copy_(self, src):
        return F.inplace(self, src, "copy")

    def zero_(self):
        """Fill with zeros in place."""
        return F.inplace(self, 0.0, "copy")

    def fill_(self, value):
        return F.inplace(self, value, "copy")

    # ------------------------------------------------------------ operators
    # __add__, __radd__, __sub__, __rsub__, __mul__, __rmul__, __truediv__, __rtruediv__ and
    # __pow__ are the lane's functions (set below, after the imports)
    def __rpow__(self, o): return F.pow(o, self)
    def __matmul__(self, o): return F.matmul(self, o)
    def __rmatmul__(self, o): return F.matmul(o, self)
    def __neg__(self): return F.neg(self)
    def __pos__(self): return self
    def __abs__(self): return F.abs(self)
    def __iadd__(self, o): return F.inplace(self, o, "add")
    def __isub__(self, o): return F.inplace(self, o, "sub")
    def __imul__(self, o): return F.inplace(self, o, "mul")
    def __itruediv__(self, o): return F.inplace(self, o, "div")
    def __lt__(self, o): return F.compare(self, o, np.less)
    def __le__(self, o): return F.compare(self, o, np.less_equal)
    def __gt__(self, o): return F.compare(self, o, np.greater)
    def __ge__(self, o): return F.compare(self, o, np.greater_equal)
    def __eq__(self, o): return F.compare(self, o, np.equal)
    def __ne__(self, o): return F.compare(self, o, np.not_equal)
    def __getitem__(self, key): return F.index(self, key)
    def __setitem__(self, key, value): F.setitem(self, key, value)

    # ------------------------------------------------------------ methods mirroring functions
    def add(self, o): return F.add(self, o)
    def sub(self, o): return F.sub(self, o)
    def mul(self, o): return F.mul(self, o)
    def div(self, o): return F.div(self, o)
    def pow(self, exponent): return F.pow(self, exponent)
    def neg(self): return F.neg(self)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sin(self): return F.sin(self)
    def cos(self): return F.cos(self)
    def tan(self): return F.tan(self)
    def tanh(self): return F.tanh(self)
    def sigmoid(self): return F.sigmoid(self)
    def relu(self): return F.relu(self)
    def sqrt(self): return F.sqrt(self)
    def abs(self): return F.abs(self)
    def clamp(self, min=None, max=None): return F.clamp(self, min, max)
    clip = clamp
    def matmul(self, o): return F.matmul(self, o)
    def dot(self, o): return F.dot(self, o)
    def maximum(self, o): return F.maximum(self, o)
    def minimum(self, o): return F.minimum(self, o)
    def sum(self, dim=None, keepdim=False, *, axis=None): return F.sum(self, dim, keepdim, axis=axis)
    def mean(self, dim=None, keepdim=False, *, axis=None): return F.mean(self, dim, keepdim, axis=axis)
    def max(self, dim=None, keepdim=False, *, axis=None): return F.max(self, dim, keepdim, axis=axis)
    def min(self, dim=None, keepdim=False, *, axis=None): return F.min(self, dim, keepdim, axis=axis)
    def logsumexp(self, dim, keepdim=False): return F.logsumexp(self, dim, keepdim)
    def softmax(self, dim=-1): return F.softmax(self, dim)
    def log_softmax(self, dim=-1): return F.log_softmax(self, dim)
    def reshape(self, *shape): return F.reshape(self, *shape)
    def view(self, *shape): return F.reshape(self, *shape, name="ViewBackward0")
    def flatten(self, start_dim=0, end_dim=-1): return F.flatten(self, start_dim, end_dim)
    def squeeze(self, dim=None): return F.squeeze(self, dim)
    def unsqueeze(self, dim): return F.unsqueeze(self, dim)
    def transpose(self, dim0, dim1): return F.transpose(self, dim0, dim1)
    def permute(self, *dims): return F.permute(self, *dims)
    def t(self): return F.transpose(self, 0, 1, name="TBackward0") if self.ndim == 2 else self
    def expand(self, *shape): return F.expand(self, *shape)


def grad_mode_name(t):
    """The grad_fn name of a recorded tensor."""
    tape, node = resolve(t._tape, t._node)
    return tape.name(node)


# ---------------------------------------------------------------- recording

def record(opcode, name, inputs, value, consts=(), iparams=(), alias=False, differentiable=True):
    """Wrap the eager result ``value`` of an op on ``inputs``; record it when grad is on.

    An op is recorded when an input requires grad or was itself recorded; the
    result requires grad when an input does (and the op is ``differentiable``).
    Recorded values without a gradient (comparisons and what is computed from
    them) keep a replay faithful.  ``alias`` makes the node share its first
    operand's storage (views).  This is the only place where ops meet the tape.
    """
    if not grad_mode._state.enabled:
        return Tensor(value)
    grad = False
    taped = False
    for x in inputs:
        if x._requires_grad:
            grad = True
        elif x._tape is not None:
            taped = True
    grad = grad and differentiable
    if not (grad or taped or (not differentiable and any(x._requires_grad for x in inputs))):
        return Tensor(value)
    dtype = value.dtype if value.dtype.kind == "f" else _default[0]
    if len(inputs) == 1:  # the common case, without the general merge (about 1 us less)
        x = inputs[0]
        tape = x._tape
        if tape is None:
            tape = start_tape(inputs, dtype)
            nodes = [tape.leaf(x)]
        else:
            if tape.forward_to is not None:
                tape, node = resolve(tape, x._node)
                x._tape, x._node = tape, node
            if tape.dtype is not dtype and dtype == np.float64:
                tape.upcast(np.float64)
            nodes = [x._node]
    else:
        tape = _tape_for(inputs, dtype)
        nodes = [x._node if x._tape is tape else _node_on(tape, x) for x in inputs]
    k = tape.record(opcode, NAME_ID[name], nodes, value, consts, iparams,
                    alias_of=nodes[0] if alias else None, flags=REQUIRES_GRAD if grad else 0)
    if anomaly._active[0]:  # ng.detect_anomaly() somewhere: check the value now
        anomaly.check_recorded(tape, k, value)
    return Tensor(value, tape, k, grad, version_counter(inputs[0]) if alias else None)


# An op whose inputs are leaves on no tape starts a tape; two such tapes meet at the first op
# using both, and one absorbs the other (Tape.absorb, 5-7 us).  Rosenbrock's x[1:], x[:-1] and
# x[:-1] started three and merged them: a fifth of W6's per-row step.  So an op on untaped
# leaves records onto the tape this thread's last such op started when that tape already holds
# one of the leaves (the same version) and is still small and unswept: graphs of a leaf used
# in several places share a tape, unrelated ones do not.  The bounds keep what sharing costs
# small: a backward plans over (and a tape keeps alive) at most REUSE_NODES nodes of small
# values of a neighbouring graph.
REUSE_NODES = 64


class _Recent(threading.local):
    tape = None  # a weak reference to the tape this thread's last op on untaped leaves started


_recent = _Recent()


def start_tape(inputs, dtype):
    """The tape for an op on the untaped leaves among ``inputs`` (see REUSE_NODES)."""
    ref = _recent.tape
    if ref is not None:
        tape = ref()
        if tape is not None and tape.forward_to is None and not tape.swept \
                and tape._len <= REUSE_NODES and not tape.large and tape.dtype == dtype:
            seen = tape._leaf_node
            for x in inputs:
                k = seen.get(id(x))
                if k is not None and k[1] == version_counter(x)[0]:
                    return tape
    tape = Tape(dtype)
    _recent.tape = weakref.ref(tape)
    return tape


def forget_recent_tape():
    """Start the next op on untaped leaves on a tape of its own (``trace`` records on tapes
    nobody else shares)."""
    _recent.tape = None


def _tape_for(inputs, dtype):
    """The tape an op on ``inputs`` records onto: theirs (merged if several) or a new one."""
    found = None
    for x in inputs:
        if x._tape is not None:
            x._tape, x._node = resolve(x._tape, x._node)
            if found is None:
                found = x._tape
            elif x._tape is not found:
                small, big = sorted((found, x._tape), key=len)
                big.absorb(small)
                found = big
    if found is None:
        return start_tape(inputs, dtype)
    if dtype == np.float64 and found.dtype != np.float64:
        found.upcast(np.float64)
    return found


def _node_on(tape, x):
    if x._tape is None:
        return tape.leaf(x)
    x._tape, x._node = resolve(x._tape, x._node)
    return x._node


def mark_modified(t):
    """A tensor's values changed in place: bump its version; a recorded value is now stale."""
    version_counter(t)[0] += 1
    if t._tape is not None:
        t._tape, t._node = resolve(t._tape, t._node)
        t._tape.set_flag(t._node, DIRTY)


def _dim(d, ndim):
    """Normalise a dimension index, with PyTorch's error for one out of range."""
    n = max(ndim, 1)
    if not isinstance(d, numbers.Integral):
        raise TypeError(f"dim must be an int, got {type(d).__name__}")
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {d})")
    return d % n if ndim else 0


# ---------------------------------------------------------------- creation

def contiguous(a):
    """``a`` in C order (np.ascontiguousarray would turn a 0-d array into 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _infer_dtype(a):
    if a.dtype.kind == "f":
        return a.dtype
    if a.dtype.kind in "iu":
        return np.dtype(np.int64) if a.dtype.kind == "i" or a.dtype.itemsize < 8 else a.dtype
    if a.dtype.kind == "b":
        return a.dtype
    raise TypeError(f"can't convert data of dtype {a.dtype} to a tensor: only numbers are supported")


class ItemRead(str):
    """The ``how`` of the guard that ``item()`` notes (its text, "item()"), and what Python
    did with the number since: ``compares`` lists (operator index, number, outcome) of each
    comparison with a plain number, ``exact`` is set by any other use.  ``settle_guards``
    turns a read that was only compared into comparison guards."""

    def __new__(cls, text):
        self = super().__new__(cls, text)
        self.compares, self.exact = [], False
        return self


def _exact(self):
    self._read.exact = True
    return float.__float__(self)


def _pass_through(name):
    method = getattr(float, name)

    def use(self, *args):
        self._read.exact = True  # the value itself is used: the replay must check it exactly
        return method(float.__float__(self), *args)
    use.__name__ = name
    return use


def _comparison(i, name):
    method = getattr(float, name)

    def compare(self, other):
        r = method(float.__float__(self), other)
        # a number the replay compares as a double gives Python's outcome (ints up to 2**53)
        if (type(other) in (float, bool) or (type(other) is int and abs(other) <= 2 ** 53)
                or (isinstance(other, float) and not isinstance(other, ItemFloat))):
            if r is not NotImplemented:
                self._read.compares.append((i, float(other), bool(r)))
                return r
        # another item() value, a tensor, an array: their comparison reads this value
        self._read.exact = True
        if isinstance(other, ItemFloat):
            other._read.exact = True
        return r
    compare.__name__ = name
    return compare


class ItemFloat(float):
    """A Python float read from a recorded tensor by ``item()``.

    It is a float in every way; it also tells the guard of its read what Python does with it.
    Compared with a plain number (``if x.sum().item() > 0:``), only the outcome of the
    comparison matters to the function's path, so a replay checks only that (the trace stays
    valid at every point on the same branch).  Any other use through Python (arithmetic, a
    constant of a tape op, formatting, ``int()``, hashing, a NumPy ufunc) keeps the
    exact-value guard.  C code that reads the double directly (``math.exp(v)``,
    ``np.float64(v)``, ``struct``) is invisible to it: a number computed that way from a value
    that is also compared goes into a replay unchecked, so use NumPy ufuncs or the tensor ops
    for such values inside a traced function.
    """

    def __new__(cls, value, read):
        self = super().__new__(cls, value)
        self._read = read
        return self

    __float__ = _exact

    def __reduce__(self):
        return (float, (_exact(self),))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._read.exact = True
        inputs = tuple(float.__float__(x) if isinstance(x, ItemFloat) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    @property
    def real(self):
        return _exact(self)

    @property
    def imag(self):
        self._read.exact = True
        return 0.0


for _i, _name in enumerate(("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__")):
    setattr(ItemFloat, _name, _comparison(_i, _name))
for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__",
              "__rmod__", "__divmod__", "__rdivmod__", "__pow__", "__rpow__", "__neg__",
              "__pos__", "__abs__", "__bool__", "__int__", "__trunc__", "__floor__", "__ceil__",
              "__round__", "__format__", "__repr__", "__str__", "__hash__", "__getnewargs__",
              "as_integer_ratio", "is_integer", "hex", "conjugate"):
    setattr(ItemFloat, _name, _pass_through(_name))


def note_number_use(c):
    """A number that an op takes as an operand or constant: an item() value is then used."""
    if type(c) is ItemFloat:
        c._read.exact = True


def settle_guards(guards):
    """Tape guards as a replay checks them: an item() read that Python only compared with
    numbers becomes one comparison guard per comparison; every other read keeps its kind."""
    out = []
    for k, kind, v, how in guards:
        if isinstance(how, ItemRead) and how.compares and not how.exact:
            val = float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
            for i, other, outcome in how.compares:
                out.append((k, GUARD_CMP + i, np.array([val, other, float(outcome)]),
                            f"item() {CMP_OPS[i]} {other!r}"))
        else:
            out.append((k, kind, v, str(how)))
    return out


def _values_of(data):
    """Nested lists and tuples with every Tensor replaced by its values (at any depth: NumPy
    would otherwise convert the tensors through __array__)."""
    if isinstance(data, Tensor):
        return data._data
    if isinstance(data, (list, tuple)):
        return [_values_of(d) for d in data]
    note_number_use(data)
    return data


def _to_array(data, dtype, copy):
    note_number_use(data)
    if isinstance(data, Tensor):
        a = data._data
    elif isinstance(data, np.ndarray):
        a = data
    else:
        if isinstance(data, (list, tuple)):
            data = _values_of(data)  # a copy of the values: tensor() makes a new leaf
        try:
            a = np.array(data)
        except ValueError as e:
            raise ValueError(f"can't make a tensor of ragged nested sequences: {e}") from None
        if a.dtype == object or a.dtype.kind in "USVMm":
            raise TypeError(f"can't convert {type(data).__name__} data to a tensor: "
                            "only numbers and (nested) sequences of numbers are supported")
        if a.dtype.kind == "f" and dtype is None:
            a = a.astype(_default[0])
    dt = np.dtype(dtype) if dtype is not None else _infer_dtype(a)
    if copy:
        out = bulk.copy(a, dt)  # large float arrays: on every core
        if out is not None:
            return out
        if a.nbytes >= pool.MIN_BYTES:  # a pooled block, reused rather than faulted in
            out = pool.empty(a.shape, dt)
            np.copyto(out, a, casting="unsafe")
            return out
        return np.array(a, dtype=dt, order="C")
    return contiguous(np.asarray(a, dtype=dt))


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of ``data`` (a number, nested list or ndarray).

    Python floats become the default dtype (float64); ndarrays keep theirs.

    >>> import numbagrad as ng
    >>> ng.tensor([0.1, 1.0, 0.01, 1.01], dtype=ng.float32)
    tensor([0.1000, 1.0000, 0.0100, 1.0100], dtype=float32)
    """
    a = _to_array(data, dtype, copy=True)
    if requires_grad:
        _check_grad_dtype(a.dtype)
    return Tensor(a, requires_grad=bool(requires_grad))


def as_tensor(data, dtype=None):
    """A tensor sharing memory with ``data`` where it can (a Tensor is returned as is)."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == np.dtype(dtype)):
        return data
    return Tensor(_to_array(data, dtype, copy=False))


def from_numpy(a):
    """A tensor sharing memory with the ndarray ``a``.

    >>> import numpy as np, numbagrad as ng
    >>> a = np.zeros(2); t = ng.from_numpy(a); a[0] = 5; t
    tensor([5., 0.])
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(a).__name__})")
    _infer_dtype(a)
    return Tensor(a)


def _shape_arg(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list, Size)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool):
            raise TypeError(f"size must be a sequence of ints, got {size!r}")
        if s < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {s}: {list(size)}")
    total = 1
    for s in size:
        total *= int(s)
    if total > np.iinfo(np.int64).max // 8:
        raise RuntimeError(f"size {list(size)} is too large: {total} elements")
    return tuple(int(s) for s in size)


def _factory(a, requires_grad):
    if a.dtype.kind not in "biuf":
        raise TypeError(f"dtype: expected a numeric dtype (float, int or bool), got {a.dtype}")
    if requires_grad:
        _check_grad_dtype(a.dtype)
    return Tensor(a, requires_grad=bool(requires_grad))


_rng = [np.random.default_rng()]


def manual_seed(seed):
    """Seed the generator behind ``randn`` and ``rand``; returns it."""
    _rng[0] = np.random.default_rng(seed)
    return _rng[0]


def _float_dtype(dtype):
    dt = _default[0] if dtype is None else np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"expected a floating point dtype, got {dt}")
    return dt


def randn(*size, dtype=None, requires_grad=False, generator=None):
    """Samples of the standard normal distribution.

    >>> import numbagrad as ng
    >>> _ = ng.manual_seed(0)
    >>> ng.randn(2, 3).shape
    Size([2, 3])
    """
    dt = _float_dtype(dtype)
    rng = generator or _rng[0]
    return _factory(rng.standard_normal(_shape_arg(size)).astype(dt, copy=False), requires_grad)


def rand(*size, dtype=None, requires_grad=False, generator=None):
    """Samples of the uniform distribution on [0, 1)."""
    dt = _float_dtype(dtype)
    rng = generator or _rng[0]
    return _factory(rng.random(_shape_arg(size)).astype(dt, copy=False), requires_grad)


def zeros(*size, dtype=None, requires_grad=False):
    """A tensor of zeros, ``zeros(2, 3)`` or ``zeros((2, 3))``."""
    return _factory(np.zeros(_shape_arg(size), dtype=dtype or _default[0]), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    """A tensor of ones."""
    return _factory(np.ones(_shape_arg(size), dtype=dtype or _default[0]), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    """A tensor of shape ``size`` filled with ``fill_value``."""
    if dtype is None:
        dtype = _default[0] if isinstance(fill_value, float) else np.asarray(fill_value).dtype
        dtype = _infer_dtype(np.empty(0, dtype))
    return _factory(np.full(_shape_arg((size,)), fill_value, dtype=dtype), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return _factory(np.zeros(np.shape(t), dtype=dtype or as_tensor(t).dtype), requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return _factory(np.ones(np.shape(t), dtype=dtype or as_tensor(t).dtype), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    """Values from ``start`` to ``end`` (exclusive) by ``step``; ints unless any is a float.

    >>> import numbagrad as ng
    >>> ng.arange(3)
    tensor([0, 1, 2])
    """
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if dtype is None:
        isf = any(isinstance(v, float) for v in (start, end, step))
        dtype = _default[0] if isf else np.int64
    return _factory(np.arange(start, end, step).astype(dtype), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    return _factory(np.linspace(start, end, steps, dtype=_float_dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    """The identity matrix (n x m)."""
    for name, v in (("n", n), ("m", m)):
        if v is not None and (not isinstance(v, numbers.Integral) or v < 0):
            raise RuntimeError(f"{name} must be an integer greater or equal to 0, got {v!r}")
    return _factory(np.eye(n, m, dtype=dtype or _default[0]), requires_grad)


from . import functions as F  # noqa: E402  (functions builds on Tensor)
from . import lane  # noqa: E402  (the scalar lane, built on Tensor and the tape)

# the commonest operators are the lane's functions themselves, without a frame of their own:
# scalar code (lane.py) runs an op in about a microsecond, of which a call is 0.05
Tensor.__add__, Tensor.__sub__, Tensor.__mul__, Tensor.__truediv__ = \
    lane.add, lane.sub, lane.mul, lane.div
Tensor.__radd__, Tensor.__rsub__, Tensor.__rmul__, Tensor.__rtruediv__, Tensor.__pow__ = \
    lane.radd, lane.rsub, lane.rmul, lane.rdiv, lane.power
from . import interop  # noqa: E402  (NumPy's protocols, built on functions)
# Tensor.backward's: an import inside the method cost a microsecond a call (W1 at n = 3: 55 us)
from . import autograd  # noqa: E402  (built on Tensor)
