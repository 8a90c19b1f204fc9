"""The floor under numbagrad's start-up latency: one hand-written, cached Numba kernel.

A fresh process that calls any cached Numba function pays Numba's first dispatch (its CPU
target's registries, the BLAS check that imports ``scipy.linalg``) and then loads the
function's machine code.  ``compare.py`` and ``bench_latency.py`` time this module's first
call in a fresh interpreter beside numbagrad's first gradient, so the part of the latency that
is numbagrad's own shows; the module imports Numba and NumPy only.

>>> import numpy as np
>>> float(w1_gradient(np.ones(3), np.empty(3))[0])
4.0
"""
from numba import njit


def fresh_code():
    """What a fresh interpreter runs to time the floor: import this module, call it once.

    It imports the module as ``benchmarks.first_call``, the one name every importer uses: Numba's
    cache is keyed by file, and a cached kernel names the module it was compiled in, so a kernel
    cached under another name fails to load where that name cannot be imported.
    """
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (f"import sys; sys.path.insert(0, {root!r}); import numpy as np; "
            "from benchmarks import first_call; first_call.w1_gradient(np.ones(3), np.empty(3))")


@njit(error_model="numpy", cache=True)
def w1_gradient(x, g):
    """The gradient of W1, ``mean(2 * (x + 2) ** 2)``, into ``g``."""
    n = x.shape[0]
    for i in range(n):
        g[i] = 4.0 * (x[i] + 2.0) / n
    return g
