"""Logistic regression on synthetic data, trained by minibatch SGD with momentum.  Checks the
test accuracy, and the training loss against the exact optimum found by Newton's method."""
import numpy as np
import scipy.optimize

import numbagrad as ng
from _progress import progress

rng = np.random.default_rng(1)
n, d = 4000, 6
X = rng.standard_normal((n, d))
w_true = rng.standard_normal(d) * 2
y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w_true - 0.5)))).astype(np.float64)
train, test = slice(0, 3000), slice(3000, None)


def nll(w, b, xb, yb):
    """Mean negative log-likelihood; softplus(z) = log(e^0 + e^z) as a logsumexp never
    overflows and stays smooth at z = 0 (relu and abs have a kink there)."""
    z = xb @ w + b
    return (ng.logsumexp(ng.stack([ng.zeros_like(z), z]), 0) - yb * z).mean()


w = ng.zeros(d, requires_grad=True)
b = ng.zeros((), requires_grad=True)
velocity = [np.zeros(d), np.zeros(())]
lr, momentum, batch = 0.2, 0.9, 100
steps = progress(800, "logistic regression")
for step in steps:
    rows = rng.integers(0, 3000, batch)
    loss = nll(w, b, ng.tensor(X[rows]), ng.tensor(y[rows]))
    loss.backward()
    with ng.no_grad():
        for p, v in zip((w, b), velocity):
            v *= momentum
            v += p.grad.numpy()
            p -= lr * (1 - momentum) * ng.tensor(v)
            p.grad = None
    if step % 20 == 0:
        steps.set_postfix(loss=loss.item(), refresh=False)

Xtr, ytr = ng.tensor(X[train]), ng.tensor(y[train])
final = nll(w, b, Xtr, ytr).item()
# the exact optimum: Newton-CG with the tape's Hessian-vector products
def full(theta):
    return nll(theta[:d], theta[d], Xtr, ytr)
best = scipy.optimize.minimize(ng.value_and_grad(full), np.zeros(d + 1), jac=True,
                               hessp=ng.functional.hessp(full), method="Newton-CG")
with ng.no_grad():
    p = 1 / (1 + np.exp(-(X[test] @ w.detach().numpy() + b.item())))
accuracy = np.mean((p > 0.5) == (y[test] > 0.5))
print(f"training loss {final:.4f} (optimum {best.fun:.4f}), test accuracy {accuracy:.3f}")
assert final - best.fun < 5e-3, "SGD is far from the optimum"
assert accuracy > 0.8
print("logistic regression OK")
