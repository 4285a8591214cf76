"""Entropy coding of the .gsi symbol streams (spec/gsi-format.md, sections 5-7).

A *stream* is a sequence of N unsigned integers (one per Gaussian). Each value u is
binarized into a token t (range coded with a per-stream static model) plus 0..k-1 raw bits:

    u < 8:   t = u, no raw bits
    u >= 8:  k = bit_length(u) (>= 4), t = k + 4, then the k-1 bits of u below its leading
             one, most significant first.

A *section* codes one or more streams: their frequency tables, one range-coded payload
holding the tokens of all its streams (stream after stream), then a raw-bits area holding
the raw bits of all its streams (stream after stream, value after value), MSB-first.

Decoding depends only on integers. The range coder is constriction's
`queue.RangeEncoder/RangeDecoder` (32-bit words, 64-bit state) with models of precision 24;
the integer frequencies of a table are handed to constriction as float64 values chosen so
that its quantizer reproduces them exactly (see `_model`).
"""
from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError

PRECISION = 24                   # probabilities are integers summing to 2^24
TOTAL = 1 << PRECISION
DIRECT = 8                       # values below this are their own token
MAX_BITS = 48                    # largest bit length of a coded value (u < 2^48)
MAX_TOKEN = MAX_BITS + 4         # = 52, largest token a table may declare
CODE_BITS = 5                    # bits per frequency code
# Weight of each 5-bit frequency code: LUT[0] = 0, LUT[k] = round(2^((k-1)/2)).
LUT = (0, 1, 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724,
       1024, 1448, 2048, 2896, 4096, 5793, 8192, 11585, 16384, 23170, 32768)
_LUT = np.array(LUT, dtype=np.int64)


# ---- integer mappings ---------------------------------------------------------------------
def zigzag(v: np.ndarray) -> np.ndarray:
    """Signed int64 -> unsigned uint64: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ..."""
    v = np.asarray(v, dtype=np.int64)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint64)


def unzigzag(u: np.ndarray) -> np.ndarray:
    """Inverse of zigzag (uint64 < 2^63 -> int64)."""
    u = np.asarray(u, dtype=np.uint64)
    half = (u >> np.uint64(1)).astype(np.int64)
    return np.where((u & np.uint64(1)) == 0, half, -half - 1)


def bit_length(u: np.ndarray) -> np.ndarray:
    """Bit length of each uint64 value (< 2^53 so float log2 is exact enough: we correct)."""
    u = np.asarray(u, dtype=np.uint64)
    k = np.zeros(u.shape, dtype=np.int64)
    nz = u > 0
    # frexp is exact for integers < 2^53: u = m * 2^e with 0.5 <= m < 1 -> bit length e.
    _, e = np.frexp(u[nz].astype(np.float64))
    k[nz] = e
    return k


def binarize(u: np.ndarray):
    """Return (tokens int32, nbits int64, raw uint64) for unsigned values u < 2^MAX_BITS.
    raw holds the k-1 bits below the leading one (0 for direct tokens)."""
    u = np.asarray(u, dtype=np.uint64)
    if u.size and int(u.max()) >= (1 << MAX_BITS):
        raise ValueError(f"value too large to code (>= 2^{MAX_BITS})")
    k = bit_length(u)
    big = u >= np.uint64(DIRECT)
    tokens = np.where(big, k + 4, u.astype(np.int64)).astype(np.int32)
    nbits = np.where(big, k - 1, 0).astype(np.int64)
    lead = np.left_shift(np.uint64(1), np.maximum(nbits, 0).astype(np.uint64))
    raw = np.where(big, u - lead, np.uint64(0)).astype(np.uint64)
    return tokens, nbits, raw


def token_nbits(tokens: np.ndarray) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.int64)
    return np.where(t >= DIRECT, t - 5, 0)


def debinarize(tokens: np.ndarray, raw: np.ndarray) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.int64)
    nb = token_nbits(t)
    lead = np.left_shift(np.uint64(1), nb.astype(np.uint64))
    return np.where(t >= DIRECT, lead | raw, t.astype(np.uint64)).astype(np.uint64)


# ---- frequency tables ---------------------------------------------------------------------
def choose_codes(counts: np.ndarray) -> np.ndarray:
    """5-bit codes for token counts: the largest count gets 31, the others
    31 + round(2 log2(count / max)) clamped to 1..31; unseen tokens get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    codes = np.zeros(counts.shape, dtype=np.int64)
    seen = counts > 0
    if not seen.any():
        return codes
    ratio = counts[seen] / counts.max()
    codes[seen] = np.clip(31 + np.round(2.0 * np.log2(ratio)), 1, 31).astype(np.int64)
    return codes


def normalize(codes) -> list[int]:
    """Integer frequencies (sum 2^24, each >= 1) from 5-bit codes (spec 6.2)."""
    codes = [int(c) for c in codes]
    n = len(codes)
    w = [LUT[c] for c in codes]
    s = sum(w)
    if s == 0:
        w = [1] * n
        s = n
    free = TOTAL - n
    f = [1 + (wi * free) // s for wi in w]
    f[w.index(max(w))] += TOTAL - sum(f)
    return f


def _normalize_np(codes: np.ndarray) -> np.ndarray:
    """Vectorised normalize(); identical results (int64 arithmetic, no overflow:
    32768 * 2^24 < 2^63)."""
    w = _LUT[np.asarray(codes, dtype=np.int64)]
    n = w.size
    s = int(w.sum())
    if s == 0:
        w = np.ones(n, dtype=np.int64)
        s = n
    f = 1 + (w * (TOTAL - n)) // s
    f[int(np.argmax(w))] += TOTAL - int(f.sum())
    return f


def write_table(codes: np.ndarray) -> bytes:
    """u8 T (largest token) then T+1 5-bit codes MSB-first, zero-padded to a byte."""
    codes = np.asarray(codes, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(CODE_BITS - 1, -1, -1)) & 1).astype(np.uint8)
    return bytes([codes.size - 1]) + np.packbits(bits.ravel()).tobytes()


def read_table(buf: bytes, pos: int, end: int) -> tuple[np.ndarray, int]:
    if pos >= end:
        raise FormatError("truncated frequency table")
    t_max = buf[pos]
    if t_max > MAX_TOKEN:
        raise FormatError(f"frequency table declares token {t_max} > {MAX_TOKEN}")
    n = t_max + 1
    nbytes = (n * CODE_BITS + 7) // 8
    pos += 1
    if end - pos < nbytes:
        raise FormatError("truncated frequency table")
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=pos))
    if bits[n * CODE_BITS:].any():
        raise FormatError("non-zero padding bits in a frequency table")
    codes = bits[: n * CODE_BITS].reshape(n, CODE_BITS).astype(np.int64)
    codes = codes @ (1 << np.arange(CODE_BITS - 1, -1, -1))
    return codes, pos + nbytes


def _model(freqs: np.ndarray):
    """constriction model reproducing the integer frequencies exactly.

    constriction 0.5 (Categorical, perfect=False) sets left_cumulative_i =
    floor(cum_i * (2^24 - n) / sum(p)) + i with cum_i = p_0 + ... + p_{i-1} in float64.
    With p_i = f_i - 1, sum(p) = 2^24 - n exactly, the factor is exactly 1.0 and every
    partial sum is an integer < 2^24 (exact in float64), so left_cumulative_i =
    sum_{j<i} (f_j - 1) + i = sum_{j<i} f_j: exactly our table (tests/test_format.py
    checks this bit-for-bit against a pure-Python range coder)."""
    import constriction
    p = (np.asarray(freqs, dtype=np.int64) - 1).astype(np.float64)
    return constriction.stream.model.Categorical(p, perfect=False)


def uniform_freqs(size: int) -> np.ndarray:
    """The uniform table of `size` symbols (2 <= size <= 4096; spec section 7.4):
    floor(2^24 / size) each, the remainder on the last symbol."""
    f = np.full(size, TOTAL // size, dtype=np.int64)
    f[-1] = TOTAL - (size - 1) * (TOTAL // size)
    return f


def encode_uniform(groups: list[tuple[int, np.ndarray]]) -> bytes:
    """The body of a version-4 ROT section: u32 W and W words coding, group after group,
    the values of each (size, values) pair with the uniform table of `size` symbols."""
    import constriction
    enc = constriction.stream.queue.RangeEncoder()
    for size, values in groups:
        if len(values):
            enc.encode(np.asarray(values, dtype=np.int32), _model(uniform_freqs(size)))
    words = np.asarray(enc.get_compressed(), dtype="<u4")
    return struct.pack("<I", words.size) + words.tobytes()


def decode_uniform(buf: bytes, groups: list[tuple[int, int]], start: int, end: int
                   ) -> list[np.ndarray]:
    """Inverse of encode_uniform on buf[start:end]: for each (size, count), `count` values
    in 0..size-1 (int64). Raises FormatError unless the section is exactly 4 + 4W bytes
    and the payload decodes."""
    import constriction
    if end - start < 4:
        raise FormatError("truncated ROT section")
    (nwords,) = struct.unpack_from("<I", buf, start)
    if end - start != 4 + 4 * nwords:
        raise FormatError(f"ROT section has {end - start} bytes, its word count says "
                          f"{4 + 4 * nwords}")
    words = np.frombuffer(buf, dtype="<u4", count=nwords, offset=start + 4).astype(np.uint32)
    out = []
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        for size, count in groups:
            out.append(np.asarray(dec.decode(_model(uniform_freqs(size)), count),
                                  dtype=np.int64) if count else np.zeros(0, np.int64))
    except Exception as exc:  # constriction rejects some invalid payloads
        raise FormatError(f"invalid range-coded data ({exc})") from None
    return out


# ---- raw bits -----------------------------------------------------------------------------
def pack_bits(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenate the low nbits[i] bits of values[i], MSB-first, pad with zeros."""
    values = np.asarray(values, dtype=np.uint64)
    nbits = np.asarray(nbits, dtype=np.int64)
    total = int(nbits.sum())
    if total == 0:
        return b""
    owner = np.repeat(np.arange(values.size), nbits)
    start = np.cumsum(nbits) - nbits
    shift = nbits[owner] - 1 - (np.arange(total) - start[owner])
    bits = ((values[owner] >> shift.astype(np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


def unpack_bits(area: np.ndarray, bit_offset: int, nbits: np.ndarray) -> np.ndarray:
    """Read consecutive fields of nbits[i] (<= 56) bits MSB-first starting at bit_offset of
    the uint8 array `area` (caller guarantees the bits exist). Returns uint64."""
    nbits = np.asarray(nbits, dtype=np.int64)
    out = np.zeros(nbits.size, dtype=np.uint64)
    sel = np.nonzero(nbits)[0]
    if sel.size == 0:
        return out
    nb = nbits[sel]
    start = bit_offset + np.cumsum(nb) - nb
    padded = np.concatenate([area, np.zeros(8, dtype=np.uint8)])
    idx = (start >> 3)[:, None] + np.arange(8)
    words = padded[idx].copy().view(">u8").ravel().astype(np.uint64)
    words = words << (start & 7).astype(np.uint64)
    out[sel] = words >> (64 - nb).astype(np.uint64)
    return out


# ---- sections -----------------------------------------------------------------------------
def encode_streams(streams: list[np.ndarray]) -> bytes:
    """Code a list of unsigned streams (of any lengths) into one section body."""
    import constriction
    tables = []
    coded = []
    raw_vals, raw_bits = [], []
    for u in streams:
        tokens, nbits, raw = binarize(u)
        t_max = int(tokens.max()) if tokens.size else 0
        counts = np.bincount(tokens, minlength=t_max + 1)
        codes = choose_codes(counts)
        tables.append(write_table(codes))
        if t_max > 0:
            coded.append((tokens, _normalize_np(codes)))
        raw_vals.append(raw)
        raw_bits.append(nbits)
    enc = constriction.stream.queue.RangeEncoder()
    for tokens, freqs in coded:
        enc.encode(tokens.astype(np.int32), _model(freqs))
    words = np.asarray(enc.get_compressed(), dtype="<u4")
    raw_area = pack_bits(np.concatenate(raw_vals) if raw_vals else np.zeros(0, np.uint64),
                         np.concatenate(raw_bits) if raw_bits else np.zeros(0, np.int64))
    return (b"".join(tables) + struct.pack("<I", words.size) + words.tobytes() + raw_area)


def decode_streams(buf: bytes, count, num_streams: int,
                   start: int = 0, end: int | None = None) -> list[np.ndarray]:
    """Decode `num_streams` streams from buf[start:end] (one section body), each of `count`
    values (an int, or a list with each stream's length). Raises FormatError on any
    inconsistency. Returns uint64 arrays (values < 2^48)."""
    import constriction
    counts = [int(count)] * num_streams if np.ndim(count) == 0 else [int(c) for c in count]
    if len(counts) != num_streams:
        raise ValueError(f"{len(counts)} stream lengths for {num_streams} streams")
    end = len(buf) if end is None else end
    pos = start
    all_codes = []
    for _ in range(num_streams):
        codes, pos = read_table(buf, pos, end)
        all_codes.append(codes)
    if end - pos < 4:
        raise FormatError("truncated range-coder payload length")
    (nwords,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if nwords > (end - pos) // 4:
        raise FormatError("range-coder payload longer than its section")
    words = np.frombuffer(buf, dtype="<u4", count=nwords, offset=pos).astype(np.uint32)
    pos += 4 * nwords
    tokens_list = []
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        for codes, count in zip(all_codes, counts, strict=False):
            if codes.size == 1 or count == 0:
                tokens_list.append(np.zeros(count, dtype=np.int64))
                continue
            tokens = dec.decode(_model(_normalize_np(codes)), count)
            tokens_list.append(np.asarray(tokens, dtype=np.int64))
    except FormatError:
        raise
    except Exception as exc:  # constriction rejects some invalid payloads
        raise FormatError(f"invalid range-coded data ({exc})") from None
    # The raw bits of the streams follow each other in stream order, so all streams are
    # debinarized in one pass (one per stream cost 2-3 ms more on 6-bucket COLOR sections).
    tokens = np.concatenate(tokens_list) if tokens_list else np.zeros(0, np.int64)
    nbits = token_nbits(tokens)
    total = int(nbits.sum())
    area_len = end - pos
    if area_len != (total + 7) // 8:
        raise FormatError(f"raw-bits area has {area_len} bytes, expected {(total + 7) // 8}")
    area = np.frombuffer(buf, dtype=np.uint8, count=area_len, offset=pos)
    if total % 8 and (int(area[-1]) & ((1 << (8 - total % 8)) - 1)):
        raise FormatError("non-zero padding bits in the raw-bits area")
    values = debinarize(tokens, unpack_bits(area, 0, nbits))
    return np.split(values, np.cumsum(counts)[:-1]) if counts else []
