"""The Pillow plugin (gscodec.pil_plugin): Image.open reads the header only and load()
decodes; Image.MAX_IMAGE_PIXELS applies; Image.save encodes with gscodec.encode's options;
every Pillow mode at every size round-trips (in-process: a library API, no CLI)."""
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gscodec

from helpers import CODEC_MODE, MODES, as_converted, assert_fits, blobs_image, decoded, mode_image

ROOT = Path(__file__).resolve().parents[1]
VECTOR = ROOT / "tests" / "vectors" / "rgb_16x12_20.gsi"
ITS = 50


def test_pillow_opens_and_loads_an_encoded_file(tmp_path):
    img = blobs_image(12, 10, 3)
    data = gscodec.encode(img, gaussians=10, iterations=10)
    path = tmp_path / "x.gsi"
    path.write_bytes(data)
    with Image.open(path) as im:
        assert im.format == "GSI" and im.size == (10, 12) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), gscodec.decode(data))
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (10, 12)


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
def test_pillow_save_honours_the_size_options(tmp_path, opts):
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


@pytest.mark.parametrize("mode", MODES)
def test_pillow_save_and_open_every_mode_at_every_size(tmp_path, mode):
    for w, h in [(13, 11), (1, 1), (1, 7), (7, 1)]:
        im = mode_image(mode, w, h)
        ref = as_converted(mode, im)
        path = tmp_path / f"p{w}x{h}.gsi"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # conversion notices (palette, 16-bit, ...)
            im.save(path, gaussians=min(20, max(1, w * h // 3)), iterations=ITS)
        with Image.open(path) as back:
            assert back.format == "GSI" and back.size == (w, h)
            assert back.mode == CODEC_MODE[mode]
            back.load()
            arr = np.asarray(back).reshape(ref.shape)
        assert np.array_equal(arr, decoded(path))
        assert_fits(ref, arr, margin=3.0 if w * h > 7 else -1.0)
