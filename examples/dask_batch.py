"""Per-point gradients at cluster scale with Dask: an ensemble of parameter sets for a small
neural network, one gradient per member, computed on a dask.distributed cluster of worker
processes and checked against the single-process ``Traced.grad_batch``.

    python examples/dask_batch.py                      # a quick run (20,000 members)
    python examples/dask_batch.py --benchmark 400000   # time 1 thread vs 2 threads vs 2 workers

The trace is plain arrays: Dask ships it to each worker once, and every chunk of the ensemble
runs the Numba batch sweep there.  Needs ``pip install numbagrad[dask]``.
"""
import argparse
import time

import dask.array as da
import numba
import numpy as np
from distributed import Client, LocalCluster, wait

import numbagrad as ng
import numbagrad.dask as ngd

HIDDEN = 16
P = 3 * HIDDEN + 1      # parameters of a 1 -> 16 -> 1 tanh network
x = np.linspace(-2, 2, 64).reshape(-1, 1)
y = np.sin(2 * x[:, 0])
xt, yt = ng.tensor(x), ng.tensor(y)


def loss(theta):
    """Mean squared error of the network with parameters ``theta`` on the 64 points."""
    W1 = theta[:HIDDEN].reshape(1, HIDDEN)
    b1 = theta[HIDDEN:2 * HIDDEN]
    W2 = theta[2 * HIDDEN:3 * HIDDEN].reshape(HIDDEN, 1)
    pred = (ng.tanh(xt @ W1 + b1) @ W2).reshape(-1) + theta[3 * HIDDEN]
    return ((pred - yt) ** 2).mean()


def timed(label, run, repeat=2):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<44} {best:7.3f} s")
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--benchmark", type=int, metavar="N", help="time an ensemble of N")
    args = parser.parse_args()
    n = args.benchmark or args.members
    f = ng.trace(loss, np.zeros(P))
    print(f, f"ensemble of {n} parameter sets")

    # two worker processes, one thread each; their Numba loops run on one thread too, so the
    # two processes share the cores instead of fighting over them
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
        # the ensemble is generated on the workers, as data living on a cluster would be
        thetas = 0.5 * da.random.default_rng(0).standard_normal((n, P), chunks=(n // 8, P))
        thetas = client.persist(thetas)
        wait(thetas)
        values, grads = ngd.value_and_grad_batch(f, thetas, numba_threads=1)
        values, grads = client.compute([values, grads], sync=True)
        local = thetas.compute()

        expected_values, expected = f.value_and_grad_batch(local)
        np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(values, expected_values, rtol=1e-12)
        best = int(np.argmin(values))
        print(f"member {best} has the lowest loss {values[best]:.4f}; its gradient norm is "
              f"{np.linalg.norm(grads[best]):.4f}")
        print("cluster gradients match the single-process grad_batch")

        if args.benchmark:
            threads = numba.get_num_threads()
            numba.set_num_threads(1)
            serial = timed("one process, 1 Numba thread", lambda: f.grad_batch(local))
            numba.set_num_threads(threads)
            parallel = timed(f"one process, {threads} Numba threads (prange rows)",
                             lambda: f.grad_batch(local))

            runs = iter(range(100))

            def on_cluster():
                # fresh keys each run, so the scheduler cannot hand back the last run's chunks
                fresh = thetas.map_blocks(np.asarray, name=f"ensemble-run-{next(runs)}")
                g = client.persist(ngd.grad_batch(f, fresh, numba_threads=1))
                wait(g)
                del g
            cluster_time = timed("Dask, 2 worker processes x 1 thread", on_cluster)
            print(f"speed-up of 2 workers: {serial / cluster_time:.2f}x over one thread, "
                  f"{parallel / cluster_time:.2f}x over one process with {threads} threads")
    print("dask batch OK")


if __name__ == "__main__":   # worker processes import this file; only the client runs main
    main()
