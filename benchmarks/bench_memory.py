"""Peak memory (``peakmem_``) of the large cases: W1 at n = 10^7, W3 at n = 10^6, a deep chain.

asv reports the process's peak resident size, inputs included (W1's x is 80 MB in float64).
"""
import numbagrad as ng
from benchmarks import workloads as W


class MemoryW1:
    params = ["float64", "float32"]
    param_names = ["dtype"]
    timeout = 600

    def setup(self, dtype):
        self.x = W.w1_data(10_000_000, dtype)
        self.f = ng.trace(W.notebook, self.x)

    def peakmem_eager_record_backward(self, dtype):
        W.eager_w1(self.x)

    def peakmem_replay_grad(self, dtype):
        self.f.grad(self.x)


class MemoryW3:
    timeout = 600

    def setup(self):
        self.x = W.w3_data(1_000_000)
        self.f = ng.trace(W.rosenbrock, self.x)

    def peakmem_eager_record_backward(self):
        W.eager_w3(self.x)

    def peakmem_replay_grad(self):
        self.f.grad(self.x)


class MemoryEagerChain:
    """A deep eager graph: 40 steps of ``y = sin(y) * 1.01`` on 10^6 elements (8 MB a step).

    Values take 40 x 8 MB; adjoints share slots once swept (``autograd.share_adjoints``), so
    the backward adds about 16 MB instead of another 40 x 8 MB.
    """
    timeout = 600

    def setup(self):
        self.x = W.w3_data(1_000_000)

    def peakmem_eager_record_backward(self):
        x = ng.tensor(self.x, requires_grad=True)
        y = x
        for _ in range(40):
            y = ng.sin(y) * 1.01
        y.sum().backward()
