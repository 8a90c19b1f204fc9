"""Gradients called from inside Numba code (``Traced.numba()``) against calls from Python.

Each ``time_*`` makes 100 gradient calls, so the two are per-100-calls alike: ``in_numba`` is
one ``@njit`` loop calling ``h.grad_into``; ``from_python`` is a Python loop of ``Traced.grad``.
``track_over_pure_sweeps`` is the per-call ratio of the in-Numba gradient to the replay's pure
sweeps (issue 7's goal: at most 1.2).  ``benchmarks/innumba_vs_python.py`` prints the same
numbers with interleaved rounds.
"""
import time

import numba
import numpy as np

import numbagrad as ng
from benchmarks import workloads as W
from benchmarks.innumba_vs_python import in_numba, pure_sweeps

CALLS = 100


class InNumbaGrad:
    params = (["W2", "rosenbrock100"],)
    param_names = ["workload"]
    # a cold Numba cache compiles the handle and the pure-sweeps loop in setup, which can take
    # more than ten minutes on a slow machine (benchmarks/NOTES.md, "Figures moved out of code
    # comments")
    timeout = 1800

    def setup(self, workload):
        if workload == "W2":
            self.args = [np.float64(v) for v in W.w2_data()]
            self.f = ng.trace(W.scalar_chain(10_000), *self.args, check=False)
        else:
            self.args = [np.random.default_rng(0).standard_normal(100)]
            self.f = ng.trace(W.rosenbrock, *self.args)
        self.h = self.f.numba()
        self.x = np.concatenate([np.ravel(a) for a in self.args])
        self.g = np.empty_like(self.x)
        # Numba compiles (or loads its cache) outside the timing
        in_numba(self.h, self.x, self.g, 1)
        self.f.grad(*self.args)
        self._sweeps(1)

    def time_in_numba(self, workload):
        in_numba(self.h, self.x, self.g, CALLS)

    def time_from_python(self, workload):
        for _ in range(CALLS):
            self.f.grad(*self.args)

    def _sweeps(self, calls):
        f = self.f
        pure_sweeps(f._held(), f._out_node, calls, numba.get_num_threads())

    def track_over_pure_sweeps(self, workload):
        sweeps = self._sweeps

        def handle(k):
            in_numba(self.h, self.x, self.g, k)

        ratios = []
        for _ in range(5):
            t0 = time.perf_counter()
            handle(CALLS)
            t1 = time.perf_counter()
            sweeps(CALLS)
            ratios.append((t1 - t0) / (time.perf_counter() - t1))
        return float(np.median(ratios))
    track_over_pure_sweeps.unit = "ratio"
