"""Standard normal numbers in compiled code, from the raw 64-bit output of a numpy bit generator.

Marsaglia and Tsang's ziggurat with 256 layers (the construction numpy uses for its float64 normals): one raw word
gives a normal in 99 % of cases (8 of its bits pick the layer, 1 the sign, 52 the abscissa); the rest take a few
more words.
Drawing the cell noise of a batch this way takes a fraction of the time of ``Generator.standard_normal``, which
calls the bit generator through a function pointer for every number. The words come from
``Generator.bit_generator.random_raw``, so a batch's numbers depend only on its seed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["ZIGGURAT", "standard_normal"]

_R = 3.6541528853610088  # start of the tail
_V = 4.92867323399e-3  # area of each layer


def _tables() -> np.ndarray:
    """``[3, 256]``: ki (acceptance bound, as float), wi (scale), fi (density at the layer's edge)."""
    m = 2.0**52
    k, w, f = np.zeros(256), np.zeros(256), np.zeros(256)
    dn = tn = _R
    q = _V / math.exp(-0.5 * dn * dn)
    k[0], k[1] = math.floor(dn / q * m), 0.0
    w[0], w[255] = q / m, dn / m
    f[0], f[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_V / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1] = math.floor(dn / tn * m)
        tn = dn
        f[i] = math.exp(-0.5 * dn * dn)
        w[i] = dn / m
    return np.stack([k, w, f])


#: The ziggurat's tables, ``[3, 256]`` float64.
ZIGGURAT = _tables()


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(word):  # pragma: no cover - compiled
    return (word >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _slow_normal(words, pos, table, idx, x, negative):  # pragma: no cover - compiled
    """The 1 % of draws outside the layer's rectangle: the tail (layer 0) or a wedge; (value, next pos)."""
    n = words.size
    while True:
        if idx == 0:  # the tail beyond _R
            while pos + 1 < n:
                xx = -(1.0 / _R) * math.log1p(-_uniform(words[pos]))
                yy = -math.log1p(-_uniform(words[pos + 1]))
                pos += 2
                if yy + yy > xx * xx:
                    return (-(_R + xx) if negative else _R + xx), pos
            return 0.0, -1
        if pos >= n:
            return 0.0, -1
        if (table[2, idx - 1] - table[2, idx]) * _uniform(words[pos]) + table[2, idx] < math.exp(-0.5 * x * x):
            return x, pos + 1
        pos += 1
        if pos >= n:
            return 0.0, -1
        # rejected: a new draw
        r = np.int64(words[pos] >> np.uint64(1))
        pos += 1
        idx = r & 0xFF
        r >>= 8
        negative = (r & 1) != 0
        rabs = np.float64((r >> 1) & 0x000FFFFFFFFFFFFF)
        x = -rabs * table[1, idx] if negative else rabs * table[1, idx]
        if rabs < table[0, idx]:
            return x, pos


@numba.njit(cache=True, nogil=True)
def _fill(out, words, done, table):  # pragma: no cover - compiled
    """Standard normals into ``out[done:]`` (flat) from ``words``; returns how many of ``out`` are filled."""
    pos, n_words = 0, words.size
    for i in range(done, out.size):
        if pos >= n_words:
            return i
        r = np.int64(words[pos] >> np.uint64(1))  # 63 bits: 8 pick the layer, 1 the sign, 52 the abscissa
        pos += 1
        idx = r & 0xFF
        r >>= 8
        negative = (r & 1) != 0
        rabs = np.float64((r >> 1) & 0x000FFFFFFFFFFFFF)
        x = -rabs * table[1, idx] if negative else rabs * table[1, idx]
        if rabs >= table[0, idx]:  # outside the layer's rectangle: 1 % of draws
            x, pos = _slow_normal(words, pos, table, idx, x, negative)
            if pos < 0:
                return i
        out[i] = x
    return out.size


def standard_normal(rng: np.random.Generator, shape: int | tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """Standard normal numbers of ``shape`` from ``rng``'s raw words (a normal takes 1.01 words on average)."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    done = 0
    while done < flat.size:  # one block almost always does
        words = rng.bit_generator.random_raw(int(1.02 * (flat.size - done)) + 4096)
        done = _fill(flat, words, done, ZIGGURAT)
    return out
