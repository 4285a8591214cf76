"""Fixed test vectors: read() must give the JSON integers, write(JSON) the same bytes
(version-5 vectors; v1_* to v4_* files are old version-1 to version-4 files that must
still decode), and the independent reference decoder must agree."""
import importlib.util
import json
import pathlib

import pytest

from gscodec.bitstream import format as gsi

import gsi_reference_decoder as ref

HERE = pathlib.Path(__file__).resolve().parent / "vectors"
NAMES = sorted(p.stem for p in HERE.glob("*.gsi"))

_spec = importlib.util.spec_from_file_location("make_vectors", HERE / "make_vectors.py")
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)


def test_vectors_of_every_version_and_profile_are_present():
    assert len(NAMES) >= 22 and any(n.startswith("v1_") for n in NAMES)
    assert any(n.startswith("v2_") for n in NAMES) and any(n.startswith("buckets_") for n in NAMES)
    assert any(n.startswith("v3_") for n in NAMES) and any(n.startswith("angles_") for n in NAMES)
    assert any(n.startswith("v4_") for n in NAMES) and any(n.startswith("waves_") for n in NAMES)
    assert any(n.startswith("gi_") for n in NAMES)
    for name in NAMES:
        assert (HERE / f"{name}.json").exists()


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes_to_its_json_and_rewrites_as_v5(name):
    data = (HERE / f"{name}.gsi").read_bytes()
    expected = json.loads((HERE / f"{name}.json").read_text())
    assert make_vectors.to_json(data) == expected
    if name[:3] in ("v1_", "v2_", "v3_", "v4_"):
        assert expected["header"]["version"] == int(name[1])
        again = make_vectors.to_json(gsi.write(make_vectors.from_json(expected)))   # as v5
        assert again["header"]["version"] == 5
        assert again.get("amp", [0] * expected["header"]["count"]) == \
            [0] * expected["header"]["count"]                       # no waves before v5
        # (version 1 also stored the rotation of isotropic Gaussians; later versions write 0)
        keys = ("x", "y", "major", "minor", "color", "cls", "fields") + \
            (("rot",) if name[1] != "1" else ())
        for key in keys:
            assert again.get(key) == expected.get(key), key
    else:
        assert expected["header"]["version"] == 5
        assert gsi.write(make_vectors.from_json(expected)) == data
    r = ref.decode(data)
    for key, val in expected["header"].items():
        assert r[key] == ({"gsi": 0, "gaussianimage": 1}[val] if key == "profile" else val), key
    if expected["header"]["profile"] == "gaussianimage":
        means, chol, colors = r["gaussianimage"]
        assert [list(m) for m in means] == expected["means"]
        assert [list(m) for m in chol] == expected["L"]
        assert [list(m) for m in colors] == expected["colors"]
        return
    for key in ("x", "y", "major", "minor", "rot", "color", "cls"):
        assert r[key] == expected[key], key
    for key in make_vectors.WAVE_PARTS:      # (versions 1 to 4: no waves)
        assert r[key] == expected.get(key, [0] * len(r[key])), key


def test_generator_reproduces_vectors():
    for name, qg in make_vectors.vectors().items():
        assert gsi.write(qg) == (HERE / f"{name}.gsi").read_bytes(), name

