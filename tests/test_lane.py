"""The scalar lane (lane.py): 0-d float64 ops in Python floats give NumPy's values, the same
tape and the same gradients as the general path; waiting trees attach where they should."""
import math
import warnings

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functions as F, lane
from numbagrad.tape import resolve

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-300, 1e300, 710.0, -745.5, math.inf, -math.inf,
           math.nan, 3.0e-8, 1e22, -1e22]
VALUES = SPECIAL + np.random.default_rng(7).standard_normal(300).tolist() \
    + (np.random.default_rng(8).standard_normal(100) * 1e3).tolist()

UNARY = [
    (ng.sin, np.sin), (ng.cos, np.cos), (ng.tan, np.tan), (ng.exp, np.exp), (ng.log, np.log),
    (ng.tanh, np.tanh), (ng.sqrt, np.sqrt), (ng.neg, np.negative), (ng.abs, np.abs),
    (lambda x: x + 2.5, lambda a: a + 2.5), (lambda x: x - 2.5, lambda a: a - 2.5),
    (lambda x: 2.5 - x, lambda a: 2.5 - a), (lambda x: x * 3, lambda a: a * 3),
    (lambda x: x / 3.0, lambda a: a / 3.0), (lambda x: 3.0 / x, lambda a: 3.0 / a),
    (lambda x: x / 0.0, lambda a: a / 0.0), (lambda x: x ** 2, lambda a: a ** 2),
    (lambda x: x ** 3, lambda a: a ** 3), (lambda x: 0.0 + x, lambda a: 0.0 + a),
    (lambda x: x + 2 ** 60, lambda a: a + 2 ** 60),
]


def same(a, b):
    """Equal to the bit, NaN included."""
    return np.array(a, dtype=np.float64).tobytes() == np.array(b, dtype=np.float64).tobytes() \
        or (np.isnan(a) and np.isnan(b))


def on_lane(t):
    return t._scalar is not None or t._pending is not None


@pytest.mark.parametrize("f, ref", UNARY)
def test_unary_values_and_gradients_are_numpys(f, ref):
    for v in VALUES:
        x = ng.tensor(v, requires_grad=True)
        y = f(x)
        with np.errstate(all="ignore"):
            want = ref(np.array(v))
        assert same(y.item(), want), (v, y.item(), want)
        # the general path: the same op on a 1-element tensor
        x1 = ng.tensor([v], requires_grad=True)
        y.backward()
        f(x1).sum().backward()
        assert same(x.grad.item(), x1.grad.item()), (v, x.grad.item(), x1.grad.item())


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_values_and_gradients_are_numpys(op):
    f = getattr(ng, op)
    ref = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op]
    pairs = [(a, b) for a in SPECIAL for b in SPECIAL] + list(zip(VALUES, reversed(VALUES)))
    for a, b in pairs:
        x, y = ng.tensor(a, requires_grad=True), ng.tensor(b, requires_grad=True)
        z = f(x, y)
        with np.errstate(all="ignore"):
            assert same(z.item(), ref(np.array(a), np.array(b))), (a, b)
        x1, y1 = ng.tensor([a], requires_grad=True), ng.tensor([b], requires_grad=True)
        z.backward()
        f(x1, y1).sum().backward()
        assert same(x.grad.item(), x1.grad.item()) and same(y.grad.item(), y1.grad.item()), (a, b)


def chain(xs, steps):
    acc = 0.0
    for s in range(steps):
        acc = acc + ng.sin(xs[s % len(xs)]) * xs[(s + 3) % len(xs)]
    return acc


def test_scalar_chain_records_each_op_once_and_each_leaf_once():
    vals = np.random.default_rng(1).standard_normal(10)
    xs = [ng.tensor(v, requires_grad=True) for v in vals]
    out = chain(xs, 500)
    assert on_lane(out)
    tape, _ = resolve(out._tape, out._node)
    assert len(tape) == 10 + 3 * 500  # no tape per step, no copy of a leaf per step
    assert out.grad_fn.name() == "AddBackward0"
    out.backward()
    # the same graph on 1-element tensors (the general path) and by hand
    xs1 = [ng.tensor([v], requires_grad=True) for v in vals]
    chain(xs1, 500).sum().backward()
    want = np.zeros(10)
    for s in range(500):
        a, b = s % 10, (s + 3) % 10
        want[a] += math.cos(vals[a]) * vals[b]
        want[b] += math.sin(vals[a])
    for x, x1, w in zip(xs, xs1, want):
        assert same(x.grad.item(), x1.grad.item())
        assert x.grad.item() == pytest.approx(w, rel=1e-12)


def test_recording_the_same_scalar_graph_again_gives_the_same_gradients():
    vals = np.random.default_rng(2).standard_normal(10)
    grads = []
    for _ in range(3):  # the second and third backward reuse the first tape's arrays
        xs = [ng.tensor(v, requires_grad=True) for v in vals]
        chain(xs, 200).backward()
        grads.append([x.grad.item() for x in xs])
    assert grads[0] == grads[1] == grads[2]


def test_a_waiting_result_behaves_as_a_recorded_one():
    x = ng.tensor(0.7, requires_grad=True)
    y = ng.sin(x)
    assert y._pending is not None  # no tape yet
    assert not y.is_leaf and y.requires_grad
    assert y.grad_fn.name() == "SinBackward0"
    assert y._pending is None  # reading the graph recorded it
    assert repr(y) == "tensor(0.6442, grad_fn=<SinBackward0>)"
    z = ng.cos(x) * 2.0
    z.backward()
    assert x.grad.item() == pytest.approx(-2 * math.sin(0.7))
    w = ng.exp(x)
    w.retain_grad()
    (w * 3.0).backward()
    assert w.grad.item() == 3.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ng.sin(x).grad is None  # a non-leaf's .grad warns, as in PyTorch
    assert any("not a leaf" in str(c.message) for c in caught)


def test_a_long_waiting_chain_attaches_and_stays_shallow():
    x = ng.tensor(0.1, requires_grad=True)
    y = x
    for _ in range(5000):  # one waiting tree would recurse 5000 deep
        y = y * 1.0001 + 0.0
    assert y._pending is None
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 5000, rel=1e-12)


def test_a_waiting_tree_shared_by_two_graphs_is_recorded_once_and_merges_them():
    x = ng.tensor(0.3, requires_grad=True)
    u = ng.tensor([1.0, 2.0], requires_grad=True)
    v = ng.tensor([3.0, 4.0], requires_grad=True)
    z = ng.sin(x)                   # waits
    a = (z * 2.0) * u.sum()         # records z on u's tape
    b = ng.exp(z) * v.sum()         # z is on u's tape: v's graph merges with it
    (a + b).backward()
    s, c = math.sin(0.3), math.cos(0.3)
    assert x.grad.item() == pytest.approx(2 * 3.0 * c + math.exp(s) * c * 7.0)
    assert np.allclose(u.grad.numpy(), 2 * s)
    assert np.allclose(v.grad.numpy(), math.exp(s))
    # a tree holding a node that another tree recorded since
    p = ng.sin(x) * 2.0             # waits, two nodes
    q = p * u.sum()                 # records p onto a fresh graph of u
    r = (p + 1.0) * v.sum()         # p + 1.0 waited? no: p is taped now; v's graph merges
    x.grad = None
    (q + r).backward()
    assert x.grad.item() == pytest.approx(2 * c * 3.0 + 2 * c * 7.0)


def test_mixing_lane_and_general_tensors():
    x = ng.tensor(0.5, requires_grad=True)
    t = ng.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = ng.sin(x) + t          # a waiting 0-d tensor meets a 1-d one: the general path
    assert y.shape == (3,)
    y.sum().backward()
    assert x.grad.item() == pytest.approx(3 * math.cos(0.5))
    assert np.allclose(t.grad.numpy(), 1.0)
    f32 = ng.tensor(1.5, dtype=ng.float32, requires_grad=True)
    assert (f32 * 2.0).dtype == ng.float32 and not on_lane(f32 * 2.0)  # not on the lane
    assert (x * f32).dtype == ng.float64
    i = ng.tensor(3)
    assert (i * 2).dtype == ng.int64 and (i * 2).item() == 6


def test_in_place_ops_on_lane_tensors_see_the_new_value():
    x = ng.tensor(2.0, requires_grad=True)
    y = x * 3.0
    with ng.no_grad():
        y += 1.0               # writes through the materialized array
    assert (y * 2.0).item() == 14.0
    z = x * 3.0
    z += 1.0                   # recorded: z is now the AddBackward0 node
    assert z.item() == 7.0 and (z * 2.0).item() == 14.0
    z.backward()
    assert x.grad.item() == 3.0
    d = (x * 5.0).detach()
    d.zero_()
    assert d.item() == 0.0 and (d + 1.0).item() == 1.0


def test_no_grad_and_untracked_scalars_are_not_recorded():
    x = ng.tensor(0.25, requires_grad=True)
    with ng.no_grad():
        y = ng.sin(x) * x
    assert y.grad_fn is None and not y.requires_grad
    assert y.item() == math.sin(0.25) * 0.25
    c = ng.tensor(2.0) * ng.tensor(3.0)  # nothing requires grad
    assert c._tape is None and c.item() == 6.0


def test_anomaly_detection_still_names_the_op():
    x = ng.tensor(-1.0, requires_grad=True)
    with ng.detect_anomaly():
        with pytest.raises(RuntimeError, match="Sqrt"):
            (ng.sqrt(x) * 2.0).backward()


def test_detach_in_place_and_values_of_waiting_tensors():
    x = ng.tensor(1.25, requires_grad=True)
    y = ng.exp(x)
    y.detach_()
    assert not y.requires_grad and y.grad_fn is None
    assert y.item() == np.exp(np.array(1.25)).item()
    assert (y * 2.0).requires_grad is False


def test_lane_results_get_their_version_counter_when_it_is_first_needed():
    x = ng.tensor(0.5, requires_grad=True)
    y = ng.sin(x) * x
    d = y.detach()                 # shares y's memory and counter, as in PyTorch
    d.zero_()
    assert y.item() == 0.0 and y._version is d._version and y._version[0] == 1
    z = ng.sin(x) * x
    z.detach_()                    # a leaf from now on: it can be recorded as an input
    w = z * x
    w.backward()
    assert x.grad.item() == (math.sin(0.5) * 0.5)
    v = ng.sin(x) * x
    view = v.reshape(1)            # a view shares the counter
    assert view._version is v._version


def test_trace_replays_a_scalar_function_recorded_on_the_lane():
    def f(a, b):
        return ng.sin(a) * b + ng.exp(b) / a - 2.0 * a

    g = ng.trace(f, 0.7, 0.2)
    for a, b in [(0.7, 0.2), (1.3, -0.4)]:
        ta, tb = ng.tensor(a, requires_grad=True), ng.tensor(b, requires_grad=True)
        f(ta, tb).backward()
        ga, gb = g.grad(a, b)
        assert ga == pytest.approx(ta.grad.item()) and gb == pytest.approx(tb.grad.item())

    def branchy(a):
        s = ng.sin(a) * 3.0
        return s * 2.0 if s.item() > 0 else s  # .item() of a lane tensor is a guard
    h = ng.trace(branchy, 0.5, check=False)
    with pytest.raises(ng.GuardError):
        h.grad(-0.5)
    assert h.grad(0.5) == pytest.approx(6 * math.cos(0.5))


def test_an_op_on_two_graphs_merges_them():
    x = ng.tensor([0.0, 1.0], requires_grad=True)
    a = (x ** 0.5).sum()           # one graph
    b = ((x + 1.0) * 3.0).sum()    # another (x is a leaf: each op on it alone starts a graph)
    for z in (a + b, b + a, a * b, ng.sin(a) - b):
        x.grad = None
        z.backward(retain_graph=True)
        tape, _ = resolve(z._tape, z._node)
        assert sum(tape.opcodes[k] == 0 for k in range(len(tape))) == 1  # x, once
    x.grad = None
    (a + b).backward(retain_graph=True)
    assert x.grad.numpy()[1] == pytest.approx(0.5 + 3.0)


def _both_sweeps(out):
    """The adjoints of ``out``'s tape by reverse_sweep alone and by backward_sweep, which
    sweeps ops on single elements itself (sweep_scalars) and hands the rest to reverse_sweep."""
    from numbagrad import autograd, sweeps
    tape, node = resolve(out._tape, out._node)
    arr, chunks = tape.arrays(), tape.typed_chunks()
    seeds, nodes = np.ones(1, dtype=tape.dtype), np.array([node])
    adj_off, total = sweeps.plan_adjoints(arr, nodes)[:2]
    plain = np.zeros(total, dtype=tape.dtype)
    plain[adj_off[node]] = 1.0
    sweeps.reverse_sweep(arr, chunks, plain, adj_off, node, sweeps.PAR_MIN, 0)
    off, mixed = autograd.backward_sweep(arr, chunks, tape.flag_column(), nodes, seeds, False,
                                         sweeps.PAR_MIN, seeds[:0], nodes[:0], False,
                                         None)[:2]
    assert np.array_equal(off, adj_off)
    return plain, mixed


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_scalar_reverse_sweep_adds_what_the_kernels_add(dtype):
    rng = np.random.default_rng(3)
    x = ng.tensor(rng.standard_normal(), dtype=dtype, requires_grad=True)
    y = ng.tensor(rng.standard_normal(), dtype=dtype, requires_grad=True)
    v = ng.tensor(rng.standard_normal(5), dtype=dtype, requires_grad=True)
    m = ng.tensor(rng.standard_normal((1, 1)), dtype=dtype, requires_grad=True)
    acc = x * x + y                                    # one operand twice: one slot
    for k in range(30):                                # every unary and binary rule, mixed
        acc = ng.sin(acc) * y + ng.exp(-acc.abs()) - ng.tanh(x) / (1.5 + y * y)
        acc = acc + (v * acc).sum() * 0.01             # array ops in between (kernels)
        acc = ng.maximum(acc, x) + ng.minimum(acc, y) - ng.sqrt(acc * acc + 1.0)
        acc = (acc + m).reshape(()) if k % 3 == 0 else acc ** 2 * 0.1 + 2.0 / (3.0 + acc * acc)
        acc = ng.clamp(acc, -5.0, 5.0) + ng.log(1.0 + x * x) + ng.relu(acc) - 0.5 ** acc
        acc = acc + ng.pow(1.0 + x * x, y) * 0.1
    plain, scalars = _both_sweeps(acc)
    assert plain.tobytes() == scalars.tobytes()


def _random_program(seed, lane_on, monkeypatch):
    """A random scalar program over a few leaves: lane ops, general ops, shared values, reads,
    no_grad stretches, a 1-d tensor now and then.  Returns the output and the leaves' grads."""
    if not lane_on:
        for name in ("unary", "with_const"):
            monkeypatch.setattr(lane, name, lambda *a, **k: None)
        monkeypatch.setattr(lane, "_binary", lambda opcode, name_id, a, b, v:
                            F._binary_tensors(opcode, a, b))
    rng = np.random.default_rng(seed)
    leaves = [ng.tensor(v, requires_grad=True) for v in rng.uniform(0.2, 1.5, 4)]
    const = ng.tensor(0.75)
    vec = ng.tensor(rng.uniform(0.5, 1.0, 3), requires_grad=True)
    pool = list(leaves) + [const]
    unary = [ng.sin, ng.cos, ng.exp, ng.tanh, ng.sigmoid, ng.neg, ng.abs, ng.relu,
             lambda t: ng.sqrt(t * t + 1.0), lambda t: ng.log(t * t + 0.5), lambda t: t ** 2,
             lambda t: t ** 3, lambda t: 1.5 - t, lambda t: t / 3.0, lambda t: 2.0 / (t * t + 1.0)]
    binary = [ng.add, ng.sub, ng.mul, lambda a, b: a / (b * b + 1.0), ng.maximum,
              lambda a, b: (a * vec).sum() * 0.1 + b]
    for step in range(60):
        k = rng.integers(0, 10)
        a = pool[rng.integers(0, len(pool))]
        if k < 5:
            out = unary[rng.integers(0, len(unary))](a)
        elif k < 9:
            out = binary[rng.integers(0, len(binary))](a, pool[rng.integers(0, len(pool))])
        elif rng.integers(0, 2):
            with ng.no_grad():
                out = a * 0.5
        else:
            a.item()  # a read: the array is made
            out = a + 0.0
        pool.append(out)
        if len(pool) > 12:  # keep a few values alive, drop the rest
            pool.pop(rng.integers(len(leaves) + 1, len(pool) - 1))
    total = sum(pool[len(leaves) + 1:], ng.tensor(0.0))
    total.backward()
    grads = [0.0 if x.grad is None else x.grad.item() for x in leaves]
    return total.item(), grads, vec.grad.numpy().tolist() if vec.grad is not None else None


@pytest.mark.parametrize("seed", range(12))
def test_random_scalar_programs_give_the_general_paths_values_and_gradients(seed):
    with pytest.MonkeyPatch.context() as mp:
        off = _random_program(seed, False, mp)
    with pytest.MonkeyPatch.context() as mp:
        on = _random_program(seed, True, mp)
    assert np.array(on[0]).tobytes() == np.array(off[0]).tobytes()
    assert np.array(on[1]).tobytes() == np.array(off[1]).tobytes()
    assert on[2] == off[2]
