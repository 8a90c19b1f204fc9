"""Replayed gradients against hand-written Numba, interleaved in one process.

    python benchmarks/replay_vs_handwritten.py

W1: mean(2 * (x + 2) ** 2) at n = 10^7, replayed ``grad`` against a fused hand-written
Numba gradient writing into a preallocated output (the memory-bandwidth floor).
W2: a scalar graph of about 10,000 ops on 0-d values (sin/mul/add with a running
accumulator, 10 inputs): replayed gradient time per op.
Prints medians and ratios from this run.
"""
import time

import numpy as np
from numba import njit, prange

import numbagrad as ng


@njit(error_model="numpy", parallel=True, cache=True)
def w1_by_hand(x, g):
    n = x.size
    s = 0.0
    for j in prange(n):
        y = x[j] + 2.0
        s += 2.0 * y * y
        g[j] = 4.0 * y / n
    return s / n


def w2(*xs):
    acc = xs[0] * 0
    for k in range(3333):
        acc = acc + ng.sin(xs[k % 10]) * xs[(k + 3) % 10]
    return acc


def median(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    x = np.random.default_rng(0).standard_normal(10_000_000)
    g = np.empty_like(x)
    f = ng.trace(lambda t: (2 * (t + 2) ** 2).mean(), x)
    np.testing.assert_allclose(f.grad(x), (w1_by_hand(x, g), g)[1], rtol=1e-12)
    hand, replay = [], []
    for _ in range(5):
        hand.append(median(lambda: w1_by_hand(x, g), 3))
        replay.append(median(lambda: f.grad(x), 3))
    h, r = np.median(hand), np.median(replay)
    print(f"W1 n=1e7: hand-written {h * 1e3:.2f} ms, replayed grad {r * 1e3:.2f} ms, "
          f"ratio {r / h:.2f}")
    xs = [np.float64(v) for v in np.random.default_rng(1).standard_normal(10)]
    t0 = time.perf_counter()
    ft = ng.trace(w2, *xs, check=False)
    rec = time.perf_counter() - t0
    per = median(lambda: ft.grad(*xs), 50) / len(ft.tape)
    print(f"W2 {len(ft.tape)} ops: replayed grad {per * 1e9:.1f} ns/op "
          f"(recording {rec * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
