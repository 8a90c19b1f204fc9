"""Replayed derivatives of traced functions (``ng.trace(f, x)``): grad, jacobian, grad_batch.

Tracing and the first replay (Numba compile or cache load) happen in ``setup``.
"""
import numpy as np

import numbagrad as ng
from benchmarks import workloads as W


class ReplayW1:
    params = ([3, 1_000_000], ["float64", "float32"])
    param_names = ["n", "dtype"]
    timeout = 600

    def setup(self, n, dtype):
        self.x = W.w1_data(n, dtype)
        self.f = ng.trace(W.notebook, self.x)
        self.out = np.empty_like(self.x)
        self.f.grad(self.x)
        self.f.grad(self.x, out=self.out)

    def time_grad(self, n, dtype):
        self.f.grad(self.x)

    def time_grad_out(self, n, dtype):
        """Into a preallocated gradient, as the hand-written kernel writes (no page faults)."""
        self.f.grad(self.x, out=self.out)


class ReplayW2:
    """W2 at K = 10,000: the replay's cost per op (the issue's target: at most 10 ns)."""
    timeout = 600

    def setup(self):
        self.xs = W.w2_data()
        self.f = ng.trace(W.scalar_chain(10_000), *self.xs)
        self.ops = W.w2_steps(10_000)[0] * W.OPS_PER_STEP
        self.f.grad(*self.xs)

    def time_grad(self):
        self.f.grad(*self.xs)

    def track_ns_per_op(self):
        reps = 20
        return W.median_time(lambda: self.f.grad(*self.xs), reps) / self.ops * 1e9
    track_ns_per_op.unit = "ns"


class ReplayW3:
    params = [1_000, 1_000_000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.x = W.w3_data(n)
        self.f = ng.trace(W.rosenbrock, self.x)
        self.out = np.empty_like(self.x)
        self.f.grad(self.x, out=self.out)

    def time_grad(self, n):
        self.f.grad(self.x)

    def time_grad_out(self, n):
        self.f.grad(self.x, out=self.out)


class ReplayW4:
    params = ["float64", "float32"]
    param_names = ["dtype"]
    timeout = 600

    def setup(self, dtype):
        self.params_, self.X, self.y = W.w4_data(dtype)
        self.f = ng.trace(W.mlp_loss(self.X, self.y), *self.params_)
        self.f.grad(*self.params_)

    def time_grad(self, dtype):
        self.f.grad(*self.params_)

    def time_grad_alternating_with_numpy(self, dtype):
        # NumPy's backprop, then ours: with two BLAS thread pools (ours SciPy's) each spun
        # against the other and this took 2.4x the sum of the two alone (numbagrad/blas.py)
        W.w4_by_hand(self.params_, self.X, self.y)
        self.f.grad(*self.params_)


class JacobianW5:
    timeout = 600

    def setup(self):
        A, self.x = W.w5_data(1000, 100)
        self.f = ng.trace(W.tanh_layer(A, 100), self.x)
        self.J = self.f.jacobian(self.x)

    def time_jacobian(self):
        self.f.jacobian(self.x)

    def time_jacobian_out(self):
        self.f.jacobian(self.x, out=self.J)


class GradBatchW6:
    timeout = 600

    def setup(self):
        self.X = W.w6_data(10_000, 100)
        self.f = ng.trace(W.rosenbrock, self.X[0])
        self.G = self.f.grad_batch(self.X)

    def time_grad_batch(self):
        self.f.grad_batch(self.X)

    def time_grad_batch_out(self):
        self.f.grad_batch(self.X, out=self.G)
