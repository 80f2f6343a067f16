"""Compiled kernels of the fixed-point emulator (:mod:`calohls.quant.emulate`): exact int64 and float64 paths.

Every kernel is serial and releases the GIL: the emulator runs chunks of samples on its own threads, so no kernel
pays for starting a thread team (which costs milliseconds per call on a loaded machine).

Two representations of the same mantissas:

* **int64** (``_cast`` and the kernels using it): exact while every intermediate value is below 2**62; the
  reference semantics of an ``ap_fixed`` assignment.
* **float64** (``_fcast`` and the ``_f*`` kernels): integer mantissas held in doubles, exact while every value,
  shifted value and partial sum stays below 2**52 in magnitude (the emulator checks that from bounds before it
  chooses this path). Products are summed by BLAS; casts are branch-free, so they vectorise.

Parameter arrays: ``p = [lo, hi, width, rounding, overflow]`` (int64, see ``_Format.params``) and
``fp = [lo, hi, 2**width, 2**-width, rounding, overflow]`` (float64, ``_Format.fparams``).
"""

from __future__ import annotations

import numba
import numpy as np

#: Every int64 intermediate value must stay strictly below this magnitude.
LIMIT = 1 << 62
#: Every float64 value (mantissa, shifted mantissa, partial sum) must stay strictly below this magnitude.
FLOAT_LIMIT = 1 << 52

_JIT = {"cache": True, "nogil": True}

# -- exact int64 kernels ------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _cast(m, s, lo, hi, width, rounding, overflow):  # pragma: no cover - compiled
    """``ap_fixed`` assignment of mantissa ``m`` with ``s`` more fractional bits than the target (fewer if s < 0).

    ``lo``/``hi``: the target's mantissa range (``lo`` is -max for SAT_SYM); ``width``: its bits, for wrapping.
    The same code runs compiled on int64 (``|m| < 2**62``) and, through ``py_func``, on Python integers.
    """
    if s > 0:
        far = s >= 63 and -LIMIT < m < LIMIT  # a shift past every bit of m (undefined on int64)
        q = (-1 if m < 0 else 0) if far else m >> s  # floor
        if rounding != 0:
            if far:  # the first dropped bit is the sign, the later ones are not all zero unless m is
                qb = m < 0
                r = m != 0
            else:
                rem = m - (q << s)
                half = 1 << (s - 1)
                qb = rem >= half  # the first dropped bit
                r = (rem & (half - 1)) != 0  # any later dropped bit
            neg = m < 0
            if rounding == 2:  # RND: ties up
                inc = qb
            elif rounding == 3:  # RND_ZERO: ties towards zero
                inc = qb and (neg or r)
            elif rounding == 4:  # RND_INF: ties away from zero
                inc = qb and ((not neg) or r)
            elif rounding == 5:  # RND_MIN_INF: ties down
                inc = qb and r
            elif rounding == 6:  # RND_CONV: ties to even
                inc = qb and ((q & 1) != 0 or r)
            else:  # TRN_ZERO: towards zero
                inc = neg and (qb or r)
            if inc:
                q += 1
    elif s < 0:
        q = m << -s if m != 0 else m  # the caller guarantees |m << -s| < 2**62
    else:
        q = m
    if lo <= q <= hi:
        return q
    if overflow == 0:  # WRAP; only reachable for widths up to 62 bits
        return lo + (q - lo) % (1 << width)
    if overflow == 2:  # SAT_ZERO
        return 0
    return hi if q > hi else lo  # SAT, SAT_SYM


@numba.njit(**_JIT)
def input_kernel(bits, frac, p, out, flags):  # pragma: no cover - compiled
    """``out = (T) x`` for doubles given by their IEEE-754 bits, as ``ap_fixed(double)``.

    Returns ``(max |out|, number of flagged elements)``.

    A normal double is ``±(2**52 + f) * 2**(e - 1075)`` exactly; its integer significand goes through :func:`_cast`.
    ``flags``: 2 for inf and NaN, 1 for what is left to the exact reference (subnormals, whose header reading
    differs from their value, and doubles too large for the int64 window), 0 when done.
    """
    top, flagged = 0, 0
    for i in range(bits.size):
        b = bits[i]
        e = (b >> 52) & 0x7FF
        f = b & 0xFFFFFFFFFFFFF
        out[i] = 0
        if e == 0x7FF:
            flags[i] = 2
            flagged += 1
        elif e == 0:
            if f != 0:
                flags[i] = 1
                flagged += 1
        else:
            significand = f | 0x10000000000000
            s = 1075 - e - frac
            if s < 0:
                flags[i] = 1
                flagged += 1
            else:
                v = _cast(-significand if b < 0 else significand, s, p[0], p[1], p[2], p[3], p[4])
                out[i] = v
                top = max(top, abs(v))
    return top, flagged


@numba.njit(**_JIT)
def cast_kernel(x, s, p, relu, out):  # pragma: no cover - compiled
    """``out = (T) x`` element-wise, or ``x > 0 ? (T) x : 0`` when ``relu``."""
    for i in range(x.size):
        v = x[i]
        if relu and v <= 0:
            out[i] = 0
        else:
            out[i] = _cast(v, s, p[0], p[1], p[2], p[3], p[4])


@numba.njit(**_JIT)
def affine_kernel(x, w, bias, how, pa, pr, pq, out, out_act):  # pragma: no cover - compiled
    """A product layer that needs a single cast of the exact sum, and the activation after it (int64).

    ``out = (result_t)(accum_t)(bias + (x @ w) << k)``. ``how`` = ``[k, acc_free, s_res, res_free, act, s_act]``:
    ``acc_free``/``res_free``: the caller proved that cast leaves every value unchanged; ``act`` 1 (relu) or 2
    (linear) writes the activation of ``out`` (shift ``s_act``, type ``pq``) to ``out_act``, which may be ``out``
    itself when ``out`` is not wanted.
    """
    k, acc_free, s_res, res_free, act, s_act = how[0], how[1], how[2], how[3], how[4], how[5]
    rows, n_in = x.shape
    n_out = w.shape[1]
    sums = np.empty(n_out, np.int64)
    for i in range(rows):
        sums[:] = 0
        for c in range(n_in):
            xi = x[i, c]
            if xi != 0:
                for j in range(n_out):
                    sums[j] += xi * w[c, j]
        for j in range(n_out):
            v = (sums[j] << k) + bias[j]
            if not acc_free:
                v = _cast(v, 0, pa[0], pa[1], pa[2], pa[3], pa[4])
            if not res_free:
                v = _cast(v, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])
            out[i, j] = v
            if act == 1:
                out_act[i, j] = 0 if v <= 0 else _cast(v, s_act, pq[0], pq[1], pq[2], pq[3], pq[4])
            elif act == 2:
                out_act[i, j] = _cast(v, s_act, pq[0], pq[1], pq[2], pq[3], pq[4])


@numba.njit(**_JIT)
def dense_kernel(x, w, bias, s_prod, pa, s_res, pr, free_sum, out):  # pragma: no cover - compiled
    """A product layer that casts every product to ``accum_t``, then adds them in input order in ``accum_t``.

    ``free_sum``: the caller proved the sum needs no overflow handling on the way (``accum_t`` wraps, which is
    modular, or no partial sum can leave its range), so the cast products are summed in int64 and cast once.
    Otherwise TRN and RND products into a SAT or SAT_SYM accumulator take a branch-free loop, and any other
    combination the reference loop of :func:`_cast` calls.
    """
    rows, n_in = x.shape
    n_out = w.shape[1]
    lo, hi, rounding, overflow = pa[0], pa[1], pa[3], pa[4]
    shift_only = s_prod <= 0 or rounding == 0 or rounding == 2  # TRN and RND are a shift after adding `half`
    half = (1 << (s_prod - 1)) if s_prod > 0 and rounding == 2 else 0
    fast_saturate = shift_only and (overflow == 1 or overflow == 3)
    acc = np.empty(n_out, np.int64)
    for i in range(rows):
        if free_sum:
            acc[:] = 0
        else:
            acc[:] = bias
        for c in range(n_in):
            xi = x[i, c]
            if free_sum and shift_only:
                if s_prod > 0:
                    for j in range(n_out):
                        acc[j] += (xi * w[c, j] + half) >> s_prod
                else:
                    for j in range(n_out):
                        acc[j] += (xi * w[c, j]) << -s_prod
            elif free_sum:
                for j in range(n_out):
                    acc[j] += _cast(xi * w[c, j], s_prod, pa[0], pa[1], pa[2], pa[3], pa[4])
            elif fast_saturate:
                for j in range(n_out):
                    p = (xi * w[c, j] + half) >> s_prod if s_prod > 0 else (xi * w[c, j]) << -s_prod
                    p = min(max(p, lo), hi)
                    acc[j] = min(max(acc[j] + p, lo), hi)
            else:
                for j in range(n_out):
                    p = _cast(xi * w[c, j], s_prod, pa[0], pa[1], pa[2], pa[3], pa[4])
                    acc[j] = _cast(acc[j] + p, 0, pa[0], pa[1], pa[2], pa[3], pa[4])
        for j in range(n_out):
            v = acc[j]
            if free_sum:
                v = _cast(v + bias[j], 0, pa[0], pa[1], pa[2], pa[3], pa[4])
            out[i, j] = _cast(v, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


@numba.njit(**_JIT)
def average_kernel(x, sx, sy, pa, divisor, s_res, pr, out):  # pragma: no cover - compiled
    """``y = 0; y += x[i] (accum_t); y /= divisor (truncating); out = (result_t) y`` per sample and channel."""
    batch, cells, chans = x.shape
    for b in range(batch):
        for c in range(chans):
            y = np.int64(0)
            for n in range(cells):
                y = _cast((y << sy) + (x[b, n, c] << sx), sy, pa[0], pa[1], pa[2], pa[3], pa[4])
            y = y // divisor if y >= 0 else -((-y) // divisor)
            out[b, c] = _cast(y, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


@numba.njit(**_JIT)
def max_kernel(x, s_acc, pa, s_res, pr, out):  # pragma: no cover - compiled
    """``out = (result_t)(accum_t) max_i x[i]`` per sample and channel."""
    batch, cells, chans = x.shape
    for b in range(batch):
        for c in range(chans):
            y = x[b, 0, c]
            for n in range(1, cells):
                y = max(y, x[b, n, c])
            a = _cast(y, s_acc, pa[0], pa[1], pa[2], pa[3], pa[4])
            out[b, c] = _cast(a, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


# -- float64 kernels ----------------------------------------------------------------------------------------------
# Values are integers (or, before a rounding, dyadic fractions) below 2**52 in magnitude, so every step is exact:
# scaling by a power of two, floor, the remainder y - floor(y), adding 0.5, the wrap q - 2**W floor((q - lo) 2**-W).
# Casts run as whole-array passes with the mode chosen outside the loop, so that each loop vectorises.


@numba.njit(inline="always")
def _fround(y, rounding):  # pragma: no cover - compiled
    """The integer that ``y`` (exact, ``|y| < 2**52``) rounds to under an ``ap_fixed`` quantisation mode."""
    f = np.floor(y)
    if rounding == 0:  # TRN
        return f
    if rounding == 2:  # RND: ties up (y + 0.5 is exact below 2**52)
        return np.floor(y + 0.5)
    r = y - f  # the dropped fraction, exact
    neg = y < 0.0
    above = r > 0.5
    tie = r == 0.5
    if rounding == 1:  # TRN_ZERO
        inc = neg & (r > 0.0)
    elif rounding == 3:  # RND_ZERO
        inc = above | (tie & neg)
    elif rounding == 4:  # RND_INF
        inc = above | (tie & (neg ^ True))
    elif rounding == 5:  # RND_MIN_INF
        inc = above
    else:  # RND_CONV: ties to even
        inc = above | (tie & (f * 0.5 != np.floor(f * 0.5)))
    return f + (1.0 if inc else 0.0)


@numba.njit(inline="always")
def _round_all(a, scale, rounding):  # pragma: no cover - compiled
    """``a[i] = round(a[i] * scale)`` in place (a 1-D array), one loop per mode."""
    if rounding == 0:
        for i in range(a.size):
            a[i] = np.floor(a[i] * scale)
    elif rounding == 2:
        for i in range(a.size):
            a[i] = np.floor(a[i] * scale + 0.5)
    else:
        for i in range(a.size):
            a[i] = _fround(a[i] * scale, rounding)


@numba.njit(inline="always")
def _overflow_all(a, fp):  # pragma: no cover - compiled
    """``a[i]`` (integers below 2**52) after the overflow mode of ``fp``'s type, in place, one loop per mode."""
    lo, hi, modulus, inverse, overflow = fp[0], fp[1], fp[2], fp[3], int(fp[5])
    if overflow == 0:  # WRAP: computed always, kept only out of range (it is exact only for widths up to 52)
        for i in range(a.size):
            q = a[i]
            wrapped = q - modulus * np.floor((q - lo) * inverse)
            a[i] = q if lo <= q <= hi else wrapped
    elif overflow == 2:  # SAT_ZERO
        for i in range(a.size):
            q = a[i]
            a[i] = q if lo <= q <= hi else 0.0
    else:  # SAT, SAT_SYM
        for i in range(a.size):
            a[i] = min(max(a[i], lo), hi)


@numba.njit(inline="always")
def _cast_all(a, scale, fp):  # pragma: no cover - compiled
    """``a = (T) a`` in place for mantissas that the shift ``scale = 2**-s`` brings to ``T``'s fractional bits."""
    if scale != 1.0:  # integers times 1 need no rounding
        _round_all(a, scale, int(fp[4]))
    _overflow_all(a, fp)


@numba.njit(inline="always")
def _relu_all(a):  # pragma: no cover - compiled
    """``a[i] = max(a[i], 0)`` in place: ``x > 0 ? (T) x : 0`` is ``(T) max(x, 0)``, as ``(T) 0 = 0``."""
    for i in range(a.size):
        a[i] = max(a[i], 0.0)


@numba.njit(inline="always")
def _max_abs(a):  # pragma: no cover - compiled
    """``max |a[i]|`` (0 for none), in four independent chains: a max reduction does not vectorise without
    fastmath, and one chain waits on every comparison."""
    t0 = t1 = t2 = t3 = 0.0
    n4 = a.size - a.size % 4
    for i in range(0, n4, 4):
        t0 = max(t0, abs(a[i]))
        t1 = max(t1, abs(a[i + 1]))
        t2 = max(t2, abs(a[i + 2]))
        t3 = max(t3, abs(a[i + 3]))
    for i in range(n4, a.size):
        t0 = max(t0, abs(a[i]))
    return max(max(t0, t1), max(t2, t3))


@numba.njit(**_JIT)
def finput_kernel(x, scale, fp, out, flags):  # pragma: no cover - compiled
    """``out = (T) x`` for float64 ``x``; returns ``(max |out|, number flagged)``. ``flags`` as
    :func:`input_kernel`'s: 2 for inf and NaN, 1 for subnormals and for values of ``2**52`` mantissas or more (left to
    the exact reference, ``out`` 0 there)."""
    flagged = 0
    for i in range(x.size):
        v = x[i]
        y = v * scale
        bad = (not abs(y) < 4503599627370496.0) | ((v != 0.0) & (abs(v) < 2.2250738585072014e-308))
        out[i] = 0.0 if bad else y
        flags[i] = (1 if np.isfinite(v) else 2) if bad else 0
        flagged += bad
    _round_all(out, 1.0, int(fp[4]))
    _overflow_all(out, fp)
    return _max_abs(out), flagged


@numba.njit(**_JIT)
def fcast_kernel(x, scale, fp, relu, out):  # pragma: no cover - compiled
    """``out = (T) x`` element-wise, or ``x > 0 ? (T) x : 0`` when ``relu``."""
    out[:] = x
    if relu:
        _relu_all(out)
    _cast_all(out, scale, fp)


@numba.njit(**_JIT)
def frounded_sums_kernel(x, w, scale, rounding, out):  # pragma: no cover - compiled
    """``out[i, j] = sum_c round(x[i, c] * w[c, j] * scale)``: products rounded one by one into ``accum_t``."""
    rows, n_in = x.shape
    n_out = w.shape[1]
    acc = np.empty(n_out)
    for i in range(rows):
        acc[:] = 0.0
        for c in range(n_in):
            xv = x[i, c] * scale
            if xv == 0.0:
                continue
            if rounding == 0:
                for j in range(n_out):
                    acc[j] += np.floor(xv * w[c, j])
            elif rounding == 2:
                for j in range(n_out):
                    acc[j] += np.floor(xv * w[c, j] + 0.5)
            else:
                for j in range(n_out):
                    acc[j] += _fround(xv * w[c, j], rounding)
        out[i, :] = acc


@numba.njit(**_JIT)
def fpost_kernel(sums, scale_k, bias, how, fa, scale_res, fr, scale_act, fq, out, out_act):  # pragma: no cover
    """The casts after the sum of a product layer, and the activation after it (float64).

    ``out`` (float64; it may be ``sums`` itself) becomes ``(result_t)(accum_t)(sums * scale_k + bias)``, the exact
    sum (float64 or float32) in ``accum_t`` units cast;
    ``how = [acc_free, res_free, act, separate]``: ``acc_free``/``res_free``: the caller proved that cast changes
    nothing; ``act`` 1 (relu) or 2 (linear) writes the activation (shift ``scale_act``, type ``fq``) to ``out_act``,
    which is ``out`` itself unless ``separate`` (when the layer's own output is wanted too).
    """
    rows, n_out = sums.shape
    for i in range(rows):
        for j in range(n_out):
            out[i, j] = np.float64(sums[i, j]) * scale_k + bias[j]
    flat = out.reshape(out.size)
    if not how[0]:
        _overflow_all(flat, fa)
    if not how[1]:
        _cast_all(flat, scale_res, fr)
    if how[2] == 0:
        return
    act = out_act.reshape(out_act.size)
    if how[3]:
        act[:] = flat
    if how[2] == 1:
        _relu_all(act)
    _cast_all(act, scale_act, fq)


@numba.njit(**_JIT)
def compact_kernel(rows, cells):  # pragma: no cover - compiled
    """The non-zero rows (cells) of ``rows`` ``[samples * cells, F]``, in order, each sample's first row among
    them (``offsets[b]:offsets[b + 1]`` are sample b's), and which rows they are (a mask)."""
    n, f = rows.shape
    keep = np.zeros(n, np.bool_)
    count = 0
    for i in range(n):
        for j in range(f):
            if rows[i, j] != 0:
                keep[i] = True
                count += 1
                break
    out = np.empty((count, f), rows.dtype)
    offsets = np.empty(n // cells + 1, np.int64)
    k = 0
    for i in range(n):
        if i % cells == 0:
            offsets[i // cells] = k
        if keep[i]:
            out[k, :] = rows[i, :]
            k += 1
    offsets[n // cells] = k
    return out, offsets, keep


@numba.njit(**_JIT)
def faverage_kernel(x, offsets, scale_x, fa, free, divisor, scale_res, fr, out):  # pragma: no cover - compiled
    """Average pooling (float64): ``y = 0; y = (accum_t)(y + x[i]); y /= divisor (truncating); (result_t) y``.

    ``x`` ``[rows, C]``: the cells of sample b are rows ``offsets[b]:offsets[b + 1]`` (all-zero cells may be left
    out: adding 0 to an ``accum_t`` value changes nothing). ``scale_x`` brings ``x`` to ``accum_t`` units.
    ``free``: no addition rounds and the sum wraps (or cannot overflow), so the exact sum is cast once.
    ``trunc(y / divisor)`` is exact for ``|y| < 2**52``.
    """
    chans = x.shape[1]
    y = np.empty(chans)
    for b in range(offsets.size - 1):
        y[:] = 0.0
        for n in range(offsets[b], offsets[b + 1]):
            for c in range(chans):
                y[c] += x[n, c] * scale_x
            if not free:  # y + x[i] rounded (when x is the finer) and overflowed into accum_t
                if scale_x < 1.0:
                    _round_all(y, 1.0, int(fa[4]))
                _overflow_all(y, fa)
        if free:
            _overflow_all(y, fa)
        for c in range(chans):
            out[b, c] = np.trunc(y[c] / divisor)
    _cast_all(out.reshape(out.size), scale_res, fr)


@numba.njit(**_JIT)
def fmax_kernel(x, offsets, cells, scale_acc, fa, scale_res, fr, out):  # pragma: no cover - compiled
    """``out = (result_t)(accum_t) max_i x[i]`` per sample and channel (float64); ``x`` and ``offsets`` as in
    :func:`faverage_kernel`, a sample with fewer than ``cells`` rows having all-zero cells left out."""
    chans = x.shape[1]
    for b in range(offsets.size - 1):
        first, last = offsets[b], offsets[b + 1]
        for c in range(chans):
            y = x[first, c] if last > first else 0.0
            for n in range(first + 1, last):
                y = max(y, x[n, c])
            out[b, c] = y if last - first == cells else max(y, 0.0)
    flat = out.reshape(out.size)
    _cast_all(flat, scale_acc, fa)
    _cast_all(flat, scale_res, fr)


# -- fused single-pass float kernels -------------------------------------------------------------------------------
# One pass over the data with every cast done on the value in a register: the whole-array passes above stream each
# array through the caches once per step, which costs more than the arithmetic. Mode branches are loop-invariant.


@numba.njit(inline="always")
def simple_modes(fp):  # pragma: no cover - compiled
    """Whether ``fp``'s type rounds by TRN or RND and overflows by WRAP, SAT or SAT_SYM."""
    return (fp[4] == 0.0 or fp[4] == 2.0) and fp[5] != 2.0


#: Rows per block of the fused kernels: a block's values stay in the first-level cache through all its passes.
_BLOCK = 64


@numba.njit(**_JIT)
def finput_rows_kernel(x, scale, fp, cells, compact, out, offsets, keep):  # pragma: no cover - compiled
    """``(T) x`` for float32 or float64 ``x`` ``[samples * cells, F]`` into ``out`` (float32 or float64).

    With ``compact``, all-zero rows are left out: ``out[:count]`` holds the others in order, sample b's being
    ``offsets[b]:offsets[b + 1]``, and ``keep`` marks them; else every row is written. Returns ``(count, max |out|,
    flagged)``; ``flagged`` > 0 (a NaN, inf, double subnormal or value of ``2**52`` mantissas or more) means the
    caller must redo the conversion by the exact path (``out`` is then incomplete).
    """
    n, f = x.shape
    flat = x.reshape(x.size)
    buf = np.empty(_BLOCK * f)
    top, count, flagged = 0, 0, 0
    cell, sample = 0, 0  # of row i: i % cells, i // cells
    simple = simple_modes(fp)
    half = 0.5 if fp[4] == 2.0 else 0.0
    lo, hi, modulus, inverse = fp[0], fp[1], fp[2], fp[3]
    wrap = fp[5] == 0.0
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        v = buf[: (stop - start) * f]
        base = start * f
        if simple:  # scale, round and overflow in one loop
            for k in range(v.size):
                xv = np.float64(flat[base + k])
                y = xv * scale
                ok = (abs(y) < 4503599627370496.0) & ((xv == 0.0) | (abs(xv) >= 2.2250738585072014e-308))
                q = np.floor((y if ok else 0.0) + half)
                inside = (lo <= q) & (q <= hi)  # not chained: a chained comparison branches
                wrapped = q if inside else q - modulus * np.floor((q - lo) * inverse)
                v[k] = wrapped if wrap else min(max(q, lo), hi)
                flagged += not ok
        else:
            for k in range(v.size):
                xv = np.float64(flat[base + k])
                y = xv * scale
                ok = (abs(y) < 4503599627370496.0) & ((xv == 0.0) | (abs(xv) >= 2.2250738585072014e-308))
                v[k] = y if ok else 0.0
                flagged += not ok
            _round_all(v, 1.0, int(fp[4]))
            _overflow_all(v, fp)
        for k in range(v.size):  # integers below 2**52: an int64 maximum, which vectorises
            top = max(top, np.int64(abs(v[k])))
        k = 0
        for i in range(start, stop):
            if cell == 0:
                offsets[sample] = count
            cell += 1
            if cell == cells:  # counters, not a division per row
                cell = 0
                sample += 1
            nonzero = False
            for j in range(f):
                nonzero |= v[k + j] != 0.0
            keep[i] = nonzero
            if nonzero or not compact:
                for j in range(f):
                    out[count, j] = v[k + j]
                count += 1
            k += f
    offsets[n // cells] = count
    return count, top, flagged


@numba.njit(**_JIT)
def fpost_rows_kernel(sums, scale_k, bias, how, fa, scale_res, fr, scale_act, fq, out, out_act):  # pragma: no cover
    """:func:`fpost_kernel` block by block: ``out = (result_t)(accum_t)(sums * scale_k + bias)`` and its
    activation in ``out_act`` (relu when ``how[2]`` is 1, linear when 2). ``out`` is written only when ``how[3]``
    (the layer's own output is wanted) or there is no activation; ``sums``, ``out`` and ``out_act`` may each be
    float32 or float64 (and ``out`` may be ``sums``)."""
    acc_free, res_free, act, separate = how[0], how[1], how[2], how[3]
    rows, n_out = sums.shape
    buf = np.empty(_BLOCK * n_out)
    abuf = np.empty(_BLOCK * n_out)
    for start in range(0, rows, _BLOCK):
        stop = min(rows, start + _BLOCK)
        v = buf[: (stop - start) * n_out]
        k = 0
        for i in range(start, stop):
            for j in range(n_out):
                v[k] = np.float64(sums[i, j]) * scale_k + bias[j]
                k += 1
        if not acc_free:
            _overflow_all(v, fa)
        if not res_free:
            _cast_all(v, scale_res, fr)
        if act == 0 or separate:
            k = 0
            for i in range(start, stop):
                for j in range(n_out):
                    out[i, j] = v[k]
                    k += 1
        if act == 0:
            continue
        a = abuf[: v.size]
        if act == 1:
            for k in range(v.size):
                a[k] = max(v[k], 0.0)
        else:
            a[:] = v
        _cast_all(a, scale_act, fq)
        k = 0
        for i in range(start, stop):
            for j in range(n_out):
                out_act[i, j] = a[k]
                k += 1


# -- one-loop kernels for the common modes -------------------------------------------------------------------------
# TRN and RND rounding are floor(y + half) with half 0 or 0.5; WRAP, SAT and SAT_SYM overflow each a select or a
# clamp: one loop with no branch on the value, which vectorises. ``fp`` as above; other modes take the kernels above.


@numba.njit(**_JIT)
def fpost_simple_kernel(sums, bias, c, wrap, out):  # pragma: no cover - compiled
    """``out = (T) max(sums * scale_k + bias, floor_at)`` in one loop, for a ``T`` of :func:`simple_modes`.

    ``c = [scale_k, floor_at, scale, half, lo, hi, modulus, inverse]``: ``floor_at`` 0 for relu (``x > 0 ? (T) x :
    0`` is ``(T) max(x, 0)``), -inf for a plain cast; ``scale = 2**-s`` the cast's shift, ``half`` 0.5 for RND, 0
    for TRN; ``lo``, ``hi``, ``modulus``, ``inverse`` as in ``fp``; ``wrap``: WRAP, else SAT or SAT_SYM (a clamp).
    The arithmetic is that of ``c``'s and ``bias``' dtype: float32 only where every value stays below 2**23 (the
    caller checks), so that every step, ``+ 0.5`` included, is exact. ``sums`` and ``out``: float32 or float64.
    """
    rows, n_out = sums.shape
    scale_k, floor_at, scale, half, lo, hi, modulus, inverse = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    for i in range(rows):
        if wrap:
            for j in range(n_out):
                q = np.floor(max(sums[i, j] * scale_k + bias[j], floor_at) * scale + half)
                inside = (lo <= q) & (q <= hi)
                out[i, j] = q if inside else q - modulus * np.floor((q - lo) * inverse)
        else:
            for j in range(n_out):
                q = np.floor(max(sums[i, j] * scale_k + bias[j], floor_at) * scale + half)
                out[i, j] = min(max(q, lo), hi)
