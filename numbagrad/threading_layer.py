"""Which Numba threading layer numbagrad's parallel sweeps run on, chosen before any runs.

TBB is the layer numbagrad wants: thread-safe (``grad_batch`` and ``jacobian`` launch parallel
sweeps from several Python threads at once, which aborts Numba's ``workqueue`` layer) and
fork-safe (GNU OpenMP aborts a child forked after a parallel region, so ``multiprocessing``,
``ProcessPoolExecutor`` and Dask's process workers die).  OpenMP's threads also spin after each
parallel region and fight OpenBLAS's threads for the cores (benchmarks/NOTES.md, "Threading
layer in a virtualenv").

The ``tbb`` wheel (a dependency) puts ``libtbb.so.12`` in the environment's ``lib/`` folder,
which is not on the loader's path in a virtualenv, and Numba's TBB layer looks for the library
by name only.  So :func:`choose` loads it by its path first (``RTLD_GLOBAL``: Numba's
``tbbpool`` then finds it by its soname, already loaded), from the files the ``tbb``
distribution installed, or else from the interpreter's ``lib/`` (conda, system installs).
Without a usable TBB it asks Numba for OpenMP with passive waiting (no spinning), and for
``workqueue`` only where neither exists.  ``NUMBA_THREADING_LAYER``, when set, wins.
"""
import ctypes
import os
import sys

_TBB_NAMES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}
_state = {"tbb_path": None, "chosen": None}


def _tbb_candidates():
    """Paths where the TBB runtime may be, the ``tbb`` distribution's own files first."""
    name = _TBB_NAMES.get(sys.platform, "libtbb.so.12")
    try:
        from importlib import metadata
        dist = metadata.distribution("tbb")
        for f in dist.files or ():
            if f.name == name:
                yield os.path.realpath(str(dist.locate_file(f)))
    except Exception:  # no tbb distribution (conda's tbb package, a system library)
        pass
    libdir = "Library/bin" if sys.platform == "win32" else "lib"
    for prefix in (sys.prefix, os.environ.get("CONDA_PREFIX"), sys.base_prefix):
        if prefix:
            yield os.path.join(prefix, libdir, name)


def _preload_tbb():
    """Load the TBB runtime by its path; returns the path, or None where none loads."""
    for path in _tbb_candidates():
        if not os.path.exists(path):
            continue
        try:
            if sys.platform == "win32":
                os.add_dll_directory(os.path.dirname(path))
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            version = lib.TBB_runtime_interface_version
            version.restype = ctypes.c_int
            if version() >= 12060:  # Numba's minimum: TBB 2021.6
                return path
        except (OSError, AttributeError):
            continue
    return None


def choose():
    """Pick the threading layer (once, at import, before any parallel region starts).

    Returns the layer asked of Numba: ``"tbb"``, ``"omp"``, ``"workqueue"`` or, where
    ``NUMBA_THREADING_LAYER`` is set, that variable's value.

    >>> from numbagrad import threading_layer
    >>> threading_layer.choose() in ("tbb", "omp", "workqueue", os.environ.get(
    ...     "NUMBA_THREADING_LAYER"))
    True
    """
    if _state["chosen"] is not None:
        return _state["chosen"]
    import numba
    _state["tbb_path"] = _preload_tbb()
    chosen = os.environ.get("NUMBA_THREADING_LAYER")
    if not chosen:
        chosen = "workqueue"
        try:
            from numba.np.ufunc.parallel import _check_tbb_version_compatible
            _check_tbb_version_compatible()
            from numba.np.ufunc import tbbpool  # noqa: F401  (raises where it cannot load)
            chosen = "tbb"
        except Exception:
            # GNU OpenMP reads its wait policy when it loads: passive threads sleep after a
            # parallel region instead of spinning against BLAS's threads for the cores
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from numba.np.ufunc import omppool  # noqa: F401
                chosen = "omp"
            except Exception:
                pass
        numba.config.THREADING_LAYER = chosen
    _state["chosen"] = chosen
    return chosen


def in_use():
    """The threading layer Numba runs parallel loops on (starts Numba's thread pool).

    >>> from numbagrad import threading_layer
    >>> threading_layer.in_use() in ("tbb", "omp", "workqueue")
    True
    """
    import numba
    from numba.np.ufunc.parallel import _launch_threads
    _launch_threads()
    return numba.threading_layer()


def info():
    """What numbagrad runs on, as ``(label, value)`` pairs (``python -m numbagrad --info``).

    >>> from numbagrad import threading_layer
    >>> dict(threading_layer.info())["threading layer"] in ("tbb", "omp", "workqueue")
    True
    """
    import numba
    import numpy as np
    from . import __version__
    rows = [
        ("numbagrad", __version__),
        ("python", sys.version.split()[0] + " (" + sys.prefix + ")"),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("threading layer", in_use()),
        ("threads", str(numba.get_num_threads())),
        ("TBB runtime", _state["tbb_path"] or "not found"),
        ("safety", {"tbb": "thread- and fork-safe",
                    "omp": "thread-safe; a child forked after a parallel sweep aborts",
                    "workqueue": "parallel sweeps from two threads at once abort"}.get(
                        numba.threading_layer(), "")),
    ]
    return rows
