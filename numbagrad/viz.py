"""A picture of the recorded graph: Graphviz DOT text of a tensor's (or a trace's) tape.

PyTorch builds a computational graph to trace the gradient back; numbagrad's graph is the tape,
and ``to_dot`` draws the part an output was computed from: one box per node, data flowing
from the inputs down to the output.

- an op shows its grad_fn name and its shape (``MulBackward0``, ``(3,)``);
- a leaf that requires grad is blue (``AccumulateGrad`` in PyTorch's terms), a constant grey;
- an op recorded without gradient (a comparison, a mask) is dashed: a replay recomputes it,
  backward does not go through it;
- the output has a double border.

>>> import numbagrad as ng
>>> x = ng.ones(3, requires_grad=True)
>>> print(ng.viz.to_dot((x * 2).sum(), names={"x": x}))   # doctest: +ELLIPSIS
digraph numbagrad {
...
  n0 [label="x\\n(3,)", ...];
...
  n2 [label="SumBackward0\\n()", ...];
  n0 -> n1;
  n1 -> n2;
}

``render(obj, "graph.svg")`` writes the picture (needs the ``graphviz`` Python package,
``pip install numbagrad[viz]``, and Graphviz's ``dot`` program).
"""
import os

import numpy as np

from .ops import LEAF
from .sweeps import REQUIRES_GRAD
from .tape import resolve
from .tensor import Tensor

__all__ = ["to_dot", "render"]

_OP = 'shape=box, style="rounded,filled", fillcolor="#eeeeee"'
_NO_GRAD_OP = 'shape=box, style="rounded,dashed"'
_INPUT = 'shape=box, style=filled, fillcolor="#a8d0f0"'
_CONSTANT = 'shape=box, style=filled, fillcolor="#dddddd", fontcolor="#555555"'


def _graph(obj):
    """(tape, output node, name of leaf node k or None) for a Tensor or a Traced."""
    if isinstance(obj, Tensor):
        if obj._tape is None:
            raise ValueError("this tensor was not recorded on a tape (a leaf, or computed "
                             "without grad): there is no graph to draw")
        tape, node = resolve(obj._tape, obj._node)
        return tape, node, None
    from .trace import Traced   # trace imports Numba drivers; viz alone should not need them
    if isinstance(obj, Traced):
        return obj.tape, obj._out_node, obj.tape.name
    raise TypeError(f"to_dot draws a Tensor or a Traced (ng.trace), got {type(obj).__name__}")


def _operands(tape, k):
    return [int(a) for a in tape.args[tape.arg_ptr[k]:tape.arg_ptr[k + 1]]]


def _shape(tape, k):
    return tuple(int(s) for s in tape.shapes[tape.shape_ptr[k]:tape.shape_ptr[k + 1]])


def _ancestors(tape, out):
    """The nodes ``out`` is computed from (operands always precede their op)."""
    used = np.zeros(out + 1, dtype=bool)
    used[out] = True
    for k in range(out, -1, -1):
        if used[k]:
            used[_operands(tape, k)] = True
    return np.flatnonzero(used).tolist()


def to_dot(obj, names=None):
    """Graphviz DOT text of the graph that ``obj`` (a recorded Tensor, or a ``Traced``) was
    computed from.  ``names`` maps a label to a leaf tensor (``{"w": w}``) to name that leaf;
    a trace names its inputs after the traced function's parameters.

    >>> import numpy as np, numbagrad as ng
    >>> f = ng.trace(lambda x: (x * x).sum(), np.ones(2))
    >>> "Input x" in ng.viz.to_dot(f) and "MulBackward0" in ng.viz.to_dot(f)
    True
    """
    tape, out, leaf_name = _graph(obj)
    by_id = {id(t): label for label, t in (names or {}).items()}
    tensor_names = {}
    for k, t, _ in getattr(tape, "leaves", ()):
        if id(t) in by_id:
            tensor_names[int(k)] = by_id[id(t)]
    lines = ["digraph numbagrad {", '  node [fontname="Helvetica", fontsize=11];',
             "  edge [arrowsize=0.7];"]
    nodes = _ancestors(tape, out)
    for k in nodes:
        grad = bool(tape.flags[k] & REQUIRES_GRAD)
        if tape.opcodes[k] == LEAF:
            name = tensor_names.get(k) or (leaf_name(k) if leaf_name else None)
            if name is None:
                name = "leaf (requires_grad)" if grad else "constant"
            style = _INPUT if grad else _CONSTANT
        else:
            name = tape.name(k)
            style = _OP if grad else _NO_GRAD_OP
        if k == out:
            style += ", peripheries=2"
        label = f"{name}\\n{_shape(tape, k)}".replace('"', '\\"')
        lines.append(f'  n{k} [label="{label}", {style}];')
    for k in nodes:
        for a in _operands(tape, k):
            lines.append(f"  n{a} -> n{k};")
    lines.append("}")
    return "\n".join(lines)


def render(obj, path, names=None):
    """Write a picture of ``to_dot(obj, names)`` to ``path``; the suffix picks the format
    (``.svg``, ``.png``, ``.pdf``).  Returns ``path``.

    Needs the ``graphviz`` Python package (``pip install numbagrad[viz]``) and Graphviz's
    ``dot`` program (``apt install graphviz``, ``brew install graphviz``).
    """
    try:
        import graphviz
    except ImportError:
        raise ImportError("ng.viz.render needs the graphviz Python package (pip install "
                          "'numbagrad[viz]') and Graphviz's dot program; ng.viz.to_dot(obj) "
                          "returns the DOT text without them") from None
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "svg"
    try:
        data = graphviz.pipe("dot", fmt, to_dot(obj, names).encode())
    except graphviz.ExecutableNotFound:
        raise RuntimeError("ng.viz.render: Graphviz's dot program is not on PATH (apt install "
                           "graphviz, brew install graphviz); ng.viz.to_dot(obj) returns the "
                           "DOT text without it") from None
    with open(path, "wb") as fh:
        fh.write(data)
    return path
