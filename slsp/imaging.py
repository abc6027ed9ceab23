"""Decoding policy: encoded bytes -> uint8 H x W x 3, the same in the library, the CLI and the server.

Policy (pixels only, never metadata beyond orientation):
- EXIF orientation is applied (the pixels a viewer sees); no other metadata is read.
- Grayscale (L, I;16, 1) is replicated to three channels; palette and CMYK are converted to RGB by Pillow.
- Alpha (RGBA, LA, PA) is dropped, keeping the stored colour values: compositing would invent flat regions.
- 16-bit data is reduced to its high byte (value >> 8), never rescaled per image.
- Animated images (GIF, WebP, APNG): the first frame.
- Formats: what users send (FORMATS: JPEG, PNG, WebP, BMP, TIFF, GIF, AVIF), recognised from the header; any other
  (DDS, ICO, PCX, JPEG 2000, ...) is refused before its decoder runs.
- From the header, before any pixel is decoded: more than `max_pixels` pixels (decompression bombs), a side below
  `min_side` (no crop fits: no padding, no resizing) or a side more than MAX_ASPECT times the other: refused.
- Also from the header: fewer than MIN_BYTES_PER_PIXEL encoded bytes per declared pixel (a 7000 x 7000 black PNG is
  143 KB) is refused, truncated or flat: either way no fluctuation to judge, and decoding it would cost seconds.
- Truncated data is refused (Pillow's LOAD_TRUNCATED_IMAGES stays off), and any decoder failure, whatever its
  type, is this image's ImageError.
- Corrupt JPEG scans are refused before decoding (`_check_jpeg_stream`): libjpeg only warns about them, Pillow
  drops the warning, and the picture comes out shifted or grey below the damage.
- Flat images (TrSOR's noise estimate below FLAT_SIGMA: no pixel fluctuation anywhere, e.g. one constant colour)
  are refused after TrSOR (`check_fluctuation`): the method judges fluctuations, and there are none to judge.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from slsp.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif")
Image.init()
# What users send, by Pillow's names (its JPEG opener also reads multi-picture JPEGs); AVIF where Pillow has it.
FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF") if f in Image.OPEN)
DEFAULT_MAX_PIXELS = 50_000_000
MAX_ASPECT = 32  # longer side / shorter side: panoramas pass, a 1-pixel strip of millions does not
# Bytes per declared pixel; the lowest of the 459 shared photos and generated images is 0.030 (a 1 MP camera JPEG),
# a flat 49 MP PNG 0.003, a flat JPEG about 0.014 (refused after decoding, as flat).
MIN_BYTES_PER_PIXEL = 0.005
FLAT_SIGMA = 1e-3  # gray levels; the lowest dev photo measures 0.055 (a mostly saturated sky), a constant image 0


def decode(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1, name: str = "<bytes>"
) -> np.ndarray:
    """Decode encoded image bytes into a contiguous uint8 array (H, W, 3) under the policy above."""
    with _as_image_error(max_pixels, name):
        img = _open(data, max_pixels, min_side, name)
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
    return _to_rgb8(img, name)


def plain_jpeg(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1, name: str = "<bytes>") -> bool:
    """Every check of `decode` short of decoding (ImageError as there); True for a JPEG whose pixels under this policy
    are a plain YCbCr or grayscale decode, with no CMYK and no EXIF rotation: what a GPU JPEG decoder returns."""
    with _as_image_error(max_pixels, name):
        img = _open(data, max_pixels, min_side, name)
        return img.format == "JPEG" and img.mode in ("RGB", "L") and img.getexif().get(0x0112, 1) == 1


def _open(data: bytes, max_pixels: int, min_side: int, name: str) -> Image.Image:
    """The image, opened (header only) and through every check that needs no pixel."""
    if not data:
        raise ImageError(f"{name}: empty input (zero bytes)")
    img = Image.open(io.BytesIO(data), formats=FORMATS)
    _check_header(img.size, max_pixels, min_side, name)
    _check_density(len(data), img.size, name)
    if data[:2] == b"\xff\xd8":
        _check_jpeg_stream(data, name)
    return img


@contextlib.contextmanager
def _as_image_error(max_pixels: int, name: str) -> Iterator[None]:
    """Any failure to open or decode, whatever its type, as this image's ImageError; Pillow's bomb warning too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: declared size exceeds the limit of {max_pixels} pixels (Pillow: {e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image in a supported format ({', '.join(FORMATS)})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from e
    except MemoryError as e:
        raise ImageError(f"{name}: not enough memory to decode this image") from e
    except Exception as e:  # noqa: BLE001 - a decoder's own exception types (e.g. BLPFormatError) are this image's
        raise ImageError(f"{name}: the decoder failed ({type(e).__name__}: {e})") from e


def _check_header(size: tuple[int, int], max_pixels: int, min_side: int, name: str) -> None:
    """The size limits, from the declared size alone (EXIF orientation swaps the sides, which none of them sees)."""
    w, h = size
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w} x {h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if min(w, h) < min_side:
        raise too_small(w, h, min_side, name)
    if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
        raise ImageError(f"{name}: {w} x {h} is more elongated than {MAX_ASPECT}:1")


def _check_density(nbytes: int, size: tuple[int, int], name: str) -> None:
    w, h = size
    if nbytes < MIN_BYTES_PER_PIXEL * w * h:
        raise ImageError(f"{name}: {nbytes} bytes for {w} x {h} pixels ({nbytes / (w * h):.4f} per pixel, below "
                         f"{MIN_BYTES_PER_PIXEL}): too little data for its size, truncated or too flat to judge")


_RST = range(0xD0, 0xD8)
# Marker segments a JPEG (baseline, progressive, multi-scan) may carry: SOFn, DHT, DAC, SOS, DQT, DNL, DRI, APPn, COM.
_SEGMENTS = frozenset({*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE}) - {0xC8}
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00]")  # in entropy-coded data, a data byte 0xFF is always stuffed as FF 00


def _check_jpeg_stream(data: bytes, name: str) -> None:
    """Walk the JPEG's markers from SOI to EOI: an unknown marker, a restart marker out of order or a missing EOI
    is what random bytes in a scan produce, and what libjpeg reports only as a warning ("Corrupt JPEG data")."""
    def corrupt(why: str) -> ImageError:
        return ImageError(f"{name}: corrupt JPEG data ({why})")

    i, n = 2, len(data)
    while True:
        if i + 1 >= n:
            raise corrupt("no end-of-image marker: truncated")
        if data[i] != 0xFF:
            raise corrupt(f"bytes where a marker should be, at offset {i}")
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        marker, i = data[i + 1], i + 2
        if marker == 0xD9:
            return
        if marker in _RST or marker == 0x01:
            continue
        if marker not in _SEGMENTS:
            raise corrupt(f"invalid marker 0xFF{marker:02X} at offset {i - 2}")
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2 or i + length > n:
            raise corrupt(f"marker 0xFF{marker:02X} at offset {i - 2} runs past the end of the data")
        i += length
        if marker == 0xDA:  # entropy-coded data up to the next marker that is not a restart marker
            expected = 0
            while (m := _MARKER_IN_SCAN.search(data, i)) is not None and data[m.start() + 1] in _RST:
                if data[m.start() + 1] != 0xD0 + expected:
                    raise corrupt(f"restart marker out of order at offset {m.start()}")
                expected, i = (expected + 1) % 8, m.end()
            if m is None:
                raise corrupt("no end-of-image marker: truncated")
            i = m.start()


def check_image(image: np.ndarray, min_side: int, name: str = "<image>", why: str = "one crop") -> None:
    """The one input check for every TrSOR runtime and the detector: uint8 H x W x 3, each side >= `min_side`.
    Compiled TrSORs read out of bounds below one crop, so they must never see such an image."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"{name}: expected uint8 H x W x 3, got {got}")
    if min(image.shape[:2]) < min_side:
        raise too_small(image.shape[1], image.shape[0], min_side, name, why)


def check_fluctuation(sigma: float, name: str = "<image>") -> None:
    """Refuse a flat image: its TrSOR noise estimate says no pixel fluctuates (library and server alike)."""
    if not sigma >= FLAT_SIGMA:  # NaN too
        raise ImageError(f"{name}: a flat image, with no pixel fluctuation to judge (TrSOR noise estimate {sigma:.4g} "
                         f"gray levels, below {FLAT_SIGMA})")


def too_small(w: int, h: int, min_side: int, name: str, why: str = "one crop") -> ImageError:
    """The one wording of "too small", from the header (decode) or the array (check_image)."""
    return ImageError(f"{name}: {w} x {h} is below the minimum size {min_side} x {min_side} ({why}; slsp never pads)")


def _to_rgb8(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.int64)
        a = np.clip(a >> 8 if a.max(initial=0) > 255 or mode.startswith("I;16") else a, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if mode == "F":
        raise ImageError(f"{name}: floating-point images are not supported")
    if mode != "RGB":
        img = img.convert("RGB")  # drops alpha without compositing; palette, CMYK, L through Pillow
    a = np.array(img)  # a writable copy: torch.from_numpy warns on read-only buffers
    if a.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported sample type {a.dtype} (mode {mode})")
    return np.ascontiguousarray(a)


def max_file_bytes(max_pixels: int) -> int:
    """The most bytes an image file of `max_pixels` can need: 8 bytes a pixel (16-bit RGBA, uncompressed) plus 1 MB
    of metadata; a larger file is refused before it is read."""
    return 8 * max_pixels + (1 << 20)


def read(path: str | Path, max_pixels: int | None = None, min_side: int = 1) -> bytes:
    """One file's bytes; an error names the file. With `max_pixels`, the file's size and its header's declared size
    are checked first (Pillow reads the header alone), so an oversized file is refused without reading it."""
    name = str(path)
    try:
        if max_pixels is not None:
            size = os.stat(path).st_size
            if size > max_file_bytes(max_pixels):
                raise ImageError(f"{name}: {size} bytes, more than an image of {max_pixels} pixels can need "
                                 f"({max_file_bytes(max_pixels)})")
            with _as_image_error(max_pixels, name), Image.open(path, formats=FORMATS) as img:
                _check_header(img.size, max_pixels, min_side, name)
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"{name}: cannot read ({e.strerror or e})") from e


def load(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> np.ndarray:
    """Read (header first) and decode one image file; errors name the file."""
    return decode(read(path, max_pixels, min_side), max_pixels=max_pixels, min_side=min_side, name=str(path))


def _not_readable(path: Path) -> str | None:
    """Why `path` is not a regular file to read (a dangling link, missing, a FIFO, socket or device), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(path) else "no such file or folder"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kind = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
            stat.S_ISBLK: "a block device"}
    return f"not a regular file ({next((v for k, v in kind.items() if k(mode)), 'special file')})"


def scan(paths: list[Path] | list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively, sorted) into image files, and every entry left out with why: a
    missing path, a dangling link, a FIFO or device (given directly, or with an image suffix inside a folder)."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            entries = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir())
        else:
            entries = [p]
        for f in entries:
            why = _not_readable(f)
            (skipped.append((f, why)) if why else files.append(f))
    return files, skipped


def collect(paths: list[Path] | list[str]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files; a path given that is no readable file or
    folder is an error, what a folder holds besides image files is left out (`scan` reports both instead)."""
    files, skipped = scan(paths)
    given = set(map(Path, paths))
    for p, why in skipped:
        if p in given:
            raise ImageError(f"{p}: {why}")
    return files


def display_name(path: Path | str) -> dict[str, str]:
    """A file name for JSON: as text, with bytes that are not UTF-8 escaped (\\xNN), and then its exact bytes
    too (`path_hex`), so every name stays recoverable."""
    raw = os.fsencode(path)
    try:
        return {"path": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"path": raw.decode("utf-8", "backslashreplace"), "path_hex": raw.hex()}


def printable(text: str) -> str:
    """`text` on one line of a terminal: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
