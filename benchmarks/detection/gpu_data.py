"""The real training photos that fit in one device call (64 MiB with the working tree), for
benchmarks/detection/gpu_train.sh.

    python benchmarks/detection/gpu_data.py .gpu-data    # then: echo /.gpu-data/ >> .git/info/exclude

All 92 in-camera JPEGs of real/train-camera, byte for byte (their compression is the point), and the BSD100, Set14 and
Set5 photos of real/train as lossless WebP (pixels checked equal after the round trip); Urban100 and Sun-Hays80 do
not fit. Both folders are real photos only, as everything the model trains on.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
PNG_SETS = ("bsd100", "set14", "set5")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    out = ap.parse_args(argv).out
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "train-camera").mkdir(exist_ok=True)
    for f in sorted((REAL / "train-camera").glob("*.jpg")):
        shutil.copyfile(f, out / "train-camera" / f.name)
    for f in sorted(p for s in PNG_SETS for p in (REAL / "train").glob(f"{s}_*.png")):
        img = Image.open(f)
        dst = out / "train" / f"{f.stem}.webp"
        img.save(dst, "WEBP", lossless=True, method=4)
        if not np.array_equal(np.asarray(Image.open(dst).convert(img.mode)), np.asarray(img)):
            raise SystemExit(f"{f}: the lossless WebP round trip changed pixels")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(list(out.rglob('*.*')))} photos, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
