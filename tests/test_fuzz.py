"""Fuzzing the tape loader: saved tapes (``Traced.save`` / ``ng.load``) and pickled ``Traced``
objects, mutated by hypothesis at the byte, the array and the value level.

Array-level mutations (``arrays``, ``pickle``) are signed again with a fresh digest, as a
deliberate forger would: they test the structural validation beneath the digest.  Every such
case must end in a clean ``ValueError`` from the loader, or load into a ``Traced`` whose value,
gradient and JVP are consistent with each other (the fused value sweep, the unfused forward
sweep of ``jvp`` and ``value_and_grad`` agree, shapes are as declared).  Value-level mutations
(``values``: a constant set to +-inf or another number, an opcode changed to a valid
neighbour, an index shifted within range) keep the saved digest, as a file changed after
saving would: each must be rejected, or replay to exactly the original results.  Never a
crash, a hang or an out-of-bounds read: the cases run in a subprocess (a crash there fails the
test with the case that caused it), under a timeout.

    python -m pytest -q tests/test_fuzz.py                 # a few hundred cases
    python -m pytest -q -m fuzz tests/test_fuzz.py         # >= 10,000 cases (FUZZ_CASES)
"""
import io
import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CASES = 70       # per strategy; four strategies: 280 cases
LONG_CASES = int(os.environ.get("FUZZ_CASES", "4000"))   # per strategy under -m fuzz


# ---------------------------------------------------------------- the tapes being mutated

def _model(x, y):
    """One function over every op family: unary/binary with broadcasting, comparison and
    where, matmul, gather (slicing, transpose), cat, reductions, softmax, logsumexp, clamp."""
    import numbagrad as ng
    W = ng.tensor(np.linspace(-1.0, 1.0, 8).reshape(4, 2))
    a = (x * y).sin() + x.exp() / (1.0 + y ** 2)
    b = ng.where(a > 0, a, 0.5 * a)
    c = b @ W
    d = ng.cat([c, x[:, :2].T.T], 0)
    e = ng.softmax(d, 1).max() + ng.log_softmax(d, 0).min()
    return (ng.logsumexp(d, 1).mean() + e + d.reshape(-1).sum() * 0.1
            + x.clamp(-1.0, 1.0).abs().sum() + ng.maximum(x, 0.2).sum() + (x.T @ x).tanh().sum())


def _small(x):
    return (x.sqrt() * 3.0 - x.sigmoid()).sum()


def base_tapes():
    """(name, Traced) of the tapes mutated: float64 and float32 recordings."""
    import numbagrad as ng
    return [
        ("model64", ng.trace(_model, np.ones((3, 4)), np.ones(4), check=False)),
        ("small32", ng.trace(_small, np.ones(5, np.float32), check=False)),
    ]


def npz_bytes(traced):
    buf = io.BytesIO()
    traced.save(buf)
    return buf.getvalue()


def npz_arrays(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def resign(d):
    """``d`` with its digest computed again (a forger's file: only validation can refuse it)."""
    from numbagrad.trace import tape_digest
    if "digest" in d:
        d = dict(d, digest=np.array([tape_digest(d)]))
    return d


def arrays_to_npz(d):
    buf = io.BytesIO()
    np.savez(buf, **d)
    return buf.getvalue()


# ---------------------------------------------------------------- checking one loaded Traced

def _args(g, rng):
    return [np.abs(rng.standard_normal(s)).astype(d) + 0.1 for s, d in
            zip(g.arg_shapes, g.arg_dtypes)]


def _same(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


def exercise(g):
    """Run a loaded Traced; assert that its answers agree.  Returns 'ok' or the error kind."""
    import numbagrad as ng
    rng = np.random.default_rng(0)
    args = _args(g, rng)
    try:
        v = g(*args)
    except ng.GuardError:
        return "guard"
    v_arr = np.asarray(v)
    assert v_arr.shape == g.out_shape, (v_arr.shape, g.out_shape)
    tangents = tuple(np.ones_like(a) for a in args)
    jv_val, jv = g.jvp(tuple(args), tangents)
    assert _same(v, jv_val, g.dtype), (v, jv_val)
    if g._out_size == 1:
        val, grads = g.value_and_grad(*args)
        assert _same(v, val, g.dtype), (v, val)
        grads = grads if isinstance(grads, tuple) else (grads,)
        assert all(gr.shape == s for gr, s in zip(grads, g.arg_shapes))
        # directional derivative two ways: <grad, 1> (reverse) and J 1 (forward)
        dot = sum(float(np.sum(gr, dtype=np.float64)) for gr in grads)
        jvs = float(np.asarray(jv, np.float64).reshape(-1)[0])
        if np.isfinite(dot) and np.isfinite(jvs):
            assert abs(dot - jvs) <= 1e-3 * (1 + abs(dot)), (dot, jvs)
    return "ok"


def same_results(base, g):
    """'same' when ``g`` answers exactly as ``base`` (value, gradient, JVP); fails otherwise: a
    changed file that loads must not change a single number."""
    import numbagrad as ng
    args = _args(base, np.random.default_rng(0))
    try:
        v = g(*args)
    except ng.GuardError:
        raise AssertionError("a changed tape loaded and fails a guard the original passes")
    assert np.array_equal(np.asarray(v), np.asarray(base(*args)), equal_nan=True), \
        "a changed tape loaded and replays to another value"
    tangents = tuple(np.ones_like(a) for a in args)
    for x, y in zip(g.jvp(tuple(args), tangents), base.jvp(tuple(args), tangents)):
        assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True), \
            "a changed tape loaded and has another JVP"
    if base._out_size == 1:
        (va, ga), (vb, gb) = g.value_and_grad(*args), base.value_and_grad(*args)
        ga, gb = (ga if isinstance(ga, tuple) else (ga,)), (gb if isinstance(gb, tuple) else (gb,))
        assert va == vb or (np.isnan(va) and np.isnan(vb))
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(ga, gb)), \
            "a changed tape loaded and has another gradient"
    return "same"


def load_npz(data):
    import numbagrad as ng
    with tempfile.NamedTemporaryFile(suffix=".npz") as fh:
        fh.write(data)
        fh.flush()
        return ng.load(fh.name)


def run_case(kind, base, mutate):
    """Apply ``mutate`` to the saved form of ``base``; load; exercise.  Returns an outcome."""
    if kind == "bytes":
        data = mutate(npz_bytes(base))
        loader = load_npz
    elif kind == "arrays":
        data = arrays_to_npz(resign(mutate(npz_arrays(npz_bytes(base)))))
        loader = load_npz
    elif kind == "values":   # changed after saving: the saved digest kept
        data = arrays_to_npz(mutate(npz_arrays(npz_bytes(base))))
        try:
            g = load_npz(data)
        except ValueError:
            return "rejected"
        return same_results(base, g)
    else:  # pickle: the state's arrays mutated and signed again, then a real pickle round trip
        data = pickle.dumps(_Reduced(resign(mutate(dict(base.__getstate__())))))
        loader = pickle.loads
    try:
        g = loader(data)
    except ValueError:
        return "rejected"
    return exercise(g)


class _Reduced:
    """Pickles as a Traced built from ``state`` (what an attacker's pickle would hold)."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        from numbagrad.trace import Traced
        return (_rebuild, (Traced, self.state))


def _rebuild(cls, state):
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


# ---------------------------------------------------------------- hypothesis strategies

def strategies():
    from hypothesis import strategies as st

    interesting_ints = st.one_of(
        st.integers(-3, 40),
        st.sampled_from([2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 47, 2 ** 48, 2 ** 62,
                         2 ** 63 - 1, -2 ** 63, -2 ** 31]))
    interesting_floats = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324]))

    array_mutation = st.tuples(
        st.sampled_from(["set", "set", "set", "truncate", "extend", "dtype", "reshape", "drop",
                         "swap", "negate"]),
        st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), interesting_ints, interesting_floats)
    value_mutation = st.tuples(
        st.sampled_from(["const", "init", "opcode", "index", "iparam"]),
        st.integers(0, 10 ** 6), st.integers(-3, 3),
        st.one_of(st.sampled_from([np.inf, -np.inf, 0.0, -1.0, 2.0]),
                  st.floats(-1e6, 1e6, allow_nan=False)))
    byte_mutation = st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
                              st.integers(0, 10 ** 9), st.integers(0, 255))
    return (st.lists(array_mutation, min_size=1, max_size=4),
            st.lists(byte_mutation, min_size=1, max_size=4),
            st.lists(value_mutation, min_size=1, max_size=3))


def apply_array_mutations(muts):
    def mutate(d):
        d = dict(d)
        for how, i, j, iv, fv in muts:
            keys = sorted(d)
            if not keys:
                return d
            key = keys[i % len(keys)]
            a = np.array(d[key])
            if how == "set" and a.size:
                flat = a.reshape(-1)
                if a.dtype.kind == "f":
                    with np.errstate(all="ignore"):  # 1e308 into float32: inf
                        flat[j % a.size] = fv
                elif a.dtype.kind in "iu":
                    info = np.iinfo(a.dtype)
                    flat[j % a.size] = min(max(iv, info.min), info.max)
                else:
                    continue
            elif how == "truncate" and a.ndim:
                a = a[:j % (a.shape[0] + 1)]
            elif how == "extend" and a.ndim:
                a = np.concatenate([a, a[:j % (a.shape[0] + 1)]])
            elif how == "dtype":
                target = [np.int32, np.int64, np.float64, np.float32, np.int8, np.uint64][j % 6]
                try:
                    with np.errstate(all="ignore"):
                        a = a.astype(target)
                except (ValueError, TypeError):
                    continue
            elif how == "reshape" and a.size:
                a = a.reshape(1, -1)
            elif how == "drop":
                del d[key]
                continue
            elif how == "swap":
                a = np.array(d[keys[j % len(keys)]])
            elif how == "negate" and a.dtype.kind in "if" and a.size:
                a = -a
            d[key] = a
        return d
    return mutate


def apply_value_mutations(muts):
    """Changes a structural check cannot see: every array keeps its dtype and shape, every
    number stays in its valid range."""
    def mutate(d):
        d = {k: np.array(v) for k, v in d.items()}
        for how, i, step, fv in muts:
            if how in ("const", "init"):   # a constant of an op, or a value in the buffer
                a = d["tape_consts" if how == "const" else "init"].reshape(-1)
                if a.size:
                    with np.errstate(all="ignore"):
                        a[i % a.size] = fv
            elif how == "opcode":          # another op of the file's own table
                ops, table = d["tape_opcodes"], [str(x) for x in d["op_names"]]
                valid = [c for c, nm in enumerate(table) if nm]
                k = i % len(ops)
                at = valid.index(int(ops[k])) if int(ops[k]) in valid else 0
                ops[k] = valid[(at + (step or 1)) % len(valid)]
            elif how == "index":           # an operand, the output or an input, still a node
                n = len(d["tape_opcodes"])
                key = ["tape_args", "out_node", "in_nodes", "guard_nodes"][i % 4]
                a = d[key].reshape(-1)
                if a.size:
                    a[(i // 4) % a.size] = (int(a[(i // 4) % a.size]) + (step or 1)) % n
            elif how == "iparam":          # an integer parameter (layouts, axes, indices)
                a = d["tape_iparams"].reshape(-1)
                if a.size:
                    a[i % a.size] = max(0, int(a[i % a.size]) + (step or 1))
        return d
    return mutate


def apply_byte_mutations(muts):
    def mutate(data):
        b = bytearray(data)
        for how, pos, val in muts:
            if not b:
                break
            p = pos % len(b)
            if how == "flip":
                b[p] ^= 1 << (val % 8)
            elif how == "set":
                b[p] = val
            elif how == "truncate":
                del b[p:]
            elif how == "insert":
                b[p:p] = bytes([val]) * (1 + val % 7)
            elif how == "delete":
                del b[p:p + 1 + val % 7]
        return bytes(b)
    return mutate


# ---------------------------------------------------------------- the subprocess driver

def fuzz(n_cases, seed, progress_path):
    """Run ``n_cases`` hypothesis cases of each strategy; returns outcome counts."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    import hypothesis
    import numbagrad as ng

    tapes = base_tapes()
    counts = {}
    array_st, byte_st, value_st = strategies()
    conf = settings(max_examples=n_cases, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), print_blob=True)

    def record(kind, name, muts, outcome):
        counts[(kind, outcome)] = counts.get((kind, outcome), 0) + 1

    def one(kind, which, muts, mutate):
        name, base = tapes[which % len(tapes)]
        with open(progress_path, "w") as fh:  # the case in flight, for a crash report
            fh.write(f"{kind} {name} {muts!r}\n")
        try:
            outcome = run_case(kind, base, mutate)
        except (ZeroDivisionError, ng.GuardError) as e:
            # Numba's python error model raises on x / 0 inside a sweep (a valid tape at a
            # singular point); not a loader failure
            outcome = type(e).__name__
        except RuntimeError as e:
            if "scalar output" not in str(e):
                raise
            outcome = "non-scalar"
        record(kind, name, muts, outcome)

    @conf
    @given(st.integers(0, 1), array_st)
    def arrays(which, muts):
        one("arrays", which, muts, apply_array_mutations(muts))

    @conf
    @given(st.integers(0, 1), array_st)
    def pickled(which, muts):
        one("pickle", which, muts, apply_array_mutations(muts))

    @conf
    @given(st.integers(0, 1), byte_st)
    def raw(which, muts):
        one("bytes", which, muts, apply_byte_mutations(muts))

    @conf
    @given(st.integers(0, 1), value_st)
    def values(which, muts):
        one("values", which, muts, apply_value_mutations(muts))

    for test in (arrays, pickled, raw, values):
        hypothesis.seed(seed)(test)()
    # the unmutated tapes load and agree with the originals
    for name, base in tapes:
        g = load_npz(npz_bytes(base))
        args = _args(base, np.random.default_rng(0))
        assert _same(g(*args), base(*args), base.dtype)
        assert exercise(g) == "ok"
    return counts


def _run_subprocess(n_cases, seed, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        progress = os.path.join(tmp, "case")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONFAULTHANDLER="1")
        try:
            r = subprocess.run([sys.executable, os.path.abspath(__file__), str(n_cases),
                                str(seed), progress], capture_output=True, text=True, env=env,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            last = open(progress).read() if os.path.exists(progress) else "?"
            pytest.fail(f"fuzz run hung (> {timeout} s); case in flight: {last}")
        last = open(progress).read() if os.path.exists(progress) else "?"
    assert r.returncode == 0, (f"fuzz subprocess failed (exit {r.returncode}); case in flight: "
                               f"{last}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    counts = eval(r.stdout.strip().splitlines()[-1])  # our own dict literal
    return counts


def _report(counts):
    total = sum(counts.values())
    print(f"\nfuzz: {total} cases: " + ", ".join(f"{k[0]}/{k[1]}={v}" for k, v in
                                                  sorted(counts.items())))
    return total


def test_fuzz_loader_default():
    counts = _run_subprocess(DEFAULT_CASES, seed=1, timeout=600)
    total = _report(counts)
    assert total >= 4 * DEFAULT_CASES * 0.9
    # a file changed after saving never loads into other numbers (same_results asserts it)
    assert counts.get(("values", "rejected"), 0) >= DEFAULT_CASES * 0.8
    assert set(k[1] for k in counts if k[0] == "values") <= {"rejected", "same"}
    # the strategies reach both outcomes: rejection and tapes that still load and run
    assert counts.get(("arrays", "rejected"), 0) > 0
    assert counts.get(("arrays", "ok"), 0) > 0
    assert counts.get(("pickle", "rejected"), 0) > 0
    assert counts.get(("bytes", "rejected"), 0) > 0


@pytest.mark.fuzz
def test_fuzz_loader_long():
    seed = int(os.environ.get("FUZZ_SEED", "12345"))
    counts = _run_subprocess(LONG_CASES, seed=seed, timeout=6 * 3600)
    total = _report(counts)
    assert total >= 10_000 or LONG_CASES * 4 < 10_000
    assert set(k[1] for k in counts if k[0] == "values") <= {"rejected", "same"}


if __name__ == "__main__":
    n, seed, progress = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(repr(fuzz(n, seed, progress)))


# ---------------------------------------------------------------- regressions: what the fuzzer
# (and reading the loader) found; each was accepted by the loader before its fix

def _saved(f, *examples):
    import numbagrad as ng
    return npz_arrays(npz_bytes(ng.trace(f, *examples, check=False)))


def _load_arrays(d, sign=True):
    """Load the arrays ``d`` as a file; ``sign``: with a fresh digest (so that validation, not
    the digest, has to refuse a bad structure)."""
    import numbagrad as ng
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "f.npz")
        with open(p, "wb") as fh:
            fh.write(arrays_to_npz(resign(d) if sign else d))
        return ng.load(p)


def test_reduction_layout_whose_int64_product_wraps_is_rejected():
    # outer * n * inner = 6 * 3 * (2**63 + 1) / 3 wraps to 6 = the operand's size, and
    # outer * inner to 2: the kernel then read far outside the buffer (segfault)
    d = _saved(lambda x: x.sum(1).sum(), np.ones((2, 3)))
    d["tape_iparams"] = d["tape_iparams"].copy()
    d["tape_iparams"][:3] = [6, 3, (2 ** 63 + 1) // 3]
    with pytest.raises(ValueError, match="parameters do not fit"):
        _load_arrays(d)


def test_value_offset_whose_end_wraps_is_rejected():
    # val_off + size wrapped negative and passed "<= buffer length": writes outside (heap
    # corruption, glibc abort "munmap_chunk(): invalid pointer")
    d = _saved(lambda x: (x * 2.0).sum(), np.ones(3))
    d["tape_val_off"] = d["tape_val_off"].copy()
    d["tape_val_off"][1] = 2 ** 63 - 2
    with pytest.raises(ValueError, match="value outside the buffer"):
        _load_arrays(d)


def test_overlapping_value_slots_are_rejected():
    d = _saved(lambda x: (x.sin() * x).sum(), np.ones(4))
    d["tape_val_off"] = d["tape_val_off"].copy()
    d["tape_val_off"][2] = 1   # node 2's slot overlaps the input's: silently wrong answers
    with pytest.raises(ValueError, match="overlap"):
        _load_arrays(d)


def test_requires_grad_flag_must_follow_from_operands():
    d = _saved(lambda x: (x.sin() * x).sum(), np.ones(4))
    d["tape_flags"] = d["tape_flags"].copy()
    d["tape_flags"][1] = 0     # the reverse sweep skipped the sin path, the tangent sweep not
    with pytest.raises(ValueError, match="requires-grad flag"):
        _load_arrays(d)


def test_argument_names_and_shapes_must_fit():
    d = _saved(lambda x, y: (x * y).sum(), np.ones(3), np.ones(3))
    short = dict(d, arg_names=d["arg_names"][:1])
    with pytest.raises(ValueError, match="argument"):
        _load_arrays(short)
    missing = {k: v for k, v in d.items() if k != "arg_names"}
    with pytest.raises(ValueError, match="not a valid numbagrad tape file"):
        _load_arrays(missing)


def test_pickled_state_is_checked_like_a_file():
    # unpickling did not compare argument shapes with the input nodes: grad_batch/jacobian
    # then wrote each row's elements past the node's slot
    import numbagrad as ng
    f = ng.trace(lambda x: (x * x).sum(), np.ones(3), check=False)
    state = f.__getstate__()
    for bad in (dict(state, arg_shapes=np.array([5])), dict(state, out_shape=np.array([2])),
                dict(state, arg_names=state["arg_names"][:0]),
                {k: v for k, v in state.items() if k != "in_nodes"}):
        with pytest.raises(ValueError):
            pickle.loads(pickle.dumps(_Reduced(resign(bad))))
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g.grad_batch(np.ones((20, 3))), 2 * np.ones((20, 3)))


# ---------------------------------------------------------------- digest and op names

def _changed_consts(d):
    d = dict(d, tape_consts=d["tape_consts"].copy())
    d["tape_consts"][0] = np.inf
    return d


def test_a_file_changed_after_saving_is_refused_by_its_digest():
    # a constant set to inf passes every structural check and replayed to another number
    d = _saved(lambda x: (x * 3.0).sum(), np.ones(3))
    with pytest.raises(ValueError, match="digest does not match"):
        _load_arrays(_changed_consts(d), sign=False)
    assert _load_arrays(_changed_consts(d))(np.ones(3)) == np.inf   # what it would have done
    # an opcode changed to its neighbour (MUL_C -> DIV_C), an output index shifted
    ops = d["tape_opcodes"].copy()
    ops[ops == 13] = 14
    with pytest.raises(ValueError, match="digest does not match"):
        _load_arrays(dict(d, tape_opcodes=ops), sign=False)
    with pytest.raises(ValueError, match="digest does not match"):
        _load_arrays(dict(d, out_node=d["out_node"] - 1), sign=False)
    with pytest.raises(ValueError, match="digest does not match"):   # names and shapes count
        _load_arrays(dict(d, init=d["init"].reshape(1, -1)), sign=False)
    with pytest.raises(ValueError, match="not a valid numbagrad tape file"):
        _load_arrays({k: v for k, v in d.items() if k != "digest"}, sign=False)
    assert _load_arrays(d, sign=False)(np.ones(3)) == 9.0


def test_a_pickle_changed_after_pickling_is_refused_by_its_digest():
    import numbagrad as ng
    f = ng.trace(lambda x: (x * 3.0).sum(), np.ones(3), check=False)
    with pytest.raises(ValueError, match="digest does not match"):
        pickle.loads(pickle.dumps(_Reduced(_changed_consts(f.__getstate__()))))
    assert pickle.loads(pickle.dumps(f))(np.ones(3)) == 9.0


def test_save_writes_exactly_the_path_and_load_reads_it(tmp_path):
    import numbagrad as ng
    f = ng.trace(lambda x: (x * x).sum(), np.ones(2), check=False)
    p = tmp_path / "model.ngtape"
    f.save(str(p))
    assert sorted(os.listdir(tmp_path)) == ["model.ngtape"]
    assert ng.load(str(p))(np.array([1.0, 2.0])) == 5.0
    f.save(p)                                              # a pathlib.Path too
    assert ng.load(p)(np.array([1.0, 2.0])) == 5.0
    # a file an older save wrote as model.old.npz when asked for model.old
    os.rename(p, tmp_path / "model.old.npz")
    assert ng.load(str(tmp_path / "model.old"))(np.array([1.0, 2.0])) == 5.0
    with pytest.raises(ValueError, match="not a numbagrad tape file"):
        ng.load(str(tmp_path / "missing"))


def test_a_file_names_its_ops_so_renumbering_does_not_change_it():
    # the file's op name table permuted together with its opcodes: the same function
    d = _saved(lambda x: (x.sin() * 3.0 + x.exp()).sum(), np.ones(3))
    args = np.array([0.1, 0.2, 0.3])
    want = _load_arrays(d).value_and_grad(args)
    table = d["op_names"]
    perm = np.random.default_rng(0).permutation(len(table))   # new code of old code c
    new_table = np.empty_like(table)
    new_table[perm] = table
    d2 = dict(d, op_names=new_table, tape_opcodes=perm[d["tape_opcodes"]].astype(np.int32))
    assert not np.array_equal(d2["tape_opcodes"], d["tape_opcodes"])
    got = _load_arrays(d2).value_and_grad(args)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    # the grad_fn names (name_ids) likewise
    names = d["grad_fn_names"]
    d3 = dict(d, grad_fn_names=names[::-1].copy(),
              tape_name_ids=(len(names) - 1 - d["tape_name_ids"]).astype(np.int16))
    assert _load_arrays(d3).value_and_grad(args)[0] == want[0]
    # an op this numbagrad does not have
    unknown = d["op_names"].astype("<U16").copy()
    unknown[d["tape_opcodes"][-1]] = "FROBNICATE"
    with pytest.raises(ValueError, match="uses the op 'FROBNICATE'"):
        _load_arrays(dict(d, op_names=unknown))
    short = d["op_names"][:int(d["tape_opcodes"].max())]
    with pytest.raises(ValueError, match="outside the file's table"):
        _load_arrays(dict(d, op_names=short))


def test_format_1_files_still_load():
    # format 1: no digest, no name tables, opcodes numbered as ops.py did then
    import numbagrad as ng
    import sys
    tr = sys.modules["numbagrad.trace"]   # (numbagrad.trace is also the function)
    f = ng.trace(lambda x: (x.tanh() * 2.0).sum() + x.max(), np.ones(4), check=False)
    d = f.__getstate__()
    t = tr._from_arrays(d, "test")   # the current numbering, through the format-2 tables
    old_codes = np.array([tr._FORMAT1_OPCODES.index(str(d["op_names"][c]))
                          for c in d["tape_opcodes"]], dtype=np.int32)
    old_names = np.array([tr._FORMAT1_NAMES.index(str(d["grad_fn_names"][c]))
                          for c in d["tape_name_ids"]], dtype=np.int16)
    d1 = {k: v for k, v in d.items() if k not in ("digest", "op_names", "grad_fn_names")}
    d1.update(format=np.array([1]), tape_opcodes=old_codes, tape_name_ids=old_names)
    g = _load_arrays(d1, sign=False)
    x = np.array([0.3, -0.2, 0.5, 0.1])
    assert g(x) == f(x) == t(x) and np.array_equal(g.grad(x), f.grad(x))
    with pytest.raises(ValueError, match="format 3"):
        _load_arrays(dict(d, format=np.array([3])))


def test_format_1_pickles_still_load():
    # the state a format-1 Traced pickled: plain objects, today's opcode numbers, no digest
    import numbagrad as ng
    from numbagrad.tape import TapeArrays
    f = ng.trace(lambda x: (x.exp() * 2.0).sum(), np.ones(3), check=False)
    old = {"tape": {k: getattr(f._t, k) for k in TapeArrays._fields},
           "init": f._init[:f._n_values], "in_nodes": f._in_nodes, "out_node": f._out_node,
           "out_shape": f.out_shape, "arg_shapes": f.arg_shapes,
           "arg_dtypes": [d.str for d in f.arg_dtypes], "arg_names": f.arg_names,
           "name": f.__name__, "guards": list(f._guards)}
    g = pickle.loads(pickle.dumps(_Reduced(old)))
    x = np.array([0.1, 0.2, 0.3])
    assert g(x) == f(x) and np.array_equal(g.grad(x), f.grad(x))
    with pytest.raises(ValueError, match="not a valid pickled Traced"):
        pickle.loads(pickle.dumps(_Reduced({k: v for k, v in old.items() if k != "init"})))
