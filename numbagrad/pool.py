"""Large eager arrays reused instead of freshly mapped: a caching allocator.

An array of many megabytes comes from ``mmap``, and each of its pages faults on first touch.
When the kernel has 2 MB pages to give (NumPy asks for them) that costs little, but when it
has not, a value of 10^7 float64 faults 20,000 times, and the faults cost several times the
arithmetic of an eager step (measurements: benchmarks/NOTES.md, "Large eager arrays from a
pool").  PyTorch keeps freed GPU memory for the next tensor of its size for the same reason.

The pool holds blocks (plain NumPy byte arrays) and hands out views of them.  NumPy views hold
their base, so a block is free again exactly when no view of it is left anywhere (a tensor's
value, a gradient handed out, ``t.numpy()`` kept by the caller, a Numba list holding it): its
reference count is back to the pool's own.  Only arrays of at least ``MIN_BYTES`` come from
here; blocks in use and free together stay under ``MAX_BYTES`` (past it, ``empty`` is
``np.empty``), and ``release()`` gives the free ones back.  The price: idle blocks stay
mapped until reused or released, and a gradient handed out of a pooled adjoint buffer holds
the whole buffer while it lives (a buffer from ``np.empty`` is cut down to the gradients).

>>> import numpy as np
>>> from numbagrad import pool
>>> a = pool.empty((1 << 18,), np.float64)
>>> a.shape, a.dtype.name
((262144,), 'float64')
"""
import sys
import threading

import numpy as np

# Every array the engine makes of PAR_MIN elements or more (bulk.py's results, adjoint buffers)
# in float32 as in float64.  Below, malloc's free lists mostly hand memory back without faults;
# above, glibc's mmap and trim thresholds move with what was freed before, so in a process that
# mixes sizes, arrays of a few MB could fault in fresh pages at every step when MIN_BYTES was
# 2 MB (benchmarks/NOTES.md, "Pool from 512 KB")
MIN_BYTES = 1 << 19
MAX_BYTES = 1 << 30   # blocks kept, free or in use

_lock = threading.Lock()
_blocks = []          # uint8 arrays, each owning its memory


def _refs(blocks, i):
    """References to ``blocks[i]`` as counted here: the list's, the argument's, and any view's."""
    return sys.getrefcount(blocks[i])


_IDLE = _refs([np.empty(1, dtype=np.uint8)], 0)  # a block no view refers to (measured, not
#                                                   assumed: the count varies across Pythons)


def empty(shape, dtype):
    """An uninitialised C-contiguous array, a view of a pooled block when large.

    >>> import numpy as np
    >>> pool_empty = empty((3, 4), np.float32)  # small: an ordinary np.empty
    >>> pool_empty.flags.owndata
    True
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:  # the scan and the view that takes a block happen together
        for i in range(len(_blocks)):
            if _blocks[i].nbytes == nbytes and _refs(_blocks, i) == _IDLE:
                return _blocks[i].view(dtype).reshape(shape)
        if _held() + nbytes > MAX_BYTES:
            _drop_free()
            if _held() + nbytes > MAX_BYTES:
                return np.empty(shape, dtype=dtype)
        block = np.empty(nbytes, dtype=np.uint8)
        _blocks.append(block)
        return block.view(dtype).reshape(shape)


def release():
    """Give back every free block (as ``torch.cuda.empty_cache``); returns the bytes freed.

    >>> release() >= 0
    True
    """
    with _lock:
        before = _held()
        _drop_free()
        return before - _held()


def held():
    """Bytes in pooled blocks, free or in use."""
    with _lock:
        return _held()


def _held():
    return sum(b.nbytes for b in _blocks)


def _drop_free():
    _blocks[:] = [_blocks[i] for i in range(len(_blocks)) if _refs(_blocks, i) > _IDLE]
