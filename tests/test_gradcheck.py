"""ng.gradcheck and ng.gradgradcheck over every opcode in numbagrad.ops.OPS.

Each case is a small function whose recording contains the opcode it is listed under (checked),
at inputs away from kinks and singularities, so finite differences are exact to ~1e-9.
"""
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import ops
from numbagrad.ops import OPS


def _pos(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


def _signed(*shape, seed=0):
    # magnitudes in [0.3, 1.3]: away from the kinks of relu/abs/clamp and from ties
    r = np.random.default_rng(seed)
    return r.uniform(0.3, 1.3, shape) * r.choice([-1.0, 1.0], shape)


def _distinct(*shape, seed=0):
    # well separated values: max/min/maximum/minimum have no ties
    r = np.random.default_rng(seed)
    return r.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.37


# opcode -> (function of tensors, inputs); the inputs are float64 arrays (all differentiated)
CASES = {
    ops.LEAF: (lambda x: x, [_signed(3)]),
    ops.NEG: (lambda x: -x, [_signed(2, 3)]),
    ops.EXP: (ng.exp, [_signed(2, 3)]),
    ops.LOG: (ng.log, [_pos(2, 3)]),
    ops.SIN: (ng.sin, [_signed(4)]),
    ops.COS: (ng.cos, [_signed(4)]),
    ops.TAN: (ng.tan, [_signed(4) * 0.9]),
    ops.TANH: (ng.tanh, [_signed(4)]),
    ops.SIGMOID: (ng.sigmoid, [_signed(4)]),
    ops.RELU: (ng.relu, [_signed(6)]),
    ops.SQRT: (ng.sqrt, [_pos(4)]),
    ops.ABS: (ng.abs, [_signed(6)]),
    ops.ADD_C: (lambda x: x + 2.5, [_signed(3)]),
    ops.MUL_C: (lambda x: x * -1.5, [_signed(3)]),
    ops.DIV_C: (lambda x: x / 3.0, [_signed(3)]),
    ops.POW_C: (lambda x: x ** 2.5, [_pos(3)]),
    ops.RSUB_C: (lambda x: 2.0 - x, [_signed(3)]),
    ops.RDIV_C: (lambda x: 2.0 / x, [_pos(3)]),
    ops.RPOW_C: (lambda x: 1.7 ** x, [_signed(3)]),
    ops.CLAMP: (lambda x: ng.clamp(x, -0.8, 0.8), [_signed(8)]),
    ops.ADD: (lambda a, b: a + b, [_signed(2, 3), _signed(3, seed=1)]),
    ops.SUB: (lambda a, b: a - b, [_signed(2, 1), _signed(3, seed=1)]),
    ops.MUL: (lambda a, b: a * b, [_signed(2, 3), _signed(2, 1, seed=1)]),
    ops.DIV: (lambda a, b: a / b, [_signed(2, 3), _pos(3, seed=1)]),
    ops.POW: (lambda a, b: a ** b, [_pos(2, 3), _signed(3, seed=1)]),
    ops.MAXIMUM: (ng.maximum, [_distinct(2, 3), _distinct(3, seed=1) + 0.1]),
    ops.MINIMUM: (ng.minimum, [_distinct(2, 3), _distinct(3, seed=1) + 0.1]),
    ops.WHERE: (lambda a, b: ng.where(a > b, a * b, a - b), [_signed(2, 3), _signed(3, seed=1)]),
    ops.SUM: (lambda x: x.sum(1), [_signed(2, 3)]),
    ops.MEAN: (lambda x: x.mean(0, keepdim=True), [_signed(2, 3)]),
    ops.MAX: (lambda x: x.max(1)[0] if isinstance(x.max(1), tuple) else x.max(1),
              [_distinct(3, 4)]),
    ops.MIN: (lambda x: x.min(), [_distinct(3, 4)]),
    ops.LOGSUMEXP: (lambda x: ng.logsumexp(x, 1), [_signed(2, 3)]),
    ops.SOFTMAX: (lambda x: ng.softmax(x, 0), [_signed(3, 2)]),
    ops.LOG_SOFTMAX: (lambda x: ng.log_softmax(x, -1), [_signed(2, 3)]),
    ops.RESHAPE: (lambda x: x.reshape(3, 2) * 1.0, [_signed(2, 3)]),
    ops.GATHER: (lambda x: x.T[1:, ::2], [_signed(2, 3)]),
    ops.CAT: (lambda a, b: ng.cat([a, b], 1), [_signed(2, 1), _signed(2, 3, seed=1)]),
    ops.MATMUL: (lambda a, b: a @ b, [_signed(2, 3), _signed(3, 4, seed=1)]),
    ops.COMPARE: (lambda a, b: ng.where(a < b, a, b * 2.0), [_signed(4), _signed(4, seed=1)]),
}
ALL = sorted(op.code for op in OPS if op is not None)


def test_every_opcode_has_a_case():
    assert sorted(CASES) == ALL


def _recorded_opcodes(fn, inputs):
    xs = [ng.tensor(a, requires_grad=True) for a in inputs]
    out = fn(*xs)
    if out._tape is None:
        return {ops.LEAF}
    tape = out.grad_fn.tape if out.grad_fn is not None else out._tape
    return set(int(c) for c in tape.opcodes)


@pytest.mark.parametrize("opcode", ALL, ids=[OPS[c].name + f"[{c}]" for c in ALL])
def test_gradcheck_op(opcode):
    fn, inputs = CASES[opcode]
    assert opcode in _recorded_opcodes(fn, inputs)
    assert ng.gradcheck(fn, tuple(ng.tensor(a, requires_grad=True) for a in inputs))


# second derivatives: every op whose recording can be traced as a scalar function
@pytest.mark.parametrize("opcode", ALL, ids=[OPS[c].name + f"[{c}]" for c in ALL])
def test_gradgradcheck_op(opcode):
    fn, inputs = CASES[opcode]
    assert ng.gradgradcheck(fn, tuple(ng.tensor(a, requires_grad=True) for a in inputs),
                            atol=1e-4)


def test_float32_inputs_are_checked_in_float64():
    x = ng.tensor(_pos(3), dtype=ng.float32, requires_grad=True)
    assert ng.gradcheck(lambda x: x.log() * x, (x,))
    assert x.grad is None  # the caller's tensor is untouched


def test_constant_inputs_are_not_differentiated():
    a = ng.tensor(_signed(3), requires_grad=True)
    c = ng.tensor(_signed(3, seed=2))  # does not require grad
    assert ng.gradcheck(lambda a, c: a * c.exp(), (a, c))
    assert ng.gradgradcheck(lambda a, c: (a * c).sin(), (a, c))


def test_multiple_outputs():
    a, b = (ng.tensor(_signed(2, 3, seed=s), requires_grad=True) for s in (0, 1))
    assert ng.gradcheck(lambda a, b: (a * b, (a - b).tanh().sum(0)), (a, b))


def _frozen(x):
    # a value read by Python is a constant to the tape: its derivative is missing
    return x * float(x.sum().item())


def test_wrong_gradient_reports_worst_element():
    x = ng.tensor([0.5, 1.0, 2.0], requires_grad=True)
    with pytest.raises(ng.GradcheckError) as e:
        ng.gradcheck(_frozen, (x,))
    msg = str(e.value)
    assert "output 0 with respect to input 0" in msg
    # d(x_i * S)/dx_j = S delta_ij + x_i: the missing term x_i is largest at i = 2
    assert "worst at output element (2,)" in msg
    assert ng.gradcheck(_frozen, (x,), raise_exception=False) is False


def test_wrong_second_derivative_is_reported():
    # the tape's Hessian of x * |x| (ABS is piecewise linear) misses nothing away from 0,
    # while a function that reads a value makes the traced Hessian differ
    x = ng.tensor([0.5, 1.0], requires_grad=True)
    with pytest.raises(ng.GradcheckError, match="Second derivative"):
        ng.gradgradcheck(lambda x: x * x * float(x.sum().item()), (x,))


def test_needs_a_differentiable_input():
    with pytest.raises(ValueError, match="requires_grad=True"):
        ng.gradcheck(lambda x: x * 2, (ng.tensor([1.0]),))
