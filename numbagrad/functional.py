"""Whole-function derivatives in the style of ``torch.autograd.functional``, built on ``trace``.

Each function records ``func`` once at ``inputs`` (``numbagrad.trace``) and runs the Numba
sweeps over the recording.  ``inputs`` is a tensor, an ndarray or a number, or a tuple of them;
results come back as Tensors when the inputs were Tensors, as ndarrays otherwise, and as one
object for a single (non-tuple) input, a tuple for a tuple of inputs.

>>> import numpy as np, numbagrad as ng
>>> ng.functional.jacobian(lambda x: x ** 2, np.array([1.0, 2.0]))
array([[2., 0.],
       [0., 4.]])
"""
import numpy as np

from .tensor import Tensor
from .trace import Traced, GuardError, _key

__all__ = ["jacobian", "vjp", "jvp", "hessian", "hvp", "hessp", "hess"]


def _inputs(inputs):
    is_tuple = isinstance(inputs, (tuple, list))
    xs = tuple(inputs) if is_tuple else (inputs,)
    as_tensors = any(isinstance(x, Tensor) for x in xs)
    return xs, is_tuple, as_tensors


def _wrap(a, as_tensors):
    if not as_tensors:
        return a
    return Tensor(np.asarray(a))


def jacobian(func, inputs):
    """The Jacobian of ``func`` at ``inputs``: for each input, an array of shape
    ``output.shape + input.shape`` (a tuple of them for a tuple of inputs).

    One forward sweep, then one reverse sweep per output element, spread over threads.

    >>> import numpy as np, numbagrad as ng
    >>> J = ng.functional.jacobian(lambda x, y: x * y, (np.array([1.0, 2.0]), np.array([3.0, 4.0])))
    >>> J[0]
    array([[3., 0.],
           [0., 4.]])
    """
    xs, is_tuple, as_tensors = _inputs(inputs)
    traced = Traced(func, *xs, check=False)  # replayed at the traced point only
    jac = traced.jacobian(*xs)
    jac = jac if isinstance(jac, tuple) else (jac,)
    jac = tuple(_wrap(j, as_tensors) for j in jac)
    return jac if is_tuple else jac[0]


def vjp(func, inputs, v=None):
    """``(func(inputs), v^T J)``: the output and the vector-Jacobian product, shaped like the
    inputs.  ``v`` may be left out for a single-element output.

    >>> import numpy as np, numbagrad as ng
    >>> out, g = ng.functional.vjp(lambda x: x * x, np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    >>> out, g
    (array([1., 4.]), array([2., 4.]))
    """
    xs, is_tuple, as_tensors = _inputs(inputs)
    traced = Traced(func, *xs, check=False)  # replayed at the traced point only
    if v is None:
        if traced._out_size != 1:
            raise RuntimeError("The vector v can only be None if the user-provided function "
                               "returns a single Tensor with a single element.")
        v = np.ones(traced.out_shape, dtype=traced.dtype)
    grads = traced.vjp(xs, v)
    value = traced(*xs)
    value = _wrap(value, as_tensors)
    grads = tuple(_wrap(g, as_tensors) for g in grads)
    return value, (grads if is_tuple else grads[0])


def jvp(func, inputs, v):
    """``(func(inputs), J v)``: the output and the Jacobian-vector product (forward mode, one
    tangent sweep).  ``v`` is shaped like the inputs.

    >>> import numpy as np, numbagrad as ng
    >>> ng.functional.jvp(lambda x: x * x, np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    (array([1., 4.]), array([2., 4.]))
    """
    xs, is_tuple, as_tensors = _inputs(inputs)
    vs = tuple(v) if is_tuple else (v,)
    traced = Traced(func, *xs, check=False)
    value, jv = traced.jvp(xs, vs)
    return _wrap(value, as_tensors), _wrap(jv, as_tensors)


def hvp(func, inputs, v):
    """``(func(inputs), H v)`` for a scalar ``func``: forward-over-reverse on the tape.

    >>> import numpy as np, numbagrad as ng
    >>> ng.functional.hvp(lambda x: (x ** 3).sum(), np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    (9.0, array([6., 0.]))
    """
    xs, is_tuple, as_tensors = _inputs(inputs)
    vs = tuple(v) if is_tuple else (v,)
    traced = Traced(func, *xs, check=False)
    hv = traced.hvp(xs, vs)
    hv = hv if isinstance(hv, tuple) else (hv,)
    hv = tuple(_wrap(h, as_tensors) for h in hv)
    return _wrap(traced(*xs), as_tensors), (hv if is_tuple else hv[0])


def hessian(func, inputs):
    """The Hessian of a scalar ``func`` of one input, shape ``input.shape * 2``.

    >>> import numpy as np, numbagrad as ng
    >>> ng.functional.hessian(lambda x: (x ** 3).sum(), np.array([1.0, 2.0]))
    array([[ 6.,  0.],
           [ 0., 12.]])
    """
    xs, is_tuple, as_tensors = _inputs(inputs)
    if is_tuple and len(xs) != 1:
        raise TypeError("hessian takes one input; use hvp for several")
    traced = Traced(func, *xs, check=False)
    return _wrap(traced.hessian(*xs), as_tensors)


# ---------------------------------------------------------------- callables for scipy.optimize

def _replayer(f):
    """Replay ``f`` through a trace per argument shape/dtype, traced again where a guard fails
    (the same policy as ``ng.value_and_grad``)."""
    cache = {}

    def run(args, use):
        key = tuple(_key(a) for a in args)
        traced = cache.get(key)
        if traced is None:
            traced = cache[key] = Traced(f, *args)
        try:
            return use(traced)
        except GuardError:  # f branches differently here: record it again at this point
            traced = cache[key] = Traced(f, *args, check=False)
            return use(traced)
    return run


def hessp(f):
    """``f`` as ``hessp(x, p, *args) = H(x) p``, the Hessian of scalar ``f`` in its first
    argument times ``p``: the ``hessp=`` of ``scipy.optimize.minimize`` (Newton-CG, trust-ncg,
    trust-krylov).  Forward-over-reverse on the recorded tape; no Hessian is formed.

    >>> import numpy as np, numbagrad as ng, scipy.optimize
    >>> f = lambda x: ((x - 3.0) ** 4).sum() + (x * x).sum()
    >>> ng.functional.hessp(f)(np.zeros(2), np.array([1.0, 0.0]))
    array([110.,   0.])
    >>> r = scipy.optimize.minimize(ng.value_and_grad(f), np.zeros(2), jac=True,
    ...                             hessp=ng.functional.hessp(f), method="Newton-CG")
    >>> bool(r.success), np.round(r.x, 4)
    (True, array([2., 2.]))
    """
    run = _replayer(f)

    def hp(x, p, *args):
        xs = (x,) + args
        tangents = (np.asarray(p),) + tuple(np.zeros(np.shape(a)) for a in args)
        hv = run(xs, lambda t: t.hvp(xs, tangents))
        return hv[0] if isinstance(hv, tuple) else hv

    hp.__name__ = f"hessp_{getattr(f, '__name__', 'f')}"
    return hp


def hess(f):
    """``f`` as ``hess(x, *args)``, the Hessian matrix of scalar ``f`` in its first argument
    (shape ``x.shape * 2``): the ``hess=`` of ``scipy.optimize.minimize`` (trust-ncg,
    trust-exact, Newton-CG).  One Hessian-vector product per column.

    >>> import numpy as np, numbagrad as ng
    >>> ng.functional.hess(lambda x: (x[0] * x[1]) ** 2)(np.array([1.0, 2.0]))
    array([[8., 8.],
           [8., 2.]])
    """
    run = _replayer(f)

    def h(x, *args):
        xs = (x,) + args
        if not args:
            return run(xs, lambda t: t.hessian(x))
        n = int(np.size(x))
        zeros = tuple(np.zeros(np.shape(a)) for a in args)

        def columns(t):
            H = np.zeros((n, n))
            e = np.zeros(n)
            for j in range(n):
                e[:] = 0
                e[j] = 1
                hv = t.hvp(xs, (e.reshape(np.shape(x)),) + zeros)
                H[:, j] = np.ravel(hv[0] if isinstance(hv, tuple) else hv)
            return H.reshape(np.shape(x) * 2)
        return run(xs, columns)

    h.__name__ = f"hess_{getattr(f, '__name__', 'f')}"
    return h
