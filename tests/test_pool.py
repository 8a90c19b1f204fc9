"""Large eager arrays come from pool.py's blocks: reused only when nothing refers to them."""
import threading

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import pool

N = pool.MIN_BYTES // 8  # float64 elements in the smallest pooled array


@pytest.fixture(autouse=True)
def fresh_pool():
    pool.release()
    yield
    pool.release()


def test_a_block_is_reused_once_no_view_of_it_is_left():
    a = pool.empty((N,), np.float64)
    assert a.base is not None and a.flags.c_contiguous and a.flags.writeable
    b = pool.empty((N,), np.float64)
    assert not np.shares_memory(a, b)
    keep = a[5:9]  # a view of a view still holds the block
    del a
    c = pool.empty((N,), np.float64)
    assert not np.shares_memory(c, keep) and not np.shares_memory(c, b)
    del keep
    d = pool.empty((2, N // 2), np.float64)  # same bytes, other shape: the freed block
    assert d.shape == (2, N // 2) and pool.held() == 3 * pool.MIN_BYTES
    del b, c, d
    assert pool.release() == 3 * pool.MIN_BYTES and pool.held() == 0


def test_small_arrays_and_a_full_pool_are_plain_numpy(monkeypatch):
    assert pool.empty((N - 1,), np.float64).flags.owndata
    monkeypatch.setattr(pool, "MAX_BYTES", 2 * pool.MIN_BYTES)
    kept = [pool.empty((N,), np.float64) for _ in range(2)]
    over = pool.empty((N,), np.float64)
    assert over.flags.owndata and pool.held() == 2 * pool.MIN_BYTES
    del kept
    # free blocks make room for another size
    other = pool.empty((N // 2 * 3,), np.float64)
    assert not other.flags.owndata and pool.held() == pool.MIN_BYTES // 2 * 3


def test_threads_never_share_a_block():
    got, lock = [], threading.Lock()

    def take():
        arrays = [pool.empty((N,), np.float64) for _ in range(4)]
        with lock:
            got.extend(arrays)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16
    assert not any(np.shares_memory(a, b) for i, a in enumerate(got) for b in got[:i])


def test_eager_gradients_kept_across_steps_are_not_overwritten():
    # large values (bulk.py), the leaf's copy and the adjoint buffer come from the pool; a
    # gradient the caller keeps holds its block, so the next step cannot write into it
    x = np.linspace(-1.0, 1.0, 3 * N)
    grads = []
    for k in range(3):
        t = ng.tensor(x + k, requires_grad=True)
        assert not t.detach().numpy().flags.owndata  # pooled
        ((t + 2) ** 2 * 2).mean().backward()
        grads.append(t.grad.numpy())
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, 4 * (x + k + 2) / x.size, rtol=1e-14)
    del grads, t
    held = pool.held()
    t = ng.tensor(x, requires_grad=True)
    ((t + 2) ** 2 * 2).mean().backward()
    assert pool.held() == held  # the freed blocks, reused
    np.testing.assert_allclose(t.grad.numpy(), 4 * (x + 2) / x.size, rtol=1e-14)


def test_tensor_copies_a_large_array_exactly_and_apart():
    x = np.arange(2 * N, dtype=np.float32).reshape(2, N)[:, ::2]  # strided, cast to float64
    t = ng.tensor(x, dtype=ng.float64)
    assert t.dtype == np.float64 and t.shape == x.shape
    np.testing.assert_array_equal(t.numpy(), x)
    x[0, 0] = -1
    assert t.numpy()[0, 0] == 0


def test_every_array_the_engine_makes_of_par_min_elements_is_pooled():
    from numbagrad.sweeps import PAR_MIN
    for dtype in (np.float32, np.float64):
        x = ng.tensor(np.linspace(-1.0, 1.0, PAR_MIN).astype(dtype), requires_grad=True)
        y = x * 2.0  # bulk.py's parallel loop
        assert y.detach().numpy().base is not None  # a view of a block
        assert pool.held() >= PAR_MIN * np.dtype(dtype).itemsize
