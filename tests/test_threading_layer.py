"""The threading layer: TBB loaded from the environment numbagrad runs in, and reported."""
import os
import subprocess
import sys

import pytest


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _tbb_dist_lib():
    try:
        from importlib import metadata
        dist = metadata.distribution("tbb")
    except Exception:
        return None
    for f in dist.files or ():
        if f.name == "libtbb.so.12":
            return os.path.realpath(str(dist.locate_file(f)))
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_tbb_from_the_installed_distribution_runs_the_sweeps():
    lib = _tbb_dist_lib()
    if lib is None:
        pytest.skip("the tbb distribution is not installed")
    out = _run(
        "import os, numba, numbagrad as ng\n"
        "x = ng.randn(300000, requires_grad=True)\n"
        "(x * x).sum().backward()\n"
        "print(numba.threading_layer())\n"
        "maps = open('/proc/self/maps').read().split()\n"
        "print(sorted({os.path.realpath(p) for p in maps if '/libtbb.so' in p}))\n")
    layer, loaded = out.strip().splitlines()
    if os.environ.get("NUMBA_THREADING_LAYER", "tbb") == "tbb":
        assert layer == "tbb"
    # the environment's own TBB, not one another interpreter's library path happens to hold
    assert lib in loaded


def test_info_reports_the_layer_in_use():
    out = subprocess.run([sys.executable, "-m", "numbagrad", "--info"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = dict(line.split(None, 1) if not line.startswith("threading layer") else
                ("threading layer", line[len("threading layer"):].strip())
                for line in out.stdout.splitlines())
    assert rows["threading layer"] in ("tbb", "omp", "workqueue")
    if _tbb_dist_lib() and not os.environ.get("NUMBA_THREADING_LAYER"):
        assert rows["threading layer"] == "tbb"


def test_unknown_argument_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "numbagrad", "--nope"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "usage" in out.stderr
