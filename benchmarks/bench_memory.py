"""Peak memory (``peakmem_``) of the large cases: W1 at n = 10^7 and W3 at n = 10^6.

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
