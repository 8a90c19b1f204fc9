"""Anomaly detection: find the op that first produced a NaN or an inf.

Inside ``with ng.detect_anomaly():`` (per thread, like grad mode):

- every op's eager value is checked when it is recorded;
- after a reverse sweep (``backward``, ``grad``, a traced ``grad``/``vjp``/``hvp``), every
  adjoint the sweep wrote is checked;
- after a traced forward sweep, every value it wrote is checked.

The sweeps themselves are untouched: the checks scan the value and adjoint buffers node by node
with NumPy afterwards, so outside ``detect_anomaly`` nothing costs more than a flag test.  The
error (``AnomalyError``, a RuntimeError) names the opcode, the node's index on the tape and its
grad_fn.  A reverse-sweep culprit is the last op in sweep order whose own adjoint was finite
while the adjoint it passed to an operand was not: that is the op whose backward made it.
"""
import threading

import numpy as np

from . import ops
from .ops import LEAF, NAMES

__all__ = ["detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled", "AnomalyError"]

_state = threading.local()
_active = [0]   # detect_anomaly blocks open in any thread: the fast "off" test reads this only
_active_lock = threading.Lock()  # += on it from two threads at once could lose a count

# opcode -> its name in ops.py (NEG, DIV, ...)
OPCODE_NAMES = ops.OPCODE_NAME


class AnomalyError(RuntimeError):
    """A NaN or inf appeared in a sweep while anomaly detection was on."""


def is_anomaly_enabled():
    """True inside ``detect_anomaly`` (in this thread).

    >>> import numbagrad as ng
    >>> with ng.detect_anomaly():
    ...     ng.is_anomaly_enabled()
    True
    """
    return bool(_active[0]) and getattr(_state, "enabled", False)


def _set(flag):
    prev = getattr(_state, "enabled", False)
    _state.enabled = bool(flag)
    with _active_lock:
        _active[0] += int(bool(flag)) - int(prev)
    return prev


class detect_anomaly:
    """Raise ``AnomalyError`` at the first op whose value or gradient is NaN or inf.

    A context manager (and decorator); ``check_nan=False`` turns it off, as in PyTorch.

    >>> import numbagrad as ng
    >>> x = ng.tensor([0.0, 1.0], requires_grad=True)
    >>> with ng.detect_anomaly():
    ...     (x ** 0.5).sum().backward()
    Traceback (most recent call last):
    ...
    numbagrad.anomaly.AnomalyError: reverse sweep: node 1 of the tape (opcode POW_C, grad_fn PowBackward0) produced nan/inf values in the gradient of its operand 0 (node 0, AccumulateGrad)
    """

    def __init__(self, check_nan=True):
        self.check_nan = bool(check_nan)

    def __enter__(self):
        self._prev = _set(self.check_nan)
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapper


class set_detect_anomaly(detect_anomaly):
    """Turn anomaly detection on or off now (``mode``); as a context manager, restore after."""

    def __init__(self, mode, check_nan=True):
        self.check_nan = bool(mode) and check_nan
        self._prev = _set(self.check_nan)

    def __enter__(self):
        return self


def _describe(names, opcodes, k):
    return (f"node {k} of the tape (opcode {OPCODE_NAMES.get(int(opcodes[k]), opcodes[k])}, "
            f"grad_fn {names(k)})")


def _bad_per_node(flat, offsets, sizes, mask):
    """For each node in ``mask``: whether its range of ``flat`` holds a NaN or an inf."""
    bad = np.zeros(len(offsets), dtype=bool)
    idx = np.flatnonzero(mask)
    if not len(idx):
        return bad
    nonfinite = ~np.isfinite(flat)
    if not nonfinite.any():
        return bad
    counts = np.concatenate(([0], np.cumsum(nonfinite, dtype=np.int64)))
    lo = offsets[idx]
    bad[idx] = counts[lo + sizes[idx]] - counts[lo] > 0
    return bad


def _node_name(t):
    return lambda k: "AccumulateGrad" if t.opcodes[k] == LEAF else NAMES[t.name_ids[k]]


# ---------------------------------------------------------------- the hooks

def check_recorded(tape, k, value):
    """Record-time check of node ``k``'s eager ``value`` (called by ``tensor.record``)."""
    if not is_anomaly_enabled() or value.dtype.kind != "f" or np.isfinite(value).all():
        return
    ops_ = list(tape.args[tape.arg_ptr[k]:tape.arg_ptr[k + 1]])
    inherited = [a for a in ops_ if tape.value(a).dtype.kind == "f"
                 and not np.isfinite(tape.value(a)).all()]
    how = (f"; operand node(s) {inherited} already held nan/inf" if inherited else "")
    raise AnomalyError(f"forward: {_describe(tape.name, tape.opcodes, k)} produced nan/inf "
                       f"values{how}")


def check_forward(t, buf, ext=None):
    """After a replay forward sweep: the first node whose value in ``buf`` is not finite.
    ``ext`` is the fused plan's marker array when the sweep was fused (1: a segment-internal
    node, whose slot the sweep does not write)."""
    if not is_anomaly_enabled():
        return
    n = len(t.opcodes)
    mask = t.opcodes != LEAF
    if ext is not None:
        mask &= np.asarray(ext)[:n] != 1
    bad = _bad_per_node(buf, t.val_off[:n], t.sizes[:n], mask)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise AnomalyError(f"forward sweep: {_describe(_node_name(t), t.opcodes, k)} produced "
                           f"nan/inf values")


def check_reverse(t, adj, adj_off, seeds, ext=None):
    """After a reverse sweep: blame the op whose backward first wrote a NaN or inf adjoint.

    ``t`` is a TapeArrays; ``adj``/``adj_off`` the adjoint buffer and each node's offset in it
    (-1: not swept); ``seeds`` the seeded output nodes; ``ext`` as in ``check_forward``."""
    if not is_anomaly_enabled():
        return
    seeds = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    n = int(seeds.max()) + 1
    planned = adj_off[:n] >= 0
    if ext is not None:
        planned &= np.asarray(ext)[:n] != 1
    bad = _bad_per_node(adj, np.maximum(adj_off[:n], 0), t.sizes[:n], planned)
    if not bad.any():
        return
    names = _node_name(t)
    for k in seeds.tolist():
        if bad[k]:  # an inf seed (NaN seeds are refused up front)
            raise AnomalyError(f"reverse sweep: the gradient seeded at "
                               f"{_describe(names, t.opcodes, k)} holds nan/inf values")
    # consumer of each operand position; a culprit has a finite adjoint itself and hands a
    # non-finite one to an operand; the sweep runs backwards, so the highest such node was first
    nargs = np.diff(t.arg_ptr[:n + 1])
    consumer = np.repeat(np.arange(n), nargs)
    operand = t.args[:t.arg_ptr[n]]
    hit = bad[operand] & ~bad[consumer] & planned[consumer]
    if hit.any():
        p = int(np.flatnonzero(hit)[-1])
        k, a = int(consumer[p]), int(operand[p])
        pos = p - int(t.arg_ptr[k])
        raise AnomalyError(
            f"reverse sweep: {_describe(names, t.opcodes, k)} produced nan/inf values in the "
            f"gradient of its operand {pos} (node {a}, {names(a)})")
    k = int(np.flatnonzero(bad)[-1])
    raise AnomalyError(f"reverse sweep: {_describe(names, t.opcodes, k)} holds nan/inf gradient "
                       f"values")
