"""Replay beyond the basics: forward mode and curvature, control-flow guards, tapes as files."""
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbagrad as ng


def fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def energy(x):
    return (ng.tanh(x) * ng.sin(x[::-1]) + x ** 3 / 3).sum() + ng.logsumexp(x, 0) + (x @ x) ** 2


def test_jvp_hvp_hessian_against_finite_differences(rng):
    x0 = rng.standard_normal(5)
    f = ng.trace(energy, x0)
    x, t = rng.standard_normal(5), rng.standard_normal(5)
    value, jt = f.jvp((x,), (t,))
    assert np.isclose(value, f(x))
    np.testing.assert_allclose(jt, f.grad(x) @ t, rtol=1e-10)
    H = f.hessian(x)
    H_fd = np.stack([fd_grad(lambda z: f.grad(z)[j], x) for j in range(5)])
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.hvp((x,), (t,)), H @ t, rtol=1e-10)


def test_vector_output_jvp_matches_jacobian(rng):
    A = rng.standard_normal((4, 6))
    f = ng.trace(lambda x: ng.tanh(ng.tensor(A) @ x) * x[:4], rng.standard_normal(6))
    x, t = rng.standard_normal(6), rng.standard_normal(6)
    np.testing.assert_allclose(f.jvp((x,), (t,))[1], f.jacobian(x) @ t, rtol=1e-10)


def test_fused_and_unfused_replays_agree(rng):
    f = ng.trace(lambda x, w: (ng.sigmoid(x * w) * ng.exp(-x * x) + ng.relu(x - 0.1)).mean(),
                 rng.standard_normal(3000), rng.standard_normal(1))
    x, w = rng.standard_normal(3000), rng.standard_normal(1)
    value, (gx, gw) = f.value_and_grad(x, w)
    gx2, gw2 = f.vjp((x, w), np.array(1.0))
    np.testing.assert_allclose(gx, gx2, rtol=1e-12)
    np.testing.assert_allclose(gw, gw2, rtol=1e-12)
    J = f.jacobian(x, w)  # unfused: every value stored
    np.testing.assert_allclose(J[0], gx, rtol=1e-12, atol=1e-15)
    xt, wt = ng.tensor(x, requires_grad=True), ng.tensor(w, requires_grad=True)
    loss = (ng.sigmoid(xt * wt) * ng.exp(-xt * xt) + ng.relu(xt - 0.1)).mean()
    loss.backward()
    assert np.isclose(value, loss.item())
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------- control flow

def branchy(x):
    if x.sum().item() > 0:
        return (x * x).sum()
    return (-x).exp().sum()


def branchy_tensor(x):
    if x.sum() > 0:  # a comparison of tensors: only its truth is guarded
        return (x * x).sum()
    return (-x).exp().sum()


def test_item_guard_raises_naming_the_guard_and_value_and_grad_retraces():
    f = ng.trace(branchy, np.ones(3), check=False)
    assert np.isclose(f(np.ones(3)), 3.0)
    # item() only compared with a number: only the comparison's outcome is guarded
    assert np.isclose(f(np.array([1.0, 2.0, 3.0])), 14.0)  # same branch: replays
    with pytest.raises(ng.GuardError, match=r"guard 0 of branchy: item\(\) > 0\.0 of node \d+ "
                                            r"\(SumBackward0\) was True when traced \(at 3.0\) "
                                            r"and is False here \(at -6.0\)"):
        f(np.array([-1.0, -2.0, -3.0]))
    # item()'s number used otherwise may be baked into anything: any change trips
    def scaled(x):
        return x.sum() * x.sum().item()
    h = ng.trace(scaled, np.ones(3), check=False)
    with pytest.raises(ng.GuardError, match=r"guard 0 of scaled: item\(\) of node \d+ "
                                            r"\(SumBackward0\) read 3.0 when traced and is 6.0"):
        h(np.array([1.0, 2.0, 3.0]))
    g = ng.trace(branchy_tensor, np.ones(3), check=False)
    assert np.isclose(g(np.array([1.0, 2.0, 3.0])), 14.0)  # same branch: replays
    with pytest.raises(ng.GuardError, match=r"bool\(\)"):
        g(np.array([-1.0, -2.0, -3.0]))
    fg = ng.value_and_grad(branchy)
    for x in (np.array([1.0, 2.0, 3.0]), np.array([-1.0, -2.0, -3.0]), np.array([3.0, 0.0, 0.0])):
        value, g = fg(x)
        if x.sum() > 0:
            assert np.isclose(value, (x * x).sum()) and np.allclose(g, 2 * x)
        else:
            assert np.isclose(value, np.exp(-x).sum()) and np.allclose(g, -np.exp(-x))


def test_bool_guard():
    def f(x):
        return x.sum() * 2 if x.max() > 1 else x.sum() * 3
    t = ng.trace(f, np.array([0.0, 2.0]), check=False)
    assert t.grad(np.array([5.0, 0.0])).tolist() == [2.0, 2.0]
    with pytest.raises(ng.GuardError, match=r"bool\(\)"):
        t.grad(np.array([0.0, 0.5]))


def test_where_abs_and_relu_follow_the_replay_point():
    f = ng.trace(lambda x: (ng.where(x > 0, x * 3, x * 0.5) + ng.abs(x) + ng.relu(x)).sum(),
                 np.array([1.0, -1.0, 2.0]))
    # signs flipped relative to the trace: the mask, abs and relu are recomputed
    g = f.grad(np.array([-1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(g, [0.5 - 1 + 0, 3 + 1 + 1, 0.5 + 0 + 0])  # kinks: torch's 0


# ---------------------------------------------------------------- tapes are data

def rosen(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def test_save_load_and_pickle_round_trips(tmp_path, rng):
    f = ng.trace(branchy, np.ones(4), check=False)
    g = ng.trace(rosen, rng.standard_normal(6))
    x = rng.standard_normal(6)
    path = tmp_path / "rosen.npz"
    g.save(path)
    g2 = ng.load(path)
    np.testing.assert_array_equal(g2.grad(x), g.grad(x))
    assert len(g2.tape) == len(g.tape) and str(g2.tape) == str(g.tape)
    f.save(tmp_path / "branchy.npz")
    f2 = ng.load(tmp_path / "branchy.npz")
    with pytest.raises(ng.GuardError):  # guards travel with the tape
        f2(-np.ones(4))
    blob = pickle.dumps(g)
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).grad(x), g.grad(x))
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


CORRUPT = textwrap.dedent("""
    import sys, numpy as np, numbagrad as ng
    path, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    if mode == "bytes":
        data = bytearray(open(path, "rb").read())
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(len(data))] = rng.integers(256)
        data = bytes(data[:len(data) - rng.integers(0, 3) * rng.integers(0, 200)])
        open(path + ".bad", "wb").write(data)
    else:
        with np.load(path) as z:
            d = {k: z[k].copy() for k in z.files}
        keys = [k for k in d if d[k].dtype.kind in "iuf" and d[k].size]
        k = keys[rng.integers(len(keys))]
        i = rng.integers(d[k].size)
        v = rng.choice([-1, 0, 1, 3, 2 ** 31, -2 ** 40, int(d[k].flat[i]) + 1])
        d[k].flat[i] = np.array(v).astype(d[k].dtype)  # wraps where it does not fit
        np.savez(path + ".bad", **d)
        path = path + ".bad.npz"
        open(path, "rb")
    bad = path if mode != "bytes" else path + ".bad"
    try:
        f = ng.load(bad)
        x = np.linspace(-1, 1, f.arg_shapes[0][0]) if f.arg_shapes and f.arg_shapes[0] else 0.5
        f.grad(x); f(x)
        print("loaded")
    except ValueError as e:
        print("ValueError")
    except ng.GuardError:
        print("guard")
""")


def test_corrupted_files_raise_value_error_never_crash(tmp_path, rng):
    path = str(tmp_path / "r.npz")
    ng.trace(rosen, rng.standard_normal(8)).save(path)
    script = tmp_path / "corrupt.py"
    script.write_text(CORRUPT)
    outcomes = []
    for seed in range(6):
        for mode in ("bytes", "arrays"):
            p = subprocess.run([sys.executable, str(script), path, mode, str(seed)],
                               capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, f"{mode} {seed}: crashed\n{p.stderr[-2000:]}"
            outcomes.append(p.stdout.strip())
    assert "ValueError" in outcomes


def test_functional_forward_mode_and_curvature():
    x = np.array([1.0, 2.0])
    value, jv = ng.functional.jvp(lambda t: t * t, x, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(jv, [2.0, 4.0])
    np.testing.assert_array_equal(ng.functional.hessian(lambda t: (t ** 3).sum(), x),
                                  [[6.0, 0.0], [0.0, 12.0]])
    value, hv = ng.functional.hvp(lambda t: (t ** 3).sum(), x, np.array([1.0, 0.0]))
    assert value == 9.0 and hv.tolist() == [6.0, 0.0]
    H = ng.functional.hessian(lambda t: (t ** 3).sum(), ng.tensor(x))
    assert isinstance(H, ng.Tensor)


@pytest.mark.parametrize("n", [3, 5000])  # below and above trace.SMALL_IO_MAX in all
def test_many_small_arguments_move_in_and_out_together(rng, n):
    def f(a, b, c, d):
        return (a * ng.sin(b)).sum() + c * d[0, 1] + (d * d).sum() * c

    args = [rng.standard_normal(n), rng.standard_normal(n), np.float64(0.5),
            rng.standard_normal((2, 3))]
    tr = ng.trace(f, *args)
    assert (tr._small_io is not None) == (n == 3)
    first = tr.grad(*args)
    leaves = [ng.tensor(a, requires_grad=True) for a in args]
    f(*leaves).backward()
    for g, leaf in zip(first, leaves):
        assert g.shape == leaf.shape and g.dtype == np.float64
        np.testing.assert_allclose(g, leaf.grad.numpy(), rtol=1e-12)
    kept = [g.copy() for g in first]
    tr.grad(*[a * 2 for a in args])  # a second call returns new arrays
    for g, k in zip(first, kept):
        np.testing.assert_array_equal(g, k)
    # an argument the output ignores has a zero gradient, without the one-call path
    g = ng.trace(lambda a, b: (a * a).sum(), args[0], args[1]).grad(args[0], args[1])
    np.testing.assert_array_equal(g[1], np.zeros(n))


def test_grad_batch_of_a_read_only_array_reuses_the_compiled_sweep(rng):
    # dask chunks and np.broadcast_to views arrive read-only, which Numba types apart
    import importlib
    T = importlib.import_module("numbagrad.trace")  # ng.trace the function shadows the module
    f = ng.trace(lambda x: (x * ng.sin(x)).sum(), np.ones(3))
    X = rng.standard_normal((40, 3))
    G = f.grad_batch(X)
    before = len(T._batch_rows.signatures)
    frozen = X.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(f.grad_batch(frozen), G)
    assert len(T._batch_rows.signatures) == before
