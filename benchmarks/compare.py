"""numbagrad against the hand-written limit and its peers on issue 4's workloads, in one process.

    python benchmarks/compare.py              # every workload (about 20 minutes, loaded 2 cores)
    python benchmarks/compare.py --quick      # fewer sizes and repetitions
    python benchmarks/compare.py --only W1,W3 --markdown   # a README-ready table
    python benchmarks/compare.py --slow       # also JAX on W2 at K = 10,000 (a minute to compile)

For every workload, size and dtype: each implementation runs once and its gradient is checked
against numbagrad's (eager; the hand-written one where numbagrad fails), then all of them are
timed in interleaved rounds (one sample of each per round, so they share the machine's state) and
the median sample is reported with its ratio to the hand-written gradient, the practical limit.
A sample repeats a fast step enough times to last a few milliseconds.  Peers that are not
installed (``pip install -e .[bench]``) or disagree with numbagrad are left out with a note.
The issue's targets are then listed as met or not met, with the measured ratio.

Implementations (workloads in ``benchmarks/workloads.py``, peers in ``benchmarks/peers.py``):

- hand-written: fused Numba loops into preallocated outputs (W1, W2, W3, W6), NumPy backprop
  (W4), the analytic Jacobian (W5);
- numbagrad eager: record the graph and ``backward()``, on leaves made once outside the timed
  step with their ``.grad`` reset in it, as PyTorch's (W5: ``ng.functional.jacobian``, which
  traces and sweeps; W6: a loop of record+backward on a fresh leaf per row, as PyTorch's loop);
- numbagrad replay: ``ng.trace(f, x)`` once, then ``.grad`` (W1, W3: ``.grad(x, out=g)`` into a
  preallocated array, as the hand-written loop has), ``.jacobian`` (``out=J`` likewise),
  ``.grad_batch``; a trace compiles its large elementwise runs on first use
  (``numbagrad/codegen.py``), which the correctness check before timing pays;
- PyTorch eager (W5: ``torch.func.jacrev`` and ``torch.autograd.functional.jacobian``; W6: a loop
  and ``torch.func.vmap(grad)``), JAX (``jit(value_and_grad)``, ``jit(jacrev)``,
  ``jit(vmap(grad))``, float64 enabled), HIPS autograd.
"""
import argparse
import datetime
import gc
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba  # noqa: E402
import numpy as np  # noqa: E402

import numbagrad as ng  # noqa: E402
from benchmarks import first_call  # noqa: E402
from benchmarks import peers as P  # noqa: E402
from benchmarks import workloads as W  # noqa: E402

HAND = "hand-written"
EAGER = "numbagrad eager"
REPLAY = "numbagrad replay"
RECORD = "numbagrad record only"  # W2: recording the graph, no backward (latency target)
PEERS = ("torch", "jax", "autograd")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "latency")
TITLES = {
    "W1": "W1: `mean(2*(x+2)**2)`, gradient",
    "W2": "W2: scalar graph of K ops (`acc = acc + sin(x[a]) * x[b]`), gradient w.r.t. 10 inputs",
    "W3": "W3: Rosenbrock, gradient",
    "W4": "W4: 784-256-10 tanh MLP, softmax cross-entropy, batch 256, gradient w.r.t. all weights",
    "W5": "W5: Jacobian of `tanh(A @ x) * x[:m]`, n = 1,000, m = 100",
    "W6": "W6: per-point gradients of Rosenbrock (n = 100) over 10,000 points",
}


class Case:
    """One row of a workload's table: the steps to time and what the table says about them."""

    def __init__(self, workload, size, dtype, ops=None):
        self.workload, self.size, self.dtype, self.ops = workload, size, dtype, ops
        self.steps = {}      # label -> step() returning the gradient(s), checked and timed
        self.unchecked = {}  # label -> step() timed only (no gradient to check)
        self.notes = {}      # label -> why it has no time

    def add(self, label, step):
        self.steps[label] = step

    def add_peer(self, name, make, *args, skip=None):
        """Add a peer's steps, or a note: not installed, skipped (``skip``), or failed to set up."""
        if P.load(name) is None:
            self.notes[name] = "not installed"
            return
        if skip:
            self.notes[name] = skip
            return
        try:
            steps = make(*args)
            for label, step in steps.items():
                self.steps[label] = step
        except Exception as exc:  # a peer that cannot run the workload is reported, not fatal
            self.notes[name] = f"error: {type(exc).__name__}: {exc}"[:120]
            return


# ---------------------------------------------------------------- the workloads

def _sizes(args, full, quick):
    return quick if args.quick else full


def cases_w1(args):
    dtypes = ("float64",) if args.quick else ("float64", "float32")
    for dtype in dtypes:
        for n in _sizes(args, (3, 10**3, 10**5, 10**7), (3, 10**7)):
            c = Case("W1", f"n = {n:,}", dtype)
            x = W.w1_data(n, dtype)
            g = np.empty_like(x)
            c.add(HAND, lambda x=x, g=g: (W.w1_by_hand(x, g), g)[1])
            c.add(EAGER, lambda leaves=W._leaves([x]): W.grads_of(W.notebook, leaves)[1][0])
            f = ng.trace(W.notebook, x)
            c.add(REPLAY, lambda f=f, x=x, g=np.empty_like(x): f.grad(x, out=g))
            c.add_peer("torch", P.torch_w1, x)
            c.add_peer("jax", P.jax_w1, x)
            c.add_peer("autograd", P.autograd_w1, x)
            yield c


def cases_w2(args):
    for K in _sizes(args, (100, 1_000, 10_000), (1_000, 10_000)):
        steps, ia, ib = W.w2_steps(K)
        c = Case("W2", f"K = {K:,}", "float64", ops=steps * W.OPS_PER_STEP)
        xs = W.w2_data()
        chain = W.scalar_chain(K)
        xa, g, sa = np.array(xs), np.zeros(W.W2_INPUTS), np.empty(steps)
        c.add(HAND, lambda: (W.w2_by_hand(xa, ia, ib, sa, g), g)[1])
        c.add(EAGER, lambda chain=chain, leaves=W._leaves([np.float64(v) for v in xs]):
              W.grads_of(chain, leaves)[1])
        f = ng.trace(chain, *xs)
        c.add(REPLAY, lambda f=f: f.grad(*xs))
        c.unchecked[RECORD] = lambda chain=chain: chain(*W._leaves(np.float64(v) for v in xs))
        c.add_peer("torch", P.torch_w2, K, xs)
        slow = K >= 10_000 and not args.slow
        c.add_peer("jax", P.jax_w2, K, xs,
                   skip="skipped: compiling takes about a minute (--slow)" if slow else None)
        c.add_peer("autograd", P.autograd_w2, K, xs)
        yield c


def cases_w3(args):
    for n in _sizes(args, (10**3, 10**6), (10**6,)):
        c = Case("W3", f"n = {n:,}", "float64")
        x = W.w3_data(n)
        g = np.empty_like(x)
        c.add(HAND, lambda x=x, g=g: (W.w3_by_hand(x, g), g)[1])
        c.add(EAGER, lambda leaves=W._leaves([x]): W.grads_of(W.rosenbrock, leaves)[1][0])
        f = ng.trace(W.rosenbrock, x)
        c.add(REPLAY, lambda f=f, x=x, g=np.empty_like(x): f.grad(x, out=g))
        c.add_peer("torch", P.torch_w3, x)
        c.add_peer("jax", P.jax_w3, x)
        c.add_peer("autograd", P.autograd_w3, x)
        yield c


def cases_w4(args):
    for dtype in _sizes(args, ("float64", "float32"), ("float64",)):
        c = Case("W4", "batch 256", dtype)
        params, X, y = W.w4_data(dtype)
        loss = W.mlp_loss(X, y)
        c.add(HAND, lambda p=params, X=X, y=y: W.w4_by_hand(p, X, y)[1])
        c.add(EAGER, lambda loss=loss, leaves=W._leaves(params): W.grads_of(loss, leaves)[1])
        f = ng.trace(loss, *params)
        c.add(REPLAY, lambda f=f, p=params: f.grad(*p))
        c.add_peer("torch", P.torch_w4, params, X, y)
        c.add_peer("jax", P.jax_w4, params, X, y)
        c.add_peer("autograd", P.autograd_w4, params, X, y)
        yield c


def cases_w5(args):
    m = 100
    c = Case("W5", "n = 1,000, m = 100", "float64")
    A, x = W.w5_data(1000, m)
    J = np.empty((m, x.size))
    fn = W.tanh_layer(A, m)
    c.add(HAND, lambda: W.w5_by_hand(A, x, m, J))
    c.add(EAGER, lambda: ng.functional.jacobian(fn, ng.tensor(x)).numpy())
    f = ng.trace(fn, x)
    c.add(REPLAY, lambda J2=np.empty_like(J): f.jacobian(x, out=J2))
    c.add_peer("torch", P.torch_w5, A, x, m)
    c.add_peer("jax", P.jax_w5, A, x, m)
    c.add_peer("autograd", P.autograd_w5, A, x, m)
    yield c


def cases_w6(args):
    c = Case("W6", "10,000 x 100", "float64")
    X = W.w6_data(10_000, 100)
    G = np.empty_like(X)
    c.add(HAND, lambda: (W.w6_by_hand(X, G), G)[1])
    c.add(EAGER, lambda: W.eager_w6(X))
    f = ng.trace(W.rosenbrock, X[0])
    c.add(REPLAY, lambda: f.grad_batch(X))
    c.add_peer("torch", P.torch_w6, X)
    c.add_peer("jax", P.jax_w6, X)
    c.add_peer("autograd", P.autograd_w6, X)
    yield c


CASES = {"W1": cases_w1, "W2": cases_w2, "W3": cases_w3, "W4": cases_w4, "W5": cases_w5,
         "W6": cases_w6}


# ---------------------------------------------------------------- checking and timing

def _arrays(result):
    if isinstance(result, (list, tuple)):
        return [np.asarray(r, dtype=np.float64) for r in result]
    return [np.asarray(result, dtype=np.float64)]


def _max_rel_err(got, ref):
    """Largest error over the arrays, relative to the largest value of each reference array."""
    got, ref = _arrays(got), _arrays(ref)
    if len(got) != len(ref):  # e.g. one array of 10 gradients against 10 0-d gradients
        got = [np.concatenate([a.ravel() for a in got])]
        ref = [np.concatenate([b.ravel() for b in ref])]
    err = 0.0
    for a, b in zip(got, ref):
        if a.shape != b.shape:
            return np.inf
        err = max(err, float(np.max(np.abs(a - b), initial=0.0)) /
                  max(float(np.max(np.abs(b), initial=0.0)), 1e-300))
    return err


def check(case):
    """Run every step once (warm-up), then drop the ones that fail or disagree with numbagrad."""
    results = {}
    for label, step in list(case.steps.items()):
        try:
            t0 = time.perf_counter()
            results[label] = step()
            case.first_call = getattr(case, "first_call", {})
            case.first_call[label] = time.perf_counter() - t0
        except Exception as exc:
            case.notes[label] = f"error: {type(exc).__name__}: {exc}"[:120]
            del case.steps[label]
    for label, step in case.unchecked.items():
        step()
    ref_label = next((r for r in (EAGER, REPLAY, HAND) if r in results), None)
    if ref_label is None:
        return
    tol = 1e-4 if case.dtype == "float32" else 1e-9
    for label, result in results.items():
        err = _max_rel_err(result, results[ref_label])
        if not err <= tol:
            case.notes[label] = f"disagrees with {ref_label} (relative error {err:.1e}): not timed"
            del case.steps[label]


def _sample(step, number):
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(number):
        step()
    return (time.perf_counter() - t0) / number


def measure(case, rounds, sample_s, budget_s):
    """Median seconds per call of every step, from interleaved rounds of samples."""
    steps = dict(case.steps, **case.unchecked)
    plan = {}
    for label, step in steps.items():
        t = max(_sample(step, 1), 1e-7)
        number = int(min(max(1, sample_s / t), 100_000))
        plan[label] = (number, int(min(rounds, max(3, budget_s / (t * number)))))
    samples = {label: [] for label in steps}
    for r in range(max((k for _, k in plan.values()), default=0)):
        for label, step in steps.items():
            number, k = plan[label]
            if r < k:
                samples[label].append(_sample(step, number))
    return {label: float(np.median(s)) for label, s in samples.items()}


# ---------------------------------------------------------------- latency in a fresh interpreter

FIRST_GRADIENT = ("import numpy as np, numbagrad as ng; "
                  "x = ng.tensor(np.ones(3), requires_grad=True); "
                  "(2 * (x + 2) ** 2).mean().backward(); x.grad")


def _fresh(code, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def latency(reps):
    """Fresh-interpreter seconds: ``import numba``; import numbagrad + a first gradient; and the
    floor under the latter, one hand-written cached Numba kernel's first call (``first_call``).

    numbagrad's bytecode is compiled first, as an installed wheel's is: under
    ``PYTHONDONTWRITEBYTECODE`` (set on this machine) an editable install would otherwise
    compile its sources on every import (about 0.2 s here).
    """
    import compileall
    compileall.compile_dir(os.path.dirname(ng.__file__), quiet=1)
    floor = first_call.fresh_code()
    _fresh(FIRST_GRADIENT, 1)  # fill the Numba caches if they are cold
    _fresh(floor, 1)
    numba_s, first_s, floor_s = [], [], []
    for _ in range(reps):  # interleaved
        numba_s.append(_fresh("import numba", 1))
        first_s.append(_fresh(FIRST_GRADIENT, 1))
        floor_s.append(_fresh(floor, 1))
    return float(np.median(numba_s)), float(np.median(first_s)), float(np.median(floor_s))


# ---------------------------------------------------------------- the report

def _fmt_time(s):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= 0.9995 * scale:  # 999.7 µs prints as 1 ms, not 1e+03 µs
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _cell(case, label, times):
    if label not in times:
        return case.notes.get(label, case.notes.get(_peer_of(label), ""))
    t = times[label]
    text = _fmt_time(t)
    if case.ops:
        text += f", {_fmt_time(t / case.ops)}/op"
    if HAND in times and label != HAND:
        r = t / times[HAND]
        text += f" ({r:.0f}x)" if r >= 100 else f" ({r:.3g}x)"
    return text


def _peer_of(label):
    low = label.lower()
    for name in PEERS:
        if low.startswith(name) or (name == "torch" and low.startswith("pytorch")):
            return name
    return label


def table(workload, rows, markdown):
    """One workload's rows as a Markdown or aligned-text table (plus its notes)."""
    order = {HAND: 0, EAGER: 1, REPLAY: 2, RECORD: 3}
    labels = []
    for case, times in rows:
        for label in list(times) + list(case.notes):
            if label not in labels:
                labels.append(label)
    # a peer's note ("not installed", "skipped") gets a column of its own only when none of
    # that peer's implementations has one; otherwise it shows in their cells
    labels = [lb for lb in labels if not (lb in PEERS and any(
        _peer_of(o) == lb for o in labels if o != lb))]
    labels.sort(key=lambda lb: order.get(lb, 4))
    head = ["size", "dtype"] + labels
    body = [[case.size, case.dtype] + [_cell(case, lb, times) for lb in labels]
            for case, times in rows]
    out = [f"**{TITLES[workload]}**" if markdown else TITLES[workload], ""]
    if markdown:
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(" --- " for _ in head) + "|")
        out += ["| " + " | ".join(r) + " |" for r in body]
    else:
        widths = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
        for r in [head] + body:
            out.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    for case, _ in rows:
        for label, seconds in getattr(case, "first_call", {}).items():
            if _peer_of(label) == "jax" and seconds > 1.0:
                out.append(f"\n{case.size} {case.dtype}: the first call of {label} (tracing and "
                           f"compiling) took {seconds:.1f} s, not in the times above.")
    out.append("")
    return "\n".join(out)


def _get(results, workload, size, dtype, label):
    return results.get((workload, size, dtype, label))


def targets(results, lat):
    """The issue's targets: (target, measured, met) with met None when not measured."""
    out = []

    def ratio_row(text, num, den, limit, fmt="{:.2f}x"):
        if num is None or den is None:
            out.append((text, "not measured", None))
        else:
            r = num / den
            out.append((text, fmt.format(r), r <= limit))

    w1 = ("W1", "n = 10,000,000", "float64")
    ratio_row("W1 n=10^7: replay <= 1.5x hand-written (preallocated)",
              _get(results, *w1, REPLAY), _get(results, *w1, HAND), 1.5)
    out.append(_speedup(("W1 n=10^7: eager >= 3x faster than PyTorch eager", "", None),
                        _get(results, *w1, "PyTorch"), _get(results, *w1, EAGER), 3.0,
                        "PyTorch / eager"))
    w2 = ("W2", "K = 10,000", "float64")
    rep2 = _get(results, *w2, REPLAY)
    ops = W.w2_steps(10_000)[0] * W.OPS_PER_STEP
    if rep2 is None:
        out.append(("W2 K=10^4: replay <= 10 ns/op", "not measured", None))
    else:
        out.append(("W2 K=10^4: replay <= 10 ns/op", f"{rep2 / ops * 1e9:.1f} ns/op",
                    rep2 / ops <= 10e-9))
    out.append(_speedup(("W2 K=10^4: eager >= 5x faster than PyTorch eager per op", "", None),
                        _get(results, *w2, "PyTorch"), _get(results, *w2, EAGER), 5.0,
                        "PyTorch / eager"))
    w3 = ("W3", "n = 1,000,000", "float64")
    ratio_row("W3 n=10^6: replay <= 1.5x hand-written", _get(results, *w3, REPLAY),
              _get(results, *w3, HAND), 1.5)
    out.append(_speedup(("W3 n=10^6: replay >= 2x faster than JAX jit", "", None),
                        _get(results, *w3, "JAX jit(value_and_grad)"),
                        _get(results, *w3, REPLAY), 2.0, "JAX / replay"))
    for dtype in ("float64", "float32"):
        w4 = ("W4", "batch 256", dtype)
        ratio_row(f"W4 {dtype}: replay <= 1.2x hand-written NumPy backprop",
                  _get(results, *w4, REPLAY), _get(results, *w4, HAND), 1.2)
    w5 = ("W5", "n = 1,000, m = 100", "float64")
    ratio_row("W5: replay jacobian <= 3x analytic Jacobian", _get(results, *w5, REPLAY),
              _get(results, *w5, HAND), 3.0)
    w6 = ("W6", "10,000 x 100", "float64")
    out.append(_speedup(("W6: grad_batch faster than JAX jit(vmap(grad))", "", None),
                        _get(results, *w6, "JAX jit(vmap(grad))"), _get(results, *w6, REPLAY),
                        1.0, "JAX / replay"))
    if lat is None:
        out.append(("fresh process: import + first gradient < 1 s beyond `import numba`",
                    "not measured", None))
    else:
        extra = lat[1] - lat[0]
        out.append(("fresh process: import + first gradient < 1 s beyond `import numba`",
                    f"{extra:.2f} s ({lat[1]:.2f} s vs {lat[0]:.2f} s; one Numba kernel "
                    f"{lat[2] - lat[0]:.2f} s)", extra < 1.0))
    rec = _get(results, *w2, RECORD)
    out.append(("recording a 10,000-op graph < 10 ms",
                "not measured" if rec is None else f"{rec * 1e3:.1f} ms ({ops:,} ops)",
                None if rec is None else rec < 10e-3))
    for dtype in ("float64", "float32"):
        w1s = ("W1", "n = 3", dtype)
        out.append(_speedup((f"W1 n=3 {dtype}: eager not slower than PyTorch eager", "", None),
                            _get(results, *w1s, "PyTorch"), _get(results, *w1s, EAGER), 1.0,
                            "PyTorch / eager"))
    return out


def _speedup(row, peer, ours, at_least, name):
    """Target "ours at least ``at_least`` x faster than peer": met when peer / ours >= at_least."""
    text = row[0]
    if peer is None or ours is None:
        return (text, "not measured", None)
    return (text, f"{name} = {peer / ours:.2f}", peer / ours >= at_least)


def target_table(rows, markdown):
    mark = {True: "met", False: "not met", None: "—"}
    if markdown:
        out = ["| target | measured | |", "| --- | --- | --- |"]
        out += [f"| {t} | {m} | {mark[ok]} |" for t, m, ok in rows]
    else:
        w = max(len(t) for t, _, _ in rows)
        v = max(len(m) for _, m, _ in rows)
        out = [f"{t.ljust(w)}  {m.ljust(v)}  {mark[ok]}" for t, m, ok in rows]
    title = "**Targets (issue 4)**" if markdown else "Targets (issue 4)"
    return "\n".join([title, ""] + out + [""])


def header(argv):
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
                f"Numba {numba.__version__}", f"numbagrad {ng.__version__}"]
    for name in PEERS:
        if P.load(name) is not None:
            versions.append(f"{'PyTorch' if name == 'torch' else name} "
                            f"{importlib.metadata.version(name)}")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["python", "benchmarks/compare.py"] + argv)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"Measured {when} on {os.cpu_count()} cores ({cpu}; `nproc` = {os.cpu_count()}; "
            f"load average {load} at the start), {', '.join(versions)}.\n"
            f"Command: `{cmd}`.  Medians of interleaved repetitions; (Nx) is the time over the "
            f"hand-written gradient's.\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help="comma-separated workloads, e.g. W1,W3 (and 'latency')")
    ap.add_argument("--markdown", action="store_true", help="emit Markdown tables (README)")
    ap.add_argument("--slow", action="store_true", help="also JAX on W2 at K = 10,000")
    args = ap.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    rounds, sample_s, budget_s = (5, 0.005, 1.0) if args.quick else (15, 0.02, 4.0)

    print(header(argv), flush=True)
    missing = [name for name in PEERS if P.load(name) is None]
    if missing:
        print(f"Not installed, skipped: {', '.join(missing)} (pip install -e .[bench]).\n")
    results = {}
    for workload in (w for w in WORKLOADS if w in only and w != "latency"):
        rows = []
        for case in CASES[workload](args):
            check(case)
            times = measure(case, rounds, sample_s, budget_s)
            rows.append((case, times))
            for label, t in times.items():
                results[(case.workload, case.size, case.dtype, label)] = t
            print(f"  ({workload} {case.size} {case.dtype} done)", file=sys.stderr, flush=True)
            del case.steps
            gc.collect()
        print(table(workload, rows, args.markdown), flush=True)
    lat = None
    if "latency" in only:
        lat = latency(3 if args.quick else 5)
        print(f"Fresh interpreter, warm Numba cache: `import numba` {lat[0]:.2f} s; import "
              f"numbagrad and a first gradient {lat[1]:.2f} s; one hand-written cached Numba "
              f"kernel's first call {lat[2]:.2f} s (Numba's own floor: {lat[2] - lat[0]:.2f} s "
              f"beyond `import numba`).\n", flush=True)
    print(target_table(targets(results, lat), args.markdown), flush=True)


if __name__ == "__main__":
    main()
