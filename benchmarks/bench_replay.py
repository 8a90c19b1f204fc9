"""Replayed derivatives of traced functions (numbagrad.trace)."""
import numpy as np

import numbagrad as ng


def notebook(x):
    return (2 * (x + 2) ** 2).mean()


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def scalar_chain(*xs):
    acc = xs[0] * 0
    for k in range(3000):
        acc = acc + ng.sin(xs[k % 10]) * xs[(k + 3) % 10]
    return acc


class ReplayGrad:
    params = (["notebook", "rosenbrock"], [1_000, 1_000_000])
    param_names = ["function", "n"]

    def setup(self, function, n):
        f = {"notebook": notebook, "rosenbrock": rosenbrock}[function]
        self.x = np.random.default_rng(0).standard_normal(n)
        self.f = ng.trace(f, self.x)
        self.f.grad(self.x)  # Numba compiles (or loads its cache) outside the timing

    def time_grad(self, function, n):
        self.f.grad(self.x)

    def peakmem_grad(self, function, n):
        self.f.grad(self.x)


class ScalarGraph:
    """10,000 ops on 0-d values: the tape interpreter's per-op cost."""

    def setup(self):
        self.xs = [np.float64(v) for v in np.random.default_rng(1).standard_normal(10)]
        self.f = ng.trace(scalar_chain, *self.xs)
        self.f.grad(*self.xs)

    def time_grad(self):
        self.f.grad(*self.xs)

    def track_ns_per_op(self):
        import time
        t0 = time.perf_counter()
        for _ in range(20):
            self.f.grad(*self.xs)
        return (time.perf_counter() - t0) / 20 / len(self.f.tape) * 1e9
    track_ns_per_op.unit = "ns"


class Jacobian:
    def setup(self):
        rng = np.random.default_rng(2)
        A = ng.tensor(rng.standard_normal((100, 1000)))
        self.x = rng.standard_normal(1000)
        self.f = ng.trace(lambda x: ng.tanh(A @ x) * x[:100], self.x)
        self.f.jacobian(self.x)

    def time_jacobian(self):
        self.f.jacobian(self.x)


class GradBatch:
    def setup(self):
        self.X = np.random.default_rng(3).standard_normal((10_000, 100))
        self.f = ng.trace(rosenbrock, self.X[0])
        self.f.grad_batch(self.X[:64])

    def time_grad_batch(self):
        self.f.grad_batch(self.X)
