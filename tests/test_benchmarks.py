"""The benchmark harness itself: hand-written limits agree with numbagrad, and compare.py's
check leaves out an implementation whose gradient disagrees."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numbagrad as ng  # noqa: E402
from benchmarks import compare as C  # noqa: E402
from benchmarks import workloads as W  # noqa: E402


def test_the_eager_step_on_leaves_made_once_resets_their_grads():
    # compare.py's eager step (W.grads_of) reuses its leaves, as PyTorch's step does
    x = W.w1_data(50, "float64")
    leaves = W._leaves([x])
    first = W.grads_of(W.notebook, leaves)[1][0].copy()
    value, (second,) = W.grads_of(W.notebook, leaves)
    np.testing.assert_array_equal(first, second)  # not accumulated
    np.testing.assert_allclose(second, W.eager_w1(x)[1], rtol=1e-12)
    assert value == W.eager_w1(x)[0]


def test_hand_written_gradients_match_numbagrad():
    x = W.w1_data(50, "float64")
    g = np.empty_like(x)
    W.w1_by_hand(x, g)
    np.testing.assert_allclose(g, W.eager_w1(x)[1], rtol=1e-12)

    K = 60
    steps, ia, ib = W.w2_steps(K)
    xs = W.w2_data()
    g2 = np.zeros(W.W2_INPUTS)
    value = W.w2_by_hand(np.array(xs), ia, ib, np.empty(steps), g2)
    ng_value, ng_grads = W.eager_w2(W.scalar_chain(K), xs)
    assert abs(value - ng_value) < 1e-12 * abs(ng_value)
    np.testing.assert_allclose(g2, np.array(ng_grads), rtol=1e-12)

    x3 = W.w3_data(40)
    g3 = np.empty_like(x3)
    W.w3_by_hand(x3, g3)
    np.testing.assert_allclose(g3, W.eager_w3(x3)[1], rtol=1e-12)

    X = W.w6_data(20, 7)
    G = np.empty_like(X)
    W.w6_by_hand(X, G)
    np.testing.assert_allclose(G, W.eager_w6(X), rtol=1e-12)

    params, Xb, y = W.w4_data("float64", batch=8, sizes=(6, 5, 3))
    loss, grads = W.w4_by_hand(params, Xb, y)
    ng_loss, ng_grads = W.eager_w4(W.mlp_loss(Xb, y), params)
    assert abs(loss - ng_loss) < 1e-12
    for a, b in zip(grads, ng_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)

    A, x5 = W.w5_data(12, 4)
    J = np.empty((4, 12))
    W.w5_by_hand(A, x5, 4, J)
    np.testing.assert_allclose(J, ng.trace(W.tanh_layer(A, 4), x5).jacobian(x5), rtol=1e-12)


def test_check_drops_a_disagreeing_implementation():
    x = W.w1_data(10, "float64")
    case = C.Case("W1", "n = 10", "float64")
    case.add(C.EAGER, lambda: W.eager_w1(x)[1])
    case.add("right", lambda: 4 * (x + 2) / x.size)
    case.add("wrong", lambda: 4 * (x + 2.001) / x.size)
    case.add("broken", lambda: 1 / 0)
    C.check(case)
    assert set(case.steps) == {C.EAGER, "right"}
    assert case.notes["wrong"].startswith("disagrees with numbagrad eager")
    assert case.notes["broken"].startswith("error: ZeroDivisionError")
    times = C.measure(case, rounds=3, sample_s=1e-4, budget_s=0.05)
    assert set(times) == {C.EAGER, "right"} and all(t > 0 for t in times.values())


def test_every_asv_benchmark_allows_a_cold_numba_compile():
    # asv's default timeout is 60 s; a benchmark whose setup compiles from a cold Numba cache
    # (CI's first run) takes longer and asv then fails the whole run
    import importlib
    import inspect
    import pkgutil

    import benchmarks

    short = []
    for mod in pkgutil.iter_modules(benchmarks.__path__):
        if not mod.name.startswith("bench_"):
            continue
        m = importlib.import_module("benchmarks." + mod.name)
        for name, obj in vars(m).items():
            is_bench = name.startswith(("time_", "peakmem_", "track_", "timeraw_", "mem_"))
            if inspect.isclass(obj) and obj.__module__ == m.__name__:
                if any(k.startswith(("time_", "peakmem_", "track_", "timeraw_", "mem_"))
                       for k in vars(obj)) and getattr(obj, "timeout", 60) < 300:
                    short.append(f"{mod.name}.{name}")
            elif is_bench and callable(obj) and getattr(obj, "timeout", 60) < 300:
                short.append(f"{mod.name}.{name}")
    assert not short, f"asv benchmarks without a cold-compile timeout: {short}"


def test_the_latency_floor_kernel_is_w1s_gradient_and_runs_fresh(tmp_path):
    # compare.py and bench_latency.py time first_call's first call in a fresh interpreter as
    # the floor under numbagrad's first gradient: it must compute the same gradient, and the
    # code they hand the fresh interpreter must run from any working directory
    import subprocess

    from benchmarks import first_call
    x = W.w1_data(9, "float64")
    np.testing.assert_allclose(first_call.w1_gradient(x, np.empty_like(x)), W.eager_w1(x)[1],
                               rtol=1e-12)
    # from an empty cache: the kernel compiled where compare.py and the asv suite import it, then
    # loaded by the fresh interpreter (a kernel cached under another module name fails to load)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", "import numpy as np; from benchmarks import first_call; "
                    "first_call.w1_gradient(np.ones(3), np.empty(3))"],
                   check=True, cwd=os.path.dirname(os.path.dirname(first_call.__file__)), env=env)
    subprocess.run([sys.executable, "-c", first_call.fresh_code()], check=True, cwd="/", env=env)
    rows = {text: (measured, met) for text, measured, met in C.targets({}, (0.5, 1.2, 1.3))}
    measured, met = rows["fresh process: import + first gradient < 1 s beyond `import numba`"]
    assert met and measured.startswith("0.70 s") and "one Numba kernel 0.80 s" in measured
