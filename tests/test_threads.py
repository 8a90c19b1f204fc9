"""Threads and processes: recording and grad mode are per thread; parallel sweeps from many
Python threads at once do not abort (numbagrad picks Numba's TBB threading layer, see
numbagrad/__init__.py); tapes and traced functions work after fork and in process pools."""
import concurrent.futures
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import numbagrad as ng

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(seed, steps=10):
    """A small least-squares model trained by SGD: (final weights, losses)."""
    rng = np.random.default_rng(seed)
    X = ng.tensor(rng.standard_normal((16, 3)))
    y = ng.tensor(rng.standard_normal(16))
    w = ng.tensor(rng.standard_normal(3), requires_grad=True)
    b = ng.zeros(1, requires_grad=True)
    losses = []
    for _ in range(steps):
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        with ng.no_grad():
            w -= 0.1 * w.grad
            b -= 0.1 * b.grad
        w.grad = None
        b.grad = None
        losses.append(loss.item())
    return w.detach().numpy().copy(), losses


def _in_threads(fns):
    """Run each fn in its own thread, all released at once; re-raise the first error."""
    start = threading.Barrier(len(fns))
    results, errors = [None] * len(fns), []

    def run(i):
        try:
            start.wait()
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_two_threads_train_two_models_as_one_after_the_other():
    expected = [_train(1), _train(2)]
    got = _in_threads([lambda: _train(1), lambda: _train(2)])
    for (w0, l0), (w1, l1) in zip(expected, got):
        np.testing.assert_array_equal(w0, w1)
        assert l0 == l1


def test_grad_mode_is_per_thread():
    inside, entered, release = [], threading.Event(), threading.Event()

    def other():
        with ng.no_grad():
            entered.set()
            release.wait(10)
            inside.append(ng.is_grad_enabled())
    t = threading.Thread(target=other)
    t.start()
    entered.wait(10)
    x = ng.ones(2, requires_grad=True)
    y = x * 2          # this thread still records while the other is in no_grad
    release.set()
    t.join()
    assert ng.is_grad_enabled() and y.requires_grad and y.grad_fn is not None
    assert inside == [False]


def test_scalar_ops_in_a_thread_with_grad_off_are_not_recorded_while_others_record():
    # the scalar lane reads the thread-local grad mode only while some thread has it off
    from numbagrad import grad_mode
    x = ng.tensor(0.5, requires_grad=True)
    seen, entered, release = [], threading.Event(), threading.Event()

    def other():
        with ng.no_grad():
            entered.set()
            release.wait(10)
            seen.append(ng.sin(x) * x)
        seen.append(ng.sin(x) * x)
    t = threading.Thread(target=other)
    t.start()
    entered.wait(10)
    assert grad_mode._off[0] == 1
    y = ng.sin(x) * x          # this thread records while the other is in no_grad
    release.set()
    t.join()
    assert y.requires_grad and y.grad_fn is not None
    assert not seen[0].requires_grad and seen[0].grad_fn is None
    assert seen[1].requires_grad and seen[1].grad_fn is not None
    assert grad_mode._off[0] == 0
    with ng.no_grad(), ng.no_grad():   # nested blocks count the thread once
        assert grad_mode._off[0] == 1
        with ng.enable_grad():
            assert grad_mode._off[0] == 0 and (ng.sin(x) * x).requires_grad
        assert not (ng.sin(x) * x).requires_grad
    assert grad_mode._off[0] == 0


def test_a_tape_recorded_in_one_thread_is_differentiated_in_another():
    x = ng.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    _in_threads([lambda: y.backward()])
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


_EIGHT_THREADS = textwrap.dedent("""
    import threading, numpy as np, numba, numbagrad as ng
    f = ng.trace(lambda x: (x * x).sin().sum(), np.ones(8))
    h = ng.trace(lambda x: (x * x).sin(), np.ones(20))
    X = np.random.default_rng(0).standard_normal((64, 8))
    big = ng.tensor(np.random.default_rng(1).standard_normal(1 << 18), requires_grad=True)
    ref_g = f.grad_batch(X)
    ref_j = h.jacobian(np.linspace(0, 1, 20))
    ((big * big).sin().sum()).backward()
    ref_big = big.grad.numpy().copy()
    start = threading.Barrier(8)
    bad = []
    def work(i):
        start.wait()
        for _ in range(4):
            ok = np.allclose(f.grad_batch(X), ref_g)                  # parallel rows
            ok &= np.allclose(h.jacobian(np.linspace(0, 1, 20)), ref_j)  # parallel rows
            b = ng.tensor(big.detach().numpy(), requires_grad=True)  # kernels above PAR_MIN
            ((b * b).sin().sum()).backward()
            ok &= np.allclose(b.grad.numpy(), ref_big)
            if not ok:
                bad.append(i)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print("LAYER", numba.threading_layer(), "BAD", len(bad))
""")


def test_eight_threads_running_parallel_sweeps_at_once():
    # in a subprocess: with Numba's workqueue layer this aborts the whole process
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_THREADING_LAYER", None)
    r = subprocess.run([sys.executable, "-c", _EIGHT_THREADS], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BAD 0" in r.stdout, r.stdout
    layer = r.stdout.split("LAYER ")[1].split()[0]
    assert layer in ("tbb", "omp"), layer


def test_threading_layer_choice():
    import numba
    if os.environ.get("NUMBA_THREADING_LAYER"):
        pytest.skip("the user's NUMBA_THREADING_LAYER wins")
    assert numba.config.THREADING_LAYER in ("tbb", "threadsafe")


def test_import_starts_numbas_thread_pool():
    # A cached function compiled against kernels Numba loaded from its cache loses the note
    # that it needs the pool; loaded in a fresh process before the pool starts, it calls
    # address 0.  Importing numbagrad starts the pool first (numbagrad/__init__.py).
    r = subprocess.run([sys.executable, "-c", "import numbagrad\n"
                        "from numba.np.ufunc import parallel\n"
                        "print(parallel._is_initialized)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


# ---------------------------------------------------------------- processes

def _traced_rosen():
    return ng.trace(lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
                    np.zeros(6))


def _rosen_grad(x):
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


def _worker_record_and_backward(seed):
    w, losses = _train(seed, steps=5)
    return w, losses


def _worker_traced(payload):
    f = pickle.loads(payload)
    X = np.random.default_rng(3).standard_normal((32, 6))
    return f.grad(X[0]), f.grad_batch(X)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_uses_parent_tape_and_traced():
    f = _traced_rosen()
    X = np.random.default_rng(3).standard_normal((32, 6))
    f.grad_batch(X)  # the parent has launched its parallel threads before the fork
    x = ng.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()  # recorded in the parent, differentiated in the child
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 1
        try:
            y.backward()
            ok = np.allclose(x.grad.numpy(), np.exp([0.5, -1.0, 2.0]) * (1 + np.array(
                [0.5, -1.0, 2.0])))
            ok &= np.allclose(f.grad_batch(X), np.array([_rosen_grad(v) for v in X]))
            ok &= np.allclose(f.grad(X[1]), _rosen_grad(X[1]))
            os.write(w, b"ok" if ok else b"wrong")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        msg = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert msg == b"ok"
    y.backward()  # the parent's graph is still its own
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.5, -1.0, 2.0]) * (1 + np.array(
        [0.5, -1.0, 2.0])))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_workers(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method}")
    f = _traced_rosen()
    payload = pickle.dumps(f)
    ctx = multiprocessing.get_context(method)
    # one worker: a spawned one imports numbagrad and loads the Numba cache (~2 s)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        trained = list(pool.map(_worker_record_and_backward, [1, 2]))
        g, gb = pool.submit(_worker_traced, payload).result(timeout=600)
    for seed, (w, losses) in zip([1, 2], trained):
        w0, l0 = _train(seed, steps=5)
        np.testing.assert_array_equal(w, w0)
        assert losses == l0
    X = np.random.default_rng(3).standard_normal((32, 6))
    np.testing.assert_allclose(g, _rosen_grad(X[0]))
    np.testing.assert_allclose(gb, np.array([_rosen_grad(v) for v in X]))
