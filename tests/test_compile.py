"""Compile cost: no compiled function is compiled twice for the same types.

Numba compiles a callee once for every *literal* int a compiled caller passes it (a constant
``0``, ``-1`` or a module-level Python int such as a threshold) and once for every defaulted
argument left out; each such copy of a sweep recompiles every kernel it calls.  Without
them a cold test suite took a third less time (benchmarks/NOTES.md, "One compile per sweep
and kernel per dtype").  This
test reads every call from one of numbagrad's compiled functions to another and fails on such
an argument; the opcode (a parameter named ``op``, made literal on purpose with
``numba.literally``) and bools (switches meant to fold) are exempt.
"""
import ast
import importlib
import inspect
import pkgutil
import textwrap

import numpy as np
from numba.core.dispatcher import Dispatcher

import numbagrad


def _modules():
    for info in pkgutil.iter_modules(numbagrad.__path__):
        if info.name not in ("__main__", "viz", "dask"):  # optional dependencies
            yield importlib.import_module(f"numbagrad.{info.name}")


def _functions():
    """Every function defined in numbagrad (methods included), compiled or not."""
    seen = set()
    for mod in _modules():
        found = list(vars(mod).items())
        for name, obj in list(found):
            if inspect.isclass(obj) and obj.__module__ == mod.__name__:
                found += [(f"{name}.{k}", v) for k, v in vars(obj).items()]
        for name, obj in found:
            fn = obj.py_func if isinstance(obj, Dispatcher) else obj
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__ and id(fn) not in seen:
                seen.add(id(fn))
                yield obj


def _parsed(fn):
    """(syntax tree, names it can see) of a Python function."""
    namespace = {**fn.__globals__, **inspect.getclosurevars(fn).nonlocals}
    return ast.parse(textwrap.dedent(inspect.getsource(fn))), namespace


def _resolve(node, namespace):
    """The object a call's ``func`` names (``f`` or ``K.f``), or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _literal_int(node, namespace):
    """The int a compiled caller would pass as a Numba literal, or None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal_int(node.operand, namespace)
        return -value if value is not None else None
    if isinstance(node, ast.Constant):
        value = node.value
    elif isinstance(node, ast.Name) and node.id in namespace:
        value = namespace[node.id]
    else:
        return None
    return value if type(value) is int else None  # not bool, not np.int64


def _inlined(d):
    return d.targetoptions.get("inline") == "always"


def _forwards(callee, pname):
    """Whether an inline callee passes its parameter ``pname`` on to a compiled function (an
    inline callee is typed as part of its caller: a literal only costs a compile there)."""
    tree, namespace = _parsed(callee.py_func)
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        inner = _resolve(call.func, namespace)
        if not isinstance(inner, Dispatcher):
            continue
        params = list(inspect.signature(inner.py_func).parameters)
        for k, a in [*enumerate(call.args), *((kw.arg, kw.value) for kw in call.keywords)]:
            if isinstance(a, ast.Name) and a.id == pname:
                name = params[k] if isinstance(k, int) else k
                if name != "op" and (not _inlined(inner) or _forwards(inner, name)):
                    return True
    return False


def _set_to_literals(tree, namespace):
    """Names a function sets to a literal int somewhere (``i = 0``, ``pos, top = 0, -1``, or
    ``hi = top`` of such a name).  Numba types a call's arguments before a loop's later
    assignments reach them: a loop counter started at 0 compiles its callee for Literal[int](0)
    and then for int64."""
    pairs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs += zip(target.elts, node.value.elts)
                else:
                    pairs.append((target, node.value))
    names = set()
    while True:
        more = {t.id for t, v in pairs if isinstance(t, ast.Name) and t.id not in names and (
            _literal_int(v, namespace) is not None or isinstance(v, ast.Name) and v.id in names)}
        if not more:
            return names
        names |= more


def _bad_calls(caller, compiled):
    """Calls in ``caller`` to a numbagrad Dispatcher that would compile a copy of it."""
    fn = caller.py_func if compiled else caller
    tree, namespace = _parsed(fn)
    literal_names = _set_to_literals(tree, namespace)
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        callee = _resolve(call.func, namespace)
        if not isinstance(callee, Dispatcher) or not callee.py_func.__module__.startswith(
                "numbagrad"):
            continue
        params = list(inspect.signature(callee.py_func).parameters.values())
        where = f"{fn.__module__}.{fn.__qualname__} line {call.lineno} calls " \
                f"{callee.py_func.__qualname__}"
        given = len(call.args) + len(call.keywords)
        if given < len(params):
            yield f"{where} without {[p.name for p in params[given:]]} (their defaults)"
        if not compiled:
            continue
        named = [(params[k].name, a) for k, a in enumerate(call.args) if k < len(params)]
        named += [(kw.arg, kw.value) for kw in call.keywords]
        for pname, a in named:
            value = _literal_int(a, namespace)
            what = f"the literal int {value}"
            if value is None and isinstance(a, ast.Name) and a.id in literal_names:
                what = f"{a.id}, set to a literal int,"
            elif value is None:
                continue
            if pname != "op" and (not _inlined(callee) or _forwards(callee, pname)):
                yield f"{where} with {what} for {pname}"


def test_no_compiled_function_is_called_with_a_literal_int_or_a_left_out_default():
    bad = []
    for obj in _functions():
        bad += _bad_calls(obj, isinstance(obj, Dispatcher))
    assert not bad, "\n".join(bad)


def test_the_check_finds_each_pattern(monkeypatch):
    """The check above can fail: it flags every pattern in a function written to have them."""
    from numba import njit
    from numbagrad import sweeps

    src = textwrap.dedent("""
        def caller(t, chunks, adj, adj_off, n):
            sweeps.reverse_sweep(t, chunks, adj, adj_off, -1, PAR, np.int64(0))
            sweeps.forward_sweep(t, chunks, np.int64(0), 5)
            i = 0
            while i < n:
                sweeps.forward_sweep(t, chunks, i, n, sweeps.SERIAL)
                i += 1
        """)
    namespace = {"sweeps": sweeps, "np": np, "PAR": 1 << 17}
    exec(compile(src, "<caller>", "exec"), namespace)
    caller = njit(namespace["caller"])
    caller.py_func.__module__ = "numbagrad.fake"
    getsource = inspect.getsource
    monkeypatch.setattr(inspect, "getsource",
                        lambda f: src if f is caller.py_func else getsource(f))
    found = list(_bad_calls(caller, True))
    expected = ["the literal int -1 for top", "the literal int 131072 for par_min",
                "forward_sweep without ['par_min']", "the literal int 5 for stop",
                "i, set to a literal int, for start"]
    assert all(any(e in b for b in found) for e in expected), found
    assert len(found) == len(expected), found  # np.int64(0), n and sweeps.SERIAL pass


def test_parallel_functions_turn_only_their_pranges_into_threads():
    # parallel=True also makes array expressions (np.zeros(k), .sum()) parallel regions, each a
    # thread-pool launch even where a kernel takes its serial branch: a replayed gradient of 3
    # elements paid 44 us against 20.  Every parallel function must use ops.PRANGE_ONLY, and it
    # must still say "prange only" after Numba has compiled with it (a dict is emptied by Numba)
    from numba import njit, prange
    from numba.core.cpu import ParallelOptions

    from numbagrad.ops import PRANGE_ONLY

    parallel = []
    for fn in _functions():
        if isinstance(fn, Dispatcher) and fn.targetoptions.get("parallel"):
            parallel.append(fn)
            assert fn.targetoptions["parallel"] is PRANGE_ONLY, fn.py_func.__qualname__
    assert len(parallel) >= 20

    def make():
        @njit(parallel=PRANGE_ONLY)
        def f(x, big):
            part = np.zeros(4)
            if big:
                for i in prange(4):
                    part[i] = x[i]
            return part.sum()
        return f

    for f in (make(), make()):  # the second compiles with options the first has used
        assert f(np.arange(4.0), True) == 6.0 and f(np.arange(4.0), False) == 0.0
        # the prange alone, not np.zeros and .sum() as well
        assert f.overloads[f.signatures[0]].metadata["parfor_diagnostics"].count_parfors() == 1
    options = ParallelOptions(PRANGE_ONLY)
    assert options.prange and not (options.numpy or options.reduction or options.setitem
                                   or options.fusion or options.comprehension)
