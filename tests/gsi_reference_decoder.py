"""Independent .gsi decoder (versions 1 to 5) written from spec/gsi-format.md alone.

Pure Python (ints, struct, zlib): no numpy, no constriction, no gscodec
imports. It exists to prove that the specification is complete; tests compare it with
gscodec.bitstream.format.read() and with gscodec's pixels.

decode(data) -> dict with the header fields and lists of per-Gaussian integers
(x, y, major, minor, rot, color[N][C], amp, axis, freq, phase, cls) in file order.
Profile 0: "classes" holds per class [pos_bits, scale_steps, rot_levels, color_den]
(versions 1, 2) or, version 3, the same followed by area_lo and the list
[den_1, ..., den_{B-1}] of colour buckets 1..B-1 (empty for a one-bucket class), or,
version 4, the version-3 list followed by rot_bias, or, version 5, the version-4 list
followed by wave_den, wave_freqs, wave_f0, wave_phases; "bucket" holds each Gaussian's
colour bucket (spec 3.2) and "levels" its number of angle levels L_i (spec 3.2 "Angle
levels"; versions 4, 5), so that its angle is pi * rot / levels (spec 9). Versions 2 and
3: levels = rot_levels for anisotropic Gaussians, 1 for isotropic ones (spec 13.2);
version 1: rot_levels for every Gaussian (spec 12). Versions 1 to 4 have no waves
(amp = axis = freq = phase = 0, spec 13.1). Raises ReferenceDecodeError.

The pixels (spec section 10) are rendered from decode()'s output by the companion module
gsi_reference_render.py (numpy), written from the spec alone too.
"""
import struct
import zlib

MAGIC = b"\x89GSI\r\n\x1a\n"
LUT = [0, 1, 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128,
       181, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096, 5793, 8192,
       11585, 16384, 23170, 32768]
M64 = (1 << 64) - 1


class ReferenceDecodeError(Exception):
    pass


def fail(msg):
    raise ReferenceDecodeError(msg)


def normalise(codes):
    n = len(codes)
    w = [LUT[c] for c in codes]
    s = sum(w)
    if s == 0:
        w = [1] * n
        s = n
    F = (1 << 24) - n
    f = [1 + (wi * F) // s for wi in w]
    j = w.index(max(w))
    f[j] += (1 << 24) - sum(f)
    return f


class RangeDecoder:
    def __init__(self, words):
        self.words = words
        self.lower = 0
        self.range = M64
        self.point = (self.word(0) << 32) | self.word(1)
        self.next = 2

    def word(self, i):
        return self.words[i] if i < len(self.words) else 0

    def decode(self, f, cum):
        scale = self.range >> 24
        q = ((self.point - self.lower) & M64) // scale
        if q >= 1 << 24:
            fail("range decoder: quantile out of range")
        # find s with cum[s] <= q < cum[s] + f[s] (binary search)
        lo, hi = 0, len(f) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cum[mid] <= q:
                lo = mid
            else:
                hi = mid - 1
        s = lo
        self.lower = (self.lower + scale * cum[s]) & M64
        self.range = scale * f[s]
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & M64
            self.range <<= 32
            self.point = ((self.point << 32) & M64) | self.word(self.next)
            self.next += 1
        return s


def read_tables(data, pos, end, k):
    """The k frequency tables at pos (spec 7.1) -> (lists of codes, the position after)."""
    tables = []
    for _ in range(k):
        if pos + 1 > end:
            fail("truncated table")
        T = data[pos]
        pos += 1
        if T > 52:
            fail("T too large")
        ncodes = T + 1
        nbytes = (5 * ncodes + 7) // 8
        if pos + nbytes > end:
            fail("truncated table")
        bits = int.from_bytes(data[pos:pos + nbytes], "big")
        pad = 8 * nbytes - 5 * ncodes
        if bits & ((1 << pad) - 1):
            fail("table padding")
        bits >>= pad
        codes = [(bits >> (5 * (ncodes - 1 - i))) & 31 for i in range(ncodes)]
        tables.append(codes)
        pos += nbytes
    return tables, pos


def raw_values(area, all_tokens):
    """The values of token lists whose raw bits are the bytes `area` (spec 6, 7.3)."""
    B = sum(t - 5 for toks in all_tokens for t in toks if t >= 8)
    if len(area) != (B + 7) // 8:
        fail("raw area size")
    abits = int.from_bytes(area, "big")
    pad = 8 * len(area) - B
    if abits & ((1 << pad) - 1):
        fail("raw padding")
    bitstr = bin(abits >> pad)[2:].zfill(B) if B else ""
    bp = 0
    out = []
    for toks in all_tokens:
        vals = []
        for t in toks:
            if t < 8:
                vals.append(t)
            else:
                nb = t - 5
                r = int(bitstr[bp:bp + nb], 2) if nb else 0
                bp += nb
                vals.append((1 << nb) + r)
        out.append(vals)
    return out


def decode_section(data, start, end, lengths, num_streams=None):
    """One class section (spec 7) without its offsets -> the values of each stream.
    lengths[s]: the length of stream s; or lengths = n and num_streams streams of length n."""
    if num_streams is not None:
        lengths = [lengths] * num_streams
    tables, pos = read_tables(data, start, end, len(lengths))
    if pos + 4 > end:
        fail("truncated word count")
    (W,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if 4 * W > end - pos:
        fail("payload too long")
    words = list(struct.unpack_from("<%dI" % W, data, pos))
    pos += 4 * W
    rd = RangeDecoder(words)
    all_tokens = []
    for codes, n in zip(tables, lengths, strict=True):
        if n == 0 or len(codes) == 1:
            all_tokens.append([0] * n)
            continue
        f = normalise(codes)
        cum = [0]
        for fi in f:
            cum.append(cum[-1] + fi)
        all_tokens.append([rd.decode(f, cum) for _ in range(n)])
    return raw_values(data[pos:end], all_tokens)


def unzigzag(u):
    return u >> 1 if u % 2 == 0 else -(u >> 1) - 1


def deinterleave(m):
    x = y = 0
    for k in range(32):
        x |= ((m >> (2 * k)) & 1) << k
        y |= ((m >> (2 * k + 1)) & 1) << k
    return x, y


def bucket_of(major, minor, scale_steps, area_lo, B):
    """Colour bucket (spec 3.2): clamp(floor((major + minor) / scale_steps) - area_lo, 0, B-1)."""
    return min(max((major + minor) // scale_steps - area_lo, 0), B - 1)


def ilog4(a):
    """floor(4 * log2(a)) for an integer a >= 1, exactly: bit_length(a^4) - 1 (spec 3.2)."""
    return (a ** 4).bit_length() - 1


def angle_levels(major, minor, scale_steps, rot_levels, rot_bias):
    """Angle levels L_i of a Gaussian (spec 3.2, "Angle levels"), integer arithmetic only:
    1 if isotropic; else x = rot_bias + ilog4(a) + floor((major + minor) / s)
    + floor(2 * max(0, a - s) / s) with a = major - minor, and L = 1 (x < 0),
    min(R, ((4 + (x mod 4)) << (x // 4)) >> 2) (0 <= x < 52), R (x >= 52)."""
    a = major - minor
    if a < 0:
        fail("log-scale")
    if a == 0:
        return 1
    s = scale_steps
    x = rot_bias + ilog4(a) + (major + minor) // s + (2 * max(0, a - s)) // s
    if x < 0:
        return 1
    if x >= 52:
        return rot_levels
    return min(rot_levels, ((4 + (x & 3)) << (x >> 2)) >> 2)


def uniform_table(L):
    """Uniform frequency table of L symbols (spec 7.4) -> (f, cum):
    f_j = floor(2^24 / L) for j < L-1, f_{L-1} = 2^24 - (L-1) * floor(2^24 / L)."""
    q = (1 << 24) // L
    f = [q] * (L - 1) + [(1 << 24) - (L - 1) * q]
    cum = [0]
    for fi in f:
        cum.append(cum[-1] + fi)
    return f, cum


def decode_rot_section(data, start, end, levels):
    """Version-4 ROT section (spec 7.4): u32 W, W u32 words, nothing else (length exactly
    4 + 4W). The rotations of the Gaussians with L_i >= 2, grouped by L (increasing), each
    group in increasing i, uniformly coded in one range-coder session -> rot_i of every
    Gaussian of the class (0 where L_i == 1)."""
    if end - start < 4:
        fail("truncated ROT word count")
    (W,) = struct.unpack_from("<I", data, start)
    if end - start != 4 + 4 * W:
        fail("ROT section length")
    words = list(struct.unpack_from("<%dI" % W, data, start + 4))
    counts = {}
    for L in levels:
        if L >= 2:
            counts[L] = counts.get(L, 0) + 1
    rd = RangeDecoder(words)
    values = {}
    for L in sorted(counts):
        f, cum = uniform_table(L)
        values[L] = [rd.decode(f, cum) for _ in range(counts[L])]
    rots, taken = [], {}
    for L in levels:
        if L < 2:
            rots.append(0)
        else:
            j = taken.get(L, 0)
            taken[L] = j + 1
            rots.append(values[L][j])
    return rots


def decode_wave_section(data, start, end, n, waves):
    """WAVE section (spec 7.5) of a class of n Gaussians with waves = (wave_den, F, f0, P)
    -> lists amp, axis, freq, phase (spec 9)."""
    wave_den, F, _, P = waves
    if wave_den == 0:
        if end != start:
            fail("WAVE section of a class without waves")
        return [0] * n, [0] * n, [0] * n, [0] * n
    if end - start < 4:
        fail("truncated WAVE count")
    (m,) = struct.unpack_from("<I", data, start)
    if m > n:
        fail("WAVE count larger than the class")
    amp, code, phase = decode_section(data, start + 4, end, [n, m, m])
    if sum(1 for a in amp if a > 0) != m:
        fail("WAVE count differs from the non-zero amplitudes")
    if any(a > 4 * wave_den for a in amp) or any(v >= 2 * F for v in code) \
            or any(p >= P for p in phase):
        fail("wave integer out of range")
    axis, freq, ph = [0] * n, [0] * n, [0] * n
    j = 0
    for i in range(n):
        if amp[i] > 0:
            axis[i], freq[i], ph[i] = code[j] % 2, code[j] >> 1, phase[j]
            j += 1
    return amp, axis, freq, ph


def decode_class(data, spans, n, C, W, H, cls, version):
    """The sections of one class (four; version 5: five) -> lists of x, y, major, minor,
    rot, colour, bucket, levels, amp, axis, freq, phase.

    cls = (pos_bits, scale_steps, rot_levels, dens, area_lo, rot_bias, waves):
    dens = (den_0, ..., den_{B-1}); versions 1 and 2 have one bucket: dens = (color_den,),
    area_lo = 0; versions 1 to 3 have no rot_bias (decoded as 127, spec 13.2), versions 4
    and 5 their ROT section of spec 7.4; waves = (wave_den, F, f0, P), (0, 1, 0, 1) before
    version 5 (no waves, spec 13.1)."""
    pos_bits, scale_steps, rot_levels, dens, area_lo, rot_bias, waves = cls
    B = len(dens)

    def offsets(start, end, k):
        if end - start < 4 * k:
            fail("offsets")
        return list(struct.unpack_from("<%di" % k, data, start)), start + 4 * k

    (ps, pe), (ss, se), (rs, re), (cs, ce) = spans[:4]
    (pos,) = decode_section(data, ps, pe, [n])
    (major_off,), s1 = offsets(ss, se, 1)
    scale0, scale1 = decode_section(data, s1, se, [n, n])
    lo, hi = -3 * scale_steps, 15 * scale_steps
    if not lo <= major_off <= hi:
        fail("offset")
    majors = [major_off + unzigzag(scale0[i]) for i in range(n)]
    minors = [majors[i] - scale1[i] for i in range(n)]
    # the SCALE section gives each Gaussian's colour bucket, hence the COLOR stream lengths
    buckets = [bucket_of(majors[i], minors[i], scale_steps, area_lo, B) for i in range(n)]
    per_bucket = [buckets.count(b) for b in range(B)]
    # COLOR: B*C offsets off[b][c] (bucket-major), then B*C streams s = b*C + c
    flat_off, s3 = offsets(cs, ce, B * C)
    col_off = [flat_off[b * C:(b + 1) * C] for b in range(B)]
    if any(abs(o) > 10 * dens[b] for b in range(B) for o in col_off[b]):
        fail("offset")
    streams = decode_section(data, s3, ce, [per_bucket[b] for b in range(B) for _ in range(C)])
    if version >= 4:
        # the SCALE section also gives each Gaussian's angle levels L_i (spec 3.2)
        levels = [angle_levels(majors[i], minors[i], scale_steps, rot_levels, rot_bias)
                  for i in range(n)]
        rots = decode_rot_section(data, rs, re, levels)
    else:
        # version 2 and 3 code a rotation only for anisotropic Gaussians (major > minor),
        # version 1 for all of them, in one token stream (spec 13.2, 12)
        all_rotations = version == 1
        rotating = [all_rotations or scale1[i] > 0 for i in range(n)]
        levels = [rot_levels if rotating[i] else 1 for i in range(n)]
        (coded,) = decode_section(data, rs, re, [sum(rotating)])
        rots, j = [], 0
        for i in range(n):
            if rotating[i]:
                rots.append(coded[j])
                j += 1
            else:
                rots.append(0)
    if version >= 5:
        amp, axis, freq, phase = decode_wave_section(data, *spans[4], n, waves)
    else:
        amp, axis, freq, phase = [0] * n, [0] * n, [0] * n, [0] * n
    out = {"x": [], "y": [], "major": majors, "minor": minors, "rot": rots, "color": [],
           "bucket": buckets, "levels": levels, "amp": amp, "axis": axis, "freq": freq,
           "phase": phase}
    m = 0
    seen = [0] * B                   # Gaussians of each bucket already taken
    for i in range(n):
        m += pos[i]
        x, y = deinterleave(m)
        if m >> 64 or x > W << pos_bits or y > H << pos_bits:
            fail("position")
        if not (lo <= minors[i] <= majors[i] <= hi):
            fail("log-scale")
        if rots[i] >= levels[i]:      # versions 1-3: levels[i] == rot_levels where coded
            fail("rot")
        b = buckets[i]
        jb = seen[b]
        seen[b] += 1
        t = [col_off[b][c] + unzigzag(streams[b * C + c][jb]) for c in range(C)]
        if C >= 3:  # coded as (G, R - G, B - G[, A])
            t[0], t[1], t[2] = t[1] + t[0], t[0], t[2] + t[0]
        if not all(-2 * dens[b] <= v <= 3 * dens[b] for v in t):
            fail("colour")
        out["x"].append(x)
        out["y"].append(y)
        out["color"].append(t)
    return out


def check_params(pos_bits, scale_steps, rot_levels, color_den):
    if not (pos_bits <= 8 and 1 <= scale_steps <= 64 and 1 <= rot_levels <= 4096
            and 1 <= color_den):
        fail("quantization parameter")


def class_table(data, s, e, version):
    """Profile-0 class table (spec 3.2: 17 fixed bytes per record; version 4: 13, spec
    13.1; version 3: 12, spec 13.2; version 2: 10-byte records, spec 13.3) ->
    list of (count, (pos_bits, scale_steps, rot_levels, dens, area_lo, rot_bias, waves)),
    rot_bias = 127 for versions 2 and 3 (one angle step, spec 13.2), waves = (wave_den,
    F, f0, P) = (0, 1, 0, 1) for versions 2 to 4 (no waves, spec 13.1)."""
    K = data[s] if e > s else 0
    if not 1 <= K <= 8:
        fail("class table")
    pos = s + 1
    out = []
    for _ in range(K):
        waves = (0, 1, 0, 1)
        if version == 2:
            if pos + 10 > e:
                fail("class table")
            cnt, pb, ss, rl, den0 = struct.unpack_from("<IBBHH", data, pos)
            pos += 10
            area_lo, dens, rot_bias = 0, (den0,), 127
        else:
            fixed = {3: 12, 4: 13, 5: 17}[version]
            if pos + fixed > e:
                fail("class table")
            if version >= 5:        # rot_bias: i8, any value; wave_den: u8, any value
                cnt, pb, ss, rl, den0, area_lo, B, rot_bias, wden, F, f0, P = \
                    struct.unpack_from("<IBBHHbBbBBbB", data, pos)
                if not (1 <= F <= 32 and -32 <= f0 <= 32 and 1 <= P <= 64):
                    fail("wave field")
                waves = (wden, F, f0, P)
            elif version >= 4:
                cnt, pb, ss, rl, den0, area_lo, B, rot_bias = struct.unpack_from(
                    "<IBBHHbBb", data, pos)
            else:
                cnt, pb, ss, rl, den0, area_lo, B = struct.unpack_from("<IBBHHbB", data, pos)
                rot_bias = 127
            pos += fixed
            if not -6 <= area_lo <= 30 or not 1 <= B <= 8:
                fail("class table")
            if pos + 2 * (B - 1) > e:
                fail("class table")
            dens = (den0,) + struct.unpack_from("<%dH" % (B - 1), data, pos)
            pos += 2 * (B - 1)
            if not all(1 <= d <= 65535 for d in dens):
                fail("quantization parameter")
        check_params(pb, ss, rl, den0)
        out.append((cnt, (pb, ss, rl, dens, area_lo, rot_bias, waves)))
    if pos != e:
        fail("class table length")
    return out


def section_table(data, pos):
    L = len(data)
    if pos + 1 > L:
        fail("short")
    k = data[pos]
    pos += 1
    if pos + 5 * k + 4 > L:
        fail("short")
    table = []
    off = pos + 5 * k
    for i in range(k):
        sid, ln = struct.unpack_from("<BI", data, pos + 5 * i)
        table.append((sid, off, off + ln))
        off += ln
    if off + 4 != L:
        fail("lengths")
    return table


def header_v1(data):
    """Version 1 (spec 12): (C, flags, W, H, N, table, classes, counts, spans)."""
    if len(data) < 55:
        fail("short")
    (_, C, flags, W, H, N, pos_bits, scale_steps, rot_levels,
     color_den) = struct.unpack_from("<BBHIIIBBHH", data, 8)
    check_params(pos_bits, scale_steps, rot_levels, color_den)
    if data[30] != 4:
        fail("section count")
    table = section_table(data, 30)
    if [t[0] for t in table] != [1, 2, 3, 4]:
        fail("section id")
    classes = [(pos_bits, scale_steps, rot_levels, (color_den,), 0, 127, (0, 1, 0, 1))]
    return C, flags, W, H, N, table, classes, [N], [[(s, e) for _, s, e in table]]


def class_sections(data, table, N, version):
    """Profile 0, versions 2 to 5: the class table and the section ids (spec 3.2) ->
    (classes, counts, spans: per class the (start, end) of its sections)."""
    if not table or table[0][0] != 1:
        fail("section id")
    _, s, e = table[0]
    records = class_table(data, s, e, version)
    K = len(records)
    counts = [cnt for cnt, _ in records]
    classes = [cls for _, cls in records]
    if sum(counts) != N:
        fail("class counts")
    per = 5 if version >= 5 else 4     # POS, SCALE, ROT, COLOR (and WAVE)
    want = [1] + [16 + per * k + a for k in range(K) for a in range(per)]
    if [t[0] for t in table] != want:
        fail("section id")
    spans = [[(s, e) for _, s, e in table[1 + per * k: 1 + per * (k + 1)]] for k in range(K)]
    return classes, counts, spans


def decode(data):
    data = bytes(data)
    L = len(data)
    if L < 8 or data[:8] != MAGIC:
        fail("magic")
    if L < 9:
        fail("truncated header")
    if data[8] not in (1, 2, 3, 4, 5):
        fail("unsupported .gsi version %d (this decoder reads versions 1 to 5)" % data[8])
    version = data[8]
    if version == 1:
        profile = 0
        C, flags, W, H, N, table, classes, counts, spans = header_v1(data)
    else:
        if L < 29:
            fail("short")
        _, profile, C, flags, W, H, N = struct.unpack_from("<BBBBIII", data, 8)
        if profile not in (0, 1):
            fail("profile")
        table = section_table(data, 24)
    if C not in (1, 2, 3, 4) or flags & 0xFFFE or not 1 <= W <= 16384 \
            or not 1 <= H <= 16384:
        fail("header field")
    if N > 1 << 26 or N > 16 * L:
        fail("count")
    if version >= 2 and profile == 1:      # profile 1: the same in versions 2 to 5
        if [t[0] for t in table] != [2]:
            fail("section id")
    elif version >= 2:
        classes, counts, spans = class_sections(data, table, N, version)
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, L - 4)[0]:
        fail("crc")
    head = {"version": version, "profile": profile, "channels": C, "flags": flags,
            "width": W, "height": H, "count": N}
    if profile == 1:
        _, s, e = table[0]
        import gsi_reference_gi
        try:
            head["gaussianimage"] = gsi_reference_gi.decode(data[s:e], N, C, W, H)
        except gsi_reference_gi.ReferenceDecodeError as err:    # one error type for all
            raise ReferenceDecodeError("profile 1: %s" % err) from err
        return head
    head["classes"] = [[pb, ss, rl, dens[0]] + ([area_lo, list(dens[1:])] if version >= 3 else [])
                       + ([rot_bias] if version >= 4 else [])
                       + (list(waves) if version >= 5 else [])
                       for pb, ss, rl, dens, area_lo, rot_bias, waves in classes]
    head["class_counts"] = counts
    head.update(decode_classes(data, classes, counts, spans, C, W, H, version))
    return head


def decode_classes(data, classes, counts, spans, C, W, H, version):
    """Profile 0: the per-Gaussian lists of all classes, class after class (spec 3.2)."""
    out = {"x": [], "y": [], "major": [], "minor": [], "rot": [], "color": [], "bucket": [],
           "levels": [], "amp": [], "axis": [], "freq": [], "phase": [], "cls": []}
    for k, (cls, cnt, sp) in enumerate(zip(classes, counts, spans, strict=True)):
        part = decode_class(data, sp, cnt, C, W, H, cls, version)
        for key in part:
            out[key] += part[key]
        out["cls"] += [k] * cnt
    return out

