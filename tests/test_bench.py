"""Tests of the rate-distortion benchmark (gscodec.benchmark), --ray on a local Ray included;
about a minute."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("bjontegaard")
pytest.importorskip("matplotlib")

from gscodec.benchmark import bdrate, executors, provenance, runner, tasks  # noqa: E402
from gscodec.benchmark.distortion import ms_ssim, psnr  # noqa: E402
from gscodec.benchmark.plot import plot_rd  # noqa: E402

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [26.0, 28.5, 31.0, 33.5, 36.0]
MSSSIM = [0.90, 0.94, 0.965, 0.98, 0.99]


# ----------------------------------------------------------------------------- BD-rate

@pytest.mark.parametrize("factor", [1.2, 0.75])
def test_bd_rate_constant_factor(factor):
    # Test curve = anchor curve with every rate multiplied by `factor`: BD-rate = (factor-1)*100 %.
    r = bdrate.bd_rate(RATES, PSNRS, [x * factor for x in RATES], PSNRS)
    assert r.meaningful, r.reason
    assert r.value == pytest.approx((factor - 1) * 100, abs=1e-6)
    m = bdrate.bd_rate(RATES, MSSSIM, [x * factor for x in RATES], MSSSIM, metric="ms-ssim")
    assert m.meaningful and m.value == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_bd_rate_unmatched_point_counts():
    # Different numbers of points (require_matching_points=False), same underlying curve x 1.5.
    rt = [0.15, 0.3, 0.6, 1.2, 2.4]
    r = bdrate.bd_rate(RATES[:4], PSNRS[:4], rt, PSNRS)
    assert r.meaningful and r.value == pytest.approx(50.0, abs=1e-6)


def test_bd_rate_no_overlap_not_meaningful():
    r = bdrate.bd_rate(RATES, PSNRS, [2, 3, 4, 5], [40, 41, 42, 43])
    assert not r.meaningful and r.value is None
    assert "overlap" in r.reason and r.format() == "not meaningful"


def test_bd_rate_small_overlap_not_meaningful():
    # Ranges 26-36 and 35-45: overlap 1 dB of a 10 dB range (10 %) -> not meaningful.
    r = bdrate.bd_rate(RATES, PSNRS, [1, 2, 3, 4, 5], [35, 37.5, 40, 42.5, 45])
    assert not r.meaningful
    # Enough overlap but a single test point inside it -> not meaningful either.
    r = bdrate.bd_rate(RATES, PSNRS, [0.05, 2.0], [24.0, 37.0])
    assert not r.meaningful and "points" in r.reason


def test_bd_rate_too_few_points_and_nan():
    r = bdrate.bd_rate(RATES, PSNRS, [0.3], [30.0])
    assert not r.meaningful
    r = bdrate.bd_rate(RATES, PSNRS, [0.2, 0.4, float("nan")], [28.5, 31.0, 40.0])
    assert r.meaningful  # the NaN point is dropped, two remain


# ----------------------------------------------------------------------------- metrics

def test_psnr_and_ms_ssim_conventions():
    a = np.zeros((200, 200, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, a) == math.inf
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (255 ** 2 / (200 * 200 * 3))))
    assert ms_ssim(a, a) == pytest.approx(1.0)
    assert math.isnan(ms_ssim(a[:100], a[:100]))  # below pytorch-msssim's 161 px minimum


# ----------------------------------------------------------------------------- schema + plot

def test_json_schema_round_trip(tmp_path):
    doc = {"name": "Test", "description": "synthetic",
           "results": {"bpp": RATES, "psnr-rgb": PSNRS, "ms-ssim-rgb": MSSSIM,
                       "encoding_time": [0.1] * 5, "decoding_time": [0.01] * 5}}
    p = tmp_path / "test.json"
    p.write_text(json.dumps(tasks.jsonable(doc)))
    back = json.loads(p.read_text())
    assert set(back) >= {"name", "description", "results"}
    n = len(back["results"]["bpp"])
    for k in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
        assert len(back["results"][k]) == n
    anchor = dict(doc, name="Anchor", results=dict(doc["results"], bpp=[x * 1.3 for x in RATES]))
    for metric in ("psnr", "ms-ssim"):
        out = plot_rd(tmp_path / f"{metric}.png", [p], [anchor], metric=metric)
        assert out is not None and out.stat().st_size > 1000


# ----------------------------------------------------------------------------- end to end

def _make_images(folder, n=2, w=48, h=32):
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    for i in range(n):
        a = np.stack([x * 5 + 20 * i, y * 7, (x + y) * 3], -1) + rng.integers(0, 20, (h, w, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _args(*argv):
    return runner.build_parser().parse_args([str(a) for a in argv])


def _cache_lines(out):
    return (out / tasks.CACHE_NAME).read_text().splitlines()


def test_tiny_run_peers_and_resume(tmp_path, capsys):
    data = _make_images(tmp_path / "imgs")
    out = tmp_path / "res"
    argv = [data, "--codecs", "jpeg,webp", "--quality", "jpeg=10,50,90",
            "--quality", "webp=10,50,90",
            "--out", out, "--no-progress"]
    assert runner.run(_args(*argv)) == 0
    text = capsys.readouterr().out
    assert "JPEG [jpeg]" in text and "WebP [webp]" in text and "BD-rate" in text
    for codec in ("jpeg", "webp"):
        doc = json.loads((out / f"{codec}.json").read_text())
        res = doc["results"]
        assert doc["name"] and doc["description"]
        for k in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
            assert len(res[k]) == 3
        assert all(v is None for v in res["ms-ssim-rgb"])  # 48x32 is below MS-SSIM's minimum
        assert res["bpp"] == sorted(res["bpp"]) and all(b > 0 for b in res["bpp"])
        assert len(doc["per_image"]) == 6
        assert doc["meta"]["machine"]["cpu_count"] and doc["meta"]["command"]
    assert (out / "rd.png").exists() and (out / "summary.txt").exists()
    assert len(_cache_lines(out)) == 12

    # Re-run: nothing new is computed.
    assert runner.run(_args(*argv)) == 0
    assert "0 to compute" in capsys.readouterr().out
    assert len(_cache_lines(out)) == 12

    # More points, two parallel workers: only the new ones are computed.
    argv2 = [data, "--codecs", "jpeg", "--quality", "jpeg=10,30,50,90", "--out", out,
             "--no-progress",
             "--jobs", "2"]
    assert runner.run(_args(*argv2)) == 0
    assert "2 to compute" in capsys.readouterr().out
    assert len(_cache_lines(out)) == 14
    assert len(json.loads((out / "jpeg.json").read_text())["results"]["bpp"]) == 4
    # the summary shows the codec of the earlier run too, with the commit that measured it
    summary = (out / "summary.txt").read_text()
    assert "JPEG [jpeg]" in summary and "WebP [webp]" in summary
    assert "(earlier run: webp.json, commit " in summary


def test_interrupted_cache_line_is_ignored(tmp_path, capsys):
    data = _make_images(tmp_path / "imgs", n=1)
    out = tmp_path / "res"
    argv = [data, "--codecs", "jpeg", "--quality", "jpeg=20,60", "--out", out, "--no-progress",
            "--no-plot"]
    assert runner.run(_args(*argv)) == 0
    lines = _cache_lines(out)
    (out / tasks.CACHE_NAME).write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    assert runner.run(_args(*argv)) == 0
    assert "1 to compute" in capsys.readouterr().out


def test_missing_peer_is_skipped(tmp_path, capsys, monkeypatch):
    from gscodec.benchmark import peers
    monkeypatch.setattr(peers.AVIF, "unavailable", lambda self: "no AVIF here")
    data = _make_images(tmp_path / "imgs", n=1)
    out = tmp_path / "res"
    assert runner.run(_args(data, "--codecs", "jpeg,avif", "--quality", "jpeg=50", "--out", out,
                            "--no-progress", "--no-plot")) == 0
    assert "skipping avif: no AVIF here" in capsys.readouterr().out
    assert not (out / "avif.json").exists()


def test_heic_peers_444_and_420(tmp_path, capsys):
    """HEIC (HEVC intra through pillow-heif) in 4:4:4 and 4:2:0: real files that decode to the
    source's shape, the rate growing with the quality; a grayscale PNG reaches it as RGB
    (every peer is handed RGB) and comes back with equal channels."""
    pytest.importorskip("pillow_heif")
    from gscodec.benchmark import peers
    data = _make_images(tmp_path / "imgs", n=1)
    gray = np.linspace(0, 255, 48 * 32).reshape(32, 48).astype(np.uint8)
    Image.fromarray(gray, "L").save(data / "gray.png")
    out = tmp_path / "res"
    assert runner.run(_args(data, "--codecs", "heic,heic420", "--quality", "heic=5,40,90",
                            "--quality", "heic420=5,40,90", "--out", out, "--no-progress",
                            "--no-plot")) == 0
    for codec, chroma in (("heic", 444), ("heic420", 420)):
        doc = json.loads((out / f"{codec}.json").read_text())
        assert doc["meta"]["settings"]["chroma"] == chroma
        for image in ("img0.png", "gray.png"):
            pts = sorted((p["quality"], p["bytes"], p["psnr-rgb"]) for p in doc["per_image"]
                         if p["image"] == image)
            assert [q for q, _, _ in pts] == [5, 40, 90]
            assert pts[0][1] < pts[1][1] < pts[2][1] and pts[0][2] < pts[2][2]
    codec = peers.make_codec("heif")          # alias
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    back = codec.decode(codec.encode(rgb, 50)[0])
    assert back.shape == rgb.shape
    assert np.abs(back[:, :, 0].astype(int) - back[:, :, 2]).max() <= 1
    assert psnr(rgb, back) > 35


def test_heic_missing_is_skipped(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import pillow_heif -> ImportError
    data = _make_images(tmp_path / "imgs", n=1)
    out = tmp_path / "res"
    assert runner.run(_args(data, "--codecs", "jpeg,heic", "--quality", "jpeg=50", "--out", out,
                            "--no-progress", "--no-plot")) == 0
    assert "skipping heic: pillow-heif is not installed" in capsys.readouterr().out
    assert not (out / "heic.json").exists()


def test_no_dataset_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.run(_args(empty, "--codecs", "jpeg", "--out", tmp_path / "o")) == 2


def _gsi_api_ready():
    try:
        import gscodec
        return (callable(getattr(gscodec, "encode", None))
                and callable(getattr(gscodec, "decode", None)))
    except Exception:
        return False


@pytest.mark.skipif(not _gsi_api_ready(), reason="gscodec.encode/decode not there yet")
def test_tiny_run_with_gsi(tmp_path, capsys):
    data = _make_images(tmp_path / "imgs")
    out = tmp_path / "res"
    argv = [data, "--codecs", "gsi,jpeg,webp", "--points", "100,200", "--iterations", "20",
            "--quality", "jpeg=5,20,50,90", "--quality", "webp=5,20,50,90", "--device", "cpu",
            "--out", out, "--no-progress"]
    assert runner.run(_args(*argv)) == 0
    text = capsys.readouterr().out
    assert "GSI (ours) [gsi]" in text and "gsi        jpeg" in text
    doc = json.loads((out / "gsi.json").read_text())
    assert len(doc["results"]["bpp"]) == 2 and len(doc["per_image"]) == 4
    # N = round(density * W * H / 1000): 100 * 48 * 32 / 1000 = 154
    assert sorted({r["gaussians"] for r in doc["per_image"]}) == [154, 307]
    assert all(r["bytes"] > 0 and r["psnr-rgb"] > 5 for r in doc["per_image"])
    bd = json.loads((out / "bdrate.json").read_text())
    assert {p["anchor"] for p in bd["pairs"]} >= {"jpeg", "webp"}
    n = len(_cache_lines(out))
    assert runner.run(_args(*argv)) == 0
    assert "0 to compute" in capsys.readouterr().out and len(_cache_lines(out)) == n


def test_gsi_ssim_is_its_own_row_with_bd_rates_against_gsi(tmp_path, capsys):
    """gsi-ssim (gsi with tune ssim) is fitted apart from gsi (its own cache keys, not a
    shared fit), writes gsi-ssim.json, and the BD-rate table has it against gsi and the
    peers (gsi against gsi-ssim is left out: one pair, one sign)."""
    from gscodec.benchmark import peers
    data = _make_images(tmp_path / "imgs", n=1, w=40, h=28)
    out = tmp_path / "res"
    assert runner.run(_args(data, "--codecs", "gsi,gsi-ssim,jpeg", "--points", "60,120",
                            "--iterations", "10", "--quality", "jpeg=10,50,90", "--device",
                            "cpu", "--out", out, "--no-progress", "--no-plot")) == 0
    assert "encodes in" not in capsys.readouterr().out      # no shared fit
    doc = json.loads((out / "gsi-ssim.json").read_text())
    assert doc["meta"]["settings"]["tune"] == "ssim" and len(doc["per_image"]) == 2
    assert "tune" not in json.loads((out / "gsi.json").read_text())["meta"]["settings"]
    pairs = {(p["test"], p["anchor"]) for p in json.loads((out / "bdrate.json").read_text())[
        "pairs"]}
    assert pairs == {("gsi", "jpeg"), ("gsi-ssim", "gsi"), ("gsi-ssim", "jpeg")}
    assert "gsi-ssim" not in peers.ALL_CODECS and peers.canonical("gsi-ssim") == "gsi-ssim"


def test_gsi_profiles_share_one_fit_with_the_same_bytes(tmp_path, capsys):
    """gsi and gsi-gi at the same point run as one task (one free fit, two tails): the files
    are byte-identical to separate runs of each codec."""
    data = _make_images(tmp_path / "imgs", w=40, h=28)
    common = ["--points", "60", "--iterations", "15", "--device", "cpu", "--no-progress"]
    both, alone = tmp_path / "both", tmp_path / "alone"
    assert runner.run(_args(data, "--codecs", "gsi,gsi-gi", "--out", both, *common)) == 0
    assert "4 encodes in 2 tasks" in capsys.readouterr().out
    for codec in ("gsi", "gsi-gi"):
        assert runner.run(_args(data, "--codecs", codec, "--out", alone, *common)) == 0
    capsys.readouterr()
    for codec in ("gsi", "gsi-gi"):
        a = json.loads((both / f"{codec}.json").read_text())["per_image"]
        b = json.loads((alone / f"{codec}.json").read_text())["per_image"]
        def key(r):
            return r["image"], r["density"], r["bytes"], r["psnr-rgb"]
        assert sorted(map(key, a)) == sorted(map(key, b)) and len(a) == 2
    rows = [json.loads(line) for line in _cache_lines(both)]
    assert len(rows) == 4 and all(r["shared_fit"] for r in rows)
    assert not any(json.loads(line).get("shared_fit") for line in _cache_lines(alone))


def test_compare_runs_bd_rate_between_two_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "compare_runs", Path(__file__).resolve().parents[1] / "benchmarks/compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, factor in (("old", 1.0), ("new", 0.8)):
        d = tmp_path / name
        d.mkdir()
        (d / "gsi.json").write_text(json.dumps({"name": "gsi", "results": {
            "bpp": [x * factor for x in RATES], "psnr-rgb": PSNRS, "ms-ssim-rgb": MSSSIM}}))
    out = tmp_path / "bd.json"
    assert mod.main([str(tmp_path / "old"), str(tmp_path / "new"), "--json", str(out)]) == 0
    bd = json.loads(out.read_text())["bd_rate"]["gsi"]
    assert bd["psnr"]["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-6)
    assert bd["ms-ssim"]["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-6)
    assert mod.main([str(tmp_path / "old"), str(tmp_path / "nothing")]) == 1
    assert "no codec results" in capsys.readouterr().err

    # Runs on different images: both cut to the images they share. The old run's "b" is
    # 0.8x as costly as its "a", the new run has only "a" at the old run's rates: the
    # shared image's curves are equal (0 %), where the mean curves would differ.
    def run(name, images):
        rows = [{"image": im, "density": d, "bpp": r * (0.8 if im == "b" else 1.0),
                 "psnr-rgb": q, "ms-ssim-rgb": m}
                for im in images for d, r, q, m in zip((2, 5, 11, 24, 48), RATES, PSNRS, MSSSIM,
                                                       strict=True)]
        d = tmp_path / name
        d.mkdir()
        (d / "gsi.json").write_text(json.dumps({"name": "gsi", "meta": {"images": images},
                                                "results": {}, "per_image": rows}))
    run("two", ["a", "b"])
    run("one", ["a"])
    assert mod.main([str(tmp_path / "two"), str(tmp_path / "one"), "--json", str(out)]) == 0
    bd = json.loads(out.read_text())["bd_rate"]["gsi"]
    assert bd["psnr"]["bd_rate_percent"] == pytest.approx(0.0, abs=1e-6)
    assert "the 1 images both runs have" in capsys.readouterr().out


def test_gsi_cache_key_changes_with_the_encoder():
    from gscodec.benchmark.peers import encoder_fingerprint, make_codec
    settings = make_codec("gsi", None).settings()
    assert settings["encoder"] == encoder_fingerprint()
    assert len(settings["encoder"]) == 12 and int(settings["encoder"], 16) >= 0


def test_fingerprint_ignores_comments_but_not_code():
    from gscodec.benchmark.peers import _c_code, _python_code
    c = 'int f(int x) {\n    return x + 1;  // one more\n}\nconst char* s = "a // b";\n'
    assert _c_code(c) == _c_code("/* doc\n   block */\n" + c.replace("one more", "plus 1"))
    assert _c_code(c) != _c_code(c.replace("x + 1", "x + 2"))
    assert _c_code(c) != _c_code(c.replace("a // b", "a // c"))   # a string is code
    py = 'def f(x):\n    """Doc."""\n    return x + 1  # note\n'
    assert _python_code(py) == _python_code("# header\n" + py.replace("Doc.", "Other."))
    assert _python_code(py) != _python_code(py.replace("x + 1", "x - 1"))


# ----------------------------------------------------------------------------- results layout

def _gsi_args(data, out, *extra):
    return [data, "--codecs", "gsi,jpeg", "--points", "100,200", "--iterations", "5",
            "--quality", "jpeg=20,80", "--device", "cpu", "--out", out, "--no-progress",
            "--no-plot",
            *extra]


def _absolute_paths(v):
    """Every string in a JSON document that is, or contains a token that is, an absolute path."""
    if isinstance(v, dict):
        return [x for k in v.values() for x in _absolute_paths(k)]
    if isinstance(v, list):
        return [x for k in v for x in _absolute_paths(k)]
    if isinstance(v, str):
        return [t for t in v.replace("=", " ").split() if t.startswith("/")]
    return []


def _numbers(doc):
    """The per-image points without the (wall-clock) times."""
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in doc["per_image"]]


def test_default_results_folder_is_per_dataset(tmp_path):
    assert provenance.default_out("kodak") == provenance.RESULTS_DIR / "kodak"
    assert provenance.RESULTS_DIR.name == "results"
    assert provenance.RESULTS_DIR.parent.name == "benchmarks"
    assert provenance.dataset_name(tmp_path / "kodak") == "kodak"
    args = _args(tmp_path, "--ray")
    assert args.ray == "" and args.jobs is None
    assert _args("--ray=ray://head:10001", tmp_path).ray == "ray://head:10001"


@pytest.mark.skipif(not _gsi_api_ready(), reason="gscodec.encode/decode not there yet")
def test_results_layout_schema_and_stamps(tmp_path, capsys):
    from gscodec.benchmark.peers import encoder_fingerprint
    data = _make_images(tmp_path / "kodak", w=32, h=24)
    out = tmp_path / "results" / "kodak"
    assert runner.run(_args(*_gsi_args(data, out))) == 0
    # A later run of another codec into the same folder: the BD-rate table takes both.
    assert runner.run(_args(data, "--codecs", "webp", "--quality", "webp=20,80", "--out", out,
                            "--no-progress")) == 0
    capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bdrate.json", "cache.jsonl", "gsi.json", "jpeg.json", "rd.png", "summary.txt",
                     "webp.json"]
    for codec in ("gsi", "jpeg", "webp"):
        doc = json.loads((out / f"{codec}.json").read_text())
        assert not _absolute_paths(doc), _absolute_paths(doc)
        assert set(doc) == {"name", "description", "codec", "meta", "results", "per_image"}
        assert doc["codec"] == codec
        res, meta = doc["results"], doc["meta"]
        assert {"psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"} <= set(res)
        assert all(len(v) == 2 for v in res.values())
        assert meta["dataset"] == "kodak" and meta["images"] == ["img0.png", "img1.png"]
        assert meta["git_commit"] is None or len(meta["git_commit"]) == 40
        assert meta["encoder_fingerprint"] == encoder_fingerprint()
        assert meta["command"].startswith("gsi bench ") and meta["type"] == "image"
        assert len(doc["per_image"]) == 4
        for pt in doc["per_image"]:
            assert {"image", "bpp", "psnr-rgb", "ms-ssim-rgb", "bytes"} <= set(pt)
    gsi = json.loads((out / "gsi.json").read_text())
    assert gsi["meta"]["effort"] == "default" and gsi["meta"]["iterations"] == 5
    assert gsi["meta"]["settings"]["encoder"] == encoder_fingerprint()
    assert sorted({p["density"] for p in gsi["per_image"]}) == [100, 200]
    assert json.loads((out / "jpeg.json").read_text())["meta"]["iterations"] is None
    bd = json.loads((out / "bdrate.json").read_text())
    assert bd["dataset"] == "kodak" and set(bd["codecs"]) == {"gsi", "jpeg", "webp"}
    measured = {(p["test"], p["anchor"]) for p in bd["pairs"] if "(published)" not in p["anchor"]}
    assert measured == {("gsi", "jpeg"), ("gsi", "webp")}
    if provenance.default_anchors_dir() is not None:  # a folder named kodak: published anchors too
        pairs = {(p["test"], p["anchor"]) for p in bd["pairs"]}
        assert ("gsi", "gaussianimage (published)") in pairs
    for p in bd["pairs"]:
        assert set(p["psnr"]) >= {"bd_rate_percent", "meaningful", "reason"} and "ms-ssim" in p


# ----------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module (the runner reuses an initialised Ray)."""
    pytest.importorskip("ray")
    ray, started = executors.ray_init(None, 2)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.skipif(not _gsi_api_ready(), reason="gscodec.encode/decode not there yet")
def test_ray_gives_the_jobs_numbers_and_resumes(tmp_path, capsys, local_ray):
    assert local_ray.cluster_resources().get("CPU") == 2
    data = _make_images(tmp_path / "imgs", w=32, h=24)
    by_jobs, by_ray = tmp_path / "jobs", tmp_path / "ray"
    assert runner.run(_args(*_gsi_args(data, by_jobs, "--jobs", "2"))) == 0
    capsys.readouterr()
    # `--ray DATASET`: the folder given right after --ray is the dataset, not an address.
    argv = ["--ray", data] + _gsi_args(data, by_ray)[1:]
    assert runner.run(_args(*argv)) == 0
    text = capsys.readouterr().out
    assert "8 to compute; ray (local: 2 CPUs, 0 GPUs)" in text
    for codec in ("gsi", "jpeg"):
        a = json.loads((by_jobs / f"{codec}.json").read_text())
        b = json.loads((by_ray / f"{codec}.json").read_text())
        assert _numbers(a) == _numbers(b) and len(_numbers(b)) == 4
        assert a["results"]["psnr-rgb"] == b["results"]["psnr-rgb"]
        assert a["results"]["bpp"] == b["results"]["bpp"]
        assert b["meta"]["executor"] == "ray"
    assert len(_cache_lines(by_ray)) == 8
    # Resume: a second run computes nothing, with Ray or with --jobs, from the same cache.
    assert runner.run(_args(*argv)) == 0
    assert "0 to compute" in capsys.readouterr().out
    assert runner.run(_args(*_gsi_args(data, by_ray, "--jobs", "2"))) == 0
    assert "0 to compute" in capsys.readouterr().out
    assert len(_cache_lines(by_ray)) == 8
    # A cache filled by --jobs is resumed by --ray, and only new points are computed.
    assert runner.run(_args(*_gsi_args(data, by_jobs, "--ray", "--quality", "jpeg=20,50,80"))) == 0
    assert "2 to compute" in capsys.readouterr().out
    assert len(_cache_lines(by_jobs)) == 10


def test_ray_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    data = _make_images(tmp_path / "imgs", n=1)
    assert runner.run(_args(data, "--codecs", "jpeg", "--out", tmp_path / "o", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'gscodec[cluster]'" in err
    assert not (tmp_path / "o").exists()


def test_bench_help_lists_every_option():
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        runner.build_parser().parse_args(["--help"])
    text = buf.getvalue()
    for opt in ("--points", "--effort", "--iterations", "--codecs", "--quality", "--images",
                "--device", "--seed", "--name", "--out", "--jobs", "--ray", "--anchors",
                "--anchors-dir", "--no-plot", "--no-progress", "rd.png", "bdrate.json",
                "benchmarks/results/<dataset>"):
        assert opt in text, opt


def test_bench_fit_step_script(tmp_path, capsys):
    """benchmarks/bench_fit_step.py runs every arm on a small image and writes its JSON
    (the --base arms need another checkout's built kernel, not run here)."""
    import importlib.util
    from pathlib import Path

    from gscodec.render import kernel
    if not kernel.kernel_available():
        pytest.skip("compiled CPU kernel unavailable")
    spec = importlib.util.spec_from_file_location(
        "bench_fit_step", Path(__file__).resolve().parents[1] / "benchmarks/bench_fit_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)).save(img)
    out = tmp_path / "step.json"
    assert mod.main(["--image", str(img), "--gaussians", "60", "--threads", "1,2",
                     "--repeat", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["gaussians"] == 60 and data["evaluations"] > 0 and data["command"]
    arms = {(r["threads"], r["arm"]) for r in data["rows"]}
    assert arms == {(t, a) for t in (1, 2) for a in
                    ("exact", "fit", "cg_exact", "cg_fit", "cg_fit_fused")}
    for r in data["rows"]:
        assert r["ms"] > 0 and r["cpu_ms"] >= 0
        assert (r["ratio_to_baseline"] is None) == (r["baseline"] is None)
    assert "cg_fit_fused" in capsys.readouterr().out
    assert mod.main(["--image", str(img), "--gaussians", "60", "--threads", "1",
                     "--repeat", "1", "--json", str(out), "--waves"]) == 0
    data = json.loads(out.read_text())
    rows = {r["arm"]: r for r in data["rows"]}
    assert data["waves"] and rows["fit_waves"]["baseline"] == "fit"
    assert rows["fit_waves0"]["ms"] > 0 and rows["fit_waves"]["ms"] > 0


def test_screen_settings_compares_arms_at_equal_rate(tmp_path, capsys):
    """benchmarks/screen_settings.py encodes every image with every arm's FitConfig
    overrides and gives each row its gain at equal rate against the first arm (0 for the
    first arm itself); a field that is not FitConfig's is refused."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "screen_settings", Path(__file__).resolve().parents[1] / "benchmarks/screen_settings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = sorted(_make_images(tmp_path / "imgs", n=1, w=64, h=48).iterdir())[0]
    out = tmp_path / "s.jsonl"
    assert mod.main(["--images", str(img), "--densities", "20", "--arms", "base:iterations=30",
                     "short:iterations=10", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["base", "short"]
    base, short = rows
    assert base["gain_psnr"] == 0 and base["bytes_ratio"] == 1
    assert short["overrides"] == {"iterations": 10}
    slope = mod.SLOPES.get(20.0, 3.3)
    assert short["gain_psnr"] == pytest.approx(
        short["psnr"] - base["psnr"] + slope * math.log(base["bytes"] / short["bytes"]))
    assert short["msssim_db"] is None   # 48x64 is below MS-SSIM's minimum
    assert "short: mean gain" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not FIELD=VALUE"):
        mod.main(["--images", str(img), "--arms", "a:nonsense=1"])
    # MS-SSIM gains: the tune-ssim curve's slope at the row's density, unless one is given
    from gscodec.encoder.pipeline import ms_ssim_slope
    b = dict(density=24, bytes=1000, psnr=30.1, msssim_db=15.05, seconds=1.0)
    for d in (2, 24):
        r = dict(b, density=d, bytes=900, psnr=30.0, msssim_db=15.0)
        assert mod.with_gain(r, b, None)["gain_msssim_db"] == pytest.approx(
            -0.05 + ms_ssim_slope(d) * math.log(1000 / 900))
        assert mod.with_gain(r, b, 3.5)["gain_msssim_db"] == pytest.approx(
            -0.05 + 3.5 * math.log(1000 / 900))


def test_screen_settings_tail_reuses_one_saved_fit(tmp_path):
    """--tail: one free fit per image and density is saved and reused, and every arm runs
    only the tail on it, so an arm equal to the first gives the same file; a quantization
    class override (class.FIELD) reaches the file's steps."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "screen_settings", Path(__file__).resolve().parents[1] / "benchmarks/screen_settings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = sorted(_make_images(tmp_path / "imgs", n=1, w=64, h=48).iterdir())[0]
    fits, out = tmp_path / "fits", tmp_path / "t.jsonl"
    args = ["--images", str(img), "--densities", "20", "--tail", str(fits), "--out", str(out)]
    assert mod.main(args + ["--arms", "base:iterations=30", "same:"]) == 0
    saved = sorted(fits.iterdir())
    assert len(saved) == 1
    stamp = saved[0].stat().st_mtime_ns
    assert mod.main(args + ["--arms", "base:iterations=30", "fine:class.pos_bits=3"]) == 0
    assert sorted(fits.iterdir()) == saved and saved[0].stat().st_mtime_ns == stamp
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["base", "same", "base", "fine"]
    assert rows[1]["bytes"] == rows[0]["bytes"] == rows[2]["bytes"]
    assert rows[1]["psnr"] == rows[0]["psnr"] and rows[1]["gain_psnr"] == 0
    assert rows[3]["overrides"] == {"class.pos_bits": 3} and rows[3]["bytes"] > rows[0]["bytes"]
    with pytest.raises(SystemExit, match="not FIELD=VALUE"):
        mod.main(args + ["--arms", "a:class.nonsense=1"])


def test_error_by_activity_splits_both_codecs_errors(tmp_path, capsys):
    """benchmarks/error_by_activity.py: the activity classes cover every pixel, each codec's
    shares of its squared error add up to 1, and every Gaussian of the file is classed."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "error_by_activity",
        Path(__file__).resolve().parents[1] / "benchmarks/error_by_activity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = sorted(_make_images(tmp_path / "imgs", n=1, w=64, h=48).iterdir())[0]
    out = tmp_path / "a.json"
    assert mod.main(["--images", str(img), "--density", "20", "--json", str(out)]) == 0
    (res,) = json.loads(out.read_text())["rows"]
    assert res["gsi_bpp"] > 0 and res["jpeg2000_bpp"] > 0
    assert sum(c["pixels"] for c in res["classes"]) == pytest.approx(1.0)
    for codec in ("gsi", "jpeg2000"):
        assert sum(c[f"{codec}_share"] for c in res["classes"]) == pytest.approx(1.0)
    assert sum(g["gaussians"] for g in res["gaussians"]) == pytest.approx(1.0)
    a = np.random.default_rng(1).random((9, 13))
    box = mod.box_mean(a, 3)
    assert box[4, 6] == pytest.approx(a[3:6, 5:8].mean())
    assert box[0, 0] == pytest.approx(np.pad(a, 1, mode="symmetric")[0:3, 0:3].mean())
    assert "JPEG 2000" in capsys.readouterr().out
