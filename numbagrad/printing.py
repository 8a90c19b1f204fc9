"""Tensor repr, digit for digit as PyTorch prints (precision 4, 80 columns, summarised past 1000)."""
import math

import numpy as np

PRECISION, THRESHOLD, EDGEITEMS, LINEWIDTH = 4, 1000, 3, 80


class _Formatter:
    def __init__(self, values, floating):
        self.floating = floating
        self.int_mode, self.sci_mode, self.max_width = True, False, 1
        values = np.asarray(values).ravel()
        if not floating:
            for v in values.tolist():
                self.max_width = max(self.max_width, len(str(v)))
            return
        finite = values[np.isfinite(values) & (values != 0)].astype(np.float64)
        if finite.size == 0:
            return
        mag = np.abs(finite)
        lo, hi = mag.min(), mag.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        wide = hi / lo > 1000.0 or hi > 1.0e8
        if self.int_mode:
            self.sci_mode = wide
            fmt = (lambda v: f"{v:.{PRECISION}e}") if wide else (lambda v: f"{v:.0f}.")
        else:
            self.sci_mode = wide or lo < 1.0e-4
            fmt = (lambda v: f"{v:.{PRECISION}e}") if self.sci_mode else (lambda v: f"{v:.{PRECISION}f}")
        for v in finite.tolist():
            self.max_width = max(self.max_width, len(fmt(v)))

    def format(self, v):
        if not self.floating:
            s = str(v)
        elif self.sci_mode:
            s = f"{v:{self.max_width}.{PRECISION}e}"
        elif self.int_mode:
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{PRECISION}f}"
        return (self.max_width - len(s)) * " " + s


def _summary(a):
    """The elements that a summarised print shows (edge items of every axis)."""
    if a.ndim == 0:
        return a.reshape(1)
    if a.shape[0] > 2 * EDGEITEMS:
        parts = [a[:EDGEITEMS], a[-EDGEITEMS:]]
    else:
        parts = [a]
    if a.ndim == 1:
        return np.concatenate(parts)
    return np.concatenate([_summary(row) for p in parts for row in p])


def _body(a, indent, summarize, fmt):
    if a.ndim == 0:
        return fmt.format(a.item())
    if a.ndim == 1:
        per_line = max(1, int(math.floor((LINEWIDTH - indent) / (fmt.max_width + 2))))
        if summarize and a.shape[0] > 2 * EDGEITEMS:
            data = ([fmt.format(v) for v in a[:EDGEITEMS].tolist()] + [" ..."]
                    + [fmt.format(v) for v in a[-EDGEITEMS:].tolist()])
        else:
            data = [fmt.format(v) for v in a.tolist()]
        lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"
    if summarize and a.shape[0] > 2 * EDGEITEMS:
        rows = ([_body(a[i], indent + 1, summarize, fmt) for i in range(EDGEITEMS)] + ["..."]
                + [_body(a[i], indent + 1, summarize, fmt)
                   for i in range(a.shape[0] - EDGEITEMS, a.shape[0])])
    else:
        rows = [_body(a[i], indent + 1, summarize, fmt) for i in range(a.shape[0])]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def tensor_repr(a, suffixes, prefix="tensor("):
    """``tensor([...], suffix, ...)`` for the array ``a``."""
    indent = len(prefix)
    floating = a.dtype.kind == "f"
    if a.size == 0:
        body = "[]"
        if a.ndim != 1:
            suffixes = [f"size={tuple(a.shape)}"] + suffixes
    else:
        summarize = a.size > THRESHOLD
        shown = _summary(a) if summarize else a
        if a.dtype.kind == "b":
            fmt = _Formatter(shown, False)
            body = _body(a, indent, summarize, fmt)
        else:
            body = _body(a, indent, summarize, _Formatter(shown, floating))
    out = [prefix + body]
    last = len(out[0]) - out[0].rfind("\n") + 1
    for s in suffixes:
        if last + len(s) + 2 > LINEWIDTH:
            out.append(",\n" + " " * indent + s)
            last = indent + len(s)
        else:
            out.append(", " + s)
            last += len(s) + 2
    out.append(")")
    return "".join(out)
