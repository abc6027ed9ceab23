"""`slsp detect` and `slsp query` on hostile paths (issue 38, findings 7 and 8): every other file is scored when one
path is bad, every entry left out is reported, names stay recoverable and on one line, and an oversized file is
refused from its size or header before it is read."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import PHOTO
from slsp.errors import ImageError
from slsp.imaging import display_name, printable, read, scan


def slsp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from slsp.cli import main; main()", *args], capture_output=True,
                          timeout=300, cwd=cwd)


def png_header(w: int, h: int) -> bytes:
    """A PNG declaring w x h RGB: its signature, IHDR and the start of its pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(16)))


def test_scan_reports_what_it_leaves_out(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.png").write_bytes(PHOTO.read_bytes())
    (d / "notes.txt").write_text("not an image: not reported")
    os.symlink(d / "gone.png", d / "dangling.png")
    os.mkfifo(d / "pipe.png")
    files, skipped = scan([d, tmp_path / "missing.png"])
    assert files == [d / "a.png"]
    assert dict(skipped) == {d / "dangling.png": "dangling symbolic link",
                             d / "pipe.png": "not a regular file (a FIFO)",
                             tmp_path / "missing.png": "no such file or folder"}


def test_one_bad_path_does_not_stop_the_run(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    good.write_bytes(PHOTO.read_bytes())
    r = slsp("detect", str(tmp_path / "missing.png"), str(fifo), str(good), "--json", "-q")
    assert r.returncode == 1, r.stderr  # some paths failed
    rows = {row["path"]: row for row in json.loads(r.stdout)}
    assert "no such file" in rows[str(tmp_path / "missing.png")]["error"]
    assert "FIFO" in rows[str(fifo)]["error"]
    assert 0 <= rows[str(good)]["score"] <= 1


def test_names_stay_recoverable_and_on_one_line(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.png"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as f:
        f.write(PHOTO.read_bytes())
    newline = tmp_path / "two\nlines.png"
    newline.write_bytes(PHOTO.read_bytes())
    r = slsp("detect", str(tmp_path), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    odd = next(row for row in rows if "path_hex" in row)
    assert bytes.fromhex(odd["path_hex"]) == raw and "\\xe9" in odd["path"]
    assert any(row["path"] == str(newline) for row in rows)
    text = slsp("detect", str(tmp_path), "-q").stdout.decode()
    assert len(text.strip().splitlines()) == 2 and "two\\nlines.png" in text
    assert display_name("plain.png") == {"path": "plain.png"} and printable("a\tb\nc") == "a\\tb\\nc"


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(60_000, 60_000))
    with open(huge, "r+b") as f:  # sparse, under the byte bound of 50 MP: its header refuses it
        f.truncate(256 << 20)
    big_but_small_header = tmp_path / "padded.png"  # a small header, 1 GB of padding
    big_but_small_header.write_bytes(png_header(100, 100))
    with open(big_but_small_header, "r+b") as f:
        f.truncate(1 << 30)

    def never(self):
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(Path, "read_bytes", never)
    with pytest.raises(ImageError, match="exceeds the limit"):
        read(huge, 50_000_000)
    with pytest.raises(ImageError, match="more than an image of 1000000 pixels can need"):
        read(big_but_small_header, 1_000_000)
    r = slsp("detect", str(tmp_path), "--json", "-q")  # a 4 GB file next to them: refused by its size alone
    assert r.returncode == 1 and all("error" in row for row in json.loads(r.stdout))


def test_query_refuses_a_file_over_the_limit_unread(tmp_path: Path, monkeypatch) -> None:
    from slsp.clients.client import InvalidInput, SlspClient

    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(65 << 20)
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(AssertionError("read")))
    (res,) = SlspClient("grpc://127.0.0.1:1").detect_many([big], 1)  # refused before any connection
    assert isinstance(res, InvalidInput) and "exceeds the limit" in str(res)
