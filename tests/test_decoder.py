"""The decoder on the ground floor: no torch anywhere on the decode path, the Pillow plugin
(lazy header, decode on load, decompression bombs, save handler)."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gscodec

ROOT = Path(__file__).resolve().parents[1]
VECTOR = ROOT / "tests" / "vectors" / "rgb_16x12_20.gsi"


def test_decode_paths_never_import_torch(tmp_path):
    """import gscodec, gscodec.decode/info, Pillow open+load and `gsi decode`/`gsi info`
    leave torch out of sys.modules."""
    code = f"""
import sys
import gscodec
from gscodec.cli import main
from PIL import Image
gscodec.decode({str(VECTOR)!r}); gscodec.info({str(VECTOR)!r})
Image.open({str(VECTOR)!r}).load()
assert main(["decode", {str(VECTOR)!r}, "-o", {str(tmp_path / 'o.png')!r}]) == 0
assert main(["info", {str(VECTOR)!r}, "--json"]) == 0
print("TORCH", "torch" in sys.modules)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stdout
    assert (tmp_path / "o.png").is_file()


def test_pillow_open_reads_the_header_only():
    data = VECTOR.read_bytes()
    # A file cut after its fixed header still opens (size, mode), and fails on load.
    im = Image.open(io.BytesIO(data[:40]))
    assert im.format == "GSI" and im.size == (16, 12) and im.mode == "RGB"
    assert im.info["gaussians"] == gscodec.read(data).count
    with pytest.raises(OSError):
        im.load()
    full = Image.open(io.BytesIO(data))
    assert np.array_equal(np.asarray(full), gscodec.decode(data))


def test_pillow_honours_max_image_pixels(monkeypatch):
    big = ROOT / "tests" / "vectors" / "extreme_la_16384.gsi"   # 16384 x 16384
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big)


def test_pillow_rejects_garbage_after_the_magic():
    data = bytearray(VECTOR.read_bytes())
    data[8] = 99                              # version byte
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("opts", [{"gaussians": 30}, {"bpp": 4.0}, {"quality": 60}])
def test_pillow_save(tmp_path, opts):
    rng = np.random.default_rng(0)
    arr = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    out = tmp_path / "x.gsi"
    Image.fromarray(arr).save(out, iterations=5, **opts)
    im = Image.open(out)
    assert im.format == "GSI" and im.size == (24, 20) and im.mode == "RGB"
    info = gscodec.info(out)
    if "gaussians" in opts:
        assert info["count"] == 30
    if "bpp" in opts:
        assert abs(info["bpp"] / 4.0 - 1) <= 0.05
    assert np.asarray(im).shape == (20, 24, 3)


def test_decoder_fallback_matches_kernel(tmp_path):
    """GSCODEC_NO_KERNEL=1 (the numpy fallback, used where nothing could be compiled)
    decodes to the same bytes, and warns once."""
    code = f"""
import hashlib, warnings, gscodec
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    a = gscodec.decode({str(VECTOR)!r}); gscodec.decode({str(VECTOR)!r})
print(hashlib.sha256(a.tobytes()).hexdigest(), sum("fallback" in str(x.message) for x in w))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), GSCODEC_NO_KERNEL="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    digest, warned = r.stdout.split()
    import hashlib
    assert digest == hashlib.sha256(gscodec.decode(VECTOR).tobytes()).hexdigest()
    assert warned == "1"
