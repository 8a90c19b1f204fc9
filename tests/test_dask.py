"""numbagrad.dask: per-point derivatives over dask.array chunks, on threads and on a real
two-process LocalCluster, compared with the single-process Traced results."""
import subprocess
import sys

import numba
import numpy as np
import pytest

import numbagrad as ng

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import numbagrad.dask as ngd  # noqa: E402


def loss(w):
    """A small model's loss in its parameters: an ensemble of parameter sets is a batch of rows."""
    h = ng.tanh(w[:3] * 2.0 + w[3:6])
    return (h * h).sum() + ng.log(1 + (w * w).sum())


def vec(w):
    return ng.sin(w[:3]) * w[3:6]


@pytest.fixture(scope="module")
def traced():
    return ng.trace(loss, np.zeros(6)), ng.trace(vec, np.zeros(6))


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(7).standard_normal((500, 6))


def test_core_does_not_import_dask():
    code = "import sys, numbagrad; print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_threads_scheduler_matches_grad_batch(traced, points):
    f, g = traced
    X = da.from_array(points, chunks=(64, 6))
    G = ngd.grad_batch(f, X)
    assert G.shape == points.shape and G.chunks[0] == X.chunks[0]
    np.testing.assert_allclose(G.compute(scheduler="threads"), f.grad_batch(points), rtol=1e-13)
    v, G2 = ngd.value_and_grad_batch(f, X)
    v, G2 = v.compute(), G2.compute()
    np.testing.assert_allclose(v, [f(p) for p in points], rtol=1e-13)
    np.testing.assert_allclose(G2, f.grad_batch(points), rtol=1e-13)
    threads = numba.get_num_threads()
    G1 = ngd.grad_batch(f, X, numba_threads=1)    # building the graph runs nothing here
    np.testing.assert_allclose(G1.compute(scheduler="sync"), f.grad_batch(points), rtol=1e-13)
    assert numba.get_num_threads() == threads     # the worker thread's setting is restored
    J = ngd.jacobian(g, X[:40].rechunk(16))
    assert J.shape == (40, 3, 6)
    np.testing.assert_allclose(J.compute(), np.stack([g.jacobian(p) for p in points[:40]]),
                               rtol=1e-13)


def test_argument_checks(traced):
    f, _ = traced
    with pytest.raises(ValueError, match=r"\(N,\) \+ \(6,\)"):
        ngd.grad_batch(f, da.ones((4, 5)))
    with pytest.raises(ValueError, match="dtype"):
        ngd.grad_batch(f, da.ones((4, 6), dtype=np.float32))
    two = ng.trace(lambda a, b: (a * b).sum(), np.ones(2), np.ones(2))
    with pytest.raises(TypeError, match="one argument"):
        ngd.grad_batch(two, da.ones((4, 2)))


def test_local_cluster_worker_processes(traced, points):
    """A real cluster: two worker processes, the trace pickled to them once each."""
    f, g = traced
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        X = da.from_array(points, chunks=(50, 6))
        G = ngd.grad_batch(f, X, numba_threads=1)
        J = ngd.jacobian(g, X[:60].rechunk(15), numba_threads=1)
        where = client.run(lambda: __import__("os").getpid())
        G, J = client.compute([G, J], sync=True)
        assert len(set(where.values())) == 2   # two processes, not threads
    np.testing.assert_allclose(G, f.grad_batch(points), rtol=1e-13)
    np.testing.assert_allclose(J, np.stack([g.jacobian(p) for p in points[:60]]), rtol=1e-13)
