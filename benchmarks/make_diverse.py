"""Write the "diverse" benchmark set: content that Kodak averages away.

Twelve images bundled with scikit-image (`skimage.data`: texture, printed text, a graphic,
photographs; several of its colour photos are smooth or come from JPEGs) and eight 384x384
crops of textured regions of the photos in ../shared/datasets/photos (foliage, terraces,
brick, water, a city, an altarpiece, a market, a facade). The set is weighted toward what
Gaussian splats do badly, so that a codec change is screened where it matters.

    python benchmarks/make_diverse.py OUT_DIR [--photos DIR]

needs scikit-image (`pip install -e ".[bench]"`). The PNGs are written only if missing, and
are the same on every machine (no resampling: crops and alpha compositing on white in
integers).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# skimage.data name -> file name. Grayscale images stay grayscale (gsi codes one channel).
SKIMAGE = ("grass", "gravel", "brick", "page", "text", "logo", "camera", "coffee",
           "astronaut", "chelsea", "rocket", "motorcycle_left")

# (photo, x, y): 384x384 crops of textured regions, chosen by eye on the photos set.
CROP = 384
PHOTO_CROPS = {
    "foliage": ("wiki013", 100, 368),
    "terraces": ("wiki004", 128, 64),
    "bricks": ("wiki009", 100, 420),
    "water": ("wiki011", 600, 396),
    "city": ("wiki010", 500, 152),
    "altar": ("wiki012", 409, 210),
    "market": ("wiki005", 300, 300),
    "facade": ("wiki006", 500, 250),
}


def skimage_image(name: str) -> np.ndarray:
    import skimage.data as data
    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    im = getattr(data, name)()
    if im.ndim == 3 and im.shape[2] == 4:   # logo: RGBA, composited on white
        rgb = im[..., :3].astype(np.uint32)
        a = im[..., 3:4].astype(np.uint32)
        im = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return im


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the PNGs (created)")
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "datasets" / "photos",
                    help="the photos set (default: ../shared/datasets/photos)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        print("make_diverse: scikit-image is missing (pip install -e '.[bench]')", file=sys.stderr)
        return 1
    written = 0
    for name in SKIMAGE:
        path = a.out / f"{name}.png"
        if not path.exists():
            Image.fromarray(skimage_image(name)).save(path)
            written += 1
    for name, (photo, x, y) in PHOTO_CROPS.items():
        path = a.out / f"{name}.png"
        if path.exists():
            continue
        src = a.photos / f"{photo}.png"
        if not src.exists():
            print(f"make_diverse: {src} is missing; skipping {name}", file=sys.stderr)
            continue
        im = Image.open(src).convert("RGB").crop((x, y, x + CROP, y + CROP))
        im.save(path)
        written += 1
    total = len(list(a.out.glob("*.png")))
    print(f"make_diverse: {written} written, {total} images in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
