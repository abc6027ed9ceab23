"""`slsp detect`: score files and folders in-process; one bad file never stops the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from slsp import detector as det_io
from slsp import provenance
from slsp.detector import Detection, Detector
from slsp.device_pipeline import DevicePipeline
from slsp.errors import ImageError, SlspError
from slsp.imaging import display_name, load, read, scan
from slsp.progress import bar


def detect_paths(paths: list[Path], run: Path | None, explain: Path | None = None, quiet: bool = False,
                 max_pixels: int | None = None, device: str | None = None, compiled: bool = False,
                 trust: provenance.Trust = provenance.Trust()) -> list[dict]:
    """One result per image file (a score, or the error that image met), each with the file's provenance (read from
    its bytes apart from the pixels, so also for an image the detector refuses). `device`: the whole path from the
    file's bytes on that torch device (`DevicePipeline`; `compiled`: through torch.compile), else the CPU library."""
    det = det_io.load(run)
    limit = det.cfg.max_pixels if max_pixels is None else max_pixels
    if compiled and device is None:
        raise SlspError("compiling is for the on-device path: give a device (--device cuda, or cpu)")
    if explain is not None and device is not None:
        raise SlspError("--explain draws from the CPU library: leave out --device")
    pipe = None if device is None else DevicePipeline(det, device, compiled=compiled, max_pixels=limit)
    files, skipped = scan(paths)
    if not files and not skipped:
        raise ImageError(f"no images found under {', '.join(map(str, paths))}")
    if explain is not None:
        explain.mkdir(parents=True, exist_ok=True)
    # Every entry left out (a missing path, a dangling link, a FIFO) is a row with its reason; the others are scored.
    results = [{**display_name(p), "error": f"{p}: {why}"} for p, why in skipped]
    with bar(quiet) as pb:
        task = pb.add_task("detect", total=len(files), info="")
        for f in files:
            prov = {"provenance": provenance.of_file(f, trust)}
            try:
                if pipe is None:
                    img = load(f, max_pixels=limit)
                    d, phi = det.analyze(img, str(f))
                else:  # the header checked before the file is read, as `load` does
                    d = Detection(*(t.cpu() for t in pipe.detect(read(f, limit), str(f))))
            except ImageError as e:
                results.append({**display_name(f), "error": str(e), **prov})
            except Exception as e:  # noqa: BLE001 - one file's failure never ends the run
                results.append({**display_name(f),
                                "error": f"internal error on this image ({type(e).__name__}: {e})", **prov})
            else:
                results.append({**as_dict(str(f), d, det), **display_name(f), **prov})
                if explain is not None:
                    render_explanation(det.canonical(img)[0], phi, d, det.crop_sides, threshold(det, d)).save(
                        explain / f"{f.stem}.png")
            pb.advance(task)
    return results


def threshold(det: Detector, d: Detection) -> float:
    """The threshold this detection was judged by: the low-resolution one for an image scored at native scale."""
    return det.cfg.low_resolution.threshold if bool(d.low_resolution) else det.cfg.threshold


def as_dict(name: str, d: Detection, det: Detector) -> dict:
    valid = d.valid.numpy()
    low = bool(d.low_resolution)
    return {
        "path": name,
        "score": float(d.score),
        "verdict": "synthetic" if bool(d.verdict) else "real",
        "threshold": threshold(det, d),
        "noise_sigma": float(d.sigma),
        # Too small for the canonical transform: scored at native scale, under the low-resolution calibration.
        "low_resolution": low,
        # crop positions (y, x) and sides refer to the image after this transform; a crop of pyramid level l was
        # scored box-averaged to the model's crop size, and covers 2^l times that side
        "canonical": "none" if low else det.cfg.canonical,
        "crops": [
            {"y": int(p[0]), "x": int(p[1]), "side": int(side), "score": float(s)}
            for p, side, s, v in zip(d.positions.numpy(), det.crop_sides, d.crop_scores.numpy(), valid)
            if v
        ],
    }


def render_explanation(img: np.ndarray, phi: np.ndarray, d: Detection, sides: np.ndarray, threshold: float
                       ) -> Image.Image:
    """The image with over-smooth pixels tinted, each scored crop boxed (`sides`: each slot's side, as
    `Detector.crop_sides`) and labelled with its score."""
    tinted = img.astype(np.float32)
    tinted[phi > 0] = 0.55 * tinted[phi > 0] + 0.45 * np.array([0, 200, 255], np.float32)
    out = Image.fromarray(tinted.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for (y, x), c, s, v in zip(d.positions.numpy(), sides, d.crop_scores.numpy(), d.valid.numpy()):
        if v:
            colour = (255, 40, 40) if s >= threshold else (40, 255, 40)
            draw.rectangle([int(x), int(y), int(x) + int(c) - 1, int(y) + int(c) - 1], outline=colour, width=2)
            draw.text((int(x) + 3, int(y) + 2), f"{s:.2f}", fill=colour)
    verdict = "synthetic" if bool(d.verdict) else "real"
    draw.text((4, img.shape[0] - 14), f"score {float(d.score):.3f} -> {verdict}", fill=(255, 255, 0))
    return out
