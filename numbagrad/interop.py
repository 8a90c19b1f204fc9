"""NumPy's protocols on Tensors: ``np.exp(t)``, ``ndarray * t``, ``np.sum(t)`` record on the tape.

``Tensor.__array_ufunc__`` and ``Tensor.__array_function__`` (NEP 13 and NEP 18) send a NumPy
call that has a Tensor among its arguments here.  A ufunc or function numbagrad has runs as the
ng function it names below, so it records exactly the node that the ng call records (same
grad_fn, same gradient)::

    >>> import numpy as np, numbagrad as ng
    >>> x = ng.tensor([1.0, 2.0], requires_grad=True)
    >>> y = np.sum(np.exp(x) * np.array([1.0, 3.0]))
    >>> y
    tensor(24.8855, grad_fn=<SumBackward0>)
    >>> y.backward(); x.grad
    tensor([ 2.7183, 22.1672])

A NumPy call numbagrad cannot record (a ufunc or function it lacks, or an argument such as
``out=`` or ``dtype=`` it has no recorded form for) raises ``TypeError`` naming the call when
a gradient is at stake: some Tensor argument requires grad, or was computed from one, while
grad mode is on.  Dropping the gradient silently would make ``backward()`` return wrong
numbers.  Without a gradient at stake the call runs in NumPy on the values and returns
NumPy's result, as it does for a PyTorch tensor.

``np.asarray(t)`` and ``np.array(t)`` follow PyTorch's ``numpy()``: a tensor that requires
grad raises (``t.detach()`` first says that the gradient is meant to stop there), unless grad
mode is off; otherwise they are the tensor's values (shared memory) with no history.  A
tensor inside a list that NumPy converts (``np.mean([x, y])``, ``np.array([x, 2 * x])``,
``np.r_[x, y]``) reaches NumPy only through that conversion, never through
``__array_function__`` (NEP 18 dispatches on the arguments themselves, not on what lists
hold), so the same rule raises there, naming the NumPy function that converted it.
"""
import sys

import numpy as np

from . import functions as F
from . import grad_mode
from .tensor import Tensor, as_tensor, zeros_like, ones_like, full

__all__ = ["UFUNCS", "FUNCTIONS", "array_ufunc", "array_function"]


class _Unsupported(Exception):
    """A call that the mapped ng function cannot record as asked; the text says why."""


def _positive(x):
    return x  # +t is t (Tensor.__pos__)


def _comparison(ufunc):
    return lambda a, b: F.compare(a, b, ufunc)


# ufunc -> the ng function recording it (NumPy argument order)
UFUNCS = {
    np.add: F.add, np.subtract: F.sub, np.multiply: F.mul, np.divide: F.div, np.power: F.pow,
    np.negative: F.neg, np.positive: _positive, np.absolute: F.abs,
    np.exp: F.exp, np.log: F.log, np.sqrt: F.sqrt, np.sin: F.sin, np.cos: F.cos, np.tan: F.tan,
    np.tanh: F.tanh, np.square: lambda x: F.pow(x, 2),
    np.maximum: F.maximum, np.minimum: F.minimum, np.matmul: F.matmul,
    np.less: _comparison(np.less), np.less_equal: _comparison(np.less_equal),
    np.greater: _comparison(np.greater), np.greater_equal: _comparison(np.greater_equal),
    np.equal: _comparison(np.equal), np.not_equal: _comparison(np.not_equal),
}

# NumPy function -> an adapter with NumPy's signature that calls the ng function
FUNCTIONS = {}

# functions that read only shapes, never values: always answered by NumPy
_SHAPE_ONLY = {np.shape, np.ndim, np.size}


def _implements(*np_funcs):
    def register(adapter):
        for f in np_funcs:
            FUNCTIONS[f] = adapter
        return adapter
    return register


def _plain(name, **given):
    """Refuse NumPy arguments that have no recorded form (``out=``, ``dtype=``, ...)."""
    bad = [k for k, v in given.items() if v is not None]
    if bad:
        raise _Unsupported(f"the argument(s) {', '.join(bad)} of {name} have no recorded form")


def _as_t(x):
    return x if isinstance(x, Tensor) else as_tensor(x)


@_implements(np.sum)
def _sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _plain("np.sum", dtype=dtype, out=out, initial=initial, where=where)
    return F.sum(a, keepdim=bool(keepdims), axis=axis)


@_implements(np.mean)
def _mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    _plain("np.mean", dtype=dtype, out=out, where=where)
    a = _as_t(a)
    if a.dtype.kind != "f":  # NumPy averages integers as floats
        a = F.to_dtype(a, np.float64)
    return F.mean(a, keepdim=bool(keepdims), axis=axis)


def _extremum(ng_func, name):
    def adapter(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _plain(name, out=out, initial=initial, where=where)
        if axis is None:
            r = ng_func(a)
            return F.reshape(r, (1,) * _as_t(a).ndim) if keepdims else r
        if isinstance(axis, (tuple, list)):
            if len(axis) != 1:
                raise _Unsupported(f"{name} over several axes has no recorded form")
            axis = axis[0]
        return ng_func(a, axis, bool(keepdims)).values
    return adapter


FUNCTIONS[np.max] = FUNCTIONS[np.amax] = _extremum(F.max, "np.max")
FUNCTIONS[np.min] = FUNCTIONS[np.amin] = _extremum(F.min, "np.min")


@_implements(np.dot)
def _dot(a, b, out=None):
    _plain("np.dot", out=out)
    a, b = _as_t(a), _as_t(b)
    if a.ndim == 0 or b.ndim == 0:
        return F.mul(a, b)
    if a.ndim > 2 or b.ndim > 2:
        raise _Unsupported("np.dot of arrays above 2-D has no recorded form (use np.matmul)")
    return F.matmul(a, b)


@_implements(np.where)
def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise _Unsupported("np.where with one argument (the indices) has no recorded form")
    return F.where(condition, x, y)


_NO = object()  # clip's bounds may legitimately be None


@_implements(np.clip)
def _clip(a, a_min=_NO, a_max=_NO, out=None, *, min=_NO, max=_NO, **kwargs):
    _plain("np.clip", out=out, **{k: v for k, v in kwargs.items()})
    lo = a_min if a_min is not _NO else (None if min is _NO else min)
    hi = a_max if a_max is not _NO else (None if max is _NO else max)
    return F.clamp(a, lo, hi)


@_implements(np.concatenate)
def _concatenate(arrays, axis=0, out=None, *, dtype=None, casting=None):
    _plain("np.concatenate", out=out, dtype=dtype, casting=casting)
    if axis is None:
        return F.cat([F.flatten(_as_t(x)) for x in arrays], 0)
    return F.cat(list(arrays), axis)


@_implements(np.stack)
def _stack(arrays, axis=0, out=None, *, dtype=None, casting=None):
    _plain("np.stack", out=out, dtype=dtype, casting=casting)
    return F.stack(list(arrays), axis)


@_implements(np.reshape)
def _reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    _plain("np.reshape", copy=copy)
    if order != "C":
        raise _Unsupported(f"np.reshape with order={order!r} has no recorded form")
    shape = newshape if shape is None else shape
    return F.reshape(a, (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape))


@_implements(np.ravel)
def _ravel(a, order="C"):
    if order != "C":
        raise _Unsupported(f"np.ravel with order={order!r} has no recorded form")
    return F.flatten(_as_t(a))


@_implements(np.transpose)
def _transpose(a, axes=None):
    a = _as_t(a)
    return F.permute(a, tuple(range(a.ndim - 1, -1, -1)) if axes is None else tuple(axes))


@_implements(np.swapaxes)
def _swapaxes(a, axis1, axis2):
    return F.transpose(a, axis1, axis2)


@_implements(np.squeeze)
def _squeeze(a, axis=None):
    a = _as_t(a)
    if axis is None:
        return F.squeeze(a)
    axes = sorted({int(d) % max(a.ndim, 1) for d in (axis if isinstance(axis, (tuple, list))
                                                     else (axis,))}, reverse=True)
    for d in axes:
        if a.shape[d] != 1:
            raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
    for d in axes:
        a = F.squeeze(a, d)
    return a


@_implements(np.expand_dims)
def _expand_dims(a, axis):
    a = _as_t(a)
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    nd = a.ndim + len(axes)
    for d in sorted(int(d) % nd for d in axes):
        a = F.unsqueeze(a, d)
    return a


@_implements(np.broadcast_to)
def _broadcast_to(array, shape, subok=False):
    return F.expand(array, (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape))


@_implements(np.copy)
def _copy(a, order="K", subok=False):
    return F.clone(a)


def _like(make, name):
    def adapter(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
        _plain(name, shape=shape, device=device)
        return make(_as_t(a), dtype=dtype)
    return adapter


FUNCTIONS[np.zeros_like] = FUNCTIONS[np.empty_like] = _like(zeros_like, "np.zeros_like")
FUNCTIONS[np.ones_like] = _like(ones_like, "np.ones_like")


@_implements(np.full_like)
def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    _plain("np.full_like", shape=shape, device=device)
    a = _as_t(a)
    return full(tuple(a.shape), fill_value, dtype=dtype or a.dtype)


# ---------------------------------------------------------------- dispatch

def _walk(obj):
    """The Tensors in ``obj`` and the lists, tuples and dicts it nests."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _walk(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _walk(x)


def _values(obj):
    """``obj`` with every Tensor replaced by its values (an ndarray)."""
    if isinstance(obj, Tensor):
        return obj._data
    if isinstance(obj, (list, tuple)):
        return type(obj)(_values(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _values(v) for k, v in obj.items()}
    return obj


def _numpy_name(f):
    module = getattr(f, "__module__", None) or "numpy"
    if isinstance(f, np.ufunc):
        module = "numpy"
    prefix = "np" + module[len("numpy"):] if module.startswith("numpy") else module
    return f"{prefix}.{f.__name__}"


def _numpy_fallback(name, reason, call, args, kwargs):
    """Run ``call`` in NumPy on the values, unless that would lose a gradient."""
    if grad_mode.is_grad_enabled():
        for t in _walk((args, kwargs)):
            if t._requires_grad or t._tape is not None:
                raise TypeError(
                    f"{name} on a Tensor that requires grad: {reason}, so its result would carry "
                    f"no gradient (and ng.trace could not replay it). Use the ng functions, or "
                    f"detach on purpose: {name}(t.detach())")
    return call(*_values(args), **_values(kwargs))


def _foreign(x):
    """Another library's array type (it gets its own say: NEP 13's NotImplemented)."""
    return (hasattr(type(x), "__array_ufunc__") or hasattr(type(x), "__array_function__")) \
        and not isinstance(x, (Tensor, np.ndarray, np.generic))


def array_ufunc(ufunc, method, inputs, kwargs):
    """``Tensor.__array_ufunc__``: a ufunc call with a Tensor among its operands."""
    outs = kwargs.get("out", ())
    if any(_foreign(x) for x in inputs + tuple(outs)):
        return NotImplemented
    name = _numpy_name(ufunc) + ("" if method == "__call__" else f".{method}")
    fn = UFUNCS.get(ufunc) if method == "__call__" else None
    extra = sorted(k for k, v in kwargs.items() if not (k == "where" and v is True))
    if fn is None:
        reason = "numbagrad has no recorded form of it"
    elif extra:
        reason = f"the argument(s) {', '.join(extra)} have no recorded form"
    else:
        return fn(*inputs)
    return _numpy_fallback(name, reason, getattr(ufunc, method), inputs, kwargs)


def array_function(func, types, args, kwargs):
    """``Tensor.__array_function__``: a NumPy function call with a Tensor among its arguments."""
    if not all(issubclass(t, (Tensor, np.ndarray)) for t in types):
        return NotImplemented
    if func in _SHAPE_ONLY:
        return func(*_values(args), **_values(kwargs))
    adapter = FUNCTIONS.get(func)
    reason = "numbagrad has no recorded form of it"
    if adapter is not None:
        try:
            return adapter(*args, **kwargs)
        except _Unsupported as e:
            reason = str(e)
    return _numpy_fallback(_numpy_name(func), reason, func, args, kwargs)


# ---------------------------------------------------------------- np.asarray(t) refused

def _caller_name():
    """The NumPy function (as user code spells it) whose conversion reached ``__array__``: the
    outermost NumPy frame below the first frame outside NumPy; None when NumPy's C code was
    called directly (np.array, np.asarray, ndarray methods)."""
    f = sys._getframe(2)
    found = None
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if module == "numpy" or module.startswith("numpy."):
            found = f
        elif not module.startswith("numbagrad."):
            break
        f = f.f_back
    if found is None:
        return None
    code = found.f_code
    owner = found.f_locals.get("self")
    if owner is not None:
        for name in ("r_", "c_"):
            if owner is getattr(np, name, None):
                return f"np.{name}[...]"
        return f"{type(owner).__name__}.{code.co_name}"
    module = found.f_globals.get("__name__", "")
    for space, prefix in ((np.linalg, "np.linalg"), (np.fft, "np.fft"), (np, "np")):
        if module.startswith(space.__name__) and getattr(space, code.co_name, None) is not None:
            return f"{prefix}.{code.co_name}"
    return f"np.{code.co_name}"


def array_refusal():
    """The text of ``Tensor.__array__``'s error for a tensor that requires grad."""
    name = _caller_name()
    where = (f"{name} converts its array arguments (and the tensors in lists) with np.asarray"
             if name else "np.asarray / np.array (or a NumPy function or method given a list "
                          "that holds a tensor)")
    return (f"Can't convert a Tensor that requires grad to a NumPy array: {where}, which would "
            f"drop its gradient. Use tensor.detach() to mean that, or record the call with the "
            f"ng functions (a list of tensors: ng.stack or ng.cat first, e.g. "
            f"np.mean(ng.stack([x, y])) records stack then mean)")
