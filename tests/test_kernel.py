"""The compiled kernel's numpy API (gscodec._raster), its thread pool, and the numpy
fallback renderer, which must give the kernel's pixels."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from gscodec.render import Q_CUT, kernel, to_uint8_numpy
from gscodec.render.numpy_reference import render_numpy_ref

from render_cases import float32_support, needles, np_case, random_gaussians

ROOT = Path(__file__).resolve().parents[1]

# Loads gscodec.render without running gscodec/__init__.py (which still imports the encoder).
_STUB = ("import sys, types; pkg = types.ModuleType('gscodec'); pkg.__path__ = [{path!r}]; "
         "sys.modules['gscodec'] = pkg; ")



CASES = [(200, 37, 23, 3, 0), (300, 64, 96, 1, 1), (150, 50, 70, 4, 2), (80, 45, 33, 2, 3),
         (5, 1, 1, 3, 4), (10, 7, 1, 1, 6)]


# ---- numpy API ------------------------------------------------------------------------------

def test_forward_backward_shapes(ext):
    m, q, c = np_case(50, 20, 30, 3, 0)
    out = ext.forward(m, q, c, 20, 30)
    assert isinstance(out, np.ndarray) and out.shape == (20, 30, 3) and out.dtype == np.float32
    gm, gq, gc = ext.backward(m, q, c, np.ones((20, 30, 3), np.float32))
    assert (gm.shape, gq.shape, gc.shape) == ((m.shape[0], 2), (m.shape[0], 3), (m.shape[0], 3))
    assert gm.dtype == gq.dtype == gc.dtype == np.float32
    # Colour gradient of sum(out) is the sum of each Gaussian's weights: out = weights @ c.
    assert np.allclose((gc[:, :1] * c).sum(0), out.sum((0, 1)), rtol=1e-4)
    # Non-contiguous inputs give the same result.
    m2 = np.asfortranarray(m)
    assert np.array_equal(ext.forward(m2, q, c, 20, 30), out)
    # Empty sets and empty images.
    z = ext.forward(np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32),
                    np.zeros((0, 2), np.float32), 4, 5)
    assert z.shape == (4, 5, 2) and not z.any()
    assert ext.forward(m, q, c, 0, 7).shape == (0, 7, 3)
    gm, gq, gc = ext.backward(m, q, c, np.ones((0, 3, 3), np.float32))
    assert not gm.any() and not gq.any() and not gc.any()


def test_input_errors(ext):
    m, q, c = np_case(10, 8, 8, 3, 0)
    bad = [
        ((m.astype(np.float64), q, c, 8, 8), "float32"),
        ((m, q.astype(np.float16), c, 8, 8), "float32"),
        ((m.tolist(), q, c, 8, 8), "numpy array"),
        ((m[:, :1].copy(), q, c, 8, 8), "bad shapes"),
        ((m, q[:5], c, 8, 8), "bad shapes"),
        ((m, q, np.zeros((10, 5), np.float32), 8, 8), "bad shapes"),
        ((m, q, np.zeros((10, 0), np.float32), 8, 8), "bad shapes"),
        ((m[None], q, c, 8, 8), "dimensions"),
        ((m, q, c, -1, 8), "negative"),
    ]
    for args, msg in bad:
        with pytest.raises(ValueError, match=msg):
            ext.forward(*args)
    with pytest.raises(ValueError, match="grad_out"):
        ext.backward(m, q, c, np.zeros((8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        ext.backward(m, q, c, np.zeros((8, 8, 3), np.float64))
    with pytest.raises(ValueError):
        ext.set_num_threads(0)
    with pytest.raises(ValueError):
        ext.forward(m, q, c, 8, 8, -1)
    # render_numpy converts dtypes but checks shapes the same way.
    assert kernel.render_numpy(m.astype(np.float64), q, c, 8, 8).dtype == np.float32
    with pytest.raises(ValueError, match="bad shapes"):
        kernel.render_numpy(m, q[:5], c, 8, 8)


def test_q_cut_single_source(ext):
    from gscodec.render import common
    assert ext.Q_CUT == common.Q_CUT == Q_CUT
    # setup.py reads the constant from common.py (the only place it is written).
    text = (ROOT / "gscodec" / "render" / "common.py").read_text()
    assert re.search(r"^Q_CUT\s*=\s*12\.0\s*$", text, re.M)
    sources = sorted((ROOT / "csrc").glob("*.[ch]*"))
    assert len(sources) >= 2
    for src in sources:
        assert not re.search(r"Q_CUT\s*=\s*[-+.0-9]", src.read_text()), src.name


# ---- thread count independence and the pool -------------------------------------------------

def test_thread_count_independence(ext):
    m, q, c = np_case(3000, 200, 150, 3, 7)
    g = np.random.default_rng(0).standard_normal((200, 150, 3)).astype(np.float32)
    outs = [ext.forward(m, q, c, 200, 150, nt).tobytes() for nt in (1, 2, 3)]
    grads = [b"".join(x.tobytes() for x in ext.backward(m, q, c, g, nt)) for nt in (1, 2, 3)]
    assert outs[0] == outs[1] == outs[2]
    assert grads[0] == grads[1] == grads[2]
    old = ext.get_num_threads()
    try:
        for nt in (3, 1, 2):  # resizing the pool
            ext.set_num_threads(nt)
            assert ext.get_num_threads() == nt
            assert ext.forward(m, q, c, 200, 150).tobytes() == outs[0]
    finally:
        ext.set_num_threads(old)


def test_concurrent_calls(ext):
    """Calls from several Python threads (the GIL is released) share the pool safely."""
    m, q, c = np_case(1000, 90, 70, 3, 8)
    want = ext.forward(m, q, c, 90, 70, 1)
    results, errors = [], []

    def work(nt):
        try:
            for _ in range(5):
                results.append(ext.forward(m, q, c, 90, 70, nt))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(nt,)) for nt in (2, 3, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    assert all(np.array_equal(r, want) for r in results)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_after_fork():
    """A forked child (no worker threads of its own) starts a fresh pool, no deadlock."""
    code = _STUB.format(path=str(ROOT / "gscodec")) + (
        "import os, numpy as np, gscodec._raster as r; "
        "m = np.random.rand(200, 2).astype(np.float32) * 40; "
        "q = np.tile(np.array([[0.1, 0.0, 0.1]], np.float32), (200, 1)); "
        "c = np.ones((200, 3), np.float32); a = r.forward(m, q, c, 40, 40, 2); pid = os.fork()\n"
        "if pid == 0: os._exit(0 if np.array_equal(r.forward(m, q, c, 40, 40, 2), a) else 3)\n"
        "print(os.waitpid(pid, 0)[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    if "No module named" in out.stderr:
        pytest.skip("compiled CPU kernel unavailable")
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr


def test_default_thread_count_from_env():
    code = _STUB.format(path=str(ROOT / "gscodec")) + \
        "import gscodec._raster as r; print(r.get_num_threads())"
    for env, want in (({"GSCODEC_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, "3"),
                      ({"OMP_NUM_THREADS": "5,2"}, "5")):
        e = {k: v for k, v in os.environ.items()
             if k not in ("GSCODEC_NUM_THREADS", "OMP_NUM_THREADS")}
        e.update(env)
        e["PYTHONPATH"] = str(ROOT)
        out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                             text=True, cwd=ROOT)
        if out.returncode != 0 and "No module named" in out.stderr:
            pytest.skip("compiled CPU kernel unavailable")
        assert out.stdout.strip() == want, out.stderr


def test_isa_paths_agree(ext):
    """The AVX2 and baseline copies of the hot loops give bit-identical images."""
    if ext.isa() != "avx2":
        pytest.skip("no AVX2 here")
    m, q, c = np_case(500, 60, 80, 3, 9)
    g = np.random.default_rng(3).standard_normal((60, 80, 3)).astype(np.float32)
    try:
        a = ext.forward(m, q, c, 60, 80)
        pa = ext.Plan(m, q, 60, 80)
        a_plan, a_grad = pa.forward(c), pa.backward(c, g)
        ext._set_isa("baseline")
        assert ext.isa() == "baseline"
        b = ext.forward(m, q, c, 60, 80)
        pb = ext.Plan(m, q, 60, 80)
        b_plan, b_grad = pb.forward(c), pb.backward(c, g)
        assert ext.fast_exp_max_rel_error(-87.0, 10.0, 100000) < 1e-6
    finally:
        ext._set_isa("auto")
    assert np.array_equal(a, b)
    assert np.array_equal(a_plan, a) and np.array_equal(b_plan, a)
    # Gradients are sums whose order follows the vector width: equal to rounding.
    for x, y in zip(a_grad, b_grad, strict=True):
        assert np.allclose(x, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


# ---- plans (the encoder's repeated passes over one geometry) ---------------------------------

def _rel(a, b):
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("case", CASES)
def test_plan_matches_forward_and_backward(ext, case):
    """A plan's forward is bit-identical to forward (same weights, same summation order),
    with stored weights or without (max_weights=0), at any thread count; its backward is
    bit-identical to backward (itself a plan without weights) and its adjoint to the colour
    gradient, at every thread count and with or without stored weights."""
    n, h, w, ch, seed = case
    m, q, c = np_case(n, h, w, ch, seed)
    g = np.random.default_rng(seed).standard_normal((h, w, ch)).astype(np.float32)
    want = ext.forward(m, q, c, h, w, 1)
    want_g = ext.backward(m, q, c, g, 1)
    grads = set()
    for nt in (1, 2, 3):
        for max_weights in (1 << 26, 0):
            plan = ext.Plan(m, q, h, w, nt, max_weights)
            assert plan.weights_stored == (max_weights > 0)
            assert plan.count == len(m) and plan.evaluations > 0
            assert plan.forward(c, nt).tobytes() == want.tobytes()
            got = plan.backward(c, g, nt)
            for a, b in zip(got, want_g, strict=True):
                assert a.tobytes() == b.tobytes()
            assert plan.adjoint(g, nt).tobytes() == got[2].tobytes()
            grads.add(b"".join(x.tobytes() for x in got))
    assert len(grads) == 1


def test_plan_passes_in_any_order(ext):
    """The stored weights are computed by whichever pass comes first."""
    m, q, c = np_case(400, 60, 80, 3, 11)
    g = np.random.default_rng(1).standard_normal((60, 80, 3)).astype(np.float32)
    ref = ext.Plan(m, q, 60, 80)
    fwd, bwd = ref.forward(c), ref.backward(c, g)
    p1 = ext.Plan(m, q, 60, 80)
    assert p1.adjoint(g).tobytes() == bwd[2].tobytes()
    assert p1.forward(c).tobytes() == fwd.tobytes()
    p2 = ext.Plan(m, q, 60, 80)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(p2.backward(c, g), bwd, strict=True))
    assert p2.forward(c).tobytes() == fwd.tobytes()
    # other colours (any channel count) on the same geometry
    c1 = c[:, :1] * 2
    assert p2.forward(c1).tobytes() == ext.forward(m, q, c1, 60, 80).tobytes()


@pytest.mark.parametrize("masked", [False, True])
def test_plan_loss_backward(ext, masked):
    """loss_backward = scale * sum((weight * forward - target)^2) and the gradients of it
    (backward of 2 * scale * weight * r), the same at every thread count."""
    h, w = 70, 90
    m, q, c = np_case(500, h, w, 3, 5)
    rng = np.random.default_rng(2)
    target = rng.random((h, w, 3), dtype=np.float32)
    weight = (rng.random((h, w)) > 0.3).astype(np.float32) if masked else None
    scale = 1.0 / (h * w * 3)
    out = ext.forward(m, q, c, h, w).astype(np.float64)
    w3 = 1.0 if weight is None else weight[:, :, None]
    r = w3 * out - target
    want_loss = scale * (r * r).sum()
    want = ext.backward(m, q, c, (2 * scale * w3 * r).astype(np.float32))
    results = set()
    for nt in (1, 2, 3):
        loss, gm, gq, gc = ext.Plan(m, q, h, w, nt).loss_backward(c, target, weight, scale, nt)
        assert abs(loss - want_loss) <= 1e-6 * want_loss
        for a, b in zip((gm, gq, gc), want, strict=True):
            assert _rel(a, b) < 1e-5
        results.add((loss, gm.tobytes(), gq.tobytes(), gc.tobytes()))
    assert len(results) == 1


def test_plan_buffers_are_released(ext):
    m, q, c = np_case(200, 37, 23, 3, 0)
    ext.release_buffers()
    plan = ext.Plan(m, q, 37, 23)
    plan.forward(c)
    assert plan.weights_stored
    weights = 4 * plan.evaluations            # float32 weights, before row padding
    del plan                                  # its weights go to the pool ...
    assert ext.release_buffers() >= weights > 0  # ... and are freed here
    assert ext.release_buffers() == 0


def test_encode_leaves_no_pooled_buffers(ext):
    import gscodec
    rng = np.random.default_rng(0)
    gscodec.encode(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), gaussians=40,
                   iterations=5, device="cpu")
    assert ext.release_buffers() == 0


def test_plan_empty_and_errors(ext):
    m, q, c = np_case(30, 12, 16, 3, 0)
    empty = ext.Plan(np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32), 12, 16)
    assert empty.forward(np.zeros((0, 3), np.float32)).shape == (12, 16, 3)
    assert not empty.forward(np.zeros((0, 3), np.float32)).any()
    loss, gm, gq, gc = empty.loss_backward(np.zeros((0, 3), np.float32),
                                           np.ones((12, 16, 3), np.float32), None, 0.5)
    assert loss == pytest.approx(0.5 * 12 * 16 * 3) and gm.shape == (0, 2) and gc.shape == (0, 3)
    zero = ext.Plan(m, q, 0, 16)
    assert zero.forward(c).shape == (0, 16, 3)
    gm, gq, gc = zero.backward(c, np.zeros((0, 16, 3), np.float32))
    assert not (gm.any() or gq.any() or gc.any())
    plan = ext.Plan(m, q, 12, 16)
    with pytest.raises(ValueError, match="colors"):
        plan.forward(c[:5])
    with pytest.raises(ValueError, match="grad_out"):
        plan.backward(c, np.zeros((12, 15, 3), np.float32))
    with pytest.raises(ValueError, match="target"):
        plan.loss_backward(c, np.zeros((12, 16, 2), np.float32), None, 1.0)
    with pytest.raises(ValueError, match="weight"):
        plan.loss_backward(c, np.zeros((12, 16, 3), np.float32), np.ones((3, 3), np.float32),
                           1.0)
    with pytest.raises(ValueError, match="shapes"):
        ext.Plan(m, q[:4], 12, 16)
    with pytest.raises(ValueError):
        ext.Plan(m, q, -1, 16)


# ---- numpy fallback -------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_fallback_matches_kernel(ext, case):
    n, h, w, ch, seed = case
    m, q, c = np_case(n, h, w, ch, seed)
    k = ext.forward(m, q, c, h, w)
    f = render_numpy_ref(m, q, c, h, w)
    assert f.shape == k.shape and f.dtype == np.float32
    assert np.array_equal(to_uint8_numpy(f), to_uint8_numpy(k))
    assert np.abs(f - k).max() <= 1e-6 * max(1.0, np.abs(k).max())


def test_fallback_cutoff_decisions(ext):
    """Where a single Gaussian contributes (q <= Q_CUT) is the same in kernel, fallback and
    the contract's float32 q, including pixels with q right at the cut-off."""
    h, w = 24, 32
    m, q, c = [t.numpy() for t in random_gaussians(150, h, w, 1, seed=21, smin=0.3, smax=6)]
    m = np.concatenate([m, np.array([[5.5, 5.5], [10.5, 7.5]], np.float32)])
    q = np.concatenate([q, np.array([[0.75, 0.0, 0.75], [3.0, 0.0, 3.0]], np.float32)])  # q = 12
    ones = np.ones((1, 1), np.float32)
    px, py = np.meshgrid(np.arange(w, dtype=np.float32) + np.float32(0.5),
                         np.arange(h, dtype=np.float32) + np.float32(0.5))
    at_cut = 0
    for k in range(m.shape[0]):
        a, b, cc = q[k]
        dx, dy = px - m[k, 0], py - m[k, 1]
        qq = (a * dx + (np.float32(2.0) * b) * dy) * dx + (cc * dy) * dy
        want = qq <= np.float32(Q_CUT)
        at_cut += int((qq == np.float32(Q_CUT)).sum())
        got_k = ext.forward(m[k:k + 1], q[k:k + 1], ones, h, w)[..., 0] > 0
        got_f = render_numpy_ref(m[k:k + 1], q[k:k + 1], ones, h, w)[..., 0] > 0
        assert np.array_equal(got_k, want), k
        assert np.array_equal(got_f, want), k
    assert at_cut > 0


def test_row_spans_decide_the_candidate_pixels(ext):
    """Long thin Gaussians centred far off the image: their float32 q is <= Q_CUT at some
    pixels outside their float64 row spans (spec 10.2), where they must not be drawn; the
    kernel and the fallback agree bit for bit, and both differ from evaluating q alone."""
    h, w = 24, 32
    m, q, c = [t.numpy() for t in needles(h, w, 3)]
    k = ext.forward(m, q, c, h, w)
    f = render_numpy_ref(m, q, c, h, w)
    assert k.tobytes() == f.tobytes()
    support = float32_support(m, q, h, w)
    drawn = np.stack([ext.forward(m[i:i + 1], q[i:i + 1], np.ones((1, 1), np.float32), h, w)
                      [..., 0] > 0 for i in range(len(m))])
    assert not (drawn & ~support).any()
    assert (support & ~drawn).sum() > 0        # measured: 63 pixels over the five


def test_no_kernel_env_forces_fallback(ext, monkeypatch):
    m, q, c = np_case(300, 40, 50, 3, 12)
    k = kernel.render_numpy(m, q, c, 40, 50)
    monkeypatch.setenv("GSCODEC_NO_KERNEL", "1")
    monkeypatch.setattr(kernel, "_warned", False)
    assert not kernel.kernel_available() and "GSCODEC_NO_KERNEL" in kernel.unavailable_reason()
    with pytest.warns(RuntimeWarning, match="slow numpy fallback"):
        f = kernel.render_numpy(m, q, c, 40, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel.render_numpy(m, q, c, 40, 50)  # warns once only
    assert np.array_equal(to_uint8_numpy(f), to_uint8_numpy(k))
    import gscodec.render as R
    R.refresh()              # availability is cached: ask again after the change
    try:
        assert "kernel" not in R.available_backends()
        assert "kernel" not in R.available_backends("window")
    finally:
        monkeypatch.delenv("GSCODEC_NO_KERNEL")
        R.refresh()


# ---- no torch on the decoder path -----------------------------------------------------------

_RENDER = ("import numpy as np; import gscodec.render as R; from gscodec.render import kernel; "
           "img = R.render_numpy(np.array([[2., 2.]], np.float32), "
           "np.array([[1., 0., 1.]], np.float32), np.ones((1, 3), np.float32), 4, 4); "
           "R.to_uint8_numpy(img); print('torch' in sys.modules)")


def _run(code, **env):
    e = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=e)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("no_kernel", ["0", "1"])
def test_render_modules_do_not_import_torch(no_kernel):
    code = _STUB.format(path=str(ROOT / "gscodec")) + _RENDER
    assert _run(code, GSCODEC_NO_KERNEL=no_kernel) == "False"

