"""The peers of ``benchmarks/compare.py``: PyTorch (eager), JAX (jit) and HIPS autograd.

Each ``<peer>_w<N>(...)`` returns ``{label: step}``: ``step()`` computes the gradient(s) of the
workload once (JAX steps block until the result is ready) and returns them as NumPy arrays, so
compare.py can check them against numbagrad's before timing.  Data preparation (tensors, device
arrays, ``jit`` tracing and compilation) happens here, outside the timed step.  ``load(name)``
returns the peer's module(s), or None when it is not installed.

>>> steps = torch_w1(np.ones(3))         # doctest: +SKIP
>>> steps["PyTorch"]()                    # doctest: +SKIP
array([4., 4., 4.])
"""
import importlib

import numpy as np

from benchmarks.workloads import w2_steps, W2_INPUTS


def load(name):
    """The modules a peer needs, or None when it is not installed."""
    try:
        if name == "torch":
            torch = importlib.import_module("torch")
            importlib.import_module("torch.func")
            return torch
        if name == "jax":
            jax = importlib.import_module("jax")
            jax.config.update("jax_enable_x64", True)  # float64 workloads stay float64
            return jax
        if name == "autograd":
            return importlib.import_module("autograd")
    except ImportError:
        return None
    raise ValueError(name)


# ---------------------------------------------------------------- PyTorch (eager)

def _torch_grads(loss, leaves):
    for t in leaves:
        t.grad = None
    loss(*leaves).backward()
    return [t.grad.numpy() for t in leaves]


def torch_w1(x):
    import torch
    xt = torch.tensor(x, requires_grad=True)
    return {"PyTorch": lambda: _torch_grads(lambda t: (2 * (t + 2) ** 2).mean(), [xt])[0]}


def torch_w2(K, xs):
    import torch
    _, ia, ib = w2_steps(K)
    ia, ib = ia.tolist(), ib.tolist()
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in xs]

    def chain(*x):
        acc = 0.0
        for a, b in zip(ia, ib):
            acc = acc + torch.sin(x[a]) * x[b]
        return acc
    return {"PyTorch": lambda: _torch_grads(chain, leaves)}


def _torch_rosen(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def torch_w3(x):
    import torch
    xt = torch.tensor(x, requires_grad=True)
    return {"PyTorch": lambda: _torch_grads(_torch_rosen, [xt])[0]}


def torch_w4(params, X, y):
    import torch
    import torch.nn.functional as F
    leaves = [torch.tensor(p, requires_grad=True) for p in params]
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def loss(W1, b1, W2, b2):
        return F.cross_entropy(torch.tanh(Xt @ W1 + b1) @ W2 + b2, yt)
    return {"PyTorch": lambda: _torch_grads(loss, leaves)}


def torch_w5(A, x, m):
    import torch
    At, xt = torch.tensor(A), torch.tensor(x)

    def f(v):
        return torch.tanh(At @ v) * v[:m]
    jacrev = torch.func.jacrev(f)
    return {"torch.func.jacrev": lambda: jacrev(xt).numpy(),
            "torch.autograd.functional.jacobian":
                lambda: torch.autograd.functional.jacobian(f, xt).numpy()}


def torch_w6(X):
    import torch
    Xt = torch.tensor(X)
    per_point = torch.func.vmap(torch.func.grad(_torch_rosen))

    def loop():
        G = np.empty_like(X)
        for r in range(Xt.shape[0]):
            xr = Xt[r].clone().requires_grad_(True)
            _torch_rosen(xr).backward()
            G[r] = xr.grad.numpy()
        return G
    return {"PyTorch (loop)": loop, "torch.func.vmap(grad)": lambda: per_point(Xt).numpy()}


# ---------------------------------------------------------------- JAX (jit)

def _jax_ready(fn, *args):
    import jax
    return lambda: jax.tree_util.tree_map(np.asarray, jax.block_until_ready(fn(*args)))


def jax_w1(x):
    import jax
    import jax.numpy as jnp
    vg = jax.jit(jax.value_and_grad(lambda t: jnp.mean(2 * (t + 2) ** 2)))
    step = _jax_ready(vg, jnp.asarray(x))
    return {"JAX jit(value_and_grad)": lambda: step()[1]}


def jax_w2(K, xs):
    import jax
    import jax.numpy as jnp
    _, ia, ib = w2_steps(K)
    ia, ib = ia.tolist(), ib.tolist()

    def chain(x):
        x = [x[i] for i in range(W2_INPUTS)]  # unpack once: the loop below is the graph
        acc = 0.0
        for a, b in zip(ia, ib):
            acc = acc + jnp.sin(x[a]) * x[b]
        return acc
    vg = jax.jit(jax.value_and_grad(chain))
    step = _jax_ready(vg, tuple(jnp.asarray(v, dtype=jnp.float64) for v in xs))
    return {"JAX jit(value_and_grad)": lambda: list(step()[1])}


def _jax_rosen(x):
    import jax.numpy as jnp
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def jax_w3(x):
    import jax
    import jax.numpy as jnp
    step = _jax_ready(jax.jit(jax.value_and_grad(_jax_rosen)), jnp.asarray(x))
    return {"JAX jit(value_and_grad)": lambda: step()[1]}


def jax_w4(params, X, y):
    import jax
    import jax.numpy as jnp
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def loss(p):
        W1, b1, W2, b2 = p
        logp = jax.nn.log_softmax(jnp.tanh(Xj @ W1 + b1) @ W2 + b2, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, yj[:, None], axis=1))
    step = _jax_ready(jax.jit(jax.value_and_grad(loss)), [jnp.asarray(p) for p in params])
    return {"JAX jit(value_and_grad)": lambda: list(step()[1])}


def jax_w5(A, x, m):
    import jax
    import jax.numpy as jnp
    Aj = jnp.asarray(A)
    return {"JAX jit(jacrev)": _jax_ready(jax.jit(jax.jacrev(lambda v: jnp.tanh(Aj @ v) * v[:m])),
                                          jnp.asarray(x))}


def jax_w6(X):
    import jax
    import jax.numpy as jnp
    return {"JAX jit(vmap(grad))": _jax_ready(jax.jit(jax.vmap(jax.grad(_jax_rosen))),
                                              jnp.asarray(X))}


# ---------------------------------------------------------------- HIPS autograd

def autograd_w1(x):
    import autograd
    import autograd.numpy as anp
    g = autograd.grad(lambda t: anp.mean(2 * (t + 2) ** 2))
    return {"autograd": lambda: g(x)}


def autograd_w2(K, xs):
    import autograd
    import autograd.numpy as anp
    _, ia, ib = w2_steps(K)
    ia, ib = ia.tolist(), ib.tolist()

    def chain(x):
        x = [x[i] for i in range(W2_INPUTS)]  # unpack the tuple once
        acc = 0.0
        for a, b in zip(ia, ib):
            acc = acc + anp.sin(x[a]) * x[b]
        return acc
    g = autograd.grad(chain)
    args = tuple(float(v) for v in xs)
    return {"autograd": lambda: list(g(args))}


def _anp_rosen(x):
    import autograd.numpy as anp
    return anp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def autograd_w3(x):
    import autograd
    g = autograd.grad(_anp_rosen)
    return {"autograd": lambda: g(x)}


def autograd_w4(params, X, y):
    import autograd
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp
    rows = np.arange(len(y))

    def loss(p):
        W1, b1, W2, b2 = p
        z = anp.dot(anp.tanh(anp.dot(X, W1) + b1), W2) + b2
        return anp.mean(logsumexp(z, axis=1) - z[rows, y])
    g = autograd.grad(loss)
    return {"autograd": lambda: list(g(list(params)))}


def autograd_w5(A, x, m):
    import autograd
    import autograd.numpy as anp
    jac = autograd.jacobian(lambda v: anp.tanh(anp.dot(A, v)) * v[:m])
    return {"autograd.jacobian": lambda: jac(x)}


def autograd_w6(X):
    import autograd
    import autograd.numpy as anp

    def batch_sum(Xb):  # rows are independent: the gradient of the sum is every row's gradient
        return anp.sum(100 * (Xb[:, 1:] - Xb[:, :-1] ** 2) ** 2 + (1 - Xb[:, :-1]) ** 2)
    g = autograd.grad(batch_sum)
    return {"autograd (grad of the batch sum)": lambda: g(X)}
