"""Tapes from elsewhere are checked before a sweep sees them: corruptions raise ValueError."""
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import ops
from numbagrad.validate import validate


def recorded():
    x = ng.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = ng.tensor(np.ones((3, 2)), requires_grad=True)
    y = ng.log_softmax(ng.tanh(x @ w) + ng.cat([x[:, :1], x[:, 1:2]], 1), 1).max()
    t = y._tape
    return t.arrays(), sum(c.size for c in t.chunks), len(t.chunks)


def test_recorded_tapes_pass():
    arrays, n_values, n_chunks = recorded()
    assert validate(arrays, n_values, n_chunks) is not None


def corrupt(field, fn):
    arrays, n_values, n_chunks = recorded()
    col = getattr(arrays, field).copy()
    fn(col)
    return arrays._replace(**{field: col}), n_values, n_chunks


@pytest.mark.parametrize("field, fn, match", [
    ("opcodes", lambda c: c.__setitem__(3, 99), "unknown opcode"),
    ("opcodes", lambda c: c.__setitem__(2, -1), "unknown opcode"),
    ("args", lambda c: c.__setitem__(0, 50), "not an earlier node"),
    ("args", lambda c: c.__setitem__(-1, -3), "not an earlier node"),
    ("val_off", lambda c: c.__setitem__(2, 10**9), "outside the buffer"),
    ("val_off", lambda c: c.__setitem__(2, -5), "outside the buffer"),
    ("val_chunk", lambda c: c.__setitem__(2, 7), "chunk"),
    ("sizes", lambda c: c.__setitem__(2, 1000), "size does not match"),
    ("shapes", lambda c: c.__setitem__(0, 1 << 60), "too large"),
    ("iparams", lambda c: c.__setitem__(0, 12345), "parameters|out of range|sizes"),
    ("name_ids", lambda c: c.__setitem__(1, 999), "unknown name"),
    ("flags", lambda c: c.__setitem__(1, 64), "flags"),
])
def test_corruptions_raise(field, fn, match):
    with pytest.raises(ValueError, match=match):
        validate(*corrupt(field, fn))


def test_a_slice_kept_as_one_position_is_checked_against_its_operand():
    x = ng.tensor(np.arange(10.0), requires_grad=True)
    y = (x[3:] * 2).sum()
    t = y._tape
    arrays, n_values, n_chunks = t.arrays(), sum(c.size for c in t.chunks), len(t.chunks)
    g = int(np.flatnonzero(arrays.opcodes == ops.GATHER)[0])
    at = arrays.iparam_ptr[g]
    assert arrays.iparam_ptr[g + 1] - at == 1 and arrays.iparams[at] == 3  # 7 elements from 3
    assert validate(arrays, n_values, n_chunks) is not None
    for bad in (4, -1, 1 << 62):  # the run would read outside x
        col = arrays.iparams.copy()
        col[at] = bad
        with pytest.raises(ValueError, match="out of range"):
            validate(arrays._replace(iparams=col), n_values, n_chunks)


def test_truncated_and_mistyped_columns():
    arrays, n_values, n_chunks = recorded()
    with pytest.raises(ValueError, match="entries for"):
        validate(arrays._replace(sizes=arrays.sizes[:-1]), n_values, n_chunks)
    with pytest.raises(ValueError, match="pointer array"):
        validate(arrays._replace(arg_ptr=arrays.arg_ptr[::-1].copy()), n_values, n_chunks)
    with pytest.raises(ValueError, match="dtype"):
        validate(arrays._replace(opcodes=arrays.opcodes.astype(np.float32)), n_values, n_chunks)
    with pytest.raises(ValueError, match="missing column"):
        validate({"opcodes": arrays.opcodes}, n_values)


def test_random_mutations_never_crash():
    # every mutation ends in a clean ValueError or a tape that passes every check
    rng = np.random.default_rng(0)
    arrays, n_values, n_chunks = recorded()
    fields = [f for f in arrays._fields]
    for _ in range(300):
        f = fields[rng.integers(len(fields))]
        col = getattr(arrays, f).copy()
        if len(col) == 0:
            continue
        i = rng.integers(len(col))
        big = 1 << 40 if col.dtype.itemsize == 8 else 100
        col[i] = rng.choice([-1, 0, 1, 2, 7, big, int(col[i]) + 1, int(col[i]) - 1])
        try:
            validate(arrays._replace(**{f: col}), n_values, n_chunks)
        except ValueError:
            pass
