"""Linear regression trained by minibatch SGD, PyTorch-style: forward, backward, update under
no_grad, zero the gradients.  Checks the result against the least-squares solution."""
import numpy as np

import numbagrad as ng
from _progress import progress

rng = np.random.default_rng(0)
n, d = 2000, 5
X = rng.standard_normal((n, d))
w_true, b_true = rng.standard_normal(d), 0.7
y = X @ w_true + b_true + 0.1 * rng.standard_normal(n)

w = ng.zeros(d, requires_grad=True)
b = ng.zeros((), requires_grad=True)
lr, batch = 0.05, 64
steps = progress(600, "linear regression")
for step in steps:
    rows = rng.integers(0, n, batch)
    xb, yb = ng.tensor(X[rows]), ng.tensor(y[rows])
    loss = ((xb @ w + b - yb) ** 2).mean()
    loss.backward()
    with ng.no_grad():
        w -= lr * w.grad
        b -= lr * b.grad
    w.grad.zero_()
    b.grad.zero_()
    if step % 20 == 0:
        steps.set_postfix(loss=loss.item(), refresh=False)

A = np.column_stack([X, np.ones(n)])
exact = np.linalg.lstsq(A, y, rcond=None)[0]
fit = np.append(w.detach().numpy(), b.item())
print("SGD:          ", np.round(fit, 3))
print("least squares:", np.round(exact, 3))
assert np.abs(fit - exact).max() < 0.02, "SGD did not reach the least-squares solution"
print("linear regression OK")
