"""The code in the README and the documentation runs as written.

Every ```python block of README.md and docs/*.md is executed, in order, one namespace per file
(a block may use what an earlier block of its file defined), from a scratch directory, each block
from a file of its own there (so that ``@numba.njit(cache=True)`` finds a source file).  A block
that imports an optional extra that is not installed (dask) is skipped.  Blocks meant as
illustration only use another fence (```text).
"""
import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONAL = ("dask",)  # extras a block may need: skipped when not installed

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(path):
    """The ```python blocks of a Markdown file, with the line each starts on."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _FENCE.finditer(text)]


CASES = [(path, i) for path in FILES for i in range(len(blocks(path)))]
_state = {}  # path -> (namespace, index of the next block to run)


def _missing_extra(code):
    for name in OPTIONAL:
        if re.search(rf"^\s*(import|from)\s+{name}\b", code, re.M) and \
                importlib.util.find_spec(name) is None:
            return name
    return None


def _run(path, i, workdir):
    line, code = blocks(path)[i]
    namespace, _ = _state.setdefault(path, ({"__name__": "__docs__"}, 0))
    if _missing_extra(code):
        return False
    source = Path(workdir) / f"{path.stem.replace('-', '_')}_line{line}.py"
    source.write_text(code, encoding="utf-8")
    old = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(code, str(source), "exec"), namespace)
    finally:
        os.chdir(old)
    return True


def test_every_file_has_blocks_found():
    assert blocks(ROOT / "README.md"), "README.md has no ```python blocks"


@pytest.mark.parametrize("path,i", CASES, ids=[f"{p.name}-{i}" for p, i in CASES])
def test_block_runs(path, i, tmp_path):
    namespace, done = _state.setdefault(path, ({"__name__": "__docs__"}, 0))
    for j in range(done, i):  # blocks before this one, when run alone (-k)
        _run(path, j, tmp_path)
    _state[path] = (namespace, i + 1)
    extra = _missing_extra(blocks(path)[i][1])
    if extra:
        pytest.skip(f"needs the optional {extra!r} package")
    _run(path, i, tmp_path)


# The examples in the docstrings of the public API (the API reference renders them) run too.
PUBLIC_MODULES = ["numbagrad", "numbagrad.tensor", "numbagrad.functions", "numbagrad.grad_mode",
                  "numbagrad.autograd", "numbagrad.trace", "numbagrad.functional",
                  "numbagrad.gradcheck", "numbagrad.anomaly", "numbagrad.viz",
                  "numbagrad.interop", "numbagrad.dask"]
# examples known to fail, with why; their fix belongs to the module's owner
KNOWN_FAILING = {}


def _docstring_tests():
    import doctest
    finder = doctest.DocTestFinder()
    cases = []
    for name in PUBLIC_MODULES:
        if name == "numbagrad.dask" and importlib.util.find_spec("dask") is None:
            continue
        module = importlib.import_module(name)
        # the finder keeps objects defined in the module itself, so a function the package
        # re-exports is found once, in its own module
        cases += [test for test in finder.find(module, name) if test.examples]
    return sorted(cases, key=lambda t: t.name)


DOCTESTS = _docstring_tests()


@pytest.mark.parametrize("test", [
    pytest.param(t, marks=pytest.mark.xfail(reason=KNOWN_FAILING[t.name]))
    if t.name in KNOWN_FAILING else t for t in DOCTESTS], ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test):
    import doctest
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: None)
    result = runner.summarize(verbose=False)
    if result.failed:
        report = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=report.append)
        pytest.fail("".join(report), pytrace=False)


def test_api_reference_lists_the_public_namespace():
    import numbagrad as ng
    text = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    dtypes = {"float32", "float64", "int32", "int64", "bool", "bool_"}  # named in its prose
    missing = [name for name in ng.__all__
               if not re.search(rf"(:: |``|numbagrad\.){re.escape(name)}\b", text)]
    assert not [name for name in missing if name not in dtypes], missing
