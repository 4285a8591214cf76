"""Independent decoder of a profile-1 (`gaussianimage`) section body, written from
spec/profile-gaussianimage.md alone.

Pure Python (struct only): no numpy, no gscodec imports. It exists to prove that the
specification is complete; tests compare it with gscodec.gaussianimage.unpack().

decode(body, n, channels, width, height) -> (means, L, colours): lists with one tuple per
Gaussian, in body order, of Python floats (float64):
    means[i]   = (x_i, y_i) in pixels
    L[i]       = (l11, l21, l22) in pixels
    colours[i] = (colour_0, ..., colour_{C-1})
Raises ReferenceDecodeError for every invalid body.
"""
import math
import struct


class ReferenceDecodeError(Exception):
    pass


def fail(msg):
    raise ReferenceDecodeError(msg)


def half(b, off):
    """binary16 at b[off:off+2] (little-endian) and whether it is finite."""
    bits = b[off] | (b[off + 1] << 8)
    finite = (bits & 0x7C00) != 0x7C00
    return struct.unpack_from("<e", b, off)[0], finite


def read_bits(b, bitpos, width):
    """Unsigned integer of `width` bits starting at bit `bitpos`, MSB first."""
    v = 0
    for p in range(bitpos, bitpos + width):
        v = (v << 1) | ((b[p >> 3] >> (7 - (p & 7))) & 1)
    return v


def decode(body, n, channels, width, height):
    body = bytes(body)
    if channels not in (1, 2, 3, 4):
        fail("channels")
    if len(body) < 1:
        fail("empty body")
    k = body[0]
    if not 1 <= k <= 8:
        fail("k out of range")
    K = 1 << k
    C = channels
    code_bits = n * (18 + 2 * k)
    total = 25 + 4 * K * C + 4 * n + (code_bits + 7) // 8
    if len(body) != total:
        fail("length %d, expected %d" % (len(body), total))
    mins, maxs = read_ranges(body)
    cb, off = read_codebooks(body, 25, K, C)
    uv, off = read_positions(body, off, n)
    q, idx = read_codes(body[off:], n, k)
    steps = [(mx - mn) / 63 for mn, mx in zip(mins, maxs, strict=True)]
    means, L, colours = [], [], []
    for i in range(n):
        u, v = uv[i]
        means.append(((u + 1) * width / 2, (v + 1) * height / 2))
        L.append(tuple(mins[j] + q[i][j] * steps[j] for j in range(3)))
        a, b = idx[i]
        colours.append(tuple(cb[0][a][c] + cb[1][b][c] for c in range(C)))
    return means, L, colours


def read_ranges(body):
    """The Cholesky quantizers' (mins, maxs), three float32 each from byte 1."""
    mins = struct.unpack_from("<3f", body, 1)
    maxs = struct.unpack_from("<3f", body, 13)
    for lo, hi in zip(mins, maxs, strict=True):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            fail("min/max not finite")
        if lo > hi:
            fail("min > max")
    return mins, maxs


def read_codebooks(body, off, K, C):
    """Two codebooks of K entries of C binary16 values from `off`; (books, next offset)."""
    cb = [[None] * K for _ in range(2)]
    for s in range(2):
        for j in range(K):
            entry = []
            for _ in range(C):
                val, finite = half(body, off)
                if not finite:
                    fail("codebook entry not finite")
                entry.append(val)
                off += 2
            cb[s][j] = entry
    return cb, off


def read_positions(body, off, n):
    """n (u, v) binary16 pairs from `off`; (positions, next offset)."""
    uv = []
    for _ in range(n):
        u, fu = half(body, off)
        v, fv = half(body, off + 2)
        off += 4
        if not (fu and fv):
            fail("position not finite")
        if abs(u) > 1 or abs(v) > 1:
            fail("position outside [-1, 1]")
        uv.append((u, v))
    return uv, off


def read_codes(area, n, k):
    """The bit area: n x three 6-bit Cholesky codes, then n x two k-bit colour indices,
    then zero padding; (codes, indices)."""
    bit = 0
    q = []
    for _ in range(n):
        q.append([read_bits(area, bit + 6 * j, 6) for j in range(3)])
        bit += 18
    idx = []
    for _ in range(n):
        idx.append((read_bits(area, bit, k), read_bits(area, bit + k, k)))
        bit += 2 * k
    pad = len(area) * 8 - bit
    if pad and read_bits(area, bit, pad) != 0:
        fail("padding bits not zero")
    return q, idx


def conic(chol):
    """(a, b, c) of (L L^T)^-1 as spec section 4 writes it, or None if L is singular."""
    l11, l21, l22 = chol
    if l11 == 0 or l22 == 0:
        return None
    inv22 = 1 / (l22 * l22)
    return ((l21 * l21 + l22 * l22) / (l11 * l11) * inv22, -(l21 / l11) * inv22, inv22)
