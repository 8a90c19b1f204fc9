"""The seed notebook ("Gradient with AutoGrad"), cell by cell, with numbagrad in place of torch.

``python -m numbagrad`` prints each cell's code and what it shows.
"""
import numbagrad as ng

CELLS = [
    ("x = ng.randn(3)\nprint('tensor', x)", None),
    ("x = ng.randn(3, requires_grad=True)\nprint(x)", None),
    ("y = x + 2\nprint(y)", None),
    ("z = y * y * 2\nprint(z)", None),
    ("z = z.mean()\nprint(z)", None),
    ("z.backward()\nprint(x.grad)  # dz/dx = 4 (x + 2) / 3", None),
    ("x = ng.randn(4)\nprint(x)", None),
    ("y = x + 2\nprint(y)\nz = y * y * 2\nz = z.mean()\nprint(z)", None),
    ("z.backward()  # x does not require grad", RuntimeError),
    ("print(x.grad)", None),
    ("x = ng.randn(4, requires_grad=True)\ny = x + 2\nz = y * y * 2\nprint(z)", None),
    ("z.backward()  # z is not a scalar", RuntimeError),
    ("v = ng.tensor([0.1, 1.0, 0.01, 1.01], dtype=ng.float32)\n"
     "z.backward(v)  # the vector-Jacobian product J^T v\nprint(x.grad)", None),
]


def main(seed=0, out=print):
    """Run the walkthrough, printing each cell and its output; returns the cells' namespace."""
    ng.manual_seed(seed)
    env = {"ng": ng, "print": out}
    for n, (code, expected_error) in enumerate(CELLS, start=1):
        out(f"In [{n}]:")
        for line in code.splitlines():
            out(f"    {line}")
        out("")
        try:
            exec(code, env)
        except Exception as e:  # the notebook's error cells
            if expected_error is None or not isinstance(e, expected_error):
                raise
            out(f"{type(e).__name__}: {e}")
        out("")
    return env
