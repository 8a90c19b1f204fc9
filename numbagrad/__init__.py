"""numbagrad: PyTorch-style automatic differentiation on a flat opcode tape swept by Numba.

>>> import numbagrad as ng
>>> x = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> z = (2 * (x + 2) ** 2).mean()
>>> z.backward()
>>> x.grad
tensor([4.0000, 5.3333, 6.6667])
"""
def _drop_stale_numba_caches():
    """Numba re-validates a cached function against its own file only, so a cached sweep would
    keep calling an old kernel after ``kernels.py`` changed.  Caches are dropped whenever any
    source that compiled code is built from changed."""
    import hashlib
    import os
    here = os.path.dirname(__file__)
    digest = hashlib.sha1()
    for name in ("ops.py", "kernels.py", "dispatch.py", "sweeps.py", "fusion.py"):  # what others call into
        with open(os.path.join(here, name), "rb") as fh:
            digest.update(fh.read())
    cache = os.path.join(here, "__pycache__")
    stamp = os.path.join(cache, "numba-sources.sha1")
    try:
        with open(stamp) as fh:
            if fh.read() == digest.hexdigest():
                return
    except OSError:
        pass
    try:
        os.makedirs(cache, exist_ok=True)
        for name in os.listdir(cache):
            if name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(cache, name))
        with open(stamp, "w") as fh:
            fh.write(digest.hexdigest())
    except OSError:  # a read-only install: Numba then caches elsewhere or not at all
        pass


_drop_stale_numba_caches()


# TBB, loaded by its path where the loader would not find it (a virtualenv): threading_layer.py
from . import threading_layer as _threading_layer

_threading_layer.choose()


def _launch_numba_threads():
    """Start Numba's thread pool now, before any cached sweep is loaded.

    A cached function that calls a parallel kernel holds calls to the pool's entry points,
    which Numba registers with its linker only when the pool starts.  Numba starts it when it
    loads a cached *parallel* function, but it forgets that a function compiled against
    kernels it had itself loaded from the cache needs the pool too (their libraries lose the
    flag).  Such a function, loaded in a fresh process before anything parallel ran,
    calls address 0 (segfault): it happened to eager backward after ``autograd.py`` changed.
    Starting the pool costs about 4 ms.
    """
    try:
        from numba.np.ufunc.parallel import _launch_threads
        _launch_threads()
    except Exception:  # pragma: no cover  (no threading layer: nothing parallel can run)
        pass


_launch_numba_threads()

from . import compile_notice  # noqa: E402  (a line on stderr when a first use compiles long)

from .grad_mode import no_grad, enable_grad, set_grad_enabled, is_grad_enabled
from .tensor import (
    Tensor, Size, tensor, as_tensor, from_numpy, randn, rand, zeros, ones, full, zeros_like,
    ones_like, arange, linspace, eye, manual_seed, float32, float64, int32, int64, bool_,
    get_default_dtype, set_default_dtype,
)
from .functions import (
    exp, log, sin, cos, tan, tanh, sigmoid, relu, sqrt, abs, neg, sum, mean, max, min, matmul,
    dot, maximum, minimum, where, clamp, clip, cat, stack, softmax, log_softmax, logsumexp,
    reshape, flatten, squeeze, unsqueeze, transpose, permute, expand, clone, add, sub, mul, div,
    pow, broadcast_shapes,
)
from .autograd import grad
from . import autograd
from .tape import Tape

bool = bool_
__version__ = "0.1.0"

# record once, replay many (trace.py) and whole-function derivatives (functional.py)
from .trace import trace, value_and_grad, Traced, TraceWarning, GuardError, load
from . import functional

# checked derivatives and NaN/inf hunting (gradcheck.py, anomaly.py)
from .gradcheck import gradcheck, gradgradcheck, GradcheckError
from .anomaly import detect_anomaly, set_detect_anomaly, is_anomaly_enabled, AnomalyError

# a picture of the graph (viz.py: DOT text; the graphviz package only to render)
from . import viz

# The public API.  Importing the package imports its engine modules (kernels, sweeps, lane, pool,
# bulk, ...), which Python binds as attributes of the package; they are internal, so they are
# removed from the namespace below and dir(numbagrad) lists __all__ only.  They stay reachable by
# their module paths (``import numbagrad.kernels``, ``from numbagrad import kernels``): a module
# __getattr__ finds an already imported submodule in sys.modules.
__all__ = [
    # tensors and their factories (tensor.py)
    "Tensor", "Size", "tensor", "as_tensor", "from_numpy", "randn", "rand", "zeros", "ones",
    "full", "zeros_like", "ones_like", "arange", "linspace", "eye", "manual_seed",
    "float32", "float64", "int32", "int64", "bool", "bool_", "get_default_dtype",
    "set_default_dtype",
    # differentiable functions (functions.py)
    "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "sqrt", "abs", "neg", "sum",
    "mean", "max", "min", "matmul", "dot", "maximum", "minimum", "where", "clamp", "clip", "cat",
    "stack", "softmax", "log_softmax", "logsumexp", "reshape", "flatten", "squeeze", "unsqueeze",
    "transpose", "permute", "expand", "clone", "add", "sub", "mul", "div", "pow",
    "broadcast_shapes",
    # gradient mode, eager gradients
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad", "autograd", "Tape",
    # record once, replay many; whole-function derivatives
    "trace", "value_and_grad", "Traced", "TraceWarning", "GuardError", "load", "functional",
    # checks
    "gradcheck", "gradgradcheck", "GradcheckError", "detect_anomaly", "set_detect_anomaly",
    "is_anomaly_enabled", "AnomalyError",
    # pictures of the graph
    "viz",
]


def _hide_internal_modules():
    import sys
    import types
    public = set(__all__)
    namespace = globals()
    for name, value in list(namespace.items()):
        if (isinstance(value, types.ModuleType) and name not in public
                and getattr(value, "__name__", "") == f"{__name__}.{name}"):
            del namespace[name]


_hide_internal_modules()
del _hide_internal_modules


def __getattr__(name):
    # an internal submodule imported before (or imported again later) stays reachable as
    # numbagrad.<name>, as `import numbagrad.<name>` promises, without being listed
    import sys
    module = sys.modules.get(f"{__name__}.{name}")
    if module is not None:
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
