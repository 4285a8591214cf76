"""The decoder on the ground floor: no torch anywhere on the decode path, and the numpy
fallback's pixels. (The Pillow plugin: test_pil_plugin.py.)"""
import os
import subprocess
import sys
from pathlib import Path

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
