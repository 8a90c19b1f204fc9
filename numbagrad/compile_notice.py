"""One line on stderr when a first use compiles for more than a moment.

Numba compiles numbagrad's kernels at their first use on a machine and caches them on disk;
a cold first gradient can take a while.  Rather than sit silent, the first compile of a
process that lasts longer than ``DELAY`` seconds prints one line saying what is being
compiled.  ``NUMBAGRAD_COMPILE_NOTICE=0`` (or :func:`set_enabled`) turns it off.
"""
import os
import sys
import threading

from numba.core import event

DELAY = 2.0
_state = {"enabled": os.environ.get("NUMBAGRAD_COMPILE_NOTICE", "1") not in ("0", "", "no"),
          "shown": False, "depth": 0, "timer": None, "what": None}
_lock = threading.Lock()


def set_enabled(flag):
    """Turn the compile notice on or off; returns the previous setting.

    >>> from numbagrad import compile_notice
    >>> previous = compile_notice.set_enabled(False)
    >>> _ = compile_notice.set_enabled(previous)
    """
    previous, _state["enabled"] = _state["enabled"], bool(flag)
    return previous


def _show():
    with _lock:
        if _state["shown"] or not _state["enabled"] or _state["depth"] == 0:
            return
        _state["shown"] = True
        what = _state["what"] or "kernels"
    print(f"numbagrad: compiling {what} for first use; this happens once per machine (the "
          "result is cached on disk; `python -m numbagrad compile` does it ahead of time, "
          "NUMBAGRAD_COMPILE_NOTICE=0 hides this line)", file=sys.stderr, flush=True)


def _start(what):
    with _lock:
        _state["depth"] += 1
        if _state["depth"] == 1 and not _state["shown"] and _state["enabled"]:
            _state["what"] = what
            timer = threading.Timer(DELAY, _show)
            timer.daemon = True
            _state["timer"] = timer
            timer.start()


def _end():
    with _lock:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["timer"] is not None:
            _state["timer"].cancel()
            _state["timer"] = None


class compiling:
    """Context manager around a compile of ours, naming what it compiles in the notice."""

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        _start(self.what)

    def __exit__(self, *exc):
        _end()


def _ours(ev):
    disp = ev.data.get("dispatcher")
    mod = getattr(getattr(disp, "py_func", None), "__module__", None) or ""
    return disp if mod.startswith("numbagrad") else None


class _Listener(event.Listener):
    """Numba's own compile events for numbagrad's functions (sweeps, entry points)."""

    def on_start(self, ev):
        disp = _ours(ev)
        if disp is not None:
            _start(disp.py_func.__qualname__)

    def on_end(self, ev):
        if _ours(ev) is not None:
            _end()


event.register("numba:compile", _Listener())
