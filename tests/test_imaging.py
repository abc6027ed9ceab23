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
        (b"definitely not an image", "not an image in a supported format"),
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
    with pytest.raises(ImageError, match="below the minimum size 64 x 64"):
        decode(encode(Image.fromarray(RGB), "PNG"), min_side=64)


def test_size_limits_come_from_the_header_before_any_decode() -> None:
    """Headers that declare a 1 x 40,000,000 strip or a 127 x 5000 one over an empty pixel stream: refused for their
    size, not as truncated, so no decoder ran (a decoded strip costs seconds and a gigabyte)."""
    with pytest.raises(ImageError, match="below the minimum size 127 x 127"):
        decode(_png_header_only(1, 40_000_000), min_side=127)
    with pytest.raises(ImageError, match="more elongated than 32:1"):
        decode(_png_header_only(127, 5000))
    strip = np.random.default_rng(1).integers(0, 256, (64, 64 * 32, 3), dtype=np.uint8)
    assert decode(encode(Image.fromarray(strip), "PNG")).shape == (64, 2048, 3)


def test_too_little_data_for_the_declared_size_is_refused_before_decoding() -> None:
    """A 3000 x 3000 black PNG is 26 KB: refused from its header and byte count, not decoded and then found flat."""
    black = encode(Image.new("RGB", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match=r"x.png: \d+ bytes for 3000 x 3000 pixels .* too little data for its size"):
        decode(black, name="x.png")
    assert decode(encode(Image.fromarray(RGB), "PNG")).shape == (40, 60, 3)


PHOTO_LIKE = np.clip(np.linspace(40, 200, 256)[None, :, None] + np.random.default_rng(2).normal(0, 3, (192, 256, 3)),
                     0, 255).astype(np.uint8)


@pytest.mark.parametrize("kw", [{}, {"progressive": True}, {"quality": 30}, {"subsampling": 0, "quality": 97},
                                {"optimize": True}, {"restart_marker_blocks": 3}], ids=str)
def test_valid_jpeg_variants_pass_the_stream_check(kw: dict) -> None:
    assert decode(encode(Image.fromarray(PHOTO_LIKE), "JPEG", **kw)).shape == (192, 256, 3)


def _damaged(data: bytes, at: float, junk: bytes) -> bytes:
    i = int(len(data) * at)
    return data[:i] + junk + data[i + len(junk) :]


def test_corrupt_jpeg_scans_are_refused_not_scored() -> None:
    """Random bytes in the scan decode, through Pillow, to a picture shifted or grey below the damage (libjpeg only
    warns); the marker walk refuses them, and restart markers out of order, and a missing end of image."""
    data = encode(Image.fromarray(PHOTO_LIKE), "JPEG", quality=90)
    junk = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    garbled = np.asarray(Image.open(io.BytesIO(_damaged(data, 0.5, junk))).convert("RGB"))  # Pillow accepts it
    assert np.abs(garbled.astype(int) - PHOTO_LIKE).mean() > 10
    with pytest.raises(ImageError, match="x.jpg: corrupt JPEG data"):
        decode(_damaged(data, 0.5, junk), name="x.jpg")
    with pytest.raises(ImageError, match="corrupt JPEG data .invalid marker 0xFF37"):
        decode(_damaged(data, 0.5, b"\xff\x37"))
    with_rst = encode(Image.fromarray(PHOTO_LIKE), "JPEG", quality=90, restart_marker_blocks=3)
    i = with_rst.index(b"\xff\xd2")
    with pytest.raises(ImageError, match="restart marker out of order"):
        decode(with_rst[:i] + b"\xff\xd5" + with_rst[i + 2 :])
    with pytest.raises(ImageError, match="no end-of-image marker"):
        decode(data[:-2])


def _pillow_file(fmt: str, **kw) -> bytes:
    return encode(Image.fromarray(np.full((64, 64, 3), 90, np.uint8)), fmt, **kw)


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "SGI", "QOI", "JPEG2000", "DDS", "TGA", "PPM"])
def test_formats_outside_the_allow_list_are_refused_before_decoding(fmt: str) -> None:
    try:
        data = _pillow_file(fmt)
    except (KeyError, OSError) as e:
        pytest.skip(f"this Pillow cannot write {fmt}: {e}")
    with pytest.raises(ImageError, match=r"not an image in a supported format \(JPEG, PNG, WEBP") as e:
        decode(data, name="x.png")
    assert "0x" not in str(e.value)  # no object addresses in messages


@pytest.mark.parametrize("data", [b"BLP1" + bytes(range(256)) * 4, b"BLP2" + b"\x01\x02" * 300,
                                  b"DDS |" + bytes(200)], ids=["blp1", "blp2", "dds"])
def test_corrupt_files_of_any_decoder_are_image_errors(data: bytes) -> None:
    with pytest.raises(ImageError, match="x.png"):
        decode(data, name="x.png")
    assert decode(_pillow_file("WEBP")).shape == (64, 64, 3)  # and the allowed formats still decode
    assert decode(_pillow_file("TIFF")).shape == (64, 64, 3)
    assert decode(_pillow_file("BMP")).shape == (64, 64, 3)


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
