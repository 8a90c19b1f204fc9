"""Eager record + backward (the PyTorch-style path) on the issue-4 workloads.

Each timed call records the graph on fresh leaves and runs ``backward()``; ``setup`` runs it once
first so Numba compiles (or loads its cache) outside the timing.
"""
import numpy as np

from benchmarks import workloads as W


class EagerW1:
    """W1, ``mean(2*(x+2)**2)``: the per-call overhead (n = 3) and a cache-sized array."""
    params = ([3, 100_000], ["float64", "float32"])
    param_names = ["n", "dtype"]
    timeout = 600  # a cold Numba cache compiles the sweeps in setup

    def setup(self, n, dtype):
        self.x = W.w1_data(n, dtype)
        W.eager_w1(self.x)

    def time_record_backward(self, n, dtype):
        W.eager_w1(self.x)


class EagerW2:
    """W2, a scalar graph of K tiny ops: the per-op cost of recording and sweeping."""
    params = [100, 1_000]
    param_names = ["K"]
    timeout = 600

    def setup(self, K):
        self.chain, self.xs = W.scalar_chain(K), W.w2_data()
        W.eager_w2(self.chain, self.xs)

    def time_record_backward(self, K):
        W.eager_w2(self.chain, self.xs)

    def time_record(self, K):
        self.chain(*W._leaves(np.float64(v) for v in self.xs))


class EagerW3:
    """W3, Rosenbrock: n = 100 is W6's per-point step (three slices merged into one tape)."""
    params = [100, 1_000, 100_000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.x = W.w3_data(n)
        W.eager_w3(self.x)

    def time_record_backward(self, n):
        W.eager_w3(self.x)


class EagerW4:
    """W4, the 784-256-10 tanh MLP with softmax cross-entropy, batch 256."""
    params = ["float64", "float32"]
    param_names = ["dtype"]
    timeout = 600

    def setup(self, dtype):
        self.params_, X, y = W.w4_data(dtype)
        self.loss = W.mlp_loss(X, y)
        W.eager_w4(self.loss, self.params_)

    def time_record_backward(self, dtype):
        W.eager_w4(self.loss, self.params_)
