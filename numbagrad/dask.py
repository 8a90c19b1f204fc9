"""Per-point derivatives at cluster scale: a ``Traced`` mapped over the chunks of a dask.array.

A trace is plain arrays (``Traced`` pickles as its tape), so it travels to Dask workers like
any other data: it is put in the graph once, as one ``dask.delayed`` value, and each worker
unpickles (and validates) it once, then runs the Numba batch sweeps on its chunks.  Rows of
``X`` are points; chunks split the rows, and the trailing axes (one point) are kept whole.

    >>> import numpy as np, dask.array as da, numbagrad as ng, numbagrad.dask
    >>> f = ng.trace(lambda x: (x * x).sum(), np.zeros(3))
    >>> X = da.from_array(np.arange(12.0).reshape(4, 3), chunks=(2, 3))
    >>> ng.dask.grad_batch(f, X).compute()
    array([[ 0.,  2.,  4.],
           [ 6.,  8., 10.],
           [12., 14., 16.],
           [18., 20., 22.]])

On a ``dask.distributed`` cluster the same calls run on the workers.  Several worker processes
on one machine should each run their Numba loops on one thread (``numba_threads=1``, or
``NUMBA_NUM_THREADS=1`` in the workers' environment), or they fight over the cores.

Dask is an optional dependency (``pip install numbagrad[dask]``); ``import numbagrad`` never
imports it.
"""
from contextlib import contextmanager

import dask
import dask.array as da
import numpy as np

__all__ = ["grad_batch", "value_and_grad_batch", "jacobian"]


def _rows(traced, X):
    """``X`` as a dask array of shape (N, w): one flattened point per row, rows chunked only."""
    if len(traced.arg_shapes) != 1:
        raise TypeError("numbagrad.dask maps functions of one argument (pack several into one "
                        "array)")
    shape = traced.arg_shapes[0]
    X = da.asarray(X)
    if X.ndim != len(shape) + 1 or tuple(X.shape[1:]) != shape:
        raise ValueError(f"argument {traced.arg_names[0]}: expected a batch of shape (N,) + "
                         f"{shape}, got {X.shape}")
    if X.dtype.kind == "f" and X.dtype != traced.arg_dtypes[0]:
        raise ValueError(f"argument {traced.arg_names[0]}: expected dtype "
                         f"{traced.arg_dtypes[0]}, got {X.dtype}")
    w = int(np.prod(shape, dtype=np.int64))
    X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    return X.reshape(X.shape[0], w).astype(traced.arg_dtypes[0]), w


def _meta(dtype):
    # given, so that Dask does not call a block function in the client to find the result type
    return np.empty((0, 0), dtype=dtype)


def _shared(traced):
    # one graph node holding the trace: a worker fetches and unpickles it once, not per chunk
    return dask.delayed(traced, pure=True, traverse=False)


@contextmanager
def _numba_threads(n):
    """Run this worker thread's Numba loops on ``n`` threads (None: leave Numba's setting)."""
    if n is None:
        yield
        return
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _value_and_grad_block(block, traced, numba_threads):
    block = np.asarray(block, dtype=traced.arg_dtypes[0])  # read-only chunks: grad_batch copies
    n = block.shape[0]
    out = np.empty((n, block.shape[1] + 1), dtype=traced.arg_dtypes[0])
    if n:
        with _numba_threads(numba_threads):
            vals, grads = traced.value_and_grad_batch(block.reshape((n,) + traced.arg_shapes[0]))
        out[:, 0] = vals
        out[:, 1:] = grads.reshape(n, -1)
    return out


def _grad_block(block, traced, numba_threads):
    return _value_and_grad_block(block, traced, numba_threads)[:, 1:]


def _jacobian_block(block, traced, numba_threads):
    n, shape = block.shape[0], traced.arg_shapes[0]
    m = int(np.prod(traced.out_shape, dtype=np.int64))
    out = np.empty((n, m * block.shape[1]), dtype=traced.dtype)
    with _numba_threads(numba_threads):
        for r in range(n):
            out[r] = np.ravel(traced.jacobian(block[r].reshape(shape)))
    return out


def value_and_grad_batch(traced, X, numba_threads=None):
    """``(values, grads)`` of a scalar one-argument ``traced`` at each row of the dask array
    ``X`` (shape ``(N,) + arg.shape``): two lazy dask arrays, shapes ``(N,)`` and ``X.shape``,
    computed together from one pass over each chunk.

    >>> import numpy as np, dask, dask.array as da, numbagrad as ng, numbagrad.dask
    >>> f = ng.trace(lambda x: (x ** 3).sum(), np.zeros(2))
    >>> v, g = ng.dask.value_and_grad_batch(f, da.ones((5, 2), chunks=2))
    >>> dask.compute(v, g)[0]
    array([2., 2., 2., 2., 2.])
    """
    X2, w = _rows(traced, X)
    both = X2.map_blocks(_value_and_grad_block, _shared(traced), numba_threads,
                         chunks=(X2.chunks[0], (w + 1,)), meta=_meta(X2.dtype))
    return both[:, 0], both[:, 1:].reshape(X.shape)


def grad_batch(traced, X, numba_threads=None):
    """Gradients of a scalar one-argument ``traced`` at each row of the dask array ``X``
    (shape ``(N,) + arg.shape``): a lazy dask array shaped like ``X``, chunked like its rows.
    Each chunk runs ``Traced.grad_batch`` (rows in parallel within the chunk).

    >>> import numpy as np, dask.array as da, numbagrad as ng, numbagrad.dask
    >>> f = ng.trace(lambda x: (x * x).sum(), np.zeros(2))
    >>> ng.dask.grad_batch(f, da.ones((3, 2), chunks=2)).compute()
    array([[2., 2.],
           [2., 2.],
           [2., 2.]])
    """
    X2, w = _rows(traced, X)
    G = X2.map_blocks(_grad_block, _shared(traced), numba_threads, meta=_meta(X2.dtype))
    return G.reshape(X.shape)


def jacobian(traced, X, numba_threads=None):
    """The Jacobian of a one-argument ``traced`` at each row of the dask array ``X``: a lazy
    dask array of shape ``(N,) + out.shape + arg.shape`` (rows chunked like ``X``).

    >>> import numpy as np, dask.array as da, numbagrad as ng, numbagrad.dask
    >>> f = ng.trace(lambda x: x * x, np.zeros(2))
    >>> ng.dask.jacobian(f, da.ones((4, 2), chunks=2)).compute()[0]
    array([[2., 0.],
           [0., 2.]])
    """
    X2, w = _rows(traced, X)
    m = int(np.prod(traced.out_shape, dtype=np.int64))
    J = X2.map_blocks(_jacobian_block, _shared(traced), numba_threads,
                      chunks=(X2.chunks[0], (m * w,)), meta=_meta(traced.dtype))
    return J.reshape((X.shape[0],) + tuple(traced.out_shape) + tuple(traced.arg_shapes[0]))
