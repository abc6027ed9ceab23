"""The decoding policy: every odd input gets a correct array or an ImageError naming the input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from slsp.errors import ImageError
from slsp.imaging import collect, decode, load


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_rgb_png_roundtrip() -> None:
    np.testing.assert_array_equal(decode(encode(Image.fromarray(RGB), "PNG")), RGB)


def test_grayscale_is_replicated() -> None:
    g = RGB[..., 0]
    out = decode(encode(Image.fromarray(g), "PNG"))
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[..., 2], g)


def test_alpha_is_dropped_without_compositing() -> None:
    rgba = np.dstack([RGB, np.full((40, 60), 7, np.uint8)])
    np.testing.assert_array_equal(decode(encode(Image.fromarray(rgba), "PNG")), RGB)


def test_sixteen_bit_keeps_high_byte() -> None:
    g16 = (RGB[..., 0].astype(np.uint16) << 8) | 0x55
    out = decode(encode(Image.fromarray(g16), "PNG"))
    np.testing.assert_array_equal(out[..., 0], RGB[..., 0])


def test_palette_and_cmyk_become_rgb() -> None:
    pal = Image.fromarray(RGB).convert("P")
    np.testing.assert_array_equal(decode(encode(pal, "PNG")), np.asarray(pal.convert("RGB")))
    cmyk = Image.fromarray(RGB).convert("CMYK")
    out = decode(encode(cmyk, "JPEG", quality=95))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8


def test_exif_orientation_is_applied() -> None:
    img = Image.fromarray(RGB)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (60, 40, 3)


def test_animated_gif_takes_first_frame() -> None:
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode(buf.getvalue())[0, 0, 0] == 10


@pytest.mark.parametrize(
    "data,why",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a decodable image"),
        (encode(Image.fromarray(RGB), "PNG")[:200], "truncated"),
        (encode(Image.fromarray(RGB), "JPEG")[:300], "truncated"),
    ],
    ids=["zero-bytes", "garbage", "truncated-png", "truncated-jpeg"],
)
def test_bad_bytes_raise_clear_errors(data: bytes, why: str) -> None:
    with pytest.raises(ImageError, match=why) as e:
        decode(data, name="upload.bin")
    assert "upload.bin" in str(e.value)


def _png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG whose header declares w x h (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode(_png_header_only(30000, 30000), max_pixels=50_000_000)


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(ImageError, match="exceeds the limit of 100"):
        decode(encode(Image.fromarray(RGB), "PNG"), max_pixels=100)


def test_minimum_side() -> None:
    with pytest.raises(ImageError, match="smaller than the minimum side 64"):
        decode(encode(Image.fromarray(RGB), "PNG"), min_side=64)


def test_load_and_collect_name_the_file(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(encode(Image.fromarray(RGB), "PNG"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "notes.txt").write_text("x")
    files = collect([tmp_path])
    assert [f.name for f in files] == ["a.png", "bad.jpg"]
    with pytest.raises(ImageError, match="bad.jpg"):
        load(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match="no such file"):
        collect([tmp_path / "missing"])
