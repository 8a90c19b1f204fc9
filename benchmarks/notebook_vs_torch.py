"""Record + backward of the notebook graph, numbagrad vs PyTorch eager, interleaved in one process.

    python benchmarks/notebook_vs_torch.py

Prints the median time of each and their ratio (torch / numbagrad) for n = 3 .. 10^7.
"""
import time

import numpy as np

import numbagrad as ng

try:
    import torch
except ImportError:  # the peer is optional
    torch = None


def ng_step(x):
    x.grad = None
    (2 * (x + 2) ** 2).mean().backward()


def torch_step(x):
    x.grad = None
    (2 * (x + 2) ** 2).mean().backward()


def median_time(fn, arg, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    print(f"{'n':>10} {'dtype':>8} {'numbagrad':>12} {'torch':>12} {'torch/ng':>9}")
    for dtype in ("float64", "float32"):
        for n in (3, 1_000, 100_000, 10_000_000):
            data = np.random.default_rng(0).standard_normal(n).astype(dtype)
            x = ng.tensor(data, requires_grad=True)
            ng_step(x)
            reps = 7 if n >= 10_000_000 else 200
            tx = torch.tensor(data, requires_grad=True) if torch else None
            if torch:
                torch_step(tx)
            t_ng = t_torch = 0.0
            ng_times, torch_times = [], []
            for _ in range(reps):  # interleave so both see the same machine state
                ng_times.append(median_time(ng_step, x, 1))
                if torch:
                    torch_times.append(median_time(torch_step, tx, 1))
            t_ng = np.median(ng_times)
            t_torch = np.median(torch_times) if torch else float("nan")
            print(f"{n:>10} {dtype:>8} {t_ng * 1e6:>10.1f}us {t_torch * 1e6:>10.1f}us "
                  f"{t_torch / t_ng:>9.2f}")


if __name__ == "__main__":
    main()
