"""Tests of the .gsi bitstream (version 5, and reading versions 1 to 4): round trips,
robustness, exactness of the entropy models, angle levels, waves, and agreement with the
independent reference decoder written from the spec."""
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gscodec.bitstream import entropy
from gscodec.bitstream import format as gsi
from gscodec.bitstream.model import QuantClass, QuantizedGaussians
from gscodec.errors import FormatError

import gsi_reference_decoder as ref

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- generators -----------------------------------------------------------------------------
def make_qg(rng, n, width=None, height=None, channels=None, params=None, extreme=False,
            dup=False, masked=False, rot_bias=127, waves=(0, 1, 0, 1), wave_share=0.5):
    """n random Gaussians of one class; waves = the class's (wave_den, wave_freqs,
    wave_f0, wave_phases): with wave_den > 0 about wave_share of them get a wave."""
    width = width or int(rng.integers(1, 80))
    height = height or int(rng.integers(1, 80))
    channels = channels or int(rng.integers(1, 5))
    pos_bits, scale_steps, rot_levels, color_den = params or (2, 8, 32, 255)

    def pick(lo, hi, shape):
        v = rng.integers(lo, hi + 1, size=shape)
        if extreme:
            ends = rng.choice(np.array([lo, hi]), size=shape)
            v = np.where(rng.random(shape) < 0.5, ends, v)
        return v

    x = pick(0, width << pos_bits, n)
    y = pick(0, height << pos_bits, n)
    lo, hi = -3 * scale_steps, 15 * scale_steps
    a = pick(lo, hi, n)
    b = pick(lo, hi, n)
    major, minor = np.maximum(a, b), np.minimum(a, b)
    qc = QuantClass(pos_bits, scale_steps, rot_levels, color_den, rot_bias=rot_bias,
                    wave_den=waves[0], wave_freqs=waves[1], wave_f0=waves[2],
                    wave_phases=waves[3])
    levels = qc.angle_levels(np.stack([major, minor], 1).reshape(n, 2))
    rot = pick(0, rot_levels - 1, n) % np.maximum(levels, 1)    # within each angle level count
    color = pick(-2 * color_den, 3 * color_den, (n, channels))
    qg = QuantizedGaussians(width, height, channels,
                            np.stack([x, y], 1).astype(np.int32).reshape(n, 2),
                            np.stack([major, minor], 1).astype(np.int32).reshape(n, 2),
                            rot.astype(np.int32), color.astype(np.int32).reshape(n, channels),
                            masked=masked, classes=(qc,),
                            wave=random_waves(rng, n, qc, wave_share, pick))
    if dup and n >= 2:
        idx = rng.integers(0, n, size=n // 2)
        dst = rng.integers(0, n, size=n // 2)
        for name in ("pos", "scale", "rot", "color", "wave"):
            arr = getattr(qg, name)
            arr[dst] = arr[idx]
    return qg


def random_waves(rng, n, qc, share=0.5, pick=None):
    """int32 [n, 4] (amp, axis, freq, phase) within qc's wave steps: about `share` of the
    Gaussians with a wave (none if qc.wave_den == 0); the others carry random axis, freq
    and phase in range (the writer stores them as 0)."""
    def draw(lo, hi, size):
        return pick(lo, hi, size) if pick is not None else rng.integers(lo, hi + 1, size)
    amp = np.where(rng.random(n) < share, draw(1, 4 * qc.wave_den, n), 0) if qc.wave_den \
        else np.zeros(n, np.int64)
    return np.stack([amp, rng.integers(0, 2, n), draw(0, qc.wave_freqs - 1, n),
                     draw(0, qc.wave_phases - 1, n)], 1).astype(np.int32).reshape(n, 4)


def realistic(rng, n, width=768, height=512, channels=3):
    """Smooth-ish random Gaussians resembling a fitted image."""
    x = rng.integers(0, (width << 2) + 1, n)
    y = rng.integers(0, (height << 2) + 1, n)
    major = np.clip(np.round(rng.normal(10, 6, n)), -24, 120).astype(np.int64)
    minor = np.maximum(major - np.abs(np.round(rng.normal(0, 6, n))).astype(np.int64), -24)
    rot = rng.integers(0, 32, n)
    base = np.clip(np.round(rng.normal(120, 60, (n, 1))), -510, 765)
    color = np.clip(base + np.round(rng.normal(0, 15, (n, channels))), -510, 765)
    return QuantizedGaussians(width, height, channels,
                              np.stack([x, y], 1).astype(np.int32),
                              np.stack([major, minor], 1).astype(np.int32),
                              rot.astype(np.int32), color.astype(np.int32),
                              pos_bits=2, scale_steps=8, rot_levels=32, color_den=255)


@st.composite
def quantized(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, 60)))
    side = st.one_of(st.integers(1, 100), st.sampled_from([1, 16384]))
    params = (draw(st.integers(0, 8)), draw(st.integers(1, 64)),
              draw(st.integers(1, 4096)), draw(st.integers(1, 65535)))
    params = draw(st.sampled_from([params, (2, 8, 32, 255), (8, 64, 4096, 65535),
                                   (0, 1, 1, 1)]))
    rot_bias = draw(st.one_of(st.sampled_from([127, 0, -4, 6, 20]), st.integers(-128, 127)))
    waves = draw(st.one_of(st.just((0, 1, 0, 1)), st.sampled_from([(1, 1, -32, 1),
                                                                   (255, 32, 32, 64)]),
                           st.tuples(st.integers(1, 255), st.integers(1, 32),
                                     st.integers(-32, 32), st.integers(1, 64))))
    qg = make_qg(np.random.default_rng(seed), n, draw(side), draw(side),
                 draw(st.sampled_from([1, 2, 3, 4])), params,
                 extreme=draw(st.booleans()), dup=draw(st.booleans()),
                 masked=draw(st.booleans()), rot_bias=rot_bias, waves=waves,
                 wave_share=draw(st.sampled_from([0.0, 0.3, 1.0])))
    k = draw(st.integers(1, 8))
    if k > 1:
        qg = split_classes(np.random.default_rng(seed + 1), qg, k)
    return qg


def split_classes(rng, qg, k):
    """Spread qg's Gaussians over k classes with coarser or equal steps (integers scaled
    down accordingly; the new classes have 1 to 4 colour buckets, their own rot_bias and,
    one in two, their own wave steps), so the result is a valid multi-class set."""
    classes = [qg.classes[0]]
    for _ in range(k - 1):
        c = qg.classes[0]
        nb = int(rng.integers(1, 5))
        wave_den = int(rng.integers(1, 256)) if rng.random() < 0.5 else 0
        classes.append(QuantClass(int(rng.integers(0, c.pos_bits + 1)),
                                  int(rng.integers(1, c.scale_steps + 1)),
                                  int(rng.integers(1, c.rot_levels + 1)),
                                  int(rng.integers(1, c.color_den + 1)),
                                  area_lo=int(rng.integers(-6, 31)),
                                  color_dens=tuple(int(d) for d in
                                                   rng.integers(1, c.color_den + 1, nb - 1)),
                                  rot_bias=int(rng.integers(-8, 128)),
                                  wave_den=wave_den,
                                  wave_freqs=int(rng.integers(1, 33)) if wave_den else 1,
                                  wave_f0=int(rng.integers(-32, 33)) if wave_den else 0,
                                  wave_phases=int(rng.integers(1, 65)) if wave_den else 1))
    cls = rng.integers(0, k, qg.count).astype(np.int32)
    wave = qg.wave.astype(np.int64)
    xy, ls = qg.pos.astype(np.int64), qg.scale.astype(np.int64)
    rot, col = qg.rot.astype(np.int64), qg.color.astype(np.int64)
    c0 = qg.classes[0]
    for i in range(qg.count):
        c = classes[cls[i]]
        xy[i] >>= c0.pos_bits - c.pos_bits
        ls[i] = (ls[i] * c.scale_steps) // c0.scale_steps
        rot[i] = ((rot[i] * c.rot_levels) // c0.rot_levels) % int(c.angle_levels(ls[i])[0])
        col[i] = (col[i] * c.dens()[int(c.bucket(ls[i])[0])]) // c0.color_den
        wave[i] = [wave[i, 0] % (4 * c.wave_den + 1), wave[i, 1], wave[i, 2] % c.wave_freqs,
                   wave[i, 3] % c.wave_phases]
    return QuantizedGaussians(qg.width, qg.height, qg.channels, xy.astype(np.int32),
                              ls.astype(np.int32), rot.astype(np.int32), col.astype(np.int32),
                              masked=qg.masked, classes=tuple(classes), cls=cls,
                              wave=wave.astype(np.int32))


def assert_same(a: QuantizedGaussians, b: QuantizedGaussians):
    assert (a.width, a.height, a.channels) == (b.width, b.height, b.channels)
    assert (a.classes, a.masked) == (b.classes, b.masked)
    for name in ("pos", "scale", "rot", "color", "wave", "cls"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and np.array_equal(x, y), name


def assert_ref_matches(data: bytes, qg: QuantizedGaussians):
    r = ref.decode(data)
    assert r["count"] == qg.count and r["channels"] == qg.channels
    assert r["x"] == qg.pos[:, 0].tolist() and r["y"] == qg.pos[:, 1].tolist()
    assert r["major"] == qg.scale[:, 0].tolist()
    assert r["minor"] == qg.scale[:, 1].tolist()
    assert r["rot"] == qg.rot.tolist()
    assert r["color"] == qg.color.tolist()
    assert r["cls"] == qg.cls.tolist()
    v4, v5 = r["version"] >= 4, r["version"] >= 5
    assert r["classes"] == [list(c.astuple()) + [c.area_lo, list(c.color_dens)]
                            + ([c.rot_bias] if v4 else [])
                            + (list(c.wave_steps()) if v5 else []) for c in qg.classes]
    for j, part in enumerate(("amp", "axis", "freq", "phase")):
        assert r[part] == qg.wave[:, j].tolist(), part
    if r["version"] >= 2:      # (version 1 gives isotropic Gaussians rot_levels levels)
        assert r["levels"] == qg.angle_levels().tolist()
    assert r["bucket"] == [int(qg.classes[k].bucket(ls)[0])
                           for k, ls in zip(qg.cls, qg.scale, strict=False)]


# ---- round trips ----------------------------------------------------------------------------
@SETTINGS
@given(quantized())
def test_write_read_round_trip_is_canonical_and_matches_reference(qg):
    data = gsi.write(qg)
    back = gsi.read(data)
    assert_same(back, qg.sorted())
    assert gsi.write(back) == data          # the file is a function of the set
    assert_ref_matches(data, back)


def test_round_trip_realistic_and_describe():
    rng = np.random.default_rng(1)
    qg = realistic(rng, 3000)
    data = gsi.write(qg)
    assert_same(gsi.read(data), qg.sorted())
    info = gsi.describe(data)
    assert info["count"] == 3000 and info["file_bytes"] == len(data)
    assert sum(info["sections"].values()) + info["header_bytes"] + 4 == len(data)
    assert info["classes"] == [{"count": 3000, "pos_bits": 2, "scale_steps": 8,
                                "rot_levels": 32, "color_den": 255, "area_lo": 0,
                                "rot_bias": 127, "color_dens": [255], "wave_den": 0,
                                "wave_freqs": 1, "wave_f0": 0, "wave_phases": 1,
                                "bytes": info["sections"]}]
    assert info["bpp"] == pytest.approx(len(data) * 8 / (768 * 512))
    bpg = info["bits_per_gaussian"]
    assert set(bpg) == {"pos", "scale", "rot", "color", "wave", "header", "total"}
    assert bpg["wave"] == 0 and info["sections"]["wave"] == 0
    assert sum(v for k, v in bpg.items() if k != "total") == pytest.approx(bpg["total"])


def test_empty_and_single_gaussian_sets_round_trip():
    for n in (0, 1):
        qg = make_qg(np.random.default_rng(n), n, 1, 1, 1)
        data = gsi.write(qg)
        assert_same(gsi.read(data), qg.sorted())
        assert_ref_matches(data, gsi.read(data))
    assert gsi.describe(gsi.write(make_qg(np.random.default_rng(0), 0, 5, 5)))[
        "bits_per_gaussian"] == {}


def test_writer_rejects_invalid():
    qg = make_qg(np.random.default_rng(0), 5, 10, 10, 3)
    qg.rot[0] = qg.rot_levels
    with pytest.raises(ValueError):
        gsi.write(qg)
    qg = make_qg(np.random.default_rng(0), 5, 10, 10, 3, params=(9, 8, 32, 255))
    with pytest.raises(ValueError):
        gsi.write(qg)


def test_writer_enforces_count_rule():
    # identical all-zero Gaussians cost (almost) nothing: N > 16 * size must be refused
    n = 5000
    z = np.zeros((n, 2), np.int32)
    qg = QuantizedGaussians(4, 4, 1, z, z, np.zeros(n, np.int32), np.zeros((n, 1), np.int32))
    with pytest.raises(ValueError, match="16"):
        gsi.write(qg)
    small = QuantizedGaussians(4, 4, 1, z[:200], z[:200], np.zeros(200, np.int32),
                               np.zeros((200, 1), np.int32))
    assert gsi.read(gsi.write(small)).count == 200


# ---- robustness -----------------------------------------------------------------------------
def only_format_error(data):
    try:
        gsi.read(data)
    except FormatError:
        return False
    return True


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def ref_ok(data):
    try:
        ref.decode(data)
        return True
    except ref.ReferenceDecodeError:
        return False


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_format_errors(data):
    only_format_error(data)
    only_format_error(gsi.MAGIC + bytes([1]) + data)


@SETTINGS
@given(quantized(), st.data())
def test_truncated_extended_and_flipped_files_raise_only_format_errors(qg, data):
    good = gsi.write(qg)
    # truncations and extensions
    cut = data.draw(st.integers(0, len(good) - 1))
    assert not only_format_error(good[:cut])
    assert not only_format_error(good + b"\0")
    # byte flips without CRC fix: always rejected by the checksum (or header checks)
    pos = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[pos] ^= flip
    assert not only_format_error(bytes(bad))
    # mutations of the sections with the CRC recomputed: the section parser is exercised;
    # gscodec and the reference decoder must agree on acceptance and on the result
    body = bytearray(good[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        p = data.draw(st.integers(min(gsi.FIXED2_SIZE, len(body) - 1), len(body) - 1))
        body[p] = data.draw(st.integers(0, 255))
    mutated = with_crc(bytes(body))
    ok = only_format_error(mutated)
    assert ok == ref_ok(mutated)
    if ok:
        assert_ref_matches(mutated, gsi.read(mutated))


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=120), st.integers(0, 3), st.integers(0, 40))
def test_random_section_contents_raise_only_format_errors(payload, channels_minus_1, n):
    """Well-formed header and section table, random section contents (CRC valid)."""
    for version in (1, 2, 3, 4, 5):
        if version == 1:
            head = struct.pack("<8sBBHIIIBBHH", gsi.MAGIC, 1, channels_minus_1 + 1, 0, 16, 16,
                               n, 2, 8, 32, 255)
            parts = [(i + 1, payload[i::4]) for i in range(4)]
        else:
            head = struct.pack("<8sBBBBIII", gsi.MAGIC, version, 0, channels_minus_1 + 1, 0,
                               16, 16, n)
            classes = bytes([1]) + struct.pack("<IBBHH", n, 2, 8, 32, 255)
            if version == 3:      # two colour buckets from area octave 1
                classes += struct.pack("<bBH", 1, 2, 300)
            if version == 4:      # the same, and angle levels by shape
                classes += struct.pack("<bBbH", 1, 2, -2, 300)
            if version == 5:      # the same, and waves
                classes += struct.pack("<bBbBBbBH", 1, 2, -2, 40, 6, -3, 16, 300)
            k = 5 if version == 5 else 4
            parts = [(1, classes)] + [(16 + i, payload[i::k]) for i in range(k)]
        head += bytes([len(parts)]) + b"".join(struct.pack("<BI", i, len(p)) for i, p in parts)
        data = with_crc(head + b"".join(p for _, p in parts))
        ok = only_format_error(data)
        assert ok == ref_ok(data)
        if ok:
            assert_ref_matches(data, gsi.read(data))


def test_implausible_gaussian_count_is_a_format_error():
    good = bytearray(gsi.write(make_qg(np.random.default_rng(0), 3, 8, 8, 3)))
    for claimed in (16 * len(good) + 1, (1 << 26) + 1, 0xFFFFFFFF):
        bad = bytearray(good)
        struct.pack_into("<I", bad, 20, claimed)   # count, at offset 20 in every version
        bad = with_crc(bytes(bad[:-4]))
        with pytest.raises(FormatError, match="count"):
            gsi.read(bad)
        with pytest.raises(FormatError):
            gsi.read_header(bad)


def test_wrong_version_and_magic():
    good = bytearray(gsi.write(make_qg(np.random.default_rng(0), 3, 8, 8, 3)))
    for v in (0, 6, 255):
        bad = bytearray(good)
        bad[8] = v
        with pytest.raises(FormatError, match=rf"unsupported \.gsi version {v} "
                                              r"\(this decoder reads versions 1 to 5\)"):
            gsi.read(bytes(bad))
    with pytest.raises(FormatError, match="magic"):
        gsi.read(b"PNG" + bytes(good[3:]))
    with pytest.raises(FormatError, match="checksum"):
        bad = bytearray(good)
        bad[-1] ^= 1
        gsi.read(bytes(bad))


def test_header_field_checks():
    good = gsi.write(make_qg(np.random.default_rng(0), 3, 8, 8, 3))
    # version 5: profile, channels, flags, width, height, section count, first section id,
    # class count, class count of Gaussians, pos_bits, scale_steps, rot_levels, color_den,
    # area_lo, colour bucket count (the record then claims more bytes than the table has),
    # wave_den (the class's empty WAVE section then is too short), wave_freqs, wave_f0,
    # wave_phases
    cls = gsi.FIXED2_SIZE + 1 + gsi.SECTION_ENTRY * 6     # start of the class table
    edits = [(9, "<B", 2), (10, "<B", 5), (10, "<B", 0), (11, "<B", 2), (12, "<I", 0),
             (16, "<I", 16385), (24, "<B", 5), (25, "<B", 2), (cls, "<B", 0), (cls, "<B", 9),
             (cls + 1, "<I", 2), (cls + 5, "<B", 9), (cls + 6, "<B", 0), (cls + 6, "<B", 65),
             (cls + 7, "<H", 0), (cls + 7, "<H", 4097), (cls + 9, "<H", 0),
             (cls + 11, "<b", -7), (cls + 11, "<b", 31), (cls + 12, "<B", 0),
             (cls + 12, "<B", 2), (cls + 12, "<B", 9), (cls + 14, "<B", 1),
             (cls + 15, "<B", 0), (cls + 15, "<B", 33), (cls + 16, "<b", -33),
             (cls + 16, "<b", 33), (cls + 17, "<B", 0), (cls + 17, "<B", 65)]
    for off, fmt, val in edits:
        bad = bytearray(good)
        struct.pack_into(fmt, bad, off, val)
        with pytest.raises(FormatError):
            gsi.read(with_crc(bytes(bad[:-4])))
        assert not ref_ok(with_crc(bytes(bad[:-4])))
    hdr = gsi.read_header(good)
    assert hdr["width"] == 8 and hdr["channels"] == 3 and hdr["version"] == 5


def test_masked_flag_is_written_and_read():
    qg = make_qg(np.random.default_rng(0), 4, 8, 8, 3, masked=True)
    data = gsi.write(qg)
    assert gsi.read_header(data)["flags"] == 1 and gsi.read(data).masked


def test_isotropic_rotation_not_stored():
    qg = make_qg(np.random.default_rng(3), 50, 20, 20, 3)
    qg.scale[:25, 1] = qg.scale[:25, 0]
    qg.rot[:25] = 7
    back = gsi.read(gsi.write(qg))
    iso = back.scale[:, 0] == back.scale[:, 1]
    assert iso.sum() >= 25 and np.all(back.rot[iso] == 0)
    assert_same(back, qg.sorted())


def test_multi_class_dequantization():
    """Each Gaussian is dequantized with its own class's steps."""
    c0, c1 = QuantClass(2, 16, 128, 64), QuantClass(0, 4, 8, 16)
    qg = QuantizedGaussians(10, 10, 1, np.array([[8, 8], [2, 3]]), np.array([[16, 0], [4, 4]]),
                            np.array([64, 0]), np.array([[64], [16]]), classes=(c0, c1),
                            cls=np.array([0, 1]))
    back = gsi.read(gsi.write(qg))
    means, sigma, theta, colors = back.dequantize()
    order = np.argsort(back.cls)
    assert np.allclose(means[order], [[2, 2], [2, 3]])
    assert np.allclose(sigma[order], [[2, 1], [2, 2]])
    assert np.allclose(theta[order], [np.pi / 2, 0]) and np.allclose(colors[order], 1)


def test_angle_levels_rule():
    """Spec section 3.2: a quarter octave of levels per step of x, capped at rot_levels;
    one level for isotropic Gaussians and for x < 0; rot_bias >= 58 is the uniform step."""
    q = QuantClass(scale_steps=8, rot_levels=4096, rot_bias=0)
    # major = minor + 1 (a = 1: ilog4 = 0) and major + minor = 8t + 1: x = t
    ls = np.array([[4 * t + 1, 4 * t] for t in range(20)])          # x = 0, 1, ..., 19
    assert q.angle_levels(ls).tolist() == [1, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12,
                                           14, 16, 20, 24, 28]
    # a = 8 (one octave): ilog4(8) = 12, plus floor(2 * 0 / 8) = 0
    assert QuantClass(scale_steps=8, rot_levels=4096, rot_bias=-12).angle_levels(
        np.array([[8, 0]])).tolist() == [1]                       # x = -12 + 12 + 1 = 1
    # a = 24 (three octaves): ilog4(24) = 18, floor(2 * 16 / 8) = 4; x = b + 18 + 3 + 4
    assert QuantClass(scale_steps=8, rot_levels=4096, rot_bias=-17).angle_levels(
        np.array([[24, 0]])).tolist() == [4]                      # x = 8: (4 << 2) >> 2
    assert q.angle_levels(np.array([[5, 5], [-24, -24]])).tolist() == [1, 1]
    assert QuantClass(scale_steps=8, rot_levels=4096, rot_bias=-20).angle_levels(
        np.array([[1, 0]])).tolist() == [1]                       # x < 0
    assert QuantClass(scale_steps=8, rot_levels=100, rot_bias=50).angle_levels(
        np.array([[120, 0]])).tolist() == [100]                   # capped
    rng = np.random.default_rng(0)
    for s in (1, 8, 64):
        major = rng.integers(-3 * s, 15 * s + 1, 500)
        minor = np.maximum(major - rng.integers(1, 18 * s + 1, 500), -3 * s)
        ls = np.stack([major, minor], 1)
        levels = QuantClass(scale_steps=s, rot_levels=777, rot_bias=58).angle_levels(ls)
        assert np.all(levels[major > minor] == 777)
        # the torch form used while fitting agrees
        import torch

        from gscodec.encoder.quantize import QuantConfig
        qc = QuantClass(scale_steps=s, rot_levels=300, rot_bias=-3)
        t = QuantConfig((qc,)).angle_levels(torch.zeros(500, dtype=torch.long),
                                            torch.from_numpy(ls))
        assert t.tolist() == qc.angle_levels(ls).tolist()


def test_angle_levels_round_trip():
    """Rotations are stored in units of pi / L_i; Gaussians with one level decode with
    rotation 0 (not stored); the ROT section is exactly its words."""
    rng = np.random.default_rng(5)
    qg = make_qg(rng, 400, 64, 64, 3, params=(2, 8, 256, 64), rot_bias=-20)
    levels = qg.angle_levels()
    assert (levels == 1).sum() > 20 and len(np.unique(levels)) > 8
    qg.rot[levels == 1] = 0
    data = gsi.write(qg)
    back = gsi.read(data)
    assert_same(back, qg.sorted())
    assert_ref_matches(data, back)
    _, _, theta, _ = back.dequantize()
    assert np.allclose(theta, np.pi * back.rot / back.angle_levels())
    # uniform coding: about sum(log2 L) bits for the rotations
    info = gsi.describe(data)
    bits = np.log2(levels[levels > 1]).sum()
    assert bits / 8 <= info["sections"]["rot"] <= bits / 8 + 12
    # a rotation index >= its level count cannot be written
    bad = qg.sorted()
    i = int(np.argmax(bad.angle_levels()))
    bad.rot[i] = bad.angle_levels()[i]
    with pytest.raises(ValueError):
        gsi.write(bad)


def test_rot_section_length_checked():
    qg = make_qg(np.random.default_rng(2), 30, 16, 16, 3, rot_bias=3)
    data = gsi.write(qg)
    table = gsi.read_header(data)["sections"]
    _, off, length = table[3]                  # class 0's ROT section
    assert table[3][0] == 18
    for extra in (b"\0", b"\0\0\0\0"):
        head = bytearray(data[:off + length])
        entry = gsi.FIXED2_SIZE + 1 + gsi.SECTION_ENTRY * 3   # ROT's entry in the table
        struct.pack_into("<I", head, entry + 1, length + len(extra))
        bad = with_crc(bytes(head) + extra + data[off + length:-4])
        with pytest.raises(FormatError, match="ROT"):
            gsi.read(bad)
        assert not ref_ok(bad)


def test_uniform_tables_are_exact():
    """The ROT section's uniform tables through constriction equal a pure-Python range
    coder with the spec's integer frequencies, and the spec's decoder reads them back."""
    rng = np.random.default_rng(11)
    groups = [(int(L), rng.integers(0, L, int(rng.integers(1, 60))))
              for L in sorted(rng.choice(np.arange(2, 4097), 6, replace=False))]
    body = entropy.encode_uniform(groups)
    words = list(struct.unpack_from(f"<{(len(body) - 4) // 4}I", body, 4))
    freqs = [entropy.uniform_freqs(L).tolist() for L, _ in groups]
    assert words == py_range_encode([(v.tolist(), f)
                                     for (_, v), f in zip(groups, freqs, strict=True)])
    for f, (L, _) in zip(freqs, groups, strict=False):
        assert sum(f) == 1 << 24 and f[0] == (1 << 24) // L
    back = entropy.decode_uniform(body, [(L, len(v)) for L, v in groups], 0, len(body))
    assert all(np.array_equal(b, v) for b, (_, v) in zip(back, groups, strict=False))


# ---- entropy layer --------------------------------------------------------------------------
def py_range_encode(symbol_lists):
    """Pure-Python range encoder following the informative algorithm of spec section 8.
    symbol_lists: [(symbols, freqs)]; returns the list of u32 words."""
    M64 = (1 << 64) - 1
    lower, rng_, out = 0, M64, []
    inverted = None            # (count, first_word)
    any_coded = False
    for symbols, f in symbol_lists:
        cum = [0]
        for fi in f:
            cum.append(cum[-1] + fi)
        for s in symbols:
            any_coded = True
            scale = rng_ >> 24
            rng_ = scale * f[s]
            new_lower = (lower + scale * cum[s]) & M64
            if inverted is not None and new_lower + rng_ <= M64:
                cnt, first = inverted
                if new_lower < lower:
                    out += [first + 1] + [0] * (cnt - 1)
                else:
                    out += [first] + [0xFFFFFFFF] * (cnt - 1)
                inverted = None
            lower = new_lower
            if rng_ < 1 << 32:
                rng_ <<= 32
                word = lower >> 32
                lower = (lower << 32) & M64
                if inverted is not None:
                    inverted = (inverted[0] + 1, inverted[1])
                elif lower + rng_ <= M64:
                    out.append(word)
                else:
                    inverted = (1, word)
    if not any_coded:
        return out
    point = (lower + (1 << 32) - 1) & M64
    if inverted is not None:
        cnt, first = inverted
        if point < lower:
            out += [first + 1] + [0] * (cnt - 1)
        else:
            out += [first] + [0xFFFFFFFF] * (cnt - 1)
    out.append(point >> 32)
    if ((lower + rng_) & M64) >> 32 == point >> 32:
        out.append(0)
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_constriction_tables_are_exact(seed):
    """constriction's Categorical(p = f - 1, perfect=False) must use exactly the integer
    frequencies f: its output must equal a pure-Python range coder using f, and the
    pure-Python decoder of the spec must decode it."""
    import constriction
    rng = np.random.default_rng(seed)
    streams = []
    for _ in range(rng.integers(1, 4)):
        n = int(rng.integers(2, 53))
        codes = rng.integers(0, 32, n)
        if rng.random() < 0.3:
            codes[rng.random(n) < 0.7] = 0
        if rng.random() < 0.1:
            codes[:] = 0
        f = entropy.normalize(codes)
        assert f == ref.normalise(list(map(int, codes)))
        assert np.array_equal(entropy._normalize_np(codes), f)
        assert sum(f) == 1 << 24 and min(f) >= 1
        # symbols drawn from the table itself, plus some rare ones
        p = np.array(f, dtype=np.float64) / (1 << 24)
        syms = rng.choice(n, size=int(rng.integers(1, 400)), p=p)
        syms[: rng.integers(0, 5)] = rng.integers(0, n)
        streams.append((syms.astype(np.int32), f))
    enc = constriction.stream.queue.RangeEncoder()
    for syms, f in streams:
        enc.encode(syms, entropy._model(f))
    words = [int(w) for w in enc.get_compressed()]
    assert words == py_range_encode([(s.tolist(), f) for s, f in streams])
    rd = ref.RangeDecoder(words)
    for syms, f in streams:
        cum = np.concatenate([[0], np.cumsum(f)]).tolist()
        assert [rd.decode(f, cum) for _ in syms] == syms.tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, (1 << 48) - 1), max_size=50), st.integers(0, 2**32 - 1))
def test_binarization_and_sections(values, seed):
    rng = np.random.default_rng(seed)
    a = np.array(values, dtype=np.uint64)
    b = rng.integers(0, 20, size=a.size).astype(np.uint64)
    tokens, nbits, raw = entropy.binarize(a)
    assert np.array_equal(entropy.debinarize(tokens, raw), a)
    for v, t in zip(values, tokens.tolist(), strict=False):
        assert t == (v if v < 8 else v.bit_length() + 4)
    body = entropy.encode_streams([a, b])
    out = entropy.decode_streams(body, a.size, 2)
    assert np.array_equal(out[0], a) and np.array_equal(out[1], b)
    assert [list(map(int, s)) for s in out] == \
        ref.decode_section(body, 0, len(body), a.size, 2)
    with pytest.raises(FormatError):
        entropy.decode_streams(body + b"\0", a.size, 2)


def test_zigzag_maps_signed_to_unsigned_and_back():
    v = np.array([0, -1, 1, -2, 2, -(1 << 40), 1 << 40], dtype=np.int64)
    u = entropy.zigzag(v)
    assert u[:5].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(entropy.unzigzag(u), v)


def test_range_decoder_invalid_quantile():
    """point = 2^64 - 1 gives q = 2^24 at the first symbol: invalid (spec section 8)."""
    body = bytes([3, 0xFF, 0xFF, 0xF0]) + struct.pack("<I", 2) + b"\xff" * 8
    with pytest.raises(FormatError, match="range-coded"):
        entropy.decode_streams(body, 5, 1)
    with pytest.raises(ref.ReferenceDecodeError, match="quantile"):
        ref.decode_section(body, 0, len(body), 5, 1)


# ---- waves (version 5) ----------------------------------------------------------------------
WAVES = (16, 6, -3, 12)             # wave_den, wave_freqs, wave_f0, wave_phases


def rebuild(data: bytes, index: int, body: bytes) -> bytes:
    """data with the body of section `index` replaced (section table and CRC fixed)."""
    table = gsi.read_header(data)["sections"]
    bodies = [body if i == index else data[off:off + length]
              for i, (_, off, length) in enumerate(table)]
    head = data[:gsi.FIXED2_SIZE] + bytes([len(table)]) + b"".join(
        struct.pack("<BI", sid, len(b)) for (sid, _, _), b in zip(table, bodies, strict=True))
    return with_crc(head + b"".join(bodies))


def two_wave_classes(rng, n=60):
    """Class 0 with waves (WAVES), class 1 without (wave_den 0)."""
    qg = make_qg(rng, n, 24, 16, 3, waves=WAVES, wave_share=0.5)
    cls = (np.arange(n) % 2).astype(np.int32)
    c1 = QuantClass(2, 8, 32, 255, color_dens=(300,))       # no waves
    wave = qg.wave.copy()
    wave[cls == 1] = 0
    return QuantizedGaussians(qg.width, qg.height, 3, qg.pos, qg.scale, qg.rot, qg.color,
                              classes=(qg.classes[0], c1), cls=cls, wave=wave)


def test_waves_round_trip_and_describe():
    qg = two_wave_classes(np.random.default_rng(21))
    assert qg.has_waves() and np.any(qg.wave[:, 1] == 1) and np.any(qg.wave[:, 1] == 0)
    data = gsi.write(qg)
    back = gsi.read(data)
    assert_same(back, qg.sorted())
    assert_ref_matches(data, back)
    # without a wave the axis, freq and phase are not stored: 0 in the canonical form
    off = back.wave[:, 0] == 0
    assert off.sum() > 10 and not back.wave[off].any()
    info = gsi.describe(data)
    c0, c1 = info["classes"]
    assert (c0["wave_den"], c0["wave_freqs"], c0["wave_f0"], c0["wave_phases"]) == WAVES
    assert (c1["wave_den"], c1["wave_freqs"], c1["wave_f0"], c1["wave_phases"]) == (0, 1, 0, 1)
    assert c0["bytes"]["wave"] > 4 and c1["bytes"]["wave"] == 0
    assert info["bits_per_gaussian"]["wave"] == pytest.approx(8 * c0["bytes"]["wave"] / 60)
    assert gsi.read_header(data)["sections"][10][0] == 16 + 5 * 1 + 4    # class 1's WAVE


def test_wave_tie_breaking_and_canonical_classes():
    """Gaussians equal but for their waves are stored in one order whatever the input
    order; a class without waves is written with wave_freqs 1, wave_f0 0, wave_phases 1."""
    rng = np.random.default_rng(22)
    qg = make_qg(rng, 12, 8, 8, 1, waves=WAVES, wave_share=0.7)
    for name in ("pos", "scale", "rot", "color"):
        getattr(qg, name)[:] = getattr(qg, name)[0]
    perm = rng.permutation(12)
    shuffled = QuantizedGaussians(8, 8, 1, qg.pos[perm], qg.scale[perm], qg.rot[perm],
                                  qg.color[perm], classes=qg.classes, wave=qg.wave[perm])
    assert gsi.write(shuffled) == gsi.write(qg)
    odd = QuantClass(2, 8, 32, 255, wave_den=0, wave_freqs=5, wave_f0=3, wave_phases=9)
    plain = QuantizedGaussians(8, 8, 1, qg.pos, qg.scale, qg.rot % 2, qg.color,
                               classes=(odd,))
    assert gsi.read(gsi.write(plain)).classes[0].wave_steps() == (0, 1, 0, 1)


def test_writer_rejects_invalid_waves():
    for j, val in ((0, 4 * WAVES[0] + 1), (0, -1), (1, 2), (2, WAVES[1]), (3, WAVES[3])):
        qg = make_qg(np.random.default_rng(23), 10, 8, 8, 3, waves=WAVES, wave_share=1.0)
        qg.wave[4, j] = val
        with pytest.raises(ValueError, match="wave"):
            gsi.write(qg)
    qg = make_qg(np.random.default_rng(23), 10, 8, 8, 3)           # wave_den 0
    qg.wave[4, 0] = 1
    with pytest.raises(ValueError, match="wave amplitude"):
        gsi.write(qg)
    with pytest.raises(ValueError, match="wave_freqs"):
        gsi.write(make_qg(np.random.default_rng(23), 3, 8, 8, 3, waves=(1, 33, 0, 1)))


def _wave_file(share=0.5):
    qg = make_qg(np.random.default_rng(24), 50, 16, 16, 3, waves=WAVES, wave_share=share)
    data = gsi.write(qg)
    table = gsi.read_header(data)["sections"]
    assert [sid for sid, _, _ in table] == [1, 16, 17, 18, 19, 20]
    return gsi.read(data), data, table


def _rejected(bad: bytes, match: str):
    with pytest.raises(FormatError, match=match):
        gsi.read(bad)
    assert not ref_ok(bad)


def test_wave_section_checks():
    qg, data, table = _wave_file()
    _, off, length = table[5]
    body = data[off:off + length]
    (m,) = struct.unpack_from("<I", body)
    amp = qg.wave[:, 0].astype(np.uint64)
    on = qg.wave[:, 0] > 0
    assert m == on.sum() > 5
    _rejected(rebuild(data, 5, body[:3]), "WAVE section too short")
    _rejected(rebuild(data, 5, b""), "WAVE section too short")
    _rejected(rebuild(data, 5, struct.pack("<I", 51) + body[4:]), "counts 51 waves in a class "
                                                                   "of 50")
    # m one more than the non-zero amplitudes (streams 1 and 2 of that length)
    codes = (2 * qg.wave[on, 2] + qg.wave[on, 1]).astype(np.uint64)
    phases = qg.wave[on, 3].astype(np.uint64)
    longer = struct.pack("<I", m + 1) + entropy.encode_streams(
        [amp, np.append(codes, 0), np.append(phases, 0)])
    _rejected(rebuild(data, 5, longer), f"{m} non-zero amplitudes, its count says {m + 1}")
    _rejected(rebuild(data, 5, body[:-1]), "raw-bits area|range-coded|truncated")
    _rejected(rebuild(data, 5, body + b"\0"), "raw-bits area")
    # the class record's wave steps below the stored integers
    cls = gsi.FIXED2_SIZE + 1 + gsi.SECTION_ENTRY * 6 + 1        # class record 0
    for field, fmt, val, match in ((13, "<B", int(qg.wave[:, 0].max()) // 4 - 1, "amplitude"),
                                   (14, "<B", 1, "frequency"), (16, "<B", 1, "phase")):
        bad = bytearray(data[:-4])
        struct.pack_into(fmt, bad, cls + field, val)
        _rejected(with_crc(bytes(bad)), match)
    # wave_den 0 with a non-empty WAVE section
    bad = bytearray(rebuild(data, 5, b"\0\0\0\0")[:-4])
    struct.pack_into("<B", bad, cls + 13, 0)
    _rejected(with_crc(bytes(bad)), "must be empty")


def test_wave_section_without_waves_in_a_waving_class():
    """wave_den > 0 and no Gaussian with a wave: m = 0, empty streams 1 and 2."""
    qg, data, table = _wave_file(share=0.0)
    assert not qg.has_waves() and qg.classes[0].wave_den == WAVES[0]
    _, off, length = table[5]
    assert struct.unpack_from("<I", data, off) == (0,)
    assert_ref_matches(data, qg)
    assert qg.render_waves() is None
