"""The seed notebook, cell by cell, with numbagrad in place of torch."""
import re
import subprocess
import sys

import numpy as np
import pytest

import numbagrad as ng
from numbagrad.walkthrough import main

FLOATS = r"-?\d+\.\d{4}"


def test_notebook_transcript():
    lines = []
    env = main(seed=0, out=lambda *a: lines.append(" ".join(map(str, a))))
    text = "\n".join(lines)
    # the outputs the notebook shows, in torch's format
    assert re.search(rf"^tensor tensor\(\[ ?{FLOATS}, +{FLOATS}, +{FLOATS}\]\)$", text, re.M)
    assert re.search(rf"^tensor\(\[.*\], requires_grad=True\)$", text, re.M)
    assert re.search(rf"^tensor\(\[.*\], grad_fn=<AddBackward0>\)$", text, re.M)
    assert re.search(rf"^tensor\(\[.*\], grad_fn=<MulBackward0>\)$", text, re.M)
    assert re.search(rf"^tensor\({FLOATS}, grad_fn=<MeanBackward0>\)$", text, re.M)
    assert "RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn" in text
    assert "RuntimeError: grad can be implicitly created only for scalar outputs" in text
    assert "\nNone\n" in text
    # the last cell: x.grad = J^T v = 4 (x + 2) v
    x, v = env["x"].detach().numpy(), env["v"].numpy().astype(np.float64)
    np.testing.assert_allclose(env["x"].grad.numpy(), 4 * (x + 2) * v, rtol=1e-6)


def test_notebook_first_gradient():
    x = ng.tensor([0.5869, -0.5716, 0.5889], requires_grad=True)
    y = x + 2
    z = (y * y * 2).mean()
    assert repr(z) == "tensor(10.2899, grad_fn=<MeanBackward0>)"
    z.backward()
    assert repr(x.grad) == "tensor([3.4492, 1.9045, 3.4519])"  # 4 (x + 2) / 3, as torch prints


def test_notebook_reprs_match_torch():
    x = ng.tensor([2.5869, 1.4284, 2.5889])
    assert repr(x) == "tensor([2.5869, 1.4284, 2.5889])"
    assert repr(ng.tensor([-0.2404, 0.1262, -0.8172])) == "tensor([-0.2404,  0.1262, -0.8172])"
    v = ng.tensor([0.1, 1.0, 0.01, 1.01], dtype=ng.float32)
    assert repr(v) == "tensor([0.1000, 1.0000, 0.0100, 1.0100], dtype=float32)"


def test_python_m_numbagrad_runs_the_walkthrough():
    out = subprocess.run([sys.executable, "-m", "numbagrad"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "grad_fn=<MeanBackward0>" in out.stdout
    assert "grad can be implicitly created only for scalar outputs" in out.stdout
