"""The seed notebook ("Gradient with AutoGrad") as a script: PyTorch's autograd calls with
numbagrad in place of torch, and a picture of the graph that backward() walks.

    python examples/walkthrough.py                      # prints each step
    python examples/walkthrough.py --svg graph.svg      # also draws z's graph (needs Graphviz)
"""
import argparse

import numpy as np

import numbagrad as ng

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--svg", help="write a picture of z's graph here (needs Graphviz)")
args = parser.parse_args()
ng.manual_seed(0)

# a tensor that requires grad: every op on it is recorded on the tape
x = ng.randn(3, requires_grad=True)
y = x + 2
z = (y * y * 2).mean()
print("x =", x)
print("y =", y)          # grad_fn=<AddBackward0>: y was recorded
print("z =", z)          # grad_fn=<MeanBackward0>

# the graph backward() walks, as Graphviz DOT text (render it with ng.viz.render)
dot = ng.viz.to_dot(z, names={"x": x})
print(dot)
if args.svg:
    print("wrote", ng.viz.render(z, args.svg, names={"x": x}))

z.backward()             # one Numba sweep over the tape
print("dz/dx =", x.grad)
np.testing.assert_allclose(x.grad.numpy(), 4 * (x.detach().numpy() + 2) / 3)

# backward from a tensor that does not require grad is an error, as in PyTorch
try:
    (ng.randn(4) * 2).mean().backward()
except RuntimeError as e:
    print("RuntimeError:", e)

# a non-scalar output needs a vector: backward(v) computes the vector-Jacobian product J^T v
x = ng.randn(4, requires_grad=True)
z = (x + 2) * (x + 2) * 2
v = ng.tensor([0.1, 1.0, 0.01, 1.01])
z.backward(v)
print("J^T v =", x.grad)
np.testing.assert_allclose(x.grad.numpy(), 4 * (x.detach().numpy() + 2) * v.numpy())

# no_grad: computations that are not recorded (parameter updates, evaluation)
with ng.no_grad():
    print("recorded under no_grad:", (x * 2).requires_grad)

# NumPy works on tensors and records like the ng functions
w = ng.tensor([0.5, -1.0, 2.0, 0.0], requires_grad=True)
loss = np.sum(np.tanh(np.asarray([1.0, 2.0, 3.0, 4.0]) * w) ** 2)
loss.backward()
print("loss =", loss, " grad =", w.grad)
print("walkthrough OK")
