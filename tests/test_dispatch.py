"""The dispatch table: kernels derived from the op rows, compiled per op on first use, and an
error (never a zero) for an opcode without a row."""
import subprocess
import sys
import time

import numpy as np
import pytest

from numbagrad import compile_notice, dispatch as D, ops
from numbagrad.ops import OPS, LEAF_F


def test_every_row_reaches_every_sweep_mode():
    for row in OPS:
        if row is None or row.family == LEAF_F:
            continue
        for mode in (D.FWD, D.VJP, D.JVP):
            assert D.kernel_function(mode, row.code) is not None
        if row.linear:  # its HVP is its reverse kernel on the adjoints' tangents
            assert D.HVP_AS_VJP[row.code]
        else:
            assert not D.HVP_AS_VJP[row.code]
            assert D.kernel_function(D.HVP, row.code) is not None


@pytest.mark.parametrize("op", [-1, 28, 29, ops.N_OPCODES, 1000])
def test_an_opcode_without_a_row_has_no_kernel(op):
    with pytest.raises(ValueError, match="no row"):
        D.kernel_function(D.VJP, op)




def test_sweep_meeting_an_unknown_opcode_raises():
    from numbagrad.sweeps import reverse_sweep, forward_sweep
    from numbagrad.tape import TapeArrays, chunk_list
    # a two-node tape: a leaf and an op whose opcode no row defines
    t = TapeArrays(
        opcodes=np.array([ops.LEAF, 29], dtype=np.int32), name_ids=np.zeros(2, np.int16),
        flags=np.array([1, 1], dtype=np.int8), arg_ptr=np.array([0, 0, 1], dtype=np.int64),
        args=np.array([0], dtype=np.int64), shape_ptr=np.array([0, 1, 2], dtype=np.int64),
        shapes=np.array([3, 3], dtype=np.int64), sizes=np.array([3, 3], dtype=np.int64),
        const_ptr=np.zeros(3, np.int64), consts=np.zeros(0), iparam_ptr=np.zeros(3, np.int64),
        iparams=np.zeros(0, np.int64), val_chunk=np.zeros(2, np.int32),
        val_off=np.array([0, 3], dtype=np.int64))
    chunks = chunk_list(np.arange(6.0))
    adj = np.zeros(6)
    adj[3:] = 1.0
    adj_off = np.array([0, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="no kernel for opcode"):
        reverse_sweep(t, chunks, adj, adj_off, np.int64(1), np.int64(1 << 17), np.int64(0))
    assert not adj[:3].any()  # nothing was added before the error
    assert "opcode 29 has no row" in str(D.last_error())
    with pytest.raises(ValueError, match="no kernel for opcode"):
        forward_sweep(t, chunks, np.int64(0), np.int64(2), np.int64(1 << 17))


def test_first_backward_fills_only_the_slots_of_its_ops():
    code = (
        "import numpy as np, numbagrad as ng\n"
        "from numbagrad import dispatch as D, ops\n"
        "assert not D.TABLE.any()\n"
        "x = ng.randn(3, requires_grad=True)\n"
        "((x + 2) * (x + 2) * 2).mean().backward()\n"
        "filled = sorted({ops.OPCODE_NAME[o] for m, s, d, o in zip(*np.nonzero(D.TABLE))})\n"
        "modes = sorted({int(m) for m in np.nonzero(D.TABLE)[0]})\n"
        "print(filled, modes)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    filled, modes = out.stdout.strip().split("] [")
    names = set(eval(filled + "]"))
    assert names <= {"ADD_C", "MUL", "MUL_C", "MEAN", "SUM", "POW_C"}, names
    assert "MUL" in names or "POW_C" in names
    assert eval("[" + modes) == [D.VJP]


@pytest.fixture
def notice(monkeypatch, capsys):
    """The compile notice armed afresh; what it prints is ``notice()``.  Set DELAY in the test."""
    monkeypatch.setitem(compile_notice._state, "shown", False)
    monkeypatch.setitem(compile_notice._state, "enabled", True)
    return lambda: capsys.readouterr().err


def test_compile_notice_is_one_line_once(notice, monkeypatch):
    monkeypatch.setattr(compile_notice, "DELAY", 0.05)
    with compile_notice.compiling("the reverse kernel of SIN"):
        time.sleep(0.5)
    with compile_notice.compiling("the reverse kernel of COS"):
        time.sleep(0.5)
    lines = notice().splitlines()
    assert len(lines) == 1 and "SIN" in lines[0] and "once per machine" in lines[0]


def test_compile_notice_quiet_when_short_or_disabled(notice, monkeypatch):
    monkeypatch.setattr(compile_notice, "DELAY", 0.3)
    with compile_notice.compiling("something quick"):
        pass
    time.sleep(0.5)
    compile_notice.set_enabled(False)
    with compile_notice.compiling("something slow"):
        time.sleep(0.5)
    compile_notice.set_enabled(True)
    assert notice() == ""


def test_precompile_jobs_give_each_function_to_one_process():
    from numbagrad.precompile import _kernel_jobs
    seen = []
    for label, slots in _kernel_jobs():
        fns = set()
        for mode, size, d, op in slots:
            fn = D.kernel_function(mode, op)
            if size == D.SMALL and D._is_parallel(fn):
                fn = D._serial(fn)
            fns.add(fn)
        assert len(fns) == 1, label
        seen += slots
    assert sorted(seen) == sorted(set(D.all_slots()))
    # every row in every sweep mode, both dtypes and size classes; linear ops' HVP is their VJP
    rows = [r for r in OPS if r is not None and r.family != LEAF_F]
    assert len(rows) > 30
    assert sum(1 for m, _, _, _ in seen if m <= D.HVP) == 2 * len(D.DTYPES) * (
        3 * len(rows) + sum(1 for r in rows if not r.linear))


def test_precompile_fills_the_slots_it_is_given():
    from numbagrad.precompile import _compile_slots
    slots = [(D.JVP, D.SMALL, 1, ops.SQRT), (D.VJP, D.SMALL, 1, ops.SQRT)]
    assert _compile_slots(slots) == 2
    assert all(D.TABLE[s] for s in slots)


def test_compile_command_usage_error():
    out = subprocess.run([sys.executable, "-m", "numbagrad", "compile", "--jobs"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "usage" in out.stderr
