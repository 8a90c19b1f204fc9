"""Every script in examples/ runs to its end (each checks its own results and prints "... OK")."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
NEEDS = {"dask_batch.py": "distributed"}


def _run(args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_the_examples_are_all_here():
    assert {"walkthrough.py", "linear_regression.py", "logistic_regression.py", "mlp.py",
            "scipy_optimize.py", "ode_jacobian.py", "dask_batch.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    out = _run([f"examples/{name}"])
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.rstrip().splitlines()[-1].endswith("OK")


def test_training_progress_without_tqdm():
    # tqdm hidden: the training loop prints a line every tenth of the run instead
    code = ("import sys, runpy; sys.modules['tqdm'] = None; sys.path.insert(0, 'examples'); "
            "runpy.run_path('examples/linear_regression.py', run_name='__main__')")
    out = _run(["-c", code])
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith("linear regression: step")]
    assert len(lines) == 10 and lines[-1].startswith("linear regression: step 600/600 loss=")
