"""Start-up latency in a fresh interpreter (``timeraw_``), with a warm Numba cache.

The issue's target: importing numbagrad and returning a first gradient costs under 1 s beyond
``import numba`` (which each benchmark's setup imports first, outside the timing).
``timeraw_first_numba_call`` is the floor under it: one hand-written cached Numba kernel's
first call (``first_call.py``), which pays Numba's own first dispatch.
"""
from benchmarks import first_call

FIRST_GRADIENT = """
import numpy as np, numbagrad as ng
x = ng.tensor(np.ones(3), requires_grad=True)
(2 * (x + 2) ** 2).mean().backward()
x.grad
"""

FIRST_REPLAYED_GRADIENT = """
import numpy as np, numbagrad as ng
f = ng.trace(lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(), np.ones(10))
f.grad(np.ones(10))
"""


def setup():
    # fill the Numba cache in this process, so the fresh interpreters below load it
    import numpy as np
    import numbagrad as ng
    x = ng.tensor(np.ones(3), requires_grad=True)
    (2 * (x + 2) ** 2).mean().backward()
    ng.trace(lambda t: (t * t).sum(), np.ones(3)).grad(np.ones(3))
    first_call.w1_gradient(np.ones(3), np.empty(3))


def timeraw_import_numba():
    return "import numba"


def timeraw_import_numbagrad():
    return "import numbagrad", "import numba"


def timeraw_first_gradient():
    return FIRST_GRADIENT, "import numba"


def timeraw_first_replayed_gradient():
    return FIRST_REPLAYED_GRADIENT, "import numba"


def timeraw_first_numba_call():
    return first_call.fresh_code(), "import numba"


for _bench in (timeraw_import_numba, timeraw_import_numbagrad, timeraw_first_gradient,
               timeraw_first_replayed_gradient, timeraw_first_numba_call):
    _bench.timeout = 600  # the module setup compiles everything when the Numba cache is cold
