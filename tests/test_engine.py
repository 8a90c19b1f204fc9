"""The engine itself: backward really is the Numba sweep over the tape's flat arrays."""
import importlib
import inspect
import math

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import autograd, functions, ops, pool, sweeps
from numbagrad.tape import IPARAMS, ROW, Tape, TapeArrays


def test_backward_runs_the_numba_reverse_sweep_over_tape_arrays(monkeypatch):
    seen = []
    real = autograd.backward_sweep  # plan, seed, reverse_sweep and free, in one compiled call

    def spy(t, chunks, flag_column, seed_nodes, seeds, free, par_min, adj_buf, keep, share,
            fused):
        out = real(t, chunks, flag_column, seed_nodes, seeds, free, par_min, adj_buf, keep, share,
                   fused)
        assert fused is None  # three elements: swept op by op (test_eager_fusion for large ones)
        assert isinstance(chunks, np.ndarray)  # every value in one chunk: no typed list made
        assert type(t) is tuple  # not the namedtuple: Numba types a plain tuple's items in C
        seen.append((TapeArrays(*t), out[0], int(seed_nodes.max()), free))
        return out

    monkeypatch.setattr(autograd, "backward_sweep", spy)
    x = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
    z = (2 * (x + 2) ** 2).mean()
    z.backward()
    assert hasattr(real, "py_func") and real.signatures  # a compiled Numba dispatcher
    assert "_sweep_units(" in inspect.getsource(real.py_func)  # fused runs, and op by op:
    assert "_sweep(" in inspect.getsource(autograd._sweep_units.py_func)  # sweep_scalars, and
    assert "reverse_sweep(" in inspect.getsource(autograd._sweep.py_func)  # the kernels
    (t, adj_off, top, free), = seen
    assert free  # no retain_graph: the swept ops are marked FREED
    assert (t.flags[1:] & sweeps.FREED).all() and not t.flags[0] & sweeps.FREED
    assert t.opcodes.dtype == np.int32 and t.args.dtype == np.int64
    assert list(t.opcodes) == [ops.LEAF, ops.ADD_C, ops.POW_C, ops.MUL_C, ops.MEAN]
    assert list(t.args) == [0, 1, 2, 3] and list(t.arg_ptr) == [0, 0, 1, 2, 3, 4]
    assert list(t.consts) == [2.0, 2.0, 2.0, 3.0]  # +2, **2, *2, mean's count
    assert top == 4 and (adj_off >= 0).all()
    np.testing.assert_allclose(x.grad.numpy(), 4 * (np.array([1.0, 2.0, 3.0]) + 2) / 3)


def test_large_backward_sweeps_into_adjoints_allocated_by_numpy(monkeypatch):
    # Numba's np.zeros fills a large buffer serially: a large backward gets it from Python (a
    # pooled block cleared in parallel, or with SCRATCH_MAX a thread's scratch buffer)
    calls = []
    real = autograd.backward_sweep

    def spy(*args):
        out = real(*args)
        calls.append((args[7].size, out[2], out[1].size))  # adj_buf
        return out

    monkeypatch.setattr(autograd, "backward_sweep", spy)
    n = max(autograd.CALLOC_MIN, autograd.FUSE_MIN)
    # swept op by op: x's slot first (read afterwards), the mean's, and two slots of n: x + 2
    # takes the one of 2 * (...) ** 2 once that is swept (share_adjoints; without, 4 * n + 1);
    # fused (test_eager_fusion), the run's inner adjoints live in scratch: x's and the mean's
    for fuse_min, total in ((1 << 62, 3 * n + 1), (autograd.FUSE_MIN, n + 1)):
        monkeypatch.setattr(autograd, "FUSE_MIN", fuse_min)
        x = ng.tensor(np.linspace(-1.0, 1.0, n), requires_grad=True)
        (2 * (x + 2) ** 2).mean().backward()
        assert calls == [(0, autograd.NEED_BUFFER, 0), (total, sweeps.OK, total)]
        np.testing.assert_allclose(x.grad.numpy(), 4 * (np.linspace(-1.0, 1.0, n) + 2) / n)
        calls.clear()
    y = ng.tensor([1.0, 2.0], requires_grad=True)
    (y * y).sum().backward()  # small: one call, its buffer allocated inside
    assert calls == [(0, sweeps.OK, 5)] and y.grad.tolist() == [2.0, 4.0]


def test_tape_dump_and_structure():
    x = ng.tensor([1.0, 2.0], requires_grad=True)
    y = (x * ng.tensor([3.0, 4.0])).sum()
    tape = y._tape
    assert len(tape) == 4
    text = str(tape)
    assert "Input" in text and "Constant" in text and "MulBackward0" in text and "SumBackward0" in text


def test_forward_sweep_recomputes_eager_values(rng):
    # replaying the recorded tape in Numba gives the values NumPy computed eagerly
    x = ng.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = ng.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    h = ng.tanh(x @ w) + ng.sigmoid(x[:, :2]) * 2 - ng.relu(x[:, 1:3]) ** 2
    y = ng.log_softmax(ng.cat([h, ng.exp(-h)], dim=1), 1)
    z = ng.logsumexp(y, 0).sum() + ng.softmax(h, 0).max() + ng.where(h > 0, h, h / 3).mean()
    tape = z._tape
    eager = [tape.value(k).copy() for k in range(len(tape))]
    chunks = tape.typed_chunks()
    for c in chunks:
        c[:] = np.nan  # wipe everything, then restore only the leaves
    for k in range(len(tape)):
        if tape.opcodes[k] == ops.LEAF:
            tape.value(k)[:] = eager[k]
    sweeps.forward_sweep(tape.arrays(), chunks, 0, len(tape), sweeps.PAR_MIN)
    for k in range(len(tape)):
        np.testing.assert_allclose(tape.value(k), eager[k], rtol=1e-12, atol=1e-12,
                                   err_msg=f"node {k} {tape.name(k)}")


def test_leaves_share_memory_and_small_values_are_packed():
    from numbagrad.tape import OWN_CHUNK
    big = ng.ones(OWN_CHUNK, requires_grad=True)
    y = big * 2
    tape = y._tape
    assert tape.chunks[tape.val_chunk[0]] is not None
    assert np.shares_memory(tape.value(0), big.detach().numpy())  # a large leaf is not copied
    small = [ng.tensor([float(i)], requires_grad=True) for i in range(5)]
    s = small[0]
    for t in small[1:]:
        s = s + t
    assert len(s._tape.chunks) == 1  # nine small values, one chunk
    # a chunk has room for 16 values of the size of the one that opens it: Rosenbrock over
    # 100 and 1,000 elements (12 nodes, 1,100 and 11,000 values) keeps one, not eight, so its
    # backward is handed the chunk itself, not a typed list (8-10 us to make)
    for n in (100, 1000):
        v = ng.tensor(np.linspace(-1.0, 1.0, n), requires_grad=True)
        r = (100 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2).sum()
        assert len(r._tape.chunks) == 1
        r.backward()
        assert r._tape._typed_chunks is None


def test_merging_tapes_keeps_every_node_reachable():
    xs = [ng.tensor([float(i + 1)], requires_grad=True) for i in range(6)]
    parts = [x * x for x in xs]  # six separate tapes
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    total.backward()
    for i, x in enumerate(xs):
        assert x.grad.item() == 2.0 * (i + 1)


def test_ops_on_one_leaf_share_a_tape_and_unrelated_graphs_do_not():
    # tensor.start_tape: an op on untaped leaves records onto the tape the thread's last such
    # op started when it already holds one of them (same version), is small and unswept
    x = ng.tensor(np.linspace(-1.0, 1.0, 10), requires_grad=True)
    y = ng.tensor(np.ones(10), requires_grad=True)
    a, b = x[1:], x[:-1] ** 2
    assert a._tape is b._tape and len(a._tape) == 4  # x once, x[1:], x[:-1], ** 2: no merge
    c = y.sin()
    assert c._tape is not a._tape  # y is on no tape yet: a tape of its own
    d = x.cos()
    assert d._tape is not a._tape  # the thread's last new tape is c's, which does not hold x
    # two graphs on one tape: each backward sweeps its own nodes and leaves the other's
    x0 = x.detach().numpy().copy()
    u = (x * 2.0).sum()
    v = x.exp().sum()
    assert u._tape is v._tape
    v.backward()
    assert v._tape.swept
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x0))
    w = x * 4.0
    assert w._tape is not u._tape  # swept: a new tape
    u.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x0) + 2.0)
    with pytest.raises(RuntimeError, match="second time"):
        v.backward()  # exp's saved result was freed by v's backward, not by u's
    u.backward()  # u saved nothing (as in PyTorch, a second backward is fine)
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x0) + 4.0)
    # a leaf changed in place since: a new tape (its old node stays with the old version)
    p = x * x  # saves x
    with ng.no_grad():
        x += 1.0
    q = x * x
    assert q._tape is not p._tape
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        p.sum().backward()
    x.grad = None
    q.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (x0 + 1.0))


def test_a_shared_tape_stays_small_and_holds_no_large_values():
    tensor_mod = importlib.import_module("numbagrad.tensor")  # ng.tensor is the function
    tape_mod = importlib.import_module("numbagrad.tape")
    x = ng.tensor(np.ones(3), requires_grad=True)
    first = x * 2.0
    parts = [x * float(i) for i in range(tensor_mod.REUSE_NODES + 5)]
    assert parts[0]._tape is first._tape and len(first._tape) <= tensor_mod.REUSE_NODES + 1
    assert parts[-1]._tape is not first._tape  # past REUSE_NODES nodes: a new tape
    big = ng.tensor(np.ones(tape_mod.OWN_CHUNK), requires_grad=True)
    s = big.sin()
    assert s._tape.large and big.cos()._tape is not s._tape
    f32 = ng.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    h = f32 * 2.0
    assert h._tape.dtype == np.float32
    assert (f32 * 3.0)._tape is h._tape


def test_trace_records_on_tapes_nobody_else_shares():
    w = ng.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    before = w.sin()  # the thread's last new tape holds w
    f = ng.trace(lambda x: (w * x).sum(), np.ones(3))
    assert len(before._tape) == 2  # nothing of f's graph landed on it
    after = w.cos()
    assert after._tape is not before._tape and len(after._tape) == 2  # nor on f's tape
    np.testing.assert_array_equal(f.grad(np.array([1.0, 1.0, 2.0])), [1.0, 2.0, 3.0])
    (before.sum() + after.sum()).backward()
    np.testing.assert_allclose(w.grad.numpy(), np.cos([1.0, 2.0, 3.0]) - np.sin([1.0, 2.0, 3.0]))


def test_merging_small_tapes_keeps_no_dead_copies_of_leaves():
    # scalar code: every step's sin(x) starts a small tape that the accumulator's tape absorbs;
    # the leaves recorded on both are kept once, and the small tapes' value chunks are copied in
    xs = [ng.tensor(float(i) / 7, requires_grad=True) for i in range(3)]
    acc = xs[0] * xs[1]
    views = []
    for i in range(50):
        part = ng.sin(xs[i % 3]) * xs[(i + 1) % 3]
        views.append(part.reshape(1))  # an alias node on the small tape, moved with it
        acc = acc + part
    acc.retain_grad()
    y = acc * 2
    tape = y._tape
    assert len(tape) == 3 + 1 + 50 * 4 + 1  # leaves, x0*x1, (sin, mul, reshape, add) x 50, *2
    assert len(tape.chunks) <= 2
    assert [v.item() for v in views] == [np.sin(i % 3 / 7) * ((i + 1) % 3 / 7) for i in range(50)]
    y.backward()
    x = np.arange(3) / 7
    expect = [x[1], x[0], 0.0]
    for i in range(50):
        a, b = i % 3, (i + 1) % 3
        expect[a] += np.cos(x[a]) * x[b]
        expect[b] += np.sin(x[a])
    np.testing.assert_allclose([2 * e for e in expect], [v.grad.item() for v in xs], rtol=1e-13)
    assert acc.grad.item() == 2.0


def test_tape_read_once_then_grown_keeps_columns_and_flags_consistent():
    # the first arrays() is built straight from the queued nodes and stands for the columns;
    # recording more, reading a column or merging afterwards must see every node and flag
    x = ng.tensor([1.0, 2.0], requires_grad=True)
    w = ng.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    y.backward(retain_graph=True)
    tape = y._tape
    assert tape._columns is None and tape._base is not None  # not yet copied into columns
    z = y * y + (x[[0, 0, 1]] * 2).sum()  # grows the same tape, with a bulky (ndarray) node
    assert z._tape is tape
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 4] + 2 * 11 * np.array([3, 4]) + [4, 2])
    freed = np.frombuffer(tape.flags, dtype=np.int8) & sweeps.FREED  # a column read
    assert list(freed != 0) == list(tape.arrays().flags & sweeps.FREED != 0)
    assert freed[tape.arrays().opcodes != ops.LEAF].all()
    assert "SumBackward0" in str(tape) and len(tape.opcodes) == len(tape)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        z.backward()
    # a tape read once, then merged into another, keeps its nodes' flags
    a = ng.tensor(2.0, requires_grad=True)
    u = a * a
    u.backward(retain_graph=True)
    big = sum(ng.sin(ng.tensor(float(i), requires_grad=True)) for i in range(40))
    v = big + u
    v.backward()
    assert a.grad.item() == 4.0 + 4.0


def test_queued_rows_become_the_same_arrays_straight_or_through_the_columns():
    # arrays() of a tape read first is built from the queued rows (tape._arrays_from_rows);
    # of a tape read again, from columns the rows were flushed into: the same numbers, for
    # scalar rows (empty shapes and parameters), general ones, a bulky one and signed zeros
    def record():
        a = ng.tensor(0.5, requires_grad=True)
        v = ng.tensor([1.0, -2.0, 3.0], requires_grad=True)
        s = ng.sin(a) * a / -0.0 + 0.0      # lane rows, constants -0.0 and 0.0
        w = (v * s).reshape(3, 1).sum(0)      # shapes and integer parameters
        return (v[[2, 0]].sum() + w.sum() * s)._tape
    straight = record().arrays()
    tape = record()
    tape._flush()                           # the columns first, then arrays() from them
    through = tape.arrays()
    for name in TapeArrays._fields:
        a, b = getattr(straight, name), getattr(through, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a.view(np.int64) if a.dtype == np.float64 else a,
                              b.view(np.int64) if b.dtype == np.float64 else b), name


def test_queued_rows_leave_the_garbage_collector_nothing_to_walk():
    # scalar code queues a node every microsecond or two: after one collection nothing the
    # queue holds is tracked (a tuple per node holding the operands' tuple survived the first
    # pass and cost a tenth of W2's recording time in later ones)
    import gc
    x = ng.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(2000):
        y = ng.sin(y) * x + 0.25
    rows = y._tape._rows
    assert len(rows) >= 6000
    gc.collect()
    assert not any(gc.is_tracked(r) for r in rows)
    # and recording leaves the young generation nothing new: the operands are ints in one
    # list (a tuple of them per node set off a collection every 230 steps of W2)
    assert all(type(a) is int for a in y._tape._args)
    z = ng.sin(x) * x
    gc.collect()
    young = gc.get_count()[0]
    for _ in range(3000):
        z = ng.sin(z) * x
    assert gc.get_count()[0] - young < 100


def test_tensor_attributes_take_cpythons_fast_path():
    # a class with __getattr__ has every attribute read go the slow way (29 against 10 ns a
    # slot): lane tensors' lazy value and tape are properties, not a __getattr__
    assert not hasattr(ng.Tensor, "__getattr__")
    assert ng.Tensor.__getattribute__ is object.__getattribute__
    y = ng.sin(ng.tensor(0.5, requires_grad=True))
    assert y._array is None and y._pending is not None  # a waiting lane tensor
    assert y._data.item() == np.sin(0.5) and y._array is not None and y._scalar is None
    assert y._tape is not None and y._pending is None    # reading _tape recorded it


def test_recorded_index_arrays_are_copied():
    # the tape queues nodes and builds its columns later: an index array the caller changes
    # after indexing must not change what was recorded
    x = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = np.array([0, 0, 2])
    y = (x[idx] * ng.tensor([1.0, 10.0, 100.0])).sum()
    idx[:] = 1
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [11.0, 0.0, 100.0])


def test_basic_indexing_records_the_positions_numpy_selects():
    # ints, slices (any step, negative, out of range), None and an Ellipsis: the gather
    # positions come from strides (functions._basic_positions), not from an arange of every
    # element; they must be NumPy's selection of x.flat, for every shape, empty ones too
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        shape = tuple(int(n) for n in rng.integers(0 if rng.random() < 0.05 else 1, 6,
                                                   rng.integers(1, 4)))
        key = []
        for n in shape:
            r = rng.random()
            if r < 0.3 and n:
                key.append(int(rng.integers(-n, n)))
            elif r < 0.9:
                pick = lambda: None if rng.random() < 0.3 else int(rng.integers(-n - 2, n + 3))
                key.append(slice(pick(), pick(), [None, 1, 2, 3, -1, -2][rng.integers(6)]))
            else:
                key.append(None)
        if rng.random() < 0.2:
            key.insert(int(rng.integers(len(key) + 1)), Ellipsis)
        key = tuple(key)
        try:  # a None shifts the keys after it: some land on too short an axis
            want = np.arange(math.prod(shape)).reshape(shape)[key].reshape(-1)
        except IndexError:
            with pytest.raises(IndexError):
                functions._basic_positions(shape, key)
            continue
        got = functions._basic_positions(shape, key)
        assert got.dtype == np.int64 and got.base is None and np.array_equal(got, want), key
        checked += 1
    assert checked > 2000
    x = ng.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    ((x[1:, ::-2] * 2).sum() + x[..., 0].sum() + x[2].sum() + x[None, 1, 1:3].sum()
     + x[True].sum() + x[-1, -1]).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2, 1, 1, 1], [2, 4, 2, 3], [3, 4, 2, 5]])
    # through x[key] where the selection is small against the tensor (the path that uses them)
    big = ng.tensor(np.zeros((64, 64)), requires_grad=True)
    (big[3, ::7].sum() + 2 * big[..., -1, None][10:12].sum() + big[None, 5:7, 60:].sum()).backward()
    want = np.zeros((64, 64))
    want[3, ::7] += 1
    want[10:12, -1] += 2
    want[5:7, 60:] += 1
    np.testing.assert_array_equal(big.grad.numpy(), want)


def test_the_tape_keeps_an_unchangeable_index_array_as_it_is():
    # read-only and owning its memory: nobody can change it, so no copy; anything else is
    # copied (a view of the caller's array, or a writable one)
    tape = Tape(np.float64)
    frozen = np.arange(4)
    frozen.flags.writeable = False
    view = np.arange(8)[::2]
    writable = np.arange(4)
    for idx in (frozen, view, writable):
        tape.append(ops.GATHER, 0, (0,), (4,), (0, 0), 0, iparams=idx)
    kept = tape._rows[IPARAMS::ROW]
    assert kept[0] is frozen and kept[1] is not view and kept[2] is not writable
    assert [list(k) for k in kept] == [[0, 1, 2, 3], [0, 2, 4, 6], [0, 1, 2, 3]]


def test_eager_ops_leave_numpy_error_state_alone():
    before = np.geterr()
    with np.errstate(divide="raise"):
        y = ng.tensor([1.0, 0.0], requires_grad=True) / ng.tensor([0.0, 0.0])  # no raise
        assert np.geterr()["divide"] == "raise"
    assert np.isinf(y[0].item()) and np.isnan(y[1].item())
    assert np.geterr() == before


def test_parallel_threshold_is_consistent(rng):
    # the same graph below and above the prange threshold gives the same gradient
    n = 1000
    x = rng.standard_normal(n)
    grads = []
    for par_min in (1 << 62, 1):
        t = ng.tensor(x, requires_grad=True)
        y = (ng.sin(t) * t + ng.exp(t) / (1 + t * t)).sum()
        tape, _ = y._tape, None
        arrays = tape.arrays()
        adj_off, total, status, *_ = sweeps.plan_adjoints(arrays, np.array([len(tape) - 1]))
        adj = np.zeros(total)
        adj[adj_off[len(tape) - 1]] = 1.0
        sweeps.reverse_sweep(arrays, tape.typed_chunks(), adj, adj_off, len(tape) - 1, par_min,
                             0)
        grads.append(adj[adj_off[0]:adj_off[0] + n].copy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-13)


def test_a_graph_recorded_again_reuses_the_last_tapes_columns_but_not_its_flags():
    from numbagrad import tape as tape_mod

    def step(v, c=2.0):
        x = ng.tensor(v, requires_grad=True)
        z = (c * (x + 2) ** 2).mean()
        return x, z

    x1, z1 = step([1.0, 2.0, 3.0])
    z1.backward()
    first = z1._tape.arrays()
    assert first.flags[1:].all() and (first.flags[1:] & sweeps.FREED).all()
    x2, z2 = step([4.0, 5.0, 6.0])
    second = z2._tape.arrays()
    assert second.opcodes is first.opcodes and second.consts is first.consts  # reused
    assert second.flags is not first.flags and not (second.flags & sweeps.FREED).any()
    z2.backward()
    np.testing.assert_allclose(x2.grad.numpy(), 4 / 3 * (np.array([4.0, 5, 6]) + 2))
    with pytest.raises(RuntimeError, match="second time"):
        z1.backward()  # the first tape's own flags still say freed
    # another shape, another constant: a new tape's arrays; equal rows are compared, not ids
    x3, z3 = step([1.0, 2.0], c=3.0)
    assert z3._tape.arrays().opcodes is not first.opcodes
    z3.backward()
    np.testing.assert_allclose(x3.grad.numpy(), 3 * (np.array([1.0, 2]) + 2))
    # 0.0 and -0.0 are equal to == but not to the gradient: d(a / c)/da = 1 / c = +-inf
    a = ng.tensor(1.0, requires_grad=True)
    (a / 0.0).backward()
    b = ng.tensor(1.0, requires_grad=True)
    (b / -0.0).backward()
    assert a.grad.item() == np.inf and b.grad.item() == -np.inf
    # rows holding index arrays are not compared (== on arrays is elementwise) nor kept
    y = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y[[0, 2]].sum().backward()
    assert tape_mod._last_read[0] is not None and all(
        type(p) is not np.ndarray for p in tape_mod._last_read[0])  # the rows' fields, flat
    # a tape holding an index array read right after one of as many rows holding none
    v = ng.tensor(np.arange(6.0), requires_grad=True)
    v[1:4].sum().backward()
    w = ng.tensor(np.arange(6.0), requires_grad=True)
    w[::2].sum().backward()  # the same rows but for the positions (an array)
    assert w.grad.tolist() == [1, 0, 1, 0, 1, 0]
    # rows alike but wired differently: a * b + a, then a * b + b (the rows hold operand
    # counts; the operands themselves are compared apart)
    grads = []
    for last in (0, 1):
        a, b = ng.tensor(2.0, requires_grad=True), ng.tensor(5.0, requires_grad=True)
        (a * b + (a, b)[last]).backward()
        grads.append((a.grad.item(), b.grad.item()))
    assert grads == [(6.0, 2.0), (5.0, 3.0)]


_FIRST_CALLS = """
import numpy as np
from numba.core import event
compiled = []


class Compiles(event.Listener):  # Numba's event for a real compilation, not a cache load
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Compiles())
import numbagrad as ng
x = ng.tensor(np.linspace(0, 1, 5000), requires_grad=True)  # a value large enough to be a chunk
((x * x).sin().sum() + (x * 2).sum()).backward()
y = ng.tensor(np.linspace(0, 1, 300_000, dtype=np.float32), requires_grad=True)
(y * y).tanh().mean().backward()  # parallel kernels, shared adjoint slots
f = ng.trace(lambda w, v: (w @ v).tanh().sum(), np.ones((3, 4)), np.ones(4))
f.grad(np.ones((3, 4)), np.ones(4))  # a weight read by one product: its own chunk
g = ng.trace(lambda v: (2 * (v + 2) ** 2).mean(), np.ones(3))
g.grad(np.ones(3)); g.grad_batch(np.ones((4, 3))); g.jacobian(np.ones(3)); g.hessian(np.ones(3))
ng.functional.jacobian(lambda v: ng.tanh(v) * 2, ng.tensor(np.ones(3)))
print(compiled)
"""


def test_a_second_fresh_process_compiles_nothing():
    # First calls in a process load every kernel from Numba's cache; anything compiled instead
    # costs 100 ms or more each time.  Found this way: numba.typed.List's methods called from
    # Python are jitted functions of Numba's own, compiled and never cached (140 ms at the
    # first backward with several value chunks and the first replay); the chunk lists are made
    # and grown by numbagrad's cached tape.chunk_list and append_chunk instead.
    import subprocess
    import sys
    # the first run may fill the cache (from cold: minutes)
    runs = [subprocess.run([sys.executable, "-c", _FIRST_CALLS], capture_output=True, text=True,
                           timeout=1800) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    assert runs[1].stdout.strip() == "[]", runs[1].stdout


def test_large_adjoints_share_memory_once_swept_and_sum_as_before(monkeypatch):
    n = 1 << 15  # slots of autograd.SHARE_MIN elements or more, CALLOC_MIN in all
    assert n >= autograd.SHARE_MIN
    x0 = np.random.default_rng(5).standard_normal(n)

    def graph():
        x = ng.tensor(x0, requires_grad=True)
        w = ng.tensor(x0[::-1].copy(), requires_grad=True)
        b = ng.sin(x) * w
        b.retain_grad()
        c = b * b + ng.exp(b) * x   # b has three consumers, x two
        y = c
        for _ in range(8):
            y = ng.tanh(y) * 1.5 + c
        h = y[: n // 2] * 2.0         # a smaller slot: fits in a freed larger one
        u = (h * h).sum() + (b * y).sum()
        v = (y * 3.0).mean()
        return x, w, b, c, y, u, v

    _, _, b, _, _, u, v = graph()
    with monkeypatch.context() as m:
        m.setattr(autograd, "SCRATCH_MAX", 0)  # a fresh buffer (the default) ...
        m.setattr(pool, "MIN_BYTES", 1 << 62)  # ... from NumPy, which can be cut down
        tape, adj, adj_off, own = autograd._run([u, v], None, True)
    unshared = int(sum(int(tape.sizes[k]) for k in range(len(tape)) if adj_off[k] >= 0))
    # cut down to what is read afterwards, laid out first: the leaves x and w, retained b
    assert own and adj.size == 3 * n
    read = [k for k, _, _ in tape.leaves] + [b._node]
    assert sorted(adj_off[read]) == [0, n, 2 * n]
    peak = autograd.backward_sweep(tape.arrays(), tape.typed_chunks(), tape.flag_column(),
                                   np.array([u._node, v._node]), np.ones(2), False,
                                   sweeps.PAR_MIN, np.zeros(0), np.zeros(0, dtype=np.int64),
                                   True, None)[3]  # NEED_BUFFER and the size
    assert peak < unshared // 3

    x, w, b, c, y, u, v = graph()
    ng.autograd.backward([u, v])
    x2, w2, b2, c2, y2, u2, v2 = graph()
    with ng.detect_anomaly():  # which reads every adjoint, so none are shared
        ng.autograd.backward([u2, v2])
    for got, want in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())  # same additions, same order
    # grad() of an intermediate whose slot would otherwise be reused
    x3, w3, b3, c3, y3, u3, v3 = graph()
    g_c, g_x = ng.grad(u3 + v3, (c3, x3))
    x4, w4, b4, c4, y4, u4, v4 = graph()
    with ng.detect_anomaly():
        h_c, h_x = ng.grad(u4 + v4, (c4, x4))
    np.testing.assert_array_equal(g_c.numpy(), h_c.numpy())
    np.testing.assert_array_equal(g_x.numpy(), h_x.numpy())
    # and against finite differences along a direction, for the values themselves
    d = np.random.default_rng(6).standard_normal(n) * 1e-6

    def f(xv):
        x = ng.tensor(xv)
        w = ng.tensor(x0[::-1].copy())
        b = ng.sin(x) * w
        c = b * b + ng.exp(b) * x
        y = c
        for _ in range(8):
            y = ng.tanh(y) * 1.5 + c
        h = y[: n // 2] * 2.0
        return ((h * h).sum() + (b * y).sum() + (y * 3.0).mean()).item()
    fd = (f(x0 + d) - f(x0 - d)) / 2
    assert abs(fd - float(x.grad.numpy() @ d)) < 1e-6 * max(1.0, abs(fd))


def test_large_gradients_are_views_of_the_cut_down_adjoint_buffer():
    n = (1 << 21) + 1  # x's and w's adjoints alone exceed a 32 MB scratch buffer
    x0 = np.linspace(-1.0, 1.0, n)
    x = ng.tensor(x0, requires_grad=True)
    w = ng.tensor(x0[::-1].copy(), requires_grad=True)
    ((x * w).sin() * 2).sum().backward()
    gx, gw = x.grad.numpy(), w.grad.numpy()
    assert not gx.flags.owndata and not gw.flags.owndata  # no copy out of the buffer...
    assert not np.shares_memory(gx, gw)  # ... and each its own part of it
    np.testing.assert_allclose(gx, 2 * np.cos(x0 * x0[::-1]) * x0[::-1])
    x.grad.zero_()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.cos(x0 * x0[::-1]) * x0)
    ((x * w).sin() * 2).sum().backward()  # accumulates into the views
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.cos(x0 * x0[::-1]) * x0[::-1])
    np.testing.assert_allclose(w.grad.numpy(), 4 * np.cos(x0 * x0[::-1]) * x0)
    # an input given twice to grad() gets two arrays, not one memory
    y = (x * x * 3.0).sum()
    g1, g2 = ng.grad(y, (x, x))
    assert not np.shares_memory(g1.numpy(), g2.numpy())
    np.testing.assert_array_equal(g1.numpy(), 6 * x0)
    np.testing.assert_array_equal(g2.numpy(), 6 * x0)


@pytest.mark.parametrize("scratch", [0, 1 << 22])
def test_mid_size_adjoints_come_cleared_from_the_pool_or_a_scratch_buffer(monkeypatch, scratch):
    # from CALLOC_MIN adjoints on, the buffer is a pooled block (warm: a fresh one faults a page
    # at a time) or with SCRATCH_MAX each thread's scratch buffer; either is reused, and must be
    # cleared each time.  Gradients are views of a pooled block (no copy), copies of a scratch.
    monkeypatch.setattr(autograd, "SCRATCH_MAX", scratch)
    monkeypatch.setattr(autograd, "_scratch", autograd._Scratch())
    for n, dtype in ((autograd.CALLOC_MIN, np.float64), (3 * autograd.CALLOC_MIN, np.float64),
                     (autograd.CALLOC_MIN, np.float32), (autograd.CALLOC_MIN // 2, np.float64)):
        x0 = np.linspace(-1.0, 1.0, n).astype(dtype)
        grads, where = [], []
        for c in (2.0, 3.0):
            x = ng.tensor(x0, requires_grad=True)
            (c * (x + 2) ** 2).mean().backward()
            g = x.grad.numpy()
            assert x.grad.dtype == dtype and g.flags.owndata == bool(scratch)
            grads.append(g.copy())
            where.append(g.__array_interface__["data"][0])
            del x, g  # the gradient too: its buffer is free for the next backward
        if not scratch and 3 * n * x0.itemsize >= pool.MIN_BYTES:  # (x, two shared slots, mean)
            assert where[0] == where[1]  # the same pooled block, used again
        tol = dict(rtol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
        for c, g in zip((2.0, 3.0), grads):  # the second backward saw a cleared buffer
            np.testing.assert_allclose(g, 2 * c * (x0.astype(np.float64) + 2) / n, **tol)
    buf = autograd._scratch.float64
    if scratch:
        assert buf is not None and autograd.CALLOC_MIN <= buf.size <= scratch
    else:
        assert buf is None


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_scalar_graph_records_on_and_differentiates(how):
    # the tape writes scalar values through a memoryview of its small chunk, which neither
    # copies nor pickles: a copy must get a view of its own chunk, not of the original's
    import copy
    import pickle
    dup = copy.deepcopy if how == "deepcopy" else lambda t: pickle.loads(pickle.dumps(t))

    def more(t):
        for _ in range(150):  # twice over: past the first 256-value chunk
            t = t * 0.999 + 0.001
        return t
    x = ng.tensor(1.5, requires_grad=True)
    z = more((ng.sin(x) * x + x) * 2)  # on a tape (a short tree would still be waiting)
    c = dup(z)
    tape = c._tape
    assert tape is not z._tape and tape._small_slots.obj is tape._small
    more(c).backward()
    more(z).backward()
    dz = 0.999 ** 300 * 2 * (math.cos(1.5) * 1.5 + math.sin(1.5) + 1)
    assert x.grad.item() == pytest.approx(dz, rel=1e-12)
    copied_x = tape.leaves[0][1]  # the copy's own leaf got the same gradient
    assert copied_x is not x and copied_x.grad.item() == x.grad.item()
    assert z.item() == c.item()
