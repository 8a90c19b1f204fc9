"""Whether ops are recorded: a per-thread switch, as in PyTorch."""
import functools
import threading


class _State(threading.local):
    enabled = True  # each thread starts with grad on; a plain attribute read is the fast path


_state = _State()


def is_grad_enabled():
    """True when ops on tensors that require grad are being recorded (per thread).

    >>> import numbagrad as ng
    >>> with ng.no_grad():
    ...     ng.is_grad_enabled()
    False
    """
    return _state.enabled


# Threads whose grad mode is off now.  While it is 0 grad is on in every thread, and the scalar
# lane (lane.py) tests that with one list read, where the thread-local costs 45 ns an op.  A
# thread that ends with grad off leaves it counted: the lane then reads the thread-local too.
_off = [0]
_off_lock = threading.Lock()


def _set(flag):
    flag = bool(flag)
    if flag is not _state.enabled:
        with _off_lock:
            _off[0] += -1 if flag else 1
    _state.enabled = flag


class _GradMode:
    """A context manager and decorator that sets grad mode and restores it after."""

    _flag = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set(self._flag)
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Do not record: results of ops need no grad.  The SGD step lives here.

    >>> import numbagrad as ng
    >>> w = ng.ones(3, requires_grad=True)
    >>> (w * 2).sum().backward()
    >>> with ng.no_grad():
    ...     w -= 0.1 * w.grad
    >>> w
    tensor([0.8000, 0.8000, 0.8000], requires_grad=True)
    """

    _flag = False


class enable_grad(_GradMode):
    """Record again inside a ``no_grad`` block (or as a decorator)."""

    _flag = True


class set_grad_enabled(_GradMode):
    """Set grad mode now; as a context manager, restore the previous mode on exit.

    >>> import numbagrad as ng
    >>> with ng.set_grad_enabled(False):
    ...     ng.is_grad_enabled()
    False
    """

    def __init__(self, mode):
        if not isinstance(mode, (bool, int)):  # PyTorch accepts bools only; 0/1 are harmless
            raise TypeError(f"enabled must be a bool (got {type(mode).__name__})")
        self._prev = is_grad_enabled()
        self._flag = bool(mode)
        _set(mode)

    def __enter__(self):
        return self

    def __call__(self, fn):
        _set(self._prev)
        flag = self._flag

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(flag):
                return fn(*args, **kwargs)
        return wrapper
