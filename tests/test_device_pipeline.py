"""The on-device path (issue 17): Pillow's bicubic resize in integer tensor ops, and encoded bytes -> Detection on a
torch device, against the library (`decode` + `Detector.detect`). Runs on the CPU; the CUDA test proves nvJPEG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAKES, PHOTOS, jpeg, synthetic_photo
from slsp import contract
from slsp import detector as det_io
from slsp.device_pipeline import DevicePipeline, member_decoder, pillow_resize
from slsp.errors import ImageError
from slsp.export import parity
from slsp.imaging import decode, plain_jpeg


@pytest.mark.parametrize("seed", range(12))
def test_pillow_resize_is_bit_exact(seed: int) -> None:
    """Random sizes up to 1.8 times as tall as wide (Pillow may go vertical-first near 2), random downscales, noise
    and smooth gradients (where the clipping of the intermediate matters)."""
    rng = np.random.default_rng(seed)
    w = int(rng.integers(3, 260))
    h = int(rng.integers(3, int(1.8 * w) + 1))
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if seed % 2:
        img = np.clip(np.cumsum(rng.normal(0, 25, (h, w, 3)), axis=1), 0, 255).astype(np.uint8)
    f = float(rng.uniform(0.2, 1.0))
    size = (max(1, round(h * f)), max(1, round(w * f)))
    want = np.asarray(Image.fromarray(img).resize(size[::-1], Image.BICUBIC))
    np.testing.assert_array_equal(pillow_resize(torch.from_numpy(img), size).numpy(), want)


def test_device_pipeline_on_cpu_equals_the_library(tmp_path) -> None:
    """Bytes -> Detection on the CPU device: the same pixels after the canonical resize, so the same scores."""
    det = det_io.load()
    pipe = DevicePipeline(det, "cpu")
    thumb = io.BytesIO()
    Image.fromarray(synthetic_photo(100, 140)).save(thumb, format="PNG")  # low resolution: scored at native scale
    datas = [p.read_bytes() for p in (*PHOTOS, *FAKES)] + [jpeg(PHOTOS[0], tmp_path / "p.jpg").read_bytes()]
    for data in [thumb.getvalue(), *datas]:
        ref = det.detect(decode(data))
        got = pipe.detect(data)
        assert float(got.score) == pytest.approx(float(ref.score), abs=1e-6)
        assert bool(got.verdict) == bool(ref.verdict) and bool(got.low_resolution) == bool(ref.low_resolution)
        np.testing.assert_array_equal(got.positions.numpy(), ref.positions.numpy())
    assert bool(pipe.detect(thumb.getvalue()).low_resolution)
    assert pipe.decoder.upload(datas[-1])[1] == "cpu"  # no nvJPEG without CUDA


def test_device_pipeline_refuses_what_the_library_refuses() -> None:
    pipe = DevicePipeline(det_io.load(), "cpu")
    small = io.BytesIO()
    Image.fromarray(synthetic_photo(63, 90)).save(small, format="PNG")
    flat = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 77, np.uint8)).save(flat, format="PNG")
    for data, why in [(b"", "empty"), (small.getvalue(), "below the minimum size"), (flat.getvalue(), "flat")]:
        with pytest.raises(ImageError, match=why):
            pipe.detect(data, name="x")


def test_the_reference_detector_is_copied_not_moved() -> None:
    det = det_io.load()
    pipe = DevicePipeline(det, "meta")
    assert all(p.device.type == "cpu" for p in det.parameters())
    assert all(p.device.type == "meta" for p in pipe.det.parameters())


def test_plain_jpeg_is_what_a_gpu_decoder_may_take(tmp_path) -> None:
    photo = synthetic_photo(200, 300)
    rgb, cmyk, rotated = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.fromarray(photo).save(rgb, format="JPEG")
    Image.fromarray(photo).convert("CMYK").save(cmyk, format="JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(rotated, format="JPEG", exif=exif)
    assert plain_jpeg(rgb.getvalue()) and not plain_jpeg(cmyk.getvalue()) and not plain_jpeg(rotated.getvalue())
    assert not plain_jpeg(PHOTOS[0].read_bytes())  # a PNG
    with pytest.raises(ImageError, match="below the minimum size"):
        plain_jpeg(rgb.getvalue(), min_side=250)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_device_pipeline_on_cuda(tmp_path) -> None:
    """On CUDA: PNGs go through the CPU decoder (same pixels, scores to float tolerance); JPEGs through nvJPEG when
    torchvision is installed, whose IDCT is not libjpeg's: verdicts agree and scores stay close."""
    det = det_io.load()
    pipe = DevicePipeline(det, "cuda")
    for p in (*PHOTOS, *FAKES):
        data = p.read_bytes()
        assert float(pipe.detect(data).score) == pytest.approx(float(det.detect(decode(data)).score), abs=1e-3)
    data = jpeg(PHOTOS[0], tmp_path / "p.jpg").read_bytes()
    assert pipe.decoder.upload(data)[1] == ("nvjpeg" if pipe.decoder.nvjpeg else "cpu")
    got, ref = pipe.detect(data), det.detect(decode(data))
    assert bool(got.verdict) == bool(ref.verdict) and abs(float(got.score) - float(ref.score)) < 0.05


def test_member_decoder_on_cpu_is_the_library(tmp_path) -> None:
    """The gpu-python decode member's path with device cpu (what CI serves): the CPU decoder, then the resize in
    PyTorch, gives the library's canonical pixels exactly; bad bytes and a too-small image get the library's errors."""
    det = det_io.load()
    dec, how = member_decoder(det.canonical, "cpu", det.cfg.max_pixels)
    assert not dec.nvjpeg and how == "the CPU decoder (device cpu), resized in PyTorch on cpu"
    for data in (jpeg(PHOTOS[0], tmp_path / "p.jpg").read_bytes(), PHOTOS[0].read_bytes(), FAKES[0].read_bytes()):
        got, low = dec.canonical(dec.upload(data)[0])
        want, want_low = det.canonical(decode(data))
        assert low == want_low and got.device.type == "cpu"
        np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(ImageError):
        dec.upload(b"\xff\xd8\xff\xe0 truncated")
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, format="PNG")
    with pytest.raises(ImageError, match="below the minimum size"):
        dec.upload(tiny.getvalue())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_member_decoder_on_cuda_matches_the_cpu_decode(tmp_path) -> None:
    """The decode member's GPU path: nvJPEG (with torchvision) and the canonical resize on the GPU give the CPU's
    canonical pixels up to nvJPEG's IDCT; a PNG decodes on the CPU, exactly; bad bytes get the library's error."""
    det = det_io.load()
    dec, how = member_decoder(det.canonical, "cuda", det.cfg.max_pixels)
    assert how == ("nvJPEG" if dec.nvjpeg else "the CPU decoder (torchvision (nvJPEG) is not installed), resized in "
                   "PyTorch on cuda")
    for data in (jpeg(PHOTOS[0], tmp_path / "p.jpg").read_bytes(), PHOTOS[0].read_bytes()):
        got, low = dec.canonical(dec.upload(data)[0])
        want, want_low = det.canonical(decode(data))
        diff = (got.cpu().int() - torch.from_numpy(want).int()).abs()
        assert low == want_low and got.shape == want.shape and got.device.type == "cuda" and diff.float().mean() < 1.0
    with pytest.raises(ImageError):
        dec.upload(b"\xff\xd8\xff\xe0 truncated")


def _assert_within_gate(got, ref) -> None:
    for name in (contract.SCORE, contract.CROP_SCORES):
        a, b = (getattr(r, name).cpu().numpy() for r in (got, ref))
        st = parity.compare(b, a, parity.FP32[name])
        assert st.failed_elements == 0 and st.nonfinite == 0, (name, st)


def _compiled_matches_eager(device: str) -> None:
    """`compiled=True` (torch.compile; CUDA graphs on a GPU) scores as the eager pipeline does: one image size
    twice (the second call replays what the first compiled), another size, then the first again; results outlive
    the next call (copies, not a graph's reused outputs). Within the export parity gate's float32 tolerances: fused
    kernels sum in another order (on an H200, crop scores differed by up to 1.03e-4, 1.7e-4 relative)."""
    det = det_io.load()
    eager, comp = DevicePipeline(det, device), DevicePipeline(det, device, compiled=True)
    datas = [PHOTOS[0].read_bytes(), FAKES[0].read_bytes()]
    kept = []
    for data in [datas[0], datas[0], datas[1], datas[0]]:
        got, ref = comp.detect(data), eager.detect(data)
        _assert_within_gate(got, ref)
        assert bool(got.verdict) == bool(ref.verdict)
        kept.append((got, ref))
    for got, ref in kept:
        _assert_within_gate(got, ref)


@pytest.mark.slow
def test_compiled_device_pipeline_on_cpu() -> None:
    _compiled_matches_eager("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_compiled_device_pipeline_on_cuda() -> None:
    _compiled_matches_eager("cuda")
