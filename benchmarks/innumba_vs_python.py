"""Per-call cost of a gradient called from inside Numba (``Traced.numba()``) against calling
``Traced.grad`` from Python, and against the replay's pure sweeps.

    python benchmarks/innumba_vs_python.py

For each workload, one process, interleaved rounds, medians:

- *in Numba*: an ``@njit`` loop calling ``h.grad_into(x, g)``, time per call;
- *from Python*: ``f.grad(x)`` in a Python loop, time per call;
- *pure sweeps*: an ``@njit`` loop running only what a replayed gradient sweeps
  (``trace._replay_value_and_grad``: replay_forward, zeroing the adjoints it reads, seeding,
  replay_reverse)
  on the ``Traced``'s own buffers: no argument checks, no input copy, no read-out, no Python.

The goal (issue 7): in Numba within 1.2x of the pure sweeps, i.e. no dispatch overhead left.

Workloads (``benchmarks/workloads.py``): W2, the scalar graph of K = 10,000 sin/mul/add ops on 0-d
values with 10 inputs, and W3, Rosenbrock at n = 100.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

import numbagrad as ng  # noqa: E402
from benchmarks import workloads as W  # noqa: E402
from numbagrad.trace import _replay_value_and_grad  # noqa: E402
from numbagrad.sweeps import PAR_MIN  # noqa: E402


@njit(error_model="numpy", cache=True)
def in_numba(h, x, g, calls):
    s = 0.0
    for _ in range(calls):
        s += h.grad_into(x, g)
    return s


@njit(error_model="numpy", cache=True)
def pure_sweeps(held, out_node, calls, nthreads):
    for _ in range(calls):  # what Traced.value_and_grad runs, without its Python around it
        _replay_value_and_grad(held, out_node, PAR_MIN, nthreads)


def per_call(fn, calls, rounds=7):
    fn(1)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(calls)
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times))


def measure(name, f, args, calls):
    h = f.numba()
    x = np.concatenate([np.ravel(a) for a in args])
    g = np.empty_like(x)
    buf, _, _ = f._buffers()
    for a, nodes in zip(args, f._in_nodes):
        for k in nodes:
            o = f._t.val_off[k]
            buf[o:o + np.size(a)] = np.ravel(a)
    nthreads = numba.get_num_threads()

    def run_numba(k):
        in_numba(h, x, g, k)

    def run_python(k):
        for _ in range(k):
            f.grad(*args)

    def run_sweeps(k):
        pure_sweeps(f._held(), f._out_node, k, nthreads)

    expected = f.grad(*args)
    in_numba(h, x, g, 1)
    np.testing.assert_allclose(g, np.concatenate([np.ravel(e) for e in np.atleast_1d(expected)])
                               if isinstance(expected, tuple) else np.ravel(expected),
                               rtol=1e-12)
    rows = {"in Numba": [], "from Python": [], "pure sweeps": []}
    for _ in range(3):   # interleaved, so load on the machine hits all three alike
        rows["in Numba"].append(per_call(run_numba, calls))
        rows["from Python"].append(per_call(run_python, max(1, calls // 10)))
        rows["pure sweeps"].append(per_call(run_sweeps, calls))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    print(f"{name} ({len(f.tape)} nodes): in Numba {med['in Numba'] * 1e6:.2f} us/call, "
          f"from Python {med['from Python'] * 1e6:.2f} us/call, pure sweeps "
          f"{med['pure sweeps'] * 1e6:.2f} us/call; in Numba / pure sweeps "
          f"{med['in Numba'] / med['pure sweeps']:.2f}, from Python / in Numba "
          f"{med['from Python'] / med['in Numba']:.1f}")
    return med


def main():
    xs = [np.float64(v) for v in W.w2_data()]
    measure("W2 K=10,000", ng.trace(W.scalar_chain(10_000), *xs, check=False), xs, 200)
    x = np.random.default_rng(0).standard_normal(100)
    measure("W3 Rosenbrock n=100", ng.trace(W.rosenbrock, x), [x], 20000)


if __name__ == "__main__":
    main()
