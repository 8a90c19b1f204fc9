"""Borrowed arrays (kernels.borrowed): the same memory without reference counting, and never
handed back to Python by a sweep."""
import numpy as np
from numba import njit

import numbagrad as ng
from numbagrad import kernels as K
from numbagrad.tape import chunk_list, append_chunk


@njit(cache=False)
def _write_through(a, tape):
    b = K.borrowed(a)
    b[0] = 5.0
    t = K.borrowed(tape)
    return t.sizes.sum() + b.size


@njit(cache=False)
def _chunk_sums(chunks):
    borrowed = K.borrowed_chunks(chunks)
    total = 0.0
    for c in borrowed:
        total += c.sum()
    return total, len(borrowed)


def _owned(a):
    """Whether ``a`` keeps its memory alive: it owns it, or its base chain ends in an owner
    (a Numba-made array's base is its meminfo)."""
    while a.base is not None and isinstance(a.base, np.ndarray):
        a = a.base
    return a.flags.owndata or a.base is not None


def test_borrowed_is_the_same_memory():
    a = np.zeros(4)
    x = ng.tensor(np.ones(3), requires_grad=True)
    tape = (x * 2).sum()._tape.arrays()
    assert _write_through(a, tape) == tape.sizes.sum() + 4
    assert a[0] == 5.0


def test_borrowed_chunks_read_every_chunk():
    chunks = chunk_list(np.arange(3.0))
    append_chunk(chunks, np.full(2, 10.0))
    assert _chunk_sums(chunks) == (23.0, 2)


def test_gradients_keep_their_memory():
    # a scalar graph, a small one, a fused large one, a second backward into an existing grad
    w = ng.tensor(np.float64(0.5), requires_grad=True)
    x = ng.tensor(np.linspace(-1, 1, 3), requires_grad=True)
    big = ng.tensor(np.linspace(-1, 1, 1 << 18), requires_grad=True)
    (ng.sin(w) * w + w).backward()
    (2 * (x + 2) ** 2).mean().backward()
    ((big - 1.0) ** 2).mean().backward()
    ((big * 3.0) ** 2).sum().backward()
    g = ng.autograd.grad((x * x).sum(), x)[0]
    for t in (w.grad, x.grad, big.grad, g):
        assert _owned(t.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 4 * (np.linspace(-1, 1, 3) + 2) / 3)
    expect = 2 * (np.linspace(-1, 1, 1 << 18) - 1) / (1 << 18) + 18 * np.linspace(-1, 1, 1 << 18)
    np.testing.assert_allclose(big.grad.numpy(), expect, rtol=1e-12, atol=1e-15)


def test_drivers_that_borrow_free_what_they_allocate():
    from numba.core.runtime import rtsys, _nrt_python
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 30))
    jac = ng.trace(lambda x: ng.tanh(ng.tensor(A) @ x) * x[:20], rng.standard_normal(30))
    batch = ng.trace(lambda x: (x[1:] - x[:-1] ** 2).sum(), rng.standard_normal(8))
    x, X, J = rng.standard_normal(30), rng.standard_normal((40, 8)), np.empty((20, 30))

    def step():
        jac.jacobian(x, out=J)
        batch.grad_batch(X)
        t = ng.tensor(X[0], requires_grad=True)
        (2 * (t + 2) ** 2).mean().backward()

    step()
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        for _ in range(20):
            step()
        after = rtsys.get_allocation_stats()
    finally:
        if not was_on:
            _nrt_python.memsys_disable_stats()
    assert after.alloc - before.alloc > 0  # the drivers did allocate ...
    assert after.alloc - after.free == before.alloc - before.free  # ... and freed it all
    assert after.mi_alloc - after.mi_free == before.mi_alloc - before.mi_free
