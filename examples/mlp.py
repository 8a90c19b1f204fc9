"""A two-layer perceptron classifying two interleaved half-moons (synthetic data), trained by
full-batch gradient descent with momentum.  The parameters are plain leaf tensors; the loss is
cross-entropy through log_softmax.  Checks the held-out accuracy."""
import numpy as np

import numbagrad as ng
from _progress import progress


def moons(n, rng, noise=0.15):
    t = rng.random(n) * np.pi
    label = rng.integers(0, 2, n)
    x = np.where(label, 1 - np.cos(t), np.cos(t))
    y = np.where(label, 0.5 - np.sin(t), np.sin(t))
    return np.column_stack([x, y]) + noise * rng.standard_normal((n, 2)), label


rng = np.random.default_rng(2)
X_train, y_train = moons(600, rng)
X_test, y_test = moons(400, rng)
X, onehot = ng.tensor(X_train), ng.tensor(np.eye(2)[y_train])

hidden = 32
params = {
    "W1": ng.tensor(rng.standard_normal((2, hidden)) / np.sqrt(2), requires_grad=True),
    "b1": ng.zeros(hidden, requires_grad=True),
    "W2": ng.tensor(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden), requires_grad=True),
    "b2": ng.zeros(hidden, requires_grad=True),
    "W3": ng.tensor(rng.standard_normal((hidden, 2)) / np.sqrt(hidden), requires_grad=True),
    "b3": ng.zeros(2, requires_grad=True),
}


def logits(p, x):
    h = ng.tanh(x @ p["W1"] + p["b1"])
    h = ng.tanh(h @ p["W2"] + p["b2"])
    return h @ p["W3"] + p["b3"]


velocity = {k: np.zeros(p.shape) for k, p in params.items()}
lr, momentum = 0.1, 0.9
steps = progress(300, "MLP")
for step in steps:
    loss = -(ng.log_softmax(logits(params, X), 1) * onehot).sum(1).mean()
    loss.backward()
    with ng.no_grad():
        for k, p in params.items():
            velocity[k] = momentum * velocity[k] + p.grad.numpy()
            p -= lr * ng.tensor(velocity[k])
            p.grad = None
    if step % 10 == 0:
        steps.set_postfix(loss=loss.item(), refresh=False)

with ng.no_grad():
    predicted = logits(params, ng.tensor(X_test)).numpy().argmax(1)
accuracy = np.mean(predicted == y_test)
print(f"final training loss {loss.item():.4f}, test accuracy {accuracy:.3f}")
assert accuracy > 0.95, "the MLP did not learn the moons"
print("MLP OK")
