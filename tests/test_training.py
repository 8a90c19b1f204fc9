"""Small training loops converge where the math says they must."""
import numpy as np

import numbagrad as ng


def test_linear_regression_reaches_least_squares(rng):
    X = rng.standard_normal((200, 3))
    true_w, true_b = np.array([1.5, -2.0, 0.5]), 0.7
    y = X @ true_w + true_b + 0.1 * rng.standard_normal(200)
    Xt, yt = ng.tensor(X), ng.tensor(y)
    w = ng.zeros(3, requires_grad=True)
    b = ng.zeros(1, requires_grad=True)
    for _ in range(500):
        loss = ((Xt @ w + b - yt) ** 2).mean()
        loss.backward()
        with ng.no_grad():
            w -= 0.1 * w.grad
            b -= 0.1 * b.grad
        w.grad.zero_()
        b.grad.zero_()
    A = np.hstack([X, np.ones((200, 1))])
    lstsq = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(w.detach().numpy(), lstsq[:3], atol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), lstsq[3:], atol=1e-6)


def test_logistic_mlp_loss_decreases(rng):
    X = ng.tensor(rng.standard_normal((64, 4)))
    labels = (X.numpy()[:, 0] + X.numpy()[:, 1] > 0).astype(np.int64)
    W1 = ng.tensor(0.5 * rng.standard_normal((4, 8)), requires_grad=True)
    W2 = ng.tensor(0.5 * rng.standard_normal((8, 2)), requires_grad=True)
    losses = []
    for _ in range(150):
        logp = ng.log_softmax(ng.tanh(X @ W1) @ W2, 1)
        loss = -logp[np.arange(64), labels].mean()
        loss.backward()
        with ng.no_grad():
            for p in (W1, W2):
                p -= 0.5 * p.grad
                p.grad = None
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
