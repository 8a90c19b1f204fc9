"""Long runs and large graphs (marker ``soak``; minutes and several GB):

    python -m pytest -q -s -m soak tests/test_soak.py

- 100,000 record/backward steps of a small model: resident memory stays flat;
- 1,000,000 replays of a traced function: no memory growth, and a call allocates nothing
  beyond its outputs (tracemalloc, which sees NumPy's buffers);
- a 10,000,000-op scalar tape and a graph over 10^8 elements: recorded and swept in the memory
  benchmarks/NOTES.md states (its README-measurements section, "Memory"), printed here;
- no quadratic step: recording, validation and sweeps of 4x the ops take about 4x the time.

Only ``test_bytes_per_op_small`` (a 200,000-op tape) runs in the default suite.
"""
import gc
import os
import time
import tracemalloc

import numpy as np
import pytest

import numbagrad as ng
from numbagrad.sweeps import plan_adjoints, reverse_sweep, forward_sweep, PAR_MIN
from numbagrad.tape import _INT_COLUMNS
from numbagrad.validate import validate

MB = 1 << 20


def rss():
    """Resident set size in bytes (Linux /proc; psutil is not needed)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")


def tape_bytes(tape):
    """Bytes a recording holds: its integer/float columns and its value chunks."""
    cols = sum(len(getattr(tape, c)) * getattr(tape, c).itemsize for c in _INT_COLUMNS)
    return cols, sum(c.nbytes for c in tape.chunks)


def scalar_chain(n_ops):
    """A scalar tape of n_ops recorded ops (plus the input): y = y * a + b, repeated."""
    x = ng.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(n_ops // 2):
        y = y * 0.9999999 + 0.001
    return x, y


# ---------------------------------------------------------------- default suite: small

def test_bytes_per_op_small():
    n = 200_000
    x, y = scalar_chain(n)
    cols, vals = tape_bytes(y._tape)
    per_op = (cols + vals) / n
    # int32 opcode, int16 name, int8 flags, int64 arg/shape/const/iparam pointers, one int64
    # operand, size, value offset, int32 chunk, one float64 constant, and the float64 value:
    # about 84 bytes; no hidden per-op Python objects on the tape
    assert 70 <= per_op <= 100, per_op
    y.backward()
    expected = 0.9999999 ** (n // 2)
    assert abs(x.grad.item() - expected) < 1e-9


# ---------------------------------------------------------------- soak

def _small_model_step(X, t, W1, b1, W2):
    h = (X @ W1 + b1).tanh()
    loss = ((h @ W2 - t) ** 2).mean()
    loss.backward()
    with ng.no_grad():
        for p in (W1, b1, W2):
            p -= 0.01 * p.grad
            p.grad = None
    return loss


@pytest.mark.soak
def test_record_backward_100k_steps_flat_memory():
    rng = np.random.default_rng(0)
    X, t = ng.tensor(rng.standard_normal((8, 4))), ng.tensor(rng.standard_normal((8, 1)))
    W1 = ng.tensor(rng.standard_normal((4, 8)) * 0.3, requires_grad=True)
    b1 = ng.zeros(8, requires_grad=True)
    W2 = ng.tensor(rng.standard_normal((8, 1)) * 0.3, requires_grad=True)
    steps, warm = 100_000, 5_000
    samples = []
    t0 = time.perf_counter()
    for i in range(steps):
        loss = _small_model_step(X, t, W1, b1, W2)
        if i == warm or (i > warm and i % 10_000 == 0) or i == steps - 1:
            gc.collect()
            samples.append((i, rss()))
    dt = time.perf_counter() - t0
    growth = samples[-1][1] - samples[0][1]
    print(f"\nsoak: {steps} record/backward steps in {dt:.1f} s; RSS after {warm} steps "
          f"{samples[0][1] / MB:.1f} MiB, at the end {samples[-1][1] / MB:.1f} MiB "
          f"(growth {growth / MB:+.2f} MiB); samples {[(i, round(r / MB, 1)) for i, r in samples]}")
    assert np.isfinite(loss.item())
    assert growth < 4 * MB, samples


def _rosen(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _call_peak(f, x):
    """Bytes allocated at the peak of one value_and_grad call above what was live before
    (tracemalloc sees Python objects and NumPy's data buffers)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        v, g = f.value_and_grad(x)
        return tracemalloc.get_traced_memory()[1] - base, g.nbytes
    finally:
        tracemalloc.stop()


@pytest.mark.soak
def test_replay_1m_calls_no_allocation_beyond_outputs():
    # per call: the output arrays, a few small Python objects (views, tuples) and the fused
    # kernels' block scratch (L1-sized, fusion.py): bounded, the same for a tape 10,000x larger,
    # whose value buffer (MBs) is not reallocated
    extra = {}
    for n in (10, 10_000, 100_000):
        f = ng.trace(_rosen, np.zeros(n))
        x = np.random.default_rng(0).random(n)
        for _ in range(100):  # warm: this thread's buffers, Numba dispatch
            f.value_and_grad(x)
        peak, out = _call_peak(f, x)
        extra[n] = peak - out
    print(f"\nreplay: one value_and_grad call allocates its gradient plus (bytes, by input "
          f"size) {extra}; the 100,000-element tape's value buffer is "
          f"{8 * ng.trace(_rosen, np.zeros(100_000))._init.size} bytes")
    assert all(v < 64 * 1024 for v in extra.values()), extra
    # no growth over many calls: Python-level allocations retained
    f = ng.trace(_rosen, np.zeros(10))
    x = np.random.default_rng(0).random(10)
    for _ in range(100_000):
        f.value_and_grad(x)
    gc.collect()
    tracemalloc.start()
    a = tracemalloc.get_traced_memory()[0]
    for _ in range(100_000):
        f.value_and_grad(x)
    gc.collect()
    b = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"replay: 100,000 more value_and_grad calls retain {b - a} bytes")
    assert b - a < 16384
    # 1,000,000 replays: resident memory flat
    r0 = rss()
    t0 = time.perf_counter()
    for _ in range(1_000_000):
        f(x)
    dt = time.perf_counter() - t0
    gc.collect()
    growth = rss() - r0
    print(f"replay: 1,000,000 calls in {dt:.1f} s ({dt:.2f} us per call); RSS growth "
          f"{growth / MB:+.2f} MiB")
    assert growth < 2 * MB


@pytest.mark.soak
def test_scalar_tape_10m_ops():
    n = 10_000_000
    gc.collect()
    r0 = rss()
    t0 = time.perf_counter()
    x, y = scalar_chain(n)
    t1 = time.perf_counter()
    gc.collect()
    r1 = rss()
    cols, vals = tape_bytes(y._tape)
    y.backward()
    t2 = time.perf_counter()
    r2 = rss()
    print(f"\n10M-op scalar tape: recorded in {t1 - t0:.0f} s, backward {t2 - t1:.1f} s; tape "
          f"{cols / n:.1f} B/op of columns + {vals / n:.1f} B/op of values; RSS "
          f"+{(r1 - r0) / n:.0f} B/op after recording, +{(r2 - r0) / n:.0f} B/op after backward "
          f"(the sweep's NumPy copy of the columns, adjoint buffer and offsets)")
    assert abs(x.grad.item() - 0.9999999 ** (n // 2)) < 1e-6
    assert (cols + vals) / n < 100
    assert (r2 - r0) / n < 300


@pytest.mark.soak
def test_graph_over_1e8_elements():
    n = 10 ** 8
    gc.collect()
    r0 = rss()
    x = ng.tensor(np.full(n, 0.5), requires_grad=True)
    t0 = time.perf_counter()
    loss = ((x * 2.0).sin() * x).sum()
    t1 = time.perf_counter()
    r1 = rss()
    loss.backward()
    t2 = time.perf_counter()
    r2 = rss()
    print(f"\n1e8-element graph (4 ops): forward {t1 - t0:.1f} s, backward {t2 - t1:.1f} s; RSS "
          f"+{(r1 - r0) / n:.1f} B/element after recording (input, 3 stored values), "
          f"+{(r2 - r0) / n:.1f} B/element after backward (adjoints, .grad)")
    np.testing.assert_allclose(x.grad.numpy()[:3], 2 * np.cos(1.0) * 0.5 + np.sin(1.0))
    # input 8 + two stored 1e8 values 16 + adjoints of 3 nodes 24 + .grad 8 = 56 B/element
    assert (r2 - r0) / n < 72


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.soak
def test_no_quadratic_step():
    """4x the ops costs about 4x the time in recording, validation, planning and the sweeps
    (a quadratic step would cost 16x); best of a few runs against machine noise."""
    times = {}
    for n in (250_000, 1_000_000):
        best = {}

        def keep(what, dt):
            best[what] = min(best.get(what, np.inf), dt)
        for _ in range(2):
            t0 = time.perf_counter()
            x, y = scalar_chain(n)
            keep("record", time.perf_counter() - t0)
            tape = y._tape
            arrays = tape.arrays()
            nvals = sum(c.size for c in tape.chunks)
            seeds = np.array([y._node], dtype=np.int64)
            chunks = tape.typed_chunks()
            for _ in range(3):
                keep("validate", _timed(lambda: validate(arrays, nvals, len(tape.chunks))))
                keep("plan", _timed(lambda: plan_adjoints(arrays, seeds)))
                adj_off, total, _, _, _ = plan_adjoints(arrays, seeds)
                adj = np.zeros(total)
                adj[adj_off[y._node]] = 1.0
                keep("reverse", _timed(lambda: reverse_sweep(arrays, chunks, adj, adj_off,
                                                             y._node, PAR_MIN, 0)))
                keep("forward", _timed(lambda: forward_sweep(arrays, chunks, 1,
                                                             len(arrays.opcodes), PAR_MIN)))
            del x, y, tape, arrays, chunks
        times[n] = best
    ratios = {k: times[1_000_000][k] / times[250_000][k] for k in times[250_000]}
    print("\ntime(1M ops) / time(250k ops): " + ", ".join(f"{k} {v:.1f}x" for k, v in
                                                          ratios.items()))
    assert all(r < 8 for r in ratios.values()), ratios
