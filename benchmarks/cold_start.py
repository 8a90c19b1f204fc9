"""What a first use costs on a machine where nothing is compiled yet.

Each scenario runs in a fresh interpreter with an empty ``NUMBA_CACHE_DIR`` and an empty
kernel directory (``NUMBAGRAD_KERNEL_DIR``), so every kernel it needs is compiled, and is then
run once more against the caches the first run left (the warm figure).  Run it from the
repository root::

    python benchmarks/cold_start.py              # every scenario
    python benchmarks/cold_start.py notebook     # one of them

Scenarios: ``notebook`` (the walkthrough's first backward) and ``rosen`` (a traced 10-element
Rosenbrock's first gradient, then its first jvp, hvp and hessian).
"""
import os
import subprocess
import sys
import tempfile

SCENARIOS = {
    "notebook": (
        "import numbagrad as ng\n"
        "x = ng.randn(3, requires_grad=True)\n"
        "T0 = time.perf_counter()\n"
        "((x + 2) * (x + 2) * 2).mean().backward()\n"
        "print('first backward', round(time.perf_counter() - T0, 2))\n"),
    "rosen": (
        "import numpy as np, numbagrad as ng\n"
        "def rosen(x):\n"
        "    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()\n"
        "x = np.linspace(-1, 1, 10)\n"
        "T0 = time.perf_counter()\n"
        "f = ng.trace(rosen, np.zeros(10))\n"
        "f.grad(x)\n"
        "T1 = time.perf_counter()\n"
        "f.jvp(x, np.ones(10)); f.hvp(x, np.ones(10)); f.hessian(x)\n"
        "T2 = time.perf_counter()\n"
        "print('trace + first grad', round(T1 - T0, 2), '| first jvp + hvp + hessian',\n"
        "      round(T2 - T1, 2))\n"),
}


def run(name, cache, kernels):
    """One fresh interpreter running scenario ``name`` against the given cache folders."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBAGRAD_KERNEL_DIR=kernels,
               NUMBAGRAD_COMPILE_NOTICE="0")
    code = "import time\nT_IMPORT = time.perf_counter()\n" + SCENARIOS[name]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def main(names):
    for name in names or SCENARIOS:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as kernels:
            print(f"{name:9s} cold: {run(name, cache, kernels)}", flush=True)
            print(f"{name:9s} warm: {run(name, cache, kernels)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
