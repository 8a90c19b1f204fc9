"""ng.viz: DOT text of the recorded graph, and an image when Graphviz is installed."""
import re
import shutil

import numpy as np
import pytest

import numbagrad as ng


def _nodes_and_edges(dot):
    nodes = dict(re.findall(r'^\s+(n\d+) \[label="([^"]*)"', dot, flags=re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+);", dot, flags=re.M)
    return nodes, edges


def test_notebook_graph():
    x = ng.randn(3, requires_grad=True)
    y = x + 2
    z = (y * y * 2).mean()
    dot = ng.viz.to_dot(z, names={"x": x})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = _nodes_and_edges(dot)
    labels = sorted(nodes.values())
    assert labels == sorted(["x\\n(3,)", "AddBackward0\\n(3,)", "MulBackward0\\n(3,)",
                             "MulBackward0\\n(3,)", "MeanBackward0\\n()"])
    by_label = {v.split("\\n")[0]: k for k, v in nodes.items()}
    # data flows from x through AddBackward0 (used twice by y * y) to the mean
    assert (by_label["x"], by_label["AddBackward0"]) in edges
    assert edges.count((by_label["AddBackward0"], min(
        k for k, v in nodes.items() if v.startswith("MulBackward0")))) == 2
    assert len(edges) == 5
    out_line = next(l for l in dot.splitlines() if l.strip().startswith(by_label["MeanBackward0"] + " "))
    assert "peripheries=2" in out_line
    x_line = next(l for l in dot.splitlines() if l.strip().startswith(by_label["x"] + " "))
    assert "#a8d0f0" in x_line  # the leaf that requires grad


def test_only_the_outputs_ancestors_and_constants():
    x = ng.tensor([1.0, -2.0], requires_grad=True)
    c = ng.tensor([3.0, 4.0])
    unrelated = (x * 5).sum()   # on the same tape, not an ancestor of z
    z = ng.where(x > 0, x * c, x).sum()
    nodes, edges = _nodes_and_edges(ng.viz.to_dot(z))
    names = [v.split("\\n")[0] for v in nodes.values()]
    assert "constant" in names and "leaf (requires_grad)" in names
    assert "Compare" in names and "WhereBackward0" in names
    assert names.count("SumBackward0") == 1 and unrelated.grad_fn.name() == "SumBackward0"
    dot = ng.viz.to_dot(z)
    assert re.search(r'label="Compare[^"]*", shape=box, style="rounded,dashed"', dot)


def test_traced_names_inputs():
    f = ng.trace(lambda w, b: ng.tanh(w @ np.ones(3) + b), np.ones(3), np.zeros(()))
    nodes, edges = _nodes_and_edges(ng.viz.to_dot(f))
    labels = list(nodes.values())
    assert "Input w\\n(3,)" in labels and "Input b\\n()" in labels
    assert any(l.startswith("TanhBackward0") for l in labels)
    assert edges and all(a in nodes and b in nodes for a, b in edges)


def test_errors():
    with pytest.raises(ValueError, match="no graph"):
        ng.viz.to_dot(ng.ones(2))
    with pytest.raises(TypeError, match="Tensor or a Traced"):
        ng.viz.to_dot(np.ones(2))


def test_render_svg(tmp_path):
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed "
                                           "(pip install 'numbagrad[viz]')")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed (apt install graphviz)")
    x = ng.ones(2, requires_grad=True)
    path = ng.viz.render((x * x).sum(), str(tmp_path / "graph.svg"))
    svg = open(path).read()
    assert "<svg" in svg and "MulBackward0" in svg and "SumBackward0" in svg
