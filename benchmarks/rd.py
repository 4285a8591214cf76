#!/usr/bin/env python
"""Rate-distortion benchmark (same as ``gsi bench``).

    python benchmarks/rd.py [DATASET_DIR] [--points 2,4,8,16] [--codecs gsi,jpeg,webp,jpeg2000,avif,jxl]
                            [--images N] [--iterations K] [--device auto] [--out results/] [--jobs J] [--anchors]

DATASET_DIR is any folder of PNG files (Kodak, DIV2K, ...); it defaults to
../shared/datasets/kodak beside the checkout when that exists.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gscodec.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
