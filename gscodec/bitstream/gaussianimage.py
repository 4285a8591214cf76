"""The `gaussianimage` profile: GaussianImage's compression scheme on top of our fitting.

A same-harness baseline that reproduces the attribute coding of GaussianImage (Zhang et
al., ECCV 2024, arXiv 2403.08551; public code Xinjie-Q/GaussianImage, model
`GaussianImage_Cholesky` with `quantize=True`):

- positions: IEEE binary16 of the normalised coordinates u = 2x/W - 1, v = 2y/H - 1
  (GaussianImage keeps them in (-1, 1) through tanh and stores half floats);
- covariance: the Cholesky factor (l11, l21, l22) of Sigma = L L^T in pixels, each of the
  three parameters quantized to 6 bits by its own asymmetric min/max uniform quantizer
  whose offset and step are learned during fine-tuning;
- colour: 2-stage residual vector quantization (RVQ); codebooks initialised by k-means and
  updated by an exponential moving average during fine-tuning, stored as binary16;
- every code written at fixed length (no entropy coding).

The body layout, the dequantization and the decoder checks are in
spec/profile-gaussianimage.md; `tests/gsi_reference_gi.py` is an independent pure-Python
decoder of it. The container (width, height, channels, count, CRC) is not this module's
business: `pack` returns the section body only and `unpack` parses one.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError

CHOL_BITS = 6                     # bits per Cholesky parameter
CHOL_LEVELS = (1 << CHOL_BITS) - 1  # 63: codes 0..63
RVQ_STAGES = 2
DEFAULT_CODEBOOK_SIZE = 8         # what GaussianImage's public code uses (see the spec, 6.)
MAX_CODEBOOK_LOG2 = 8             # codebooks of 2..256 entries (indices fit uint8)
HEADER_BYTES = 1 + 24             # log2(K), chol_min[3], chol_max[3]
_F16_EXP_MASK = 0x7C00


# ---- the decoded form -------------------------------------------------------------------
@dataclass
class GIGaussians:
    width: int
    height: int
    channels: int                 # 1..4
    xy_half: np.ndarray           # uint16 [N,2]: binary16 bits of u = 2x/W - 1, v = 2y/H - 1
    chol_q: np.ndarray            # uint8 [N,3]: 6-bit codes of (l11, l21, l22), pixels
    chol_min: np.ndarray          # float32 [3]
    chol_max: np.ndarray          # float32 [3]
    codebooks: np.ndarray         # uint16 [2,K,C]: binary16 bits of the two RVQ codebooks
    color_idx: np.ndarray         # uint8 [N,2]: stage-0 and stage-1 codebook indices

    @property
    def count(self) -> int:
        return int(self.xy_half.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def index_bits(self) -> int:
        return int(self.codebook_size).bit_length() - 1

    # ---- checks -------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything that makes this set unwritable (empty list when valid)."""
        out = []
        n, c = self.count, self.channels
        if c not in (1, 2, 3, 4):
            out.append(f"channel count {c} not in 1..4")
        if not (isinstance(self.width, (int, np.integer)) and
                isinstance(self.height, (int, np.integer)) and
                self.width >= 1 and self.height >= 1):
            out.append(f"bad image size {self.width}x{self.height}")
        k = self.codebooks.shape[1] if self.codebooks.ndim == 3 else 0
        if not (k >= 2 and k & (k - 1) == 0 and k <= 1 << MAX_CODEBOOK_LOG2):
            out.append(f"codebook size {k} is not a power of two in 2..256")
        shapes = {"xy_half": ((n, 2), np.uint16), "chol_q": ((n, 3), np.uint8),
                  "chol_min": ((3,), np.float32), "chol_max": ((3,), np.float32),
                  "codebooks": ((RVQ_STAGES, k, c), np.uint16),
                  "color_idx": ((n, RVQ_STAGES), np.uint8)}
        for name, (shape, dtype) in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                out.append(f"{name}: {arr.dtype}{list(arr.shape)}, expected "
                           f"{np.dtype(dtype)}{list(shape)}")
        if out:
            return out
        out += _value_problems(self.xy_half, self.chol_min, self.chol_max, self.codebooks)
        if n and int(self.chol_q.max()) > CHOL_LEVELS:
            out.append("Cholesky code above 63")
        if n and int(self.color_idx.max()) >= k:
            out.append("colour index outside the codebook")
        return out

    def validate(self) -> None:
        p = self.problems()
        if p:
            raise ValueError("invalid GIGaussians: " + "; ".join(p))

    # ---- dequantization (spec section 4) ------------------------------------------------
    def dequantize(self):
        """float64 (means [N,2] in pixels, L [N,3] = (l11, l21, l22) in pixels,
        colours [N,C]) exactly as spec/profile-gaussianimage.md defines them."""
        uv = self.xy_half.view(np.float16).astype(np.float64)
        means = np.empty_like(uv)
        means[:, 0] = (uv[:, 0] + 1.0) * self.width / 2.0
        means[:, 1] = (uv[:, 1] + 1.0) * self.height / 2.0
        lo = self.chol_min.astype(np.float64)
        hi = self.chol_max.astype(np.float64)
        step = (hi - lo) / CHOL_LEVELS
        L = lo[None, :] + self.chol_q.astype(np.float64) * step[None, :]
        cb = self.codebooks.view(np.float16).astype(np.float64)
        idx = self.color_idx.astype(np.int64)
        colors = cb[0][idx[:, 0]] + cb[1][idx[:, 1]]
        return means, L, colors

    def render_inputs(self):
        """(means [N,2], conics [N,3] = (a, b, c) of Sigma^-1, colours [N,C]) as contiguous
        float32 arrays for the renderer. Computed in float64 and rounded once, so the
        result is the same on every machine. A Gaussian whose L is singular
        (l11 * l22 == 0) or whose conic does not fit float32 gets the conic (0, 0, 0),
        which the renderer treats as not positive definite (it contributes nothing)."""
        means, L, colors = self.dequantize()
        conics = conics_from_cholesky_np(L)
        return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (means, conics, colors))

    def render_waves(self):
        """None: profile 1 has no waves (QuantizedGaussians.render_waves)."""
        return None

    # ---- rate ---------------------------------------------------------------------------
    def bits_per_gaussian(self) -> dict:
        """Bits of the body per Gaussian, by kind: "pos" 32, "cov" 18, "color" 2 log2 K,
        "codebook" (the two binary16 codebooks / N), "side" (log2 K byte, min/max and
        bit padding / N) and "total" = 8 * len(pack(self)) / N. With N = 0 the shared
        parts are divided by 1."""
        n = self.count
        k, c = self.codebook_size, self.channels
        per = {"pos": 32, "cov": 3 * CHOL_BITS,
               "color": RVQ_STAGES * self.index_bits}
        total_bits = 8 * body_length(n, c, k)
        codebook_bits = RVQ_STAGES * k * c * 16
        d = max(n, 1)
        per_g = sum(per.values())
        per["codebook"] = codebook_bits / d
        per["side"] = (total_bits - codebook_bits - per_g * n) / d
        per["total"] = total_bits / d
        return per


def conics_from_cholesky_np(L: np.ndarray) -> np.ndarray:
    """(a, b, c) of (L L^T)^-1 in float64; (0, 0, 0) where L is singular or the result
    does not fit float32."""
    L = np.asarray(L, dtype=np.float64)
    l11, l21, l22 = L[:, 0], L[:, 1], L[:, 2]
    with np.errstate(all="ignore"):
        ok = (l11 != 0) & (l22 != 0)
        s11 = np.where(ok, l11, 1.0)
        s22 = np.where(ok, l22, 1.0)
        inv22 = 1.0 / (s22 * s22)
        a = (l21 * l21 + l22 * l22) / (s11 * s11) * inv22
        b = -(l21 / s11) * inv22
        c = inv22
        out = np.stack([a, b, c], -1)
        f32 = np.float32(np.finfo(np.float32).max)
        ok &= np.all(np.isfinite(out) & (np.abs(out) <= f32), axis=-1)
    out[~ok] = 0.0
    return out




def _value_problems(xy_half, chol_min, chol_max, codebooks) -> list[str]:
    out = []
    if not (np.all(np.isfinite(chol_min)) and np.all(np.isfinite(chol_max))):
        out.append("Cholesky min/max not finite")
    elif np.any(chol_min > chol_max):
        out.append("Cholesky min above max")
    if np.any((codebooks & _F16_EXP_MASK) == _F16_EXP_MASK):
        out.append("codebook entry not finite")
    if xy_half.size:
        if np.any((xy_half & _F16_EXP_MASK) == _F16_EXP_MASK):
            out.append("position not finite")
        elif np.any(np.abs(xy_half.view(np.float16)) > 1):
            out.append("position outside [-1, 1]")
    return out


# ---- body (spec section 2) ----------------------------------------------------------------
def body_length(n: int, channels: int, codebook_size: int) -> int:
    k = int(codebook_size).bit_length() - 1
    bits = n * (3 * CHOL_BITS + RVQ_STAGES * k)
    return HEADER_BYTES + RVQ_STAGES * codebook_size * channels * 2 + 4 * n + (bits + 7) // 8


def _pack_bits(values: np.ndarray, widths: np.ndarray) -> bytes:
    """MSB-first concatenation of values[i] in widths[i] bits, zero-padded to a byte."""
    values = values.astype(np.uint32)
    wmax = int(widths.max()) if widths.size else 1
    shifts = np.arange(wmax - 1, -1, -1, dtype=np.uint32)
    bits = (values[:, None] >> shifts[None, :]) & 1
    keep = shifts[None, :] < widths[:, None]
    return np.packbits(bits[keep].astype(np.uint8)).tobytes()


def _code_widths(n: int, k: int) -> np.ndarray:
    return np.concatenate([np.full(3 * n, CHOL_BITS), np.full(RVQ_STAGES * n, k)]).astype(np.uint32)


def pack(g: GIGaussians) -> bytes:
    """The section body of profile 1 (spec/profile-gaussianimage.md, section 2)."""
    g.validate()
    n, c, k = g.count, g.channels, g.index_bits
    parts = [bytes([k]),
             g.chol_min.astype("<f4").tobytes(), g.chol_max.astype("<f4").tobytes(),
             g.codebooks.astype("<u2").tobytes(),       # stage, entry, channel
             g.xy_half.astype("<u2").tobytes()]          # Gaussian, (u, v)
    codes = np.concatenate([g.chol_q.reshape(-1).astype(np.uint32),
                            g.color_idx.reshape(-1).astype(np.uint32)])
    parts.append(_pack_bits(codes, _code_widths(n, k)))
    body = b"".join(parts)
    assert len(body) == body_length(n, c, g.codebook_size)
    return body


def unpack(buf: bytes, start: int, end: int, n: int, channels: int, width: int,
           height: int) -> GIGaussians:
    """Parse the body buf[start:end]. Raises FormatError (and nothing else) unless it is
    exactly one valid body for n Gaussians of `channels` channels (spec, section 5)."""
    try:
        return _unpack(buf, start, end, n, channels, width, height)
    except FormatError:
        raise
    except Exception as e:          # defensive: the contract is FormatError only
        raise FormatError(f"profile gaussianimage: malformed body ({type(e).__name__}: {e})"
                          ) from None


def _unpack(buf, start, end, n, channels, width, height) -> GIGaussians:
    pre = "profile gaussianimage: "
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise FormatError(pre + "body is not bytes")
    mv = memoryview(buf).cast("B") if isinstance(buf, memoryview) else memoryview(buf)
    try:    # plain or numpy integers; bool and floats are rejected
        if any(isinstance(v, bool) for v in (start, end, n, channels, width, height)):
            raise TypeError("bool")
        start, end, n, channels, width, height = (
            operator.index(v) for v in (start, end, n, channels, width, height))
    except TypeError:
        raise FormatError(pre + "non-integer argument") from None
    if not (0 <= start <= end <= len(mv)):
        raise FormatError(pre + f"body range {start}..{end} outside the buffer")
    if channels not in (1, 2, 3, 4):
        raise FormatError(pre + f"channel count {channels} not in 1..4")
    if width < 1 or height < 1:
        raise FormatError(pre + f"bad image size {width}x{height}")
    if n < 0:
        raise FormatError(pre + "negative Gaussian count")
    size = end - start
    if size < 1:
        raise FormatError(pre + "empty body")
    k = mv[start]
    if not 1 <= k <= MAX_CODEBOOK_LOG2:
        raise FormatError(pre + f"log2 codebook size {k} not in 1..{MAX_CODEBOOK_LOG2}")
    kk = 1 << k
    expected = body_length(n, channels, kk)
    if size != expected:
        raise FormatError(pre + f"body is {size} bytes, expected {expected} for N={n}, "
                          f"C={channels}, K={kk}")
    body = np.frombuffer(mv[start:end], dtype=np.uint8)
    o = 1
    chol_min = body[o:o + 12].view("<f4").astype(np.float32)
    chol_max = body[o + 12:o + 24].view("<f4").astype(np.float32)
    o += 24
    m = RVQ_STAGES * kk * channels
    codebooks = body[o:o + 2 * m].view("<u2").astype(np.uint16).reshape(RVQ_STAGES, kk, channels)
    o += 2 * m
    xy_half = body[o:o + 4 * n].view("<u2").astype(np.uint16).reshape(n, 2)
    o += 4 * n
    nbits = n * (3 * CHOL_BITS + RVQ_STAGES * k)
    bits = np.unpackbits(body[o:])
    if np.any(bits[nbits:]):
        raise FormatError(pre + "non-zero padding bits")
    chol_bits = bits[:3 * n * CHOL_BITS].reshape(3 * n, CHOL_BITS).astype(np.uint32)
    chol_q = (chol_bits @ (1 << np.arange(CHOL_BITS - 1, -1, -1, dtype=np.uint32)))
    idx_bits = bits[3 * n * CHOL_BITS:nbits].reshape(RVQ_STAGES * n, k).astype(np.uint32)
    color_idx = (idx_bits @ (1 << np.arange(k - 1, -1, -1, dtype=np.uint32)))
    probs = _value_problems(xy_half, chol_min, chol_max, codebooks)
    if probs:
        raise FormatError(pre + "; ".join(probs))
    return GIGaussians(width, height, channels, xy_half,
                       chol_q.astype(np.uint8).reshape(n, 3), chol_min, chol_max,
                       codebooks, color_idx.astype(np.uint8).reshape(n, RVQ_STAGES))
