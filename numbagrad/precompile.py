"""``python -m numbagrad compile``: compile every kernel ahead of time, on every core.

For container images and CI: after it, no first use compiles.  The kernels are compiled in
several processes, each owning whole functions (Numba keeps one cache index per function, and
two processes writing one index would lose each other's entries); then one process runs a
small tour of numbagrad (eager backward, replay, forward mode, Hessians, both dtypes, small and
large tensors) so that the sweeps and entry points that call the kernels are compiled too.
"""
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing


def _kernel_jobs():
    """Kernel slots grouped by the function that compiles them: [(label, [slots])]."""
    from . import dispatch as D
    groups = {}
    for mode, size, d, op in D.all_slots():
        fn = D.kernel_function(mode, op)
        serial = size == D.SMALL and D._is_parallel(fn)
        key = fn.py_func.__module__ + "." + fn.py_func.__qualname__ + ("_serial" if serial else "")
        groups.setdefault(key, []).append((mode, size, d, op))
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def _compile_slots(slots):
    from . import dispatch as D
    from . import compile_notice
    compile_notice.set_enabled(False)
    for slot in slots:
        D.compile_slot(*slot)
    return len(slots)


def tour():
    """Run each compiled path once (small and large tensors, both dtypes)."""
    import numpy as np
    import numbagrad as ng
    from . import compile_notice
    from .sweeps import PAR_MIN
    compile_notice.set_enabled(False)  # the command says what it compiles

    def rosen(x):
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    for dtype in (ng.float64, ng.float32):
        for n in (3, int(PAR_MIN) + 5):
            x = ng.randn(n, dtype=dtype, requires_grad=True)
            y = ((x + 2) * (x + 2) * 2).mean() + ng.tanh(x).sum() + (x.exp() / 3).sum()
            y.backward()
    for dtype in (np.float64, np.float32):
        f = ng.trace(rosen, np.zeros(10, dtype=dtype))
        x = np.linspace(-1, 1, 10).astype(dtype)
        f.grad(x)
        f.jvp(x, np.ones(10, dtype=dtype))
        f.hvp(x, np.ones(10, dtype=dtype))
        f.hessian(x)


def main(jobs=None, out=sys.stderr):
    """Compile every kernel with ``jobs`` processes (all cores by default); returns 0.

    >>> from numbagrad import precompile
    >>> callable(precompile.main)
    True
    """
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    groups = _kernel_jobs()
    n_slots = sum(len(s) for _, s in groups)
    print(f"numbagrad: compiling {n_slots} kernels in {len(groups)} functions with {jobs} "
          "processes", file=out, flush=True)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        done = sum(pool.map(_compile_slots, [slots for _, slots in groups]))
    print(f"numbagrad: {done} kernels ready ({time.perf_counter() - t0:.0f} s); compiling the "
          "sweeps that call them", file=out, flush=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        pool.submit(tour).result()
    print(f"numbagrad: done in {time.perf_counter() - t0:.0f} s", file=out, flush=True)
    return 0
