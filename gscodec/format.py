"""The .gsi file format, version 1 (normative description: spec/gsi-format.md).

    write(qg) -> bytes          encode QuantizedGaussians (sorted into canonical order)
    read(data) -> QuantizedGaussians   decode; raises FormatError on any problem
    read_header(data) -> dict   header fields and section sizes (checks the header only)
    describe(data) -> dict      header + per-section byte counts and rates
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from . import entropy
from .errors import FormatError
from .model import LOG2_SIGMA_MAX, LOG2_SIGMA_MIN, COLOR_RANGE, MAX_SIDE, \
    QuantizedGaussians, morton_code

MAGIC = b"\x89GSI\r\n\x1a\n"
VERSION = 1
MAX_COUNT = 1 << 26              # N <= 2^26
COUNT_PER_BYTE = 16              # N <= 16 * file size in bytes
FLAG_MASKED = 1

# id, name, number of streams (COLOR: one per channel)
SECTIONS = ((1, "pos"), (2, "scale"), (3, "rot"), (4, "color"))

_FIXED = struct.Struct("<8sBBHIIIBBHH")          # 30 bytes
FIXED_SIZE = _FIXED.size
SECTION_ENTRY = 5                                # u8 id + u32 length
HEADER_SIZE = FIXED_SIZE + 1 + SECTION_ENTRY * len(SECTIONS)   # 51
CRC_SIZE = 4

PARAM_RANGES = {"pos_bits": (0, 8), "scale_steps": (1, 64), "rot_levels": (1, 4096),
                "color_den": (1, 65535)}


# ---- helpers ------------------------------------------------------------------------------
def _compact(v: np.ndarray) -> np.ndarray:
    """Inverse of the Morton bit spreading: take bits 0, 2, 4, ... of v (uint64)."""
    v = v & np.uint64(0x5555555555555555)
    v = (v | (v >> np.uint64(1))) & np.uint64(0x3333333333333333)
    v = (v | (v >> np.uint64(2))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    v = (v | (v >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    v = (v | (v >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)
    return v


def _median(v: np.ndarray) -> int:
    return int(np.sort(v)[(len(v) - 1) // 2]) if len(v) else 0


def color_transform(col: np.ndarray) -> np.ndarray:
    """Integer channel decorrelation: (R, G, B[, A]) -> (G, R - G, B - G[, A]); one and
    two channel images are coded as they are."""
    if col.shape[1] < 3:
        return col
    t = col.copy()
    t[:, 0], t[:, 1], t[:, 2] = col[:, 1], col[:, 0] - col[:, 1], col[:, 2] - col[:, 1]
    return t


def inverse_color_transform(t: np.ndarray) -> np.ndarray:
    if t.shape[1] < 3:
        return t
    col = t.copy()
    col[:, 1], col[:, 0], col[:, 2] = t[:, 0], t[:, 1] + t[:, 0], t[:, 2] + t[:, 0]
    return col


def _check_params(pos_bits, scale_steps, rot_levels, color_den, exc):
    for name, val in (("pos_bits", pos_bits), ("scale_steps", scale_steps),
                      ("rot_levels", rot_levels), ("color_den", color_den)):
        lo, hi = PARAM_RANGES[name]
        if not lo <= int(val) <= hi:
            raise exc(f"{name} = {val} outside {lo}..{hi}")


# ---- writer -------------------------------------------------------------------------------
def write(qg: QuantizedGaussians) -> bytes:
    """Encode to .gsi bytes. Raises ValueError if qg is not representable."""
    _check_params(qg.pos_bits, qg.scale_steps, qg.rot_levels, qg.color_den, ValueError)
    qg.validate()
    n = qg.count
    if n > MAX_COUNT:
        raise ValueError(f"{n} Gaussians exceed the format limit of 2^26")
    q = qg.sorted()
    xy = q.xy.astype(np.int64)
    ls = q.log_scale.astype(np.int64)
    code = morton_code(xy[:, 0], xy[:, 1]).astype(np.uint64)
    pos_delta = np.diff(code, prepend=np.uint64(0)) if n else code
    # Absolute values minus a per-stream offset (the median) code better than deltas:
    # neighbours in Morton order overlap additively, so their values are weakly related.
    major_off = _median(ls[:, 0])
    tcol = color_transform(q.color.astype(np.int64))
    col_off = [_median(tcol[:, c]) for c in range(q.channels)]
    streams = {
        "pos": [pos_delta],
        "scale": [entropy.zigzag(ls[:, 0] - major_off), (ls[:, 0] - ls[:, 1]).astype(np.uint64)],
        "rot": [q.rot.astype(np.uint64)],
        "color": [entropy.zigzag(tcol[:, c] - col_off[c]) for c in range(q.channels)],
    }
    offsets = {"pos": [], "scale": [major_off], "rot": [], "color": col_off}
    bodies = [struct.pack(f"<{len(offsets[name])}i", *offsets[name])
              + entropy.encode_streams(streams[name]) for _, name in SECTIONS]
    flags = FLAG_MASKED if qg.masked else 0
    head = _FIXED.pack(MAGIC, VERSION, q.channels, flags, q.width, q.height, n,
                       q.pos_bits, q.scale_steps, q.rot_levels, q.color_den)
    head += bytes([len(SECTIONS)])
    for (sid, _), body in zip(SECTIONS, bodies):
        head += struct.pack("<BI", sid, len(body))
    data = head + b"".join(bodies)
    size = len(data) + CRC_SIZE
    if n > COUNT_PER_BYTE * size:
        raise ValueError(f"{n} Gaussians in {size} bytes violate N <= 16 * file size")
    return data + struct.pack("<I", zlib.crc32(data))


# ---- reader -------------------------------------------------------------------------------
def read_header(data: bytes) -> dict:
    """Parse and check the fixed header and section table of a whole .gsi file."""
    data = bytes(data)
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a .gsi file (bad magic)")
    if len(data) < len(MAGIC) + 1:
        raise FormatError("truncated header")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise FormatError(f"unsupported .gsi version {version} "
                          f"(this decoder reads version {VERSION})")
    if len(data) < HEADER_SIZE + CRC_SIZE:
        raise FormatError("truncated header")
    (_, version, channels, flags, width, height, count, pos_bits, scale_steps, rot_levels,
     color_den) = _FIXED.unpack_from(data, 0)
    if channels not in (1, 2, 3, 4):
        raise FormatError(f"channel count {channels} not in 1..4")
    if flags & ~FLAG_MASKED:
        raise FormatError(f"reserved flag bits set (flags = {flags:#06x})")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FormatError(f"image size {width}x{height} outside 1..{MAX_SIDE}")
    if count > MAX_COUNT or count > COUNT_PER_BYTE * len(data):
        raise FormatError(f"Gaussian count {count} too large for a {len(data)}-byte file")
    _check_params(pos_bits, scale_steps, rot_levels, color_den, FormatError)
    nsec = data[FIXED_SIZE]
    if nsec != len(SECTIONS):
        raise FormatError(f"{nsec} sections, expected {len(SECTIONS)}")
    sections = {}
    total = HEADER_SIZE + CRC_SIZE
    for i, (sid, name) in enumerate(SECTIONS):
        got_id, length = struct.unpack_from("<BI", data, FIXED_SIZE + 1 + SECTION_ENTRY * i)
        if got_id != sid:
            raise FormatError(f"section {i} has id {got_id}, expected {sid}")
        sections[name] = length
        total += length
    if total != len(data):
        raise FormatError(f"section lengths give a {total}-byte file, got {len(data)} bytes")
    return {"version": version, "channels": channels, "flags": flags,
            "masked": bool(flags & FLAG_MASKED), "width": width, "height": height,
            "count": count, "pos_bits": pos_bits, "scale_steps": scale_steps,
            "rot_levels": rot_levels, "color_den": color_den, "sections": sections}


def _check_crc(data: bytes) -> None:
    (stored,) = struct.unpack_from("<I", data, len(data) - CRC_SIZE)
    if zlib.crc32(memoryview(data)[:-CRC_SIZE]) != stored:
        raise FormatError("checksum mismatch")


def read(data: bytes) -> QuantizedGaussians:
    """Decode a .gsi file. Any invalid input raises FormatError (and nothing else)."""
    try:
        return _read(bytes(data))
    except FormatError:
        raise
    except Exception as exc:    # defensive: never leak another exception type
        raise FormatError(f"invalid .gsi file ({type(exc).__name__}: {exc})") from None


def _read(data: bytes) -> QuantizedGaussians:
    h = read_header(data)
    _check_crc(data)
    n, c = h["count"], h["channels"]
    pos = HEADER_SIZE
    bodies = {}
    for _, name in SECTIONS:
        bodies[name] = (pos, pos + h["sections"][name])
        pos += h["sections"][name]

    def dec(name, k, n_offsets=0):
        s, e = bodies[name]
        if e - s < 4 * n_offsets:
            raise FormatError(f"{name} section too short for its offsets")
        offs = list(struct.unpack_from(f"<{n_offsets}i", data, s))
        return offs, entropy.decode_streams(data, n, k, s + 4 * n_offsets, e)

    # POS: Morton code deltas
    _, (pdelta,) = dec("pos", 1)
    w_max, h_max = h["width"] << h["pos_bits"], h["height"] << h["pos_bits"]
    max_code = int(morton_code(np.array([w_max]), np.array([h_max]))[0])
    if n and int(pdelta.max()) > max_code:
        raise FormatError("position delta out of range")
    code = np.cumsum(pdelta, dtype=np.uint64)
    # each delta <= max_code < 2^46, so a wrap-around of the uint64 sum shows as a decrease
    if n and (int(code[-1]) > max_code or bool(np.any(code[1:] < code[:-1]))):
        raise FormatError("position out of range")
    x = _compact(code).astype(np.int64)
    y = _compact(code >> np.uint64(1)).astype(np.int64)
    if n and (x.max() > w_max or y.max() > h_max):
        raise FormatError("position outside the image")

    # SCALE: major minus its offset (signed), then major - minor
    (major_off,), (zmajor, aniso) = dec("scale", 2, 1)
    lo, hi = LOG2_SIGMA_MIN * h["scale_steps"], LOG2_SIGMA_MAX * h["scale_steps"]
    if not lo <= major_off <= hi:
        raise FormatError("log-scale offset out of range")
    major = _signed(zmajor, hi - lo, "log-scale") + major_off
    if n and (major.min() < lo or major.max() > hi):
        raise FormatError("log-scale outside the allowed range")
    if n and int(aniso.max()) > hi - lo:
        raise FormatError("anisotropy out of range")
    minor = major - aniso.astype(np.int64)
    if n and minor.min() < lo:
        raise FormatError("log-scale outside the allowed range")

    # ROT
    _, (rot,) = dec("rot", 1)
    if n and int(rot.max()) >= h["rot_levels"]:
        raise FormatError("rotation index outside [0, rot_levels)")

    # COLOR: transformed channels minus their offsets (signed)
    offs, streams = dec("color", c, c)
    clo, chi = COLOR_RANGE[0] * h["color_den"], COLOR_RANGE[1] * h["color_den"]
    span = 2 * (chi - clo)   # bound on |transformed colour| and |offset|
    tcol = np.zeros((n, c), dtype=np.int64)
    for k, s in enumerate(streams):
        if abs(offs[k]) > span:
            raise FormatError("colour offset out of range")
        tcol[:, k] = _signed(s, 2 * span, "colour") + offs[k]
    color = inverse_color_transform(tcol)
    if n and (color.min() < clo or color.max() > chi):
        raise FormatError("colour outside the allowed range")

    qg = QuantizedGaussians(
        h["width"], h["height"], c,
        np.stack([x, y], axis=1).astype(np.int32),
        np.stack([major, minor], axis=1).astype(np.int32),
        rot.astype(np.int32), color.astype(np.int32),
        h["pos_bits"], h["scale_steps"], h["rot_levels"], h["color_den"], h["masked"])
    try:
        qg.validate()
    except ValueError as exc:  # cannot happen after the checks above; keep the contract
        raise FormatError(str(exc)) from None
    return qg


def _signed(u: np.ndarray, limit: int, what: str) -> np.ndarray:
    """Unzigzag and bound |v| <= limit (so later sums stay far from overflow)."""
    if u.size and int(u.max()) > 2 * limit:
        raise FormatError(f"{what} out of range")
    return entropy.unzigzag(u)


# ---- description --------------------------------------------------------------------------
def describe(data: bytes) -> dict:
    """Header fields, exact section sizes and rates of a .gsi file (header checks only).

    Keys: version, channels, flags, masked, width, height, count, pos_bits, scale_steps,
    rot_levels, color_den, quantization (the four parameters again, as a dict),
    file_bytes, header_bytes, crc_bytes, sections ({name: bytes}), bpp (file bits per
    pixel), bits_per_gaussian ({name: bits, "total": bits}; empty when count == 0)."""
    h = read_header(data)
    n, size = h["count"], len(data)
    info = {k: v for k, v in h.items() if k != "sections"}
    info["quantization"] = {k: h[k] for k in ("pos_bits", "scale_steps", "rot_levels",
                                              "color_den")}
    info["file_bytes"] = size
    info["header_bytes"] = HEADER_SIZE
    info["crc_bytes"] = CRC_SIZE
    info["sections"] = dict(h["sections"])
    info["bpp"] = size * 8 / (h["width"] * h["height"])
    info["bits_per_gaussian"] = {}
    if n:
        info["bits_per_gaussian"] = {name: 8 * b / n for name, b in h["sections"].items()}
        info["bits_per_gaussian"]["total"] = 8 * size / n
    return info
