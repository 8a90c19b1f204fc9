"""The workloads of issue 4 (W1-W6), written once for numbagrad and for the hand-written limits.

Used by the asv suite (``benchmarks/bench_*.py``) and by ``benchmarks/compare.py``, which adds the
peers (``benchmarks/peers.py``).  Each workload has:

- a data maker (``w1_data`` ...), seeded, so every implementation sees the same numbers;
- the function as numbagrad code (``notebook``, ``scalar_chain``, ``rosenbrock``, ``mlp_loss``,
  ``tanh_layer``), usable eagerly on tensors and by ``ng.trace`` on arrays;
- eager record+backward steps (``eager_*``) returning the gradients as arrays;
- the hand-written gradient: fused Numba loops writing into preallocated outputs (W1, W2, W3, W6),
  NumPy backprop (W4) and the analytic Jacobian (W5).

>>> import numpy as np
>>> x = w1_data(1000, "float64")
>>> g = np.empty_like(x)
>>> value = w1_by_hand(x, g)          # the bandwidth floor for W1
>>> np.allclose(g, eager_w1(x)[1])
True
"""
import time

import numpy as np
from numba import njit, prange

import numbagrad as ng

# W2: every step is ``acc = acc + sin(x[a]) * x[b]``: three recorded ops
W2_INPUTS = 10
OPS_PER_STEP = 3
# the hand-written loops run serial below this many elements, where starting a parallel region
# costs more than it saves (numbagrad's kernels use the same threshold, sweeps.PAR_MIN)
SERIAL_BELOW = 1 << 17


# ---------------------------------------------------------------- timing helpers

def median_time(step, reps):
    """Median seconds of ``reps`` calls of ``step`` (already warmed up)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_ratio(num, den, reps):
    """Median time of ``num`` over median time of ``den``, calls interleaved so both see the
    same machine state."""
    a, b = [], []
    for _ in range(reps):
        a.append(median_time(num, 1))
        b.append(median_time(den, 1))
    return float(np.median(a) / np.median(b))


# ---------------------------------------------------------------- data

def w1_data(n, dtype):
    return np.random.default_rng(0).standard_normal(n).astype(dtype)


def w2_data():
    return [float(v) for v in np.random.default_rng(1).standard_normal(W2_INPUTS)]


def w2_steps(K):
    """The steps of a K-op W2 graph and the operand indices of each step."""
    steps = K // OPS_PER_STEP
    k = np.arange(steps)
    return steps, k % W2_INPUTS, (k + 3) % W2_INPUTS


def w3_data(n):
    return np.random.default_rng(2).uniform(-2.0, 2.0, n)


def w4_data(dtype, batch=256, sizes=(784, 256, 10)):
    """``(params, X, y)``: weights scaled like a usual initialisation, integer class labels."""
    rng = np.random.default_rng(3)
    n_in, n_hid, n_out = sizes
    params = [rng.standard_normal((n_in, n_hid)) / np.sqrt(n_in), np.zeros(n_hid) + 0.01,
              rng.standard_normal((n_hid, n_out)) / np.sqrt(n_hid), np.zeros(n_out) - 0.01]
    X = rng.standard_normal((batch, n_in))
    y = rng.integers(0, n_out, batch)
    return [p.astype(dtype) for p in params], X.astype(dtype), y


def w5_data(n=1000, m=100):
    rng = np.random.default_rng(4)
    return rng.standard_normal((m, n)) / np.sqrt(n), rng.standard_normal(n)


def w6_data(batch=10_000, n=100):
    return np.random.default_rng(5).uniform(-2.0, 2.0, (batch, n))


# ---------------------------------------------------------------- the functions, in numbagrad

def notebook(x):
    """W1: the seed notebook's graph."""
    return (2 * (x + 2) ** 2).mean()


def scalar_chain(K):
    """W2: a function of 10 scalars made of ``K // 3`` steps ``acc = acc + sin(x[a]) * x[b]``."""
    steps, ia, ib = w2_steps(K)
    ia, ib = ia.tolist(), ib.tolist()

    def chain(*xs):
        acc = 0.0
        for a, b in zip(ia, ib):
            acc = acc + ng.sin(xs[a]) * xs[b]
        return acc
    return chain


def rosenbrock(x):
    """W3 (and W6 per point)."""
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def mlp_loss(X, y):
    """W4: the mean softmax cross-entropy of a tanh MLP as a function of its weights.

    numbagrad has no fused cross-entropy op: it is ``log_softmax`` and a gather by indexing.
    """
    Xt = ng.tensor(X)
    rows = np.arange(len(y))

    def loss(W1, b1, W2, b2):
        logp = ng.log_softmax(ng.tanh(Xt @ W1 + b1) @ W2 + b2, dim=1)
        return -logp[rows, y].mean()
    return loss


def tanh_layer(A, m):
    """W5: ``x -> tanh(A @ x) * x[:m]``."""
    At = ng.tensor(A)

    def f(x):
        return ng.tanh(At @ x) * x[:m]
    return f


# ---------------------------------------------------------------- eager record + backward

def _leaves(arrays):
    return [ng.tensor(a, requires_grad=True) for a in arrays]


def grads_of(fn, leaves):
    """``(value, gradients)`` of ``fn(*leaves)`` by ``backward()``, the leaves' ``.grad`` reset
    first: the eager_w* below on fresh leaves, and compare.py's eager step on leaves made once
    outside the timed step (as it times PyTorch's, and every peer's data is made outside it)."""
    for t in leaves:
        t.grad = None
    out = fn(*leaves)
    out.backward()
    return out.item(), [t.grad.numpy() for t in leaves]


def eager_w1(x):
    """``(value, gradient)`` by recording W1 on a fresh leaf and calling ``backward()``."""
    value, (g,) = grads_of(notebook, _leaves([x]))
    return value, g


def eager_w2(chain, xs):
    return grads_of(chain, _leaves([np.float64(v) for v in xs]))


def eager_w3(x):
    value, (g,) = grads_of(rosenbrock, _leaves([x]))
    return value, g


def eager_w4(loss, params):
    return grads_of(loss, _leaves(params))


def eager_w6(X):
    """Per-row gradients of W3 by one record+backward per row (what a PyTorch loop does)."""
    G = np.empty_like(X)
    for r in range(X.shape[0]):
        G[r] = eager_w3(X[r])[1]
    return G


# ---------------------------------------------------------------- hand-written limits

def w1_by_hand(x, g):
    """W1 value; its gradient written into ``g``: one fused pass, the memory-bandwidth floor."""
    return (_w1_serial if x.size < SERIAL_BELOW else _w1_parallel)(x, g)


@njit(error_model="numpy", cache=True)
def _w1_serial(x, g):
    n = x.size
    s = 0.0
    c = 4.0 / n
    for j in range(n):
        y = x[j] + 2.0
        s += 2.0 * y * y
        g[j] = c * y
    return s / n


@njit(error_model="numpy", parallel=True, cache=True)
def _w1_parallel(x, g):
    n = x.size
    s = 0.0
    c = 4.0 / n
    for j in prange(n):
        y = x[j] + 2.0
        s += 2.0 * y * y
        g[j] = c * y
    return s / n


@njit(error_model="numpy", cache=True)
def w2_by_hand(x, ia, ib, sa, g):
    """W2 value; gradient into ``g``: the adjoint of the straight-line program, written by hand.

    The forward pass keeps each ``sin(x[a])`` in ``sa`` (the tape a hand-written adjoint
    needs); every step's adjoint of ``acc`` is 1, so the reverse pass is two updates per step.
    """
    acc = 0.0
    for k in range(ia.size):
        s = np.sin(x[ia[k]])
        sa[k] = s
        acc += s * x[ib[k]]
    g[:] = 0.0
    for k in range(ia.size - 1, -1, -1):
        a = ia[k]
        b = ib[k]
        g[a] += np.cos(x[a]) * x[b]
        g[b] += sa[k]
    return acc


@njit(error_model="numpy", cache=True)
def _rosen_row(x, g):
    """Rosenbrock value; gradient into ``g``, serial."""
    n = x.size
    s = 0.0
    for i in range(n):
        gi = 0.0
        if i + 1 < n:
            d = x[i + 1] - x[i] * x[i]
            e = 1.0 - x[i]
            s += 100.0 * d * d + e * e
            gi = -400.0 * x[i] * d - 2.0 * e
        if i > 0:
            gi += 200.0 * (x[i] - x[i - 1] * x[i - 1])
        g[i] = gi
    return s


def w3_by_hand(x, g):
    """W3 value; gradient into ``g``: one fused pass (parallel on large inputs)."""
    return (_rosen_row if x.size < SERIAL_BELOW else _w3_parallel)(x, g)


@njit(error_model="numpy", parallel=True, cache=True)
def _w3_parallel(x, g):
    n = x.size
    s = 0.0
    for i in prange(n):
        gi = 0.0
        if i + 1 < n:
            d = x[i + 1] - x[i] * x[i]
            e = 1.0 - x[i]
            s += 100.0 * d * d + e * e
            gi = -400.0 * x[i] * d - 2.0 * e
        if i > 0:
            gi += 200.0 * (x[i] - x[i - 1] * x[i - 1])
        g[i] = gi
    return s


@njit(error_model="numpy", parallel=True, cache=True)
def w6_by_hand(X, G):
    """Per-row W3 gradients into ``G``, rows in parallel."""
    for r in prange(X.shape[0]):
        _rosen_row(X[r], G[r])


def w4_by_hand(params, X, y):
    """W4 ``(loss, [gW1, gb1, gW2, gb2])`` by hand-written NumPy backprop."""
    W1, b1, W2, b2 = params
    B = X.shape[0]
    h = np.tanh(X @ W1 + b1)
    z = h @ W2 + b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    s = p.sum(axis=1, keepdims=True)
    rows = np.arange(B)
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
    p /= s
    p[rows, y] -= 1.0
    dz = p / np.asarray(B, dtype=X.dtype)
    dh = dz @ W2.T
    dh *= 1.0 - h * h
    return loss, [X.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]


def w5_by_hand(A, x, m, J):
    """W5 analytic Jacobian into ``J`` (m x n): ``diag((1 - t^2) x[:m]) A + [diag(t), 0]``."""
    t = np.tanh(A @ x)
    np.multiply(((1.0 - t * t) * x[:m])[:, None], A, out=J)
    J[np.arange(m), np.arange(m)] += t
    return J
