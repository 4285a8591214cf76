#!/usr/bin/env python
"""Rate-distortion benchmark (same as ``gsi bench``; ``--help`` lists every option).

    python benchmarks/rd.py [DATASET_DIR] [--codecs gsi,gsi-gi,jpeg,webp,jpeg2000,avif,jxl]
                            [--points 2,4,8,16] [--effort default] [--iterations K] [--images N]
                            [--device auto] [--jobs J | --ray [ADDRESS]] [--out DIR] [--anchors]

DATASET_DIR is any folder of PNG files (Kodak, DIV2K, ...); it defaults to
../shared/datasets/kodak beside the checkout when that exists. Results go to
benchmarks/results/<dataset>/ (<codec>.json, bdrate.json, rd.png; see
benchmarks/results/README.md).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gscodec.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
