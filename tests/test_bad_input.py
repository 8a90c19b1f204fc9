"""Every public entry point rejects bad input with a clear error naming the argument.

One row of ``ROWS`` per case: (what, call, exception type, message pattern).  The README's
bad-input table shows a few rows of this list; ``python tests/test_bad_input.py`` prints all.
"""
import re
import threading

import numpy as np
import pytest

import numbagrad as ng


def _x():
    return ng.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)


def _traced():
    return ng.trace(lambda a: (a * a).sum(), np.ones(3))


def _other_threads_freed_output():
    box = []

    def work():
        t = ng.randn(3, requires_grad=True)
        out = (t * t).sum()
        out.backward()   # frees the graph: this thread is done with it
        box.append(out)
    th = threading.Thread(target=work)
    th.start()
    th.join()
    return box[0]


def _tape_file(change):
    """ng.load of a saved tape whose arrays ``change`` edits (the file written again)."""
    import io
    import tempfile
    buf = io.BytesIO()
    _traced().save(buf)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    change(d)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/f.ngtape"
        with open(path, "wb") as fh:
            np.savez(fh, **d)
        return ng.load(path)


def _inf_constant(d):
    d["init"] = d["init"].copy()
    d["init"][-1] = np.inf


def _unknown_op(d):
    from numbagrad.trace import tape_digest
    d["op_names"] = d["op_names"].astype("<U16")
    d["op_names"][d["tape_opcodes"][-1]] = "FROBNICATE"
    d["digest"] = np.array([tape_digest(d)])


SECOND = "Trying to backward through the graph a second time"
NOT_FLOAT = "only Tensors of floating point dtype can require gradients"

ROWS = [
    ("incompatible broadcast", lambda: _x() + ng.ones(4), RuntimeError,
     r"The size of tensor a \(3\) must match the size of tensor b \(4\) at non-singleton "
     r"dimension 1 \(shapes \(2, 3\) and \(4,\)\)$"),
    ("incompatible broadcast of two 2-D tensors", lambda: ng.ones(3, 4) + ng.ones(2, 5),
     RuntimeError,
     r"^The size of tensor a \(4\) must match the size of tensor b \(5\) at non-singleton "
     r"dimension 1 \(shapes \(3, 4\) and \(2, 5\)\)$"),
    ("matmul shapes", lambda: ng.matmul(ng.ones(2, 3), ng.ones(4, 5)), RuntimeError,
     r"mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)"),
    ("matmul of a 0-d tensor", lambda: ng.matmul(ng.ones(()), ng.ones(3)), RuntimeError,
     "both arguments to matmul need to be at least 1D"),
    ("dot of different lengths", lambda: ng.dot(ng.ones(2), ng.ones(3)), RuntimeError,
     "inconsistent tensor size"),
    ("reshape to a wrong size", lambda: _x().reshape(4, 4), RuntimeError,
     r"shape '\[4, 4\]' is invalid for input of size 6 \(a tensor of shape \(2, 3\)\)"),
    ("cat of mismatched shapes", lambda: ng.cat([ng.ones(2, 3), ng.ones(3, 2)]), RuntimeError,
     r"Sizes of tensors must match except in dimension 0. Expected size 3 but got size 2 for "
     r"tensor number 1 in the list \(shapes \(2, 3\) and \(3, 2\)\)"),
    ("cat of no tensors", lambda: ng.cat([]), RuntimeError, "expected a non-empty list"),
    ("stack of mismatched shapes", lambda: ng.stack([ng.ones(2), ng.ones(3)]), RuntimeError,
     "stack expects each tensor to be equal size"),
    ("where with incompatible shapes", lambda: ng.where(ng.ones(2) > 0, ng.ones(3), ng.ones(2)),
     RuntimeError, "must match the size"),
    ("expand to a clashing size", lambda: _x().expand(4, 4), RuntimeError,
     r"must match.*\(shapes \(2, 3\) and \(4, 4\)\)"),
    ("np.asarray of a tensor that requires grad", lambda: np.asarray(_x() * 2), RuntimeError,
     r"Can't convert a Tensor that requires grad to a NumPy array: np.asarray / np.array .*"
     r"Use tensor.detach\(\)"),
    ("NumPy function given a list holding a tensor that requires grad",
     lambda: np.mean([_x(), _x() + 2]), RuntimeError,
     r"Can't convert a Tensor that requires grad to a NumPy array: np\.mean converts"),
    ("np.array of a list of tensors that require grad", lambda: np.array([_x(), 2 * _x()]),
     RuntimeError, r"requires grad .*would drop its gradient"),
    ("dim out of range", lambda: _x().sum(5), IndexError,
     r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 5\)"),
    ("dim not an int", lambda: _x().sum(1.5), TypeError, "dim must be an int, got float"),
    ("permute with repeated dims", lambda: _x().permute(0, 0), RuntimeError,
     "duplicate dims are not allowed"),
    ("requires_grad on an int tensor", lambda: ng.tensor([1, 2], requires_grad=True),
     RuntimeError, NOT_FLOAT),
    ("requires_grad on an int factory", lambda: ng.zeros(2, dtype=ng.int64, requires_grad=True),
     RuntimeError, NOT_FLOAT),
    ("requires_grad_() on a bool tensor", lambda: ng.tensor([True]).requires_grad_(),
     RuntimeError, NOT_FLOAT),
    ("requires_grad on arange of ints", lambda: ng.arange(3, requires_grad=True), RuntimeError,
     NOT_FLOAT),
    ("non-numeric dtype", lambda: ng.zeros(2, dtype="U3"), TypeError,
     "dtype: expected a numeric dtype"),
    ("non-numeric data", lambda: ng.tensor("abc"), TypeError, "can't convert str data"),
    ("ragged data", lambda: ng.tensor([[1.0], [1.0, 2.0]]), ValueError,
     "ragged nested sequences"),
    ("float size", lambda: ng.randn(2.5), TypeError, "size must be a sequence of ints"),
    ("negative size", lambda: ng.zeros(-1), RuntimeError,
     "Trying to create tensor with negative dimension -1"),
    ("negative eye size", lambda: ng.eye(-1), RuntimeError,
     "n must be an integer greater or equal to 0, got -1"),
    ("element count overflows int64", lambda: ng.zeros(2 ** 62, 4), RuntimeError,
     r"size \[4611686018427387904, 4\] is too large"),
    ("Python int beyond int64 as a size", lambda: ng.ones(2 ** 70), RuntimeError,
     "is too large"),
    ("expand whose element count overflows", lambda: ng.ones(1, 1).expand(2 ** 40, 2 ** 40),
     RuntimeError, r"size \[1099511627776, 1099511627776\] is too large"),
    ("reshape whose element count overflows", lambda: ng.ones(4).reshape(2 ** 62, 4),
     RuntimeError, "is invalid for input of size 4"),
    ("max of an empty tensor", lambda: ng.max(ng.zeros(0, requires_grad=True)), RuntimeError,
     r"max\(\): Expected reduction dim to be specified for input.numel\(\) == 0"),
    ("min over an empty dim", lambda: ng.zeros(0, 3).min(0), IndexError,
     r"min\(\): Expected reduction dim 0 to have non-zero size"),
    ("NaN seed for backward", lambda: (_x() * 2).backward(ng.full((2, 3), float("nan"))),
     ValueError, r"grad_output\[0\] contains NaN"),
    ("NaN seed for grad", lambda: ng.grad([_x().sum()], [_x()], [ng.tensor(float("nan"))]),
     ValueError, r"grad_output\[0\] contains NaN"),
    ("seed of the wrong shape", lambda: (_x() * 2).backward(ng.ones(3)), RuntimeError,
     r"Mismatch in shape: grad_output\[0\] has a shape of \(3,\)"),
    ("seed that is not numbers", lambda: (_x() * 2).backward("abc"), TypeError,
     r"grad_output\[0\] must be a Tensor or an array of numbers, got str"),
    ("backward of a non-scalar without seed", lambda: (_x() * 2).backward(), RuntimeError,
     "grad can be implicitly created only for scalar outputs"),
    ("grad wrt a non-tensor", lambda: ng.grad(_x().sum(), [3]), TypeError,
     r"inputs\[0\] must be a Tensor, got int"),
    ("backward of a tensor from another thread's freed tape",
     lambda: _other_threads_freed_output().backward(), RuntimeError, SECOND),
    ("set_grad_enabled with a non-bool", lambda: ng.set_grad_enabled("no"), TypeError,
     r"enabled must be a bool \(got str\)"),
    ("default dtype not float", lambda: ng.set_default_dtype(ng.int64), TypeError,
     "only float32 and float64 can be the default dtype"),
    ("assigned .grad of another shape", lambda: setattr(_x(), "grad", ng.ones(5)), RuntimeError,
     r"assigned grad has data of a different size: \(5,\) vs \(2, 3\)"),
    ("traced call with a wrong shape", lambda: _traced()(np.ones(4)), ValueError,
     r"argument a: expected shape \(3,\), got \(4,\)"),
    ("traced call with a wrong dtype", lambda: _traced()(np.ones(3, np.float32)), ValueError,
     "argument a: expected dtype float64, got float32"),
    ("traced call with the wrong number of arguments", lambda: _traced()(np.ones(3), 1),
     TypeError, r"traced with 1 argument\(s\), got 2"),
    ("trace of non-numeric data", lambda: ng.trace(lambda a: a.sum(), "abc"), TypeError,
     "argument a: expected an array or number, got str"),
    ("trace of a non-callable", lambda: ng.trace(3, np.ones(2)), TypeError,
     "trace: f must be callable, got int"),
    ("NaN cotangent for vjp", lambda: _traced().vjp((np.ones(3),), float("nan")), ValueError,
     "v: expected finite-or-inf numbers"),
    ("NaN tangent for jvp", lambda: _traced().jvp((np.ones(3),), (np.full(3, np.nan),)),
     ValueError, "tangent for a: expected numbers without NaN"),
    ("NaN vector for hvp", lambda: _traced().hvp((np.ones(3),), (np.full(3, np.nan),)),
     ValueError, "tangent for a: expected numbers without NaN"),
    ("grad_batch without a batch axis", lambda: _traced().grad_batch(np.ones(3)), ValueError,
     r"argument a: expected a batch of shape \(B,\) \+ \(3,\)"),
    ("value_and_grad argnums out of range",
     lambda: ng.value_and_grad(lambda a: a.sum(), argnums=2)(np.ones(2)), ValueError,
     "argnums 2 is out of range for 1 argument"),
    ("load of a missing file", lambda: ng.load("/nonexistent/f.npz"), ValueError,
     "not a numbagrad tape file"),
    ("load of a tape file changed after saving", lambda: _tape_file(_inf_constant), ValueError,
     "the digest does not match the content"),
    ("load of a tape file naming an op this version lacks",
     lambda: _tape_file(_unknown_op), ValueError,
     "tape file uses the op 'FROBNICATE', which this numbagrad does not have"),
    ("gradcheck with nothing to differentiate",
     lambda: ng.gradcheck(lambda x: x * 2, (ng.tensor([1.0]),)), ValueError,
     "requires_grad=True"),
    ("gradgradcheck with NaN grad_outputs",
     lambda: ng.gradgradcheck(lambda x: x * x, (ng.tensor([1.0], requires_grad=True),),
                              grad_outputs=(np.array([np.nan]),)), ValueError,
     "grad_outputs contains NaN"),
]


@pytest.mark.parametrize("what,call,exc,pattern", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(what, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_table_rows_are_unique():
    assert len({r[0] for r in ROWS}) == len(ROWS)


def markdown_table():
    """The bad-input table: one row per test case, the error it gets."""
    lines = ["| bad input | error |", "| --- | --- |"]
    for what, call, exc, _ in ROWS:
        try:
            call()
            got = "(no error)"
        except Exception as e:  # noqa: BLE001 - we print whatever it is
            msg = str(e).split("\n")[0]
            msg = msg if len(msg) < 110 else msg[:107] + "..."
            got = f"`{type(e).__name__}: {msg}`".replace("|", "\\|")
        lines.append(f"| {what} | {got} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
