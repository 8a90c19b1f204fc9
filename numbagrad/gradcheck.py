"""Checked gradients: the tape's derivatives against central finite differences, in float64.

``gradcheck`` compares, for every differentiable input and every output, the Jacobian that the
reverse sweep gives (one ``ng.grad`` per output element) with ``(f(x + eps) - f(x - eps)) / 2 eps``
per input element.  ``gradgradcheck`` does the same one order up: the Hessian of
``sum(v * f(x))`` from the traced forward-over-reverse sweep (``Traced.hvp``; eager
``create_graph`` is not supported) against finite differences of the eager gradient.

Both run on float64 copies of the inputs, so the caller's tensors (and their ``.grad``) are
untouched, and report the worst element when a check fails.
"""
import numbers

import numpy as np

from . import grad_mode
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """A derivative from the tape differs from finite differences beyond the tolerance."""


def _inputs(inputs):
    """The inputs as float64 arrays, and which of them are differentiated.

    Tensors count when they require grad; float ndarrays and Python floats always count.
    """
    if isinstance(inputs, (Tensor, np.ndarray, numbers.Number)):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"inputs must be a Tensor or a tuple of Tensors, got "
                        f"{type(inputs).__name__}")
    arrays, wanted = [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            a, rg = x._data, x._requires_grad
        else:
            a = np.asarray(x)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"inputs[{i}] must be numeric, got dtype {a.dtype}")
            rg = a.dtype.kind == "f"
        arrays.append(np.array(a, dtype=np.float64) if rg else np.array(a))
        wanted.append(rg)
    if not any(wanted):
        raise ValueError("gradcheck expects at least one input tensor to require gradient, "
                         "but none of them have requires_grad=True.")
    return arrays, wanted


def _call(func, arrays, wanted, record):
    """``func`` at tensors made from ``arrays``: its outputs as a list, and the leaves."""
    leaves = [Tensor(a.copy(), requires_grad=bool(w and record)) for a, w in zip(arrays, wanted)]
    out = func(*leaves)
    outs = [out] if isinstance(out, Tensor) else list(out) if isinstance(out, (tuple, list)) \
        else None
    if outs is None or not all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"func must return a Tensor or a tuple of Tensors, got "
                        f"{type(out).__name__}")
    return outs, leaves


def _values(func, arrays, wanted):
    with grad_mode.no_grad():
        outs, _ = _call(func, arrays, wanted, record=False)
    return [np.asarray(o._data, dtype=np.float64).reshape(-1) for o in outs]


def _numerical_columns(fn, arrays, i, eps):
    """Central differences of ``fn(arrays)`` (a list of flat arrays) along each element of
    input ``i``: yields (element index, list of columns, one per output)."""
    x = arrays[i]
    for j in range(x.size):
        idx = np.unravel_index(j, x.shape)
        orig = x[idx]
        x[idx] = orig + eps
        hi = fn(arrays)
        x[idx] = orig - eps
        lo = fn(arrays)
        x[idx] = orig
        yield j, [(h - l) / (2 * eps) for h, l in zip(hi, lo)]


def _compare(what, analytical, numerical, atol, rtol, out_shape, in_shape, raise_exception):
    """Check |a - n| <= atol + rtol |n| elementwise; describe the worst element otherwise.

    ``analytical``/``numerical`` are (output elements, input elements) matrices."""
    excess = np.abs(analytical - numerical) - (atol + rtol * np.abs(numerical))
    bad = ~(excess <= 0)  # NaN counts as a mismatch
    if not bad.any():
        return True
    score = np.where(np.isnan(excess), np.inf, excess)
    r, c = np.unravel_index(int(np.argmax(score)), score.shape)
    o_idx = np.unravel_index(r, out_shape) if out_shape else ()
    i_idx = np.unravel_index(c, in_shape) if in_shape else ()
    a, n = float(analytical[r, c]), float(numerical[r, c])
    msg = (f"{what} mismatch: {int(bad.sum())} of {bad.size} elements differ; worst at output "
           f"element {tuple(int(v) for v in o_idx)}, input element "
           f"{tuple(int(v) for v in i_idx)}: analytical {a!r}, numerical {n!r}, "
           f"|difference| {abs(a - n)!r} > atol + rtol * |numerical| = "
           f"{atol + rtol * abs(n)!r}\nanalytical:\n{analytical}\nnumerical:\n{numerical}")
    if raise_exception:
        raise GradcheckError(msg)
    return False


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Check the gradients of ``func`` at ``inputs`` against finite differences (float64).

    ``func`` takes tensors and returns a tensor or a tuple of tensors.  Every input that
    requires grad (every float ndarray) is differentiated: for each output element one reverse
    sweep gives a Jacobian row, and central differences with step ``eps`` give the columns.
    Returns True, or raises ``GradcheckError`` naming the output, the input and the worst
    element (returns False instead when ``raise_exception=False``).

    >>> import numbagrad as ng
    >>> x = ng.tensor([0.5, 1.5], requires_grad=True)
    >>> ng.gradcheck(lambda x: (x.exp() * x).sum(), (x,))
    True
    """
    from .autograd import grad
    arrays, wanted = _inputs(inputs)
    outs, leaves = _call(func, arrays, wanted, record=True)
    diff = [i for i, w in enumerate(wanted) if w]
    # analytical: row r of output o's Jacobian is the gradient of its element r
    analytical = [[np.zeros((o._data.size, arrays[i].size)) for i in diff] for o in outs]
    for oi, o in enumerate(outs):
        if not o._requires_grad:
            continue  # it does not depend on any input: the Jacobian is zero
        seed = np.zeros(o._data.size, dtype=o.dtype)
        for r in range(o._data.size):
            seed[:] = 0
            seed[r] = 1
            gs = grad([o], [leaves[i] for i in diff], [Tensor(seed.reshape(o.shape))],
                      retain_graph=True, allow_unused=True)
            for c, g in enumerate(gs):
                if g is not None:
                    analytical[oi][c][r] = np.asarray(g._data, dtype=np.float64).reshape(-1)
    ok = True
    for c, i in enumerate(diff):
        numerical = [np.zeros((o._data.size, arrays[i].size)) for o in outs]
        for j, cols in _numerical_columns(lambda a: _values(func, a, wanted), arrays, i, eps):
            for oi, col in enumerate(cols):
                numerical[oi][:, j] = col
        for oi, o in enumerate(outs):
            ok &= _compare(f"Jacobian of output {oi} with respect to input {i}",
                           analytical[oi][c], numerical[oi], atol, rtol, o._data.shape,
                           arrays[i].shape, raise_exception)
    return bool(ok)


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second derivatives of ``func`` at ``inputs`` against finite differences.

    With ``v`` = ``grad_outputs`` (random normal of the outputs' shapes when None), the
    Hessian of ``s(x) = sum(v * func(x))`` over the differentiated inputs comes from the
    traced tape (``ng.trace(s).hvp``, forward-over-reverse: one Hessian-vector product per
    column) and is compared with central differences of the eager gradient of ``s``.

    >>> import numbagrad as ng
    >>> x = ng.tensor([0.5, 1.5], requires_grad=True)
    >>> ng.gradgradcheck(lambda x: x.sin() * x, (x,))
    True
    """
    from .autograd import grad
    from .trace import trace
    arrays, wanted = _inputs(inputs)
    outs, _ = _call(func, arrays, wanted, record=False)
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        vs = [rng.standard_normal(o._data.shape) for o in outs]
    else:
        if isinstance(grad_outputs, (Tensor, np.ndarray)):
            grad_outputs = (grad_outputs,)
        vs = [np.asarray(v._data if isinstance(v, Tensor) else v, dtype=np.float64)
              for v in grad_outputs]
        if len(vs) != len(outs) or any(v.shape != o._data.shape for v, o in zip(vs, outs)):
            raise ValueError(f"grad_outputs: expected {len(outs)} array(s) shaped like the "
                             f"outputs {[tuple(o.shape) for o in outs]}, got "
                             f"{[v.shape for v in vs]}")
        if any(np.isnan(v).any() for v in vs):
            raise ValueError("grad_outputs contains NaN")
    diff = [i for i, w in enumerate(wanted) if w]
    consts = {i: arrays[i] for i, w in enumerate(wanted) if not w}

    def s(*xs):
        full, it = [], iter(xs)
        for i in range(len(arrays)):
            full.append(Tensor(consts[i]) if i in consts else next(it))
        res = func(*full)
        res = [res] if isinstance(res, Tensor) else list(res)
        total = None
        for o, v in zip(res, vs):
            term = (o * Tensor(v)).sum()
            total = term if total is None else total + term
        return total

    traced = trace(s, *[arrays[i] for i in diff], check=False)
    xs = [arrays[i] for i in diff]
    sizes = [x.size for x in xs]

    def eager_grad(arrs):
        leaves = [Tensor(arrs[i].copy(), requires_grad=True) for i in diff]
        out = s(*leaves)
        gs = grad([out], leaves, allow_unused=True) if out._requires_grad else [None] * len(leaves)
        return [np.zeros(x.size) if g is None else np.asarray(g._data, np.float64).reshape(-1)
                for g, x in zip(gs, leaves)]

    ok = True
    for c, i in enumerate(diff):
        # analytical columns: H e_j for each element j of input i
        analytical = [np.zeros((n, xs[c].size)) for n in sizes]
        for j in range(xs[c].size):
            tangents = [np.zeros_like(x) for x in xs]
            tangents[c].reshape(-1)[j] = 1.0
            hv = traced.hvp(tuple(xs), tuple(tangents))
            hv = hv if isinstance(hv, tuple) else (hv,)
            for r, h in enumerate(hv):
                analytical[r][:, j] = np.asarray(h, np.float64).reshape(-1)
        numerical = [np.zeros((n, xs[c].size)) for n in sizes]
        for j, cols in _numerical_columns(eager_grad, arrays, i, eps):
            for r, col in enumerate(cols):
                numerical[r][:, j] = col
        for r, k in enumerate(diff):
            ok &= _compare(f"Second derivative d2s/(d input {k} d input {i})", analytical[r],
                           numerical[r], atol, rtol, arrays[k].shape, arrays[i].shape,
                           raise_exception)
    return bool(ok)
