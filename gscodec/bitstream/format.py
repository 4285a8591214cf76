"""The .gsi file format, version 5 (normative description: spec/gsi-format.md); versions 1
to 4 are still read.

    write(g) -> bytes           encode QuantizedGaussians (sorted into canonical order) or,
                                as profile "gaussianimage", a gaussianimage.GIGaussians
    read(data) -> QuantizedGaussians | GIGaussians   decode; FormatError on any problem
    read_header(data) -> dict   header fields and section sizes (checks the header only)
    describe(data) -> dict      header + per-section byte counts and rates
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import FormatError
from . import entropy, gaussianimage
from .model import (
    ATTRIBUTES,
    COLOR_RANGE,
    LOG2_SIGMA_MAX,
    LOG2_SIGMA_MIN,
    MAX_BUCKETS,
    MAX_CLASSES,
    MAX_SIDE,
    PARAM_RANGES,
    UNIFORM_ROT_BIAS,
    WAVE_AMP_MAX,
    WAVE_PARTS,
    QuantClass,
    QuantizedGaussians,
    morton_code,
)

MAGIC = b"\x89GSI\r\n\x1a\n"
VERSION = 5                      # written; versions 1 to 5 are read
READ_VERSIONS = (1, 2, 3, 4, 5)
MAX_COUNT = 1 << 26              # N <= 2^26
COUNT_PER_BYTE = 16              # N <= 16 * file size in bytes
FLAG_MASKED = 1
CRC_SIZE = 4

# Profiles (versions 2 and 3): how the Gaussians are stored.
PROFILE_GSI = 0                  # classes of entropy-coded integers (spec section 3)
PROFILE_GAUSSIANIMAGE = 1        # GaussianImage's scheme (spec/profile-gaussianimage.md)
PROFILES = {PROFILE_GSI: "gsi", PROFILE_GAUSSIANIMAGE: "gaussianimage"}

# Versions 2 and 3: fixed header, then a section table of (u8 id, u32 length) entries.
_FIXED2 = struct.Struct("<8sBBBBIII")            # 24 bytes
FIXED2_SIZE = _FIXED2.size
SECTION_ENTRY = 5                                # u8 id + u32 length
# class record: count, pos_bits, scale_steps, rot_levels, color_den
CLASS_RECORD = struct.Struct("<IBBHH")
BUCKET_RECORD = struct.Struct("<bB")             # versions 3, 4: area_lo, B
ROT_RECORD = struct.Struct("<b")                 # versions 4, 5: rot_bias
# version 5: wave_den, wave_freqs, wave_f0, wave_phases; then B - 1 u16 dens
WAVE_RECORD = struct.Struct("<BBbB")
WAVE_COUNT = struct.Struct("<I")                 # version 5: a WAVE section's m
SEC_CLASSES = 1
SEC_GAUSSIANIMAGE = 2
SEC_CLASS_BASE = 16              # class k: ids 16+5k .. 20+5k = POS, SCALE, ROT, COLOR, WAVE

# Version 1 (read only): one class, steps in the fixed header, four sections.
_FIXED1 = struct.Struct("<8sBBHIIIBBHH")          # 30 bytes
V1_SECTIONS = ((1, "pos"), (2, "scale"), (3, "rot"), (4, "color"))
V1_HEADER_SIZE = _FIXED1.size + 1 + SECTION_ENTRY * 4   # 51


def class_attributes(version: int) -> tuple[str, ...]:
    """The sections of a class, in file order: version 5 adds WAVE to the four of
    versions 1 to 4."""
    return ATTRIBUTES if version >= 5 else ATTRIBUTES[:4]


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


def _check_class(qc: QuantClass, exc) -> None:
    if qc.problem():
        raise exc(qc.problem())


def _class_record(count: int, qc: QuantClass) -> bytes:
    return (CLASS_RECORD.pack(count, *qc.astuple()) + BUCKET_RECORD.pack(qc.area_lo, qc.buckets)
            + ROT_RECORD.pack(qc.rot_bias) + WAVE_RECORD.pack(*qc.wave_steps())
            + struct.pack(f"<{qc.buckets - 1}H", *qc.color_dens))


def _rot_groups(levels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(L, mask) for each distinct angle level count L >= 2, in increasing L: the version-4
    ROT section codes the rotations of each group in turn (spec section 7.4)."""
    return [(int(v), levels == v) for v in np.unique(levels) if v >= 2]


# ---- class bodies (shared by versions 1 to 5) ---------------------------------------------
def _encode_class(xy, ls, rot, color, wave, channels, qc: QuantClass) -> list[bytes]:
    """POS, SCALE, ROT, COLOR, WAVE section bodies of one class (Gaussians in canonical
    order), version 5. ROT codes the rotations of the Gaussians with two or more angle
    levels, uniformly, grouped by their level count; COLOR codes each colour bucket of qc
    with its own offsets and tables; WAVE is empty without waves (wave_den 0)."""
    n = xy.shape[0]
    xy, ls = xy.astype(np.int64), ls.astype(np.int64)
    code = morton_code(xy[:, 0], xy[:, 1]).astype(np.uint64)
    pos_delta = np.diff(code, prepend=np.uint64(0)) if n else code
    # Absolute values minus a per-stream offset (the median) code better than deltas:
    # neighbours in Morton order overlap additively, so their values are weakly related.
    major_off = _median(ls[:, 0])
    tcol = color_transform(color.astype(np.int64))
    bucket = qc.bucket(ls)
    col_off, col_streams = [], []
    for b in range(qc.buckets):
        tb = tcol[bucket == b]
        off = [_median(tb[:, c]) for c in range(channels)]
        col_off += off
        col_streams += [entropy.zigzag(tb[:, c] - off[c]) for c in range(channels)]
    aniso = ls[:, 0] - ls[:, 1]
    streams = {
        "pos": ([], [pos_delta]),
        "scale": ([major_off], [entropy.zigzag(ls[:, 0] - major_off), aniso.astype(np.uint64)]),
        "color": (col_off, col_streams),
    }
    bodies = {a: struct.pack(f"<{len(offs)}i", *offs) + entropy.encode_streams(st)
              for a, (offs, st) in streams.items()}
    bodies["rot"] = entropy.encode_uniform(
        [(size, rot[sel]) for size, sel in _rot_groups(qc.angle_levels(ls))])
    bodies["wave"] = _encode_wave(wave, qc)
    return [bodies[a] for a in ATTRIBUTES]


def _encode_wave(wave, qc: QuantClass) -> bytes:
    """WAVE: u32 m (the Gaussians with a wave), then the streams amp (all n), 2 freq + axis
    and phase (the m with amp > 0, in order); nothing for a class with wave_den 0."""
    if qc.wave_den == 0:
        return b""
    amp, axis, freq, phase = (wave[:, j].astype(np.int64) for j in range(len(WAVE_PARTS)))
    on = amp > 0
    streams = [amp.astype(np.uint64), (2 * freq[on] + axis[on]).astype(np.uint64),
               phase[on].astype(np.uint64)]
    return WAVE_COUNT.pack(int(on.sum())) + entropy.encode_streams(streams)


def _decode_class(data: bytes, spans: dict, n: int, channels: int, width: int, height: int,
                  qc: QuantClass, version: int):
    """Inverse of _encode_class: (pos, scale, rot, color, wave) int64 arrays, every value
    checked against the class's ranges. Versions 1 to 3 code the rotations as one token
    stream: version 1 of every Gaussian, versions 2 and 3 of the anisotropic ones; versions
    1 to 4 have no waves."""
    def dec(name, k, count, n_offsets=0):
        """count: the length of every stream, or a list of k lengths."""
        s, e = spans[name]
        if e - s < 4 * n_offsets:
            raise FormatError(f"{name} section too short for its offsets")
        offs = list(struct.unpack_from(f"<{n_offsets}i", data, s))
        return offs, entropy.decode_streams(data, count, k, s + 4 * n_offsets, e)

    pos = _decode_pos(dec, n, width, height, qc)
    major, minor, aniso = _decode_scale(dec, n, qc)
    rot = _decode_rot(dec, data, spans, n, qc, version, major, minor, aniso)
    color = _decode_color(dec, n, channels, qc, major, minor)
    wave = _decode_wave(data, spans["wave"], n, qc) if version >= 5 \
        else np.zeros((n, len(WAVE_PARTS)), np.int64)
    return pos, np.stack([major, minor], axis=1), rot, color, wave


def _decode_pos(dec, n: int, width: int, height: int, qc: QuantClass) -> np.ndarray:
    """POS: Morton code deltas -> [n, 2] positions."""
    _, (pdelta,) = dec("pos", 1, n)
    w_max, h_max = width << qc.pos_bits, height << qc.pos_bits
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
    return np.stack([x, y], axis=1)


def _decode_scale(dec, n: int, qc: QuantClass):
    """SCALE: major minus its offset (signed), then major - minor; (major, minor, aniso)."""
    (major_off,), (zmajor, aniso) = dec("scale", 2, n, 1)
    lo, hi = LOG2_SIGMA_MIN * qc.scale_steps, LOG2_SIGMA_MAX * qc.scale_steps
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
    return major, minor, aniso


def _decode_rot(dec, data: bytes, spans: dict, n: int, qc: QuantClass, version: int,
                major, minor, aniso) -> np.ndarray:
    """ROT: the angle indices (version 4: uniformly coded, grouped by the angle levels of
    each Gaussian; versions 1 to 3: one token stream)."""
    rot = np.zeros(n, np.int64)
    if version >= 4:
        groups = _rot_groups(qc.angle_levels(np.stack([major, minor], axis=1)))
        s, e = spans["rot"]
        values = entropy.decode_uniform(data, [(size, int(sel.sum())) for size, sel in groups],
                                        s, e)
        for (_, sel), v in zip(groups, values, strict=False):
            rot[sel] = v
    else:                # all rotations (version 1) or the anisotropic ones (versions 2, 3)
        rotating = np.ones(n, bool) if version == 1 else aniso > 0
        _, (rot_coded,) = dec("rot", 1, int(rotating.sum()))
        if rot_coded.size and int(rot_coded.max()) >= qc.rot_levels:
            raise FormatError("rotation index outside [0, rot_levels)")
        rot[rotating] = rot_coded.astype(np.int64)
    return rot


def _decode_color(dec, n: int, channels: int, qc: QuantClass, major, minor) -> np.ndarray:
    """COLOR: per colour bucket, transformed channels minus their offsets (signed)."""
    bucket = qc.bucket(np.stack([major, minor], axis=1))
    sizes = np.bincount(bucket, minlength=qc.buckets).tolist()
    nb = qc.buckets
    offs, streams = dec("color", nb * channels, [m for m in sizes for _ in range(channels)],
                        nb * channels)
    tcol = np.zeros((n, channels), dtype=np.int64)
    den = np.array(qc.dens(), np.int64)[bucket]
    for b, d in enumerate(qc.dens()):
        span = 2 * (COLOR_RANGE[1] - COLOR_RANGE[0]) * d   # bound on |offset|, |t| / 2
        sel = bucket == b
        for c in range(channels):
            off = offs[b * channels + c]
            if abs(off) > span:
                raise FormatError("colour offset out of range")
            tcol[sel, c] = _signed(streams[b * channels + c], 2 * span, "colour") + off
    color = inverse_color_transform(tcol)
    if n and (np.any(color < COLOR_RANGE[0] * den[:, None])
              or np.any(color > COLOR_RANGE[1] * den[:, None])):
        raise FormatError("colour outside the allowed range")
    return color


def _decode_wave(data: bytes, span: tuple[int, int], n: int, qc: QuantClass) -> np.ndarray:
    """WAVE (version 5): [n, 4] (amp, axis, freq, phase), 0 for Gaussians without a wave."""
    s, e = span
    wave = np.zeros((n, len(WAVE_PARTS)), np.int64)
    if qc.wave_den == 0:
        if e != s:
            raise FormatError(f"WAVE section of {e - s} bytes in a class without waves "
                              f"(wave_den 0; it must be empty)")
        return wave
    if e - s < WAVE_COUNT.size:
        raise FormatError("WAVE section too short for its wave count")
    (m,) = WAVE_COUNT.unpack_from(data, s)
    if m > n:
        raise FormatError(f"WAVE section counts {m} waves in a class of {n} Gaussians")
    amp, code, phase = entropy.decode_streams(data, [n, m, m], 3, s + WAVE_COUNT.size, e)
    on = amp > 0
    if int(on.sum()) != m:
        raise FormatError(f"WAVE section has {int(on.sum())} non-zero amplitudes, "
                          f"its count says {m}")
    if n and int(amp.max()) > WAVE_AMP_MAX * qc.wave_den:
        raise FormatError(f"wave amplitude above {WAVE_AMP_MAX} * wave_den")
    if m and int(code.max()) >= 2 * qc.wave_freqs:
        raise FormatError("wave frequency level outside [0, wave_freqs)")
    if m and int(phase.max()) >= qc.wave_phases:
        raise FormatError("wave phase level outside [0, wave_phases)")
    code = code.astype(np.int64)
    wave[:, 0] = amp.astype(np.int64)
    wave[on, 1] = code & 1
    wave[on, 2] = code >> 1
    wave[on, 3] = phase.astype(np.int64)
    return wave


def _signed(u: np.ndarray, limit: int, what: str) -> np.ndarray:
    """Unzigzag and bound |v| <= limit (so later sums stay far from overflow)."""
    if u.size and int(u.max()) > 2 * limit:
        raise FormatError(f"{what} out of range")
    return entropy.unzigzag(u)


# ---- writer -------------------------------------------------------------------------------
def _container(profile: int, channels: int, masked: bool, width: int, height: int, n: int,
               sections: list[tuple[int, bytes]]) -> bytes:
    head = _FIXED2.pack(MAGIC, VERSION, profile, channels, FLAG_MASKED if masked else 0,
                        width, height, n)
    head += bytes([len(sections)])
    for sid, body in sections:
        head += struct.pack("<BI", sid, len(body))
    data = head + b"".join(body for _, body in sections)
    size = len(data) + CRC_SIZE
    if n > MAX_COUNT:
        raise ValueError(f"{n} Gaussians exceed the format limit of 2^26")
    if n > COUNT_PER_BYTE * size:
        raise ValueError(f"{n} Gaussians in {size} bytes violate N <= 16 * file size")
    return data + struct.pack("<I", zlib.crc32(data))


def write(g) -> bytes:
    """Encode to .gsi (version 5) bytes: QuantizedGaussians as profile 0 ("gsi"), a
    gaussianimage.GIGaussians as profile 1. Raises ValueError if g is not representable."""
    if not isinstance(g, QuantizedGaussians):      # profile gaussianimage
        body = gaussianimage.pack(g)
        return _container(PROFILE_GAUSSIANIMAGE, g.channels, False, g.width, g.height,
                          g.count, [(SEC_GAUSSIANIMAGE, body)])
    qg = g
    for qc in qg.classes:
        _check_class(qc, ValueError)
    qg.validate()
    if qg.count > MAX_COUNT:
        raise ValueError(f"{qg.count} Gaussians exceed the format limit of 2^26")
    q = qg.sorted()
    counts = q.class_counts()
    records = bytes([len(q.classes)]) + b"".join(
        _class_record(cnt, qc) for cnt, qc in zip(counts, q.classes, strict=False))
    sections = [(SEC_CLASSES, records)]
    start = 0
    per = len(ATTRIBUTES)
    for k, cnt in enumerate(counts):
        sl = slice(start, start + cnt)
        start += cnt
        bodies = _encode_class(q.pos[sl], q.scale[sl], q.rot[sl], q.color[sl], q.wave[sl],
                               q.channels, q.classes[k])
        sections += [(SEC_CLASS_BASE + per * k + a, body) for a, body in enumerate(bodies)]
    return _container(PROFILE_GSI, q.channels, q.masked, q.width, q.height, q.count, sections)


# ---- reader -------------------------------------------------------------------------------
PEEK_SIZE = _FIXED1.size          # enough bytes for `peek` with either version


def _version(data: bytes) -> int:
    """The version byte, after the checks the spec orders first (magic, then version)."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a .gsi file (bad magic)")
    if len(data) < len(MAGIC) + 1:
        raise FormatError("truncated header")
    version = data[len(MAGIC)]
    if version not in READ_VERSIONS:
        raise FormatError(f"unsupported .gsi version {version} "
                          f"(this decoder reads versions 1 to 5)")
    return version


def peek(prefix: bytes) -> dict:
    """Width, height, channels, count and version from the first PEEK_SIZE bytes of a
    file, without the rest (what an image library needs to open a file lazily). The
    fields are range-checked; the sections and the CRC are checked only by `read`."""
    prefix = bytes(prefix)
    version = _version(prefix)
    fixed = _FIXED1 if version == 1 else _FIXED2
    if len(prefix) < fixed.size:
        raise FormatError("truncated header")
    if version == 1:
        _, _, channels, flags, width, height, count = fixed.unpack_from(prefix, 0)[:7]
    else:
        _, _, _, channels, flags, width, height, count = fixed.unpack_from(prefix, 0)
    if channels not in (1, 2, 3, 4):
        raise FormatError(f"channel count {channels} not in 1..4")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FormatError(f"image size {width}x{height} outside 1..{MAX_SIDE}")
    return {"version": version, "channels": channels, "width": width, "height": height,
            "count": count}


def read_header(data: bytes) -> dict:
    """Parse and check the fixed header and section table of a whole .gsi file.
    Returns the header fields and `sections`, a list of (id, offset, length)."""
    data = bytes(data)
    version = _version(data)
    return _header_v1(data) if version == 1 else _header_v2(data)


def _check_common(channels, flags, width, height, count, size):
    if channels not in (1, 2, 3, 4):
        raise FormatError(f"channel count {channels} not in 1..4")
    if flags & ~FLAG_MASKED:
        raise FormatError(f"reserved flag bits set (flags = {flags:#06x})")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FormatError(f"image size {width}x{height} outside 1..{MAX_SIDE}")
    if count > MAX_COUNT or count > COUNT_PER_BYTE * size:
        raise FormatError(f"Gaussian count {count} too large for a {size}-byte file")


def _section_table(data: bytes, pos: int) -> list[tuple[int, int, int]]:
    """(id, offset, length) of each section; the lengths must fill the file exactly."""
    if len(data) < pos + 1:
        raise FormatError("truncated section table")
    nsec = data[pos]
    pos += 1
    if len(data) < pos + SECTION_ENTRY * nsec + CRC_SIZE:
        raise FormatError("truncated section table")
    entries = [struct.unpack_from("<BI", data, pos + SECTION_ENTRY * i) for i in range(nsec)]
    offset = pos + SECTION_ENTRY * nsec
    table = []
    for sid, length in entries:
        table.append((sid, offset, length))
        offset += length
    if offset + CRC_SIZE != len(data):
        raise FormatError(f"section lengths give a {offset + CRC_SIZE}-byte file, "
                          f"got {len(data)} bytes")
    return table


def _header_v2(data: bytes) -> dict:
    if len(data) < FIXED2_SIZE + 1 + CRC_SIZE:
        raise FormatError("truncated header")
    _, version, profile, channels, flags, width, height, count = _FIXED2.unpack_from(data, 0)
    if profile not in PROFILES:
        raise FormatError(f"unknown profile {profile}")
    _check_common(channels, flags, width, height, count, len(data))
    table = _section_table(data, FIXED2_SIZE)
    h = {"version": version, "profile": PROFILES[profile], "channels": channels,
         "flags": flags, "masked": bool(flags & FLAG_MASKED), "width": width,
         "height": height, "count": count, "sections": table}
    if profile == PROFILE_GAUSSIANIMAGE:
        if [sid for sid, _, _ in table] != [SEC_GAUSSIANIMAGE]:
            raise FormatError(f"profile gaussianimage needs exactly one section with id "
                              f"{SEC_GAUSSIANIMAGE}")
        return h
    if not table or table[0][0] != SEC_CLASSES:
        raise FormatError(f"first section must be the class table (id {SEC_CLASSES})")
    _, off, length = table[0]
    classes, counts, k = _class_table(data, off, length, version)
    if sum(counts) != count:
        raise FormatError(f"class counts add up to {sum(counts)}, header says {count}")
    per = len(class_attributes(version))
    want = [SEC_CLASSES] + [SEC_CLASS_BASE + per * i + a for i in range(k) for a in range(per)]
    if [sid for sid, _, _ in table] != want:
        raise FormatError(f"sections {[sid for sid, _, _ in table]}, expected {want}")
    h["classes"] = classes
    h["class_counts"] = counts
    return h


def _class_table(data: bytes, off: int, length: int, version: int):
    """The class table of `length` bytes at `off`: (classes, counts, k)."""
    k = data[off] if length else 0
    if not 1 <= k <= MAX_CLASSES:
        raise FormatError(f"bad class table ({length} bytes, {k} classes)")
    classes, counts = [], []
    pos, end = off + 1, off + length
    for i in range(k):
        if end - pos < CLASS_RECORD.size:
            raise FormatError(f"class table too short ({length} bytes, {k} classes)")
        cnt, *params = CLASS_RECORD.unpack_from(data, pos)
        pos += CLASS_RECORD.size
        area_lo, nb, dens, rot_bias, waves = 0, 1, (), UNIFORM_ROT_BIAS, (0, 1, 0, 1)
        if version >= 3:      # colour buckets (version 4: angle levels, 5: waves)
            if end - pos < _record_tail(version):
                raise FormatError(f"class table too short ({length} bytes, {k} classes)")
            area_lo, nb = BUCKET_RECORD.unpack_from(data, pos)
            pos += BUCKET_RECORD.size
            if version >= 4:
                (rot_bias,) = ROT_RECORD.unpack_from(data, pos)
                pos += ROT_RECORD.size
            if version >= 5:
                waves = WAVE_RECORD.unpack_from(data, pos)
                pos += WAVE_RECORD.size
            if not 1 <= nb <= MAX_BUCKETS or end - pos < 2 * (nb - 1):
                raise FormatError(f"bad class table ({length} bytes, class {i}: "
                                  f"{nb} colour buckets)")
            dens = struct.unpack_from(f"<{nb - 1}H", data, pos)
            pos += 2 * (nb - 1)
        qc = QuantClass(*params, area_lo=area_lo, color_dens=tuple(dens), rot_bias=rot_bias,
                        **dict(zip(("wave_den", "wave_freqs", "wave_f0", "wave_phases"), waves,
                                   strict=True)))
        _check_class(qc, FormatError)
        classes.append(qc)
        counts.append(cnt)
    if pos != end:
        raise FormatError(f"bad class table ({length} bytes, {k} classes)")
    return classes, counts, k


def _record_tail(version: int) -> int:
    """Bytes of a class record after its first 10 and before its colour denominators."""
    return (BUCKET_RECORD.size + (ROT_RECORD.size if version >= 4 else 0)
            + (WAVE_RECORD.size if version >= 5 else 0))


def _header_v1(data: bytes) -> dict:
    if len(data) < V1_HEADER_SIZE + CRC_SIZE:
        raise FormatError("truncated header")
    (_, version, channels, flags, width, height, count, pos_bits, scale_steps, rot_levels,
     color_den) = _FIXED1.unpack_from(data, 0)
    _check_common(channels, flags, width, height, count, len(data))
    _check_class(QuantClass(pos_bits, scale_steps, rot_levels, color_den), FormatError)
    if data[_FIXED1.size] != len(V1_SECTIONS):
        raise FormatError(f"{data[_FIXED1.size]} sections, expected {len(V1_SECTIONS)}")
    table = _section_table(data, _FIXED1.size)
    if [sid for sid, _, _ in table] != [sid for sid, _ in V1_SECTIONS]:
        raise FormatError(f"sections {[sid for sid, _, _ in table]}, expected 1, 2, 3, 4")
    return {"version": version, "profile": "gsi", "channels": channels, "flags": flags,
            "masked": bool(flags & FLAG_MASKED), "width": width, "height": height,
            "count": count, "sections": table,
            "classes": [QuantClass(pos_bits, scale_steps, rot_levels, color_den)],
            "class_counts": [count]}


def _check_crc(data: bytes) -> None:
    (stored,) = struct.unpack_from("<I", data, len(data) - CRC_SIZE)
    if zlib.crc32(memoryview(data)[:-CRC_SIZE]) != stored:
        raise FormatError("checksum mismatch")


def read(data: bytes):
    """Decode a .gsi file: QuantizedGaussians (profile gsi) or gaussianimage.GIGaussians
    (profile gaussianimage). Any invalid input raises FormatError (and nothing else)."""
    try:
        return _read(bytes(data))
    except FormatError:
        raise
    except Exception as exc:    # defensive: never leak another exception type
        raise FormatError(f"invalid .gsi file ({type(exc).__name__}: {exc})") from None


def _read(data: bytes):
    h = read_header(data)
    _check_crc(data)
    n, c, w, hh = h["count"], h["channels"], h["width"], h["height"]
    if h["profile"] == "gaussianimage":
        _, off, length = h["sections"][0]
        return gaussianimage.unpack(data, off, off + length, n, c, w, hh)
    v1 = h["version"] == 1
    sections = h["sections"] if v1 else h["sections"][1:]
    names = class_attributes(h["version"])
    per = len(names)
    parts = []
    for k, (qc, cnt) in enumerate(zip(h["classes"], h["class_counts"], strict=False)):
        spans = {a: (off, off + length) for a, (_, off, length)
                 in zip(names, sections[per * k: per * k + per], strict=True)}
        parts.append(_decode_class(data, spans, cnt, c, w, hh, qc, h["version"]))

    def cat(i, shape):
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(shape, np.int64)

    cls = np.repeat(np.arange(len(h["classes"])), h["class_counts"])
    qg = QuantizedGaussians(
        w, hh, c, cat(0, (0, 2)).astype(np.int32), cat(1, (0, 2)).astype(np.int32),
        cat(2, (0,)).astype(np.int32), cat(3, (0, c)).astype(np.int32), masked=h["masked"],
        classes=tuple(h["classes"]), cls=cls,
        wave=cat(4, (0, len(WAVE_PARTS))).astype(np.int32))
    try:
        qg.validate()
    except ValueError as exc:  # cannot happen after the checks above; keep the contract
        raise FormatError(str(exc)) from None
    return qg


# ---- description --------------------------------------------------------------------------
def describe(data: bytes) -> dict:
    """Header fields, exact section sizes and rates of a .gsi file (header checks only).

    Keys: version, profile, channels, flags, masked, width, height, count, file_bytes,
    header_bytes (fixed header, section table, class table), crc_bytes, bpp (file bits
    per pixel), bits_per_gaussian ({attribute: bits, "header": bits, "total": bits}; empty
    when count == 0) and, for profile gsi, classes (a list of {count, pos_bits,
    scale_steps, rot_levels, color_den, area_lo, rot_bias, color_dens (the denominators of the
    colour buckets, the first = color_den), bytes: {attribute: bytes}}) and sections
    ({attribute: bytes} summed over classes). Version 5 adds wave_den, wave_freqs,
    wave_f0, wave_phases to each class and the `wave` attribute (0 bytes in versions 1
    to 4, which have no WAVE sections)."""
    h = read_header(data)
    n, size = h["count"], len(data)
    info = {k: v for k, v in h.items() if k not in ("sections", "classes", "class_counts")}
    info["file_bytes"] = size
    info["crc_bytes"] = CRC_SIZE
    info["bpp"] = size * 8 / (h["width"] * h["height"])
    table = h["sections"]
    payload = {}
    if h["profile"] == "gaussianimage":
        _, off, length = table[0]
        g = gaussianimage.unpack(bytes(data), off, off + length, n, h["channels"],
                                 h["width"], h["height"])
        bpg = g.bits_per_gaussian()
        info["header_bytes"] = size - CRC_SIZE - length
        info["bits_per_gaussian"] = {}
        if n:
            info["bits_per_gaussian"] = {k: v for k, v in bpg.items() if k != "total"}
            info["bits_per_gaussian"]["header"] = 8 * (info["header_bytes"] + CRC_SIZE) / n
            info["bits_per_gaussian"]["total"] = 8 * size / n
        return info
    v1 = h["version"] == 1
    class_sections = table if v1 else table[1:]
    per = len(class_attributes(h["version"]))
    info["classes"] = []
    for k, (qc, cnt) in enumerate(zip(h["classes"], h["class_counts"], strict=False)):
        sizes = dict.fromkeys(ATTRIBUTES, 0)
        sizes.update({a: length for a, (_, _, length)
                      in zip(ATTRIBUTES, class_sections[per * k: per * k + per], strict=False)})
        info["classes"].append({"count": cnt, **dict(zip(PARAM_RANGES, qc.astuple(), strict=False)),
                                "area_lo": qc.area_lo, "rot_bias": qc.rot_bias,
                                "color_dens": list(qc.dens()),
                                "wave_den": qc.wave_den, "wave_freqs": qc.wave_freqs,
                                "wave_f0": qc.wave_f0, "wave_phases": qc.wave_phases,
                                "bytes": sizes})
        for a in ATTRIBUTES:
            payload[a] = payload.get(a, 0) + sizes[a]
    info["sections"] = payload
    info["header_bytes"] = size - CRC_SIZE - sum(payload.values())
    info["bits_per_gaussian"] = {}
    if n:
        info["bits_per_gaussian"] = {a: 8 * b / n for a, b in payload.items()}
        info["bits_per_gaussian"]["header"] = 8 * (info["header_bytes"] + CRC_SIZE) / n
        info["bits_per_gaussian"]["total"] = 8 * size / n
    return info
