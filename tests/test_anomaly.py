"""ng.detect_anomaly(): the first NaN/inf in a forward or reverse sweep names its op."""
import threading

import numpy as np
import pytest

import numbagrad as ng


def test_forward_nan_names_op_node_and_grad_fn():
    x = ng.tensor([-1.0, 1.0], requires_grad=True)
    with ng.detect_anomaly():
        with pytest.raises(ng.AnomalyError, match=r"forward: node 2 of the tape \(opcode LOG, "
                                                   r"grad_fn LogBackward0\)"):
            (x * 2).log()
    (x * 2).log()  # outside the block: PyTorch semantics, nan silently


def test_forward_notes_an_operand_that_was_already_nan():
    x = ng.tensor([np.nan, 1.0], requires_grad=True)
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match=r"already held nan"):
        x * 2


def test_reverse_inf_names_the_backward_that_made_it():
    x = ng.tensor([0.0, 1.0], requires_grad=True)
    y = (x + 1.0) * 3.0   # finite forward values
    z = (x ** 0.5).sum() + y.sum()
    with ng.detect_anomaly():
        with pytest.raises(ng.AnomalyError, match=r"reverse sweep: node \d+ of the tape \(opcode "
                                                   r"POW_C, grad_fn PowBackward0\) produced nan/inf "
                                                   r"values in the gradient of its operand 0"):
            z.backward()


def test_reverse_overflow_from_a_large_seed():
    x = ng.tensor([1.0, 1.0], requires_grad=True)
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match="MUL_C"):
        (x * 1e10).backward(ng.tensor([1e300, 1.0]))


def test_inf_seed_is_blamed_on_the_seed():
    x = ng.tensor([1.0, 1.0], requires_grad=True)
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match="seeded at node 1"):
        (x * 2.0).backward(ng.tensor([np.inf, 1.0]))


def test_clean_graph_passes_and_gradients_match():
    x = ng.tensor([0.5, 2.0], requires_grad=True)
    with ng.detect_anomaly():
        (x.log() * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.log([0.5, 2.0]) + 1)


def test_traced_forward_and_reverse_are_checked():
    f = ng.trace(lambda x: (x.log() * 3.0).sum(), np.ones(2))
    with ng.detect_anomaly():
        with pytest.raises(ng.AnomalyError, match=r"forward sweep: node 1 .*LOG"):
            f(np.array([-1.0, 1.0]))
        assert f(np.array([1.0, 1.0])) == 0.0
    g = ng.trace(lambda x: (x ** 0.5).sum(), np.ones(2))
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match=r"reverse sweep: .*POW_C"):
        g.grad(np.array([0.0, 1.0]))
    assert np.isinf(g.grad(np.array([0.0, 1.0]))[0])  # off: no check, inf as computed
    with ng.detect_anomaly(), pytest.raises(ng.AnomalyError, match="POW_C"):
        g.hvp((np.array([0.0, 1.0]),), (np.ones(2),))


def test_mode_is_per_thread_and_restored():
    seen = []
    with ng.detect_anomaly():
        assert ng.is_anomaly_enabled()
        t = threading.Thread(target=lambda: seen.append(ng.is_anomaly_enabled()))
        t.start()
        t.join()
        with ng.set_detect_anomaly(False):
            assert not ng.is_anomaly_enabled()
            ng.log(ng.tensor([-1.0], requires_grad=True) * 1)
        assert ng.is_anomaly_enabled()
    assert seen == [False]
    assert not ng.is_anomaly_enabled()


def test_decorator():
    @ng.detect_anomaly()
    def f(x):
        return ng.sqrt(x * 1)
    with pytest.raises(ng.AnomalyError, match="SQRT"):
        f(ng.tensor([-1.0], requires_grad=True))
