"""The top-level namespace holds the public API only: internal modules are reachable by their
module paths, not listed as ``ng.<name>``."""
import importlib
import pkgutil
import subprocess
import sys
import types

import numbagrad as ng

# the package's modules that are public as attributes of ``numbagrad``
PUBLIC_MODULES = {"autograd", "functional", "viz"}


def _submodules():
    return {m.name for m in pkgutil.iter_modules(ng.__path__)}


def test_all_names_exist():
    assert len(ng.__all__) == len(set(ng.__all__))
    for name in ng.__all__:
        assert hasattr(ng, name), name


def test_dir_lists_no_internal_module():
    internal = _submodules() - PUBLIC_MODULES
    listed = set(dir(ng)) | set(ng.__all__)
    for name in listed:
        if name in internal:
            # a name that is also a module's is public only as the function or class it binds
            assert not isinstance(getattr(ng, name), types.ModuleType), name
    assert set(dir(ng)) - set(ng.__all__) <= {n for n in dir(ng) if n.startswith("__")}
    for name in ("kernels", "sweeps", "lane", "pool", "bulk", "tape", "ops", "fusion", "codegen"):
        assert name not in dir(ng)
        assert name not in vars(ng), name


def test_internal_modules_stay_reachable_by_path():
    for name in ("kernels", "sweeps", "lane", "pool", "bulk", "ops", "fusion", "codegen"):
        module = importlib.import_module(f"numbagrad.{name}")
        assert module.__name__ == f"numbagrad.{name}"
        exec(f"import numbagrad.{name}\nassert numbagrad.{name} is module", {"module": module})
        exec(f"from numbagrad import {name} as m\nassert m is module", {"module": module})


def test_public_modules_are_attributes():
    for name in PUBLIC_MODULES:
        assert isinstance(getattr(ng, name), types.ModuleType)
        assert name in ng.__all__


def test_fresh_import_namespace():
    # in a fresh interpreter too (nothing imported before numbagrad)
    code = ("import types, numbagrad as ng; "
            "print(sorted(n for n in dir(ng) if isinstance(getattr(ng, n), types.ModuleType)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == sorted(PUBLIC_MODULES)
