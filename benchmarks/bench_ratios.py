"""Gradient time over function time (``track_``): what a derivative costs beyond the value.

Replayed: ``f.grad(x)`` over ``f(x)`` of one trace.  Eager: record + ``backward()`` over the same
function evaluated under ``ng.no_grad()`` (plain NumPy work, nothing recorded).  Calls are
interleaved and the ratio is of medians.
"""
import numpy as np

import numbagrad as ng
from benchmarks import workloads as W

REPS = 15


def _case(name):
    """``(function, argument arrays)`` of a named workload size."""
    if name == "W1 n=1e6":
        return W.notebook, [W.w1_data(1_000_000, "float64")]
    if name == "W2 K=1e3":
        return W.scalar_chain(1_000), [np.float64(v) for v in W.w2_data()]
    if name == "W3 n=1e6":
        return W.rosenbrock, [W.w3_data(1_000_000)]
    if name == "W4 float64":
        params, X, y = W.w4_data("float64")
        return W.mlp_loss(X, y), params
    raise ValueError(name)


CASES = ["W1 n=1e6", "W2 K=1e3", "W3 n=1e6", "W4 float64"]


class ReplayRatio:
    params = CASES
    param_names = ["workload"]
    timeout = 600

    def setup(self, name):
        fn, self.args = _case(name)
        self.f = ng.trace(fn, *self.args)
        self.f.grad(*self.args)
        self.f(*self.args)  # compiled segments: the value's kernel too compiles here

    def track_grad_over_value(self, name):
        return W.interleaved_ratio(lambda: self.f.grad(*self.args), lambda: self.f(*self.args), REPS)
    track_grad_over_value.unit = "ratio"


class EagerRatio:
    params = CASES
    param_names = ["workload"]
    timeout = 600

    def setup(self, name):
        self.fn, self.args = _case(name)
        self.backward()

    def backward(self):
        leaves = W._leaves(self.args)
        self.fn(*leaves).backward()

    def value(self):
        with ng.no_grad():
            self.fn(*[ng.tensor(a) for a in self.args])

    def track_record_backward_over_value(self, name):
        return W.interleaved_ratio(self.backward, self.value, REPS)
    track_record_backward_over_value.unit = "ratio"
