"""Eager record + backward of the notebook graph, mean(2 * (x + 2) ** 2)."""
import numpy as np

import numbagrad as ng


class NotebookGraph:
    params = [1_000, 1_000_000]
    param_names = ["n"]

    def setup(self, n):
        self.x = ng.tensor(np.random.default_rng(0).standard_normal(n), requires_grad=True)
        self.time_backward(n)  # compile or load the Numba sweep outside the timing

    def time_backward(self, n):
        x = self.x
        x.grad = None
        (2 * (x + 2) ** 2).mean().backward()

    def peakmem_backward(self, n):
        self.time_backward(n)
