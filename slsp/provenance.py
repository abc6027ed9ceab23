"""What an image file claims about where it came from: C2PA Content Credentials, the IPTC digital source type in XMP,
generator metadata (PNG text chunks, EXIF Software, XMP CreatorTool) and camera metadata.

Read from the encoded bytes only, never from pixels, and never part of the pixel score: `read` returns the
`provenance` object of the JSON contract (README, "Provenance"). The one place in slsp that reads metadata.

Verdict rules, first that applies: a valid C2PA manifest's digital source type (trainedAlgorithmicMedia or
algorithmicMedia: "generated"; compositeWithTrainedAlgorithmicMedia or compositeSynthetic, or an AI type on an
edit action: "ai-edited"; digitalCapture: "captured"); then the IPTC type in XMP (same mapping, never "captured":
anyone can write it); then generator metadata ("generated"); else "none". An invalid manifest is reported with its
issues and sets nothing; camera metadata is weak evidence and sets nothing.

Hostile metadata is bounded, never fatal: at most LIMITS["text_chunks"] PNG text chunks are read, each inflated to
at most LIMITS["chunk_bytes"]; XMP packets over LIMITS["xmp_bytes"] are skipped; a C2PA store that the SDK rejects
is one note. Each skip is a note in `evidence`.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

LIMITS = {"text_chunks": 256, "chunk_bytes": 1 << 20, "xmp_bytes": 1 << 20, "says": 200}
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = {"trainedAlgorithmicMedia", "algorithmicMedia"}
AI_EDITED = {"compositeWithTrainedAlgorithmicMedia", "compositeSynthetic"}
CAPTURED = {"digitalCapture"}
CREATE_ACTIONS = {"c2pa.created"}

# Generator metadata: (where, key or pattern, the tool it names, where that comes from).
PNG_KEYS = {
    "parameters": ("AUTOMATIC1111 Stable Diffusion web UI", "modules/images.py: save_image writes 'parameters'"),
    "prompt": ("ComfyUI", "nodes.py SaveImage: PngInfo.add_text('prompt', json.dumps(prompt))"),
    "workflow": ("ComfyUI", "nodes.py SaveImage: PngInfo.add_text('workflow', ...)"),
    "invokeai_metadata": ("InvokeAI", "invokeai/app/services/image_files: PngInfo 'invokeai_metadata'"),
    "sd-metadata": ("InvokeAI (2.x)", "ldm/invoke/pngwriter.py: 'sd-metadata'"),
    "Dream": ("InvokeAI (2.x)", "ldm/invoke/pngwriter.py: 'Dream'"),
    "fooocus_scheme": ("Fooocus", "modules/meta_parser.py: 'fooocus_scheme'"),
}
SOFTWARE = re.compile(r"(Adobe Firefly|DALL[·-]?E|Midjourney|Stable Diffusion|NovelAI|Imagen|Bing Image Creator|"
                      r"Microsoft Designer|Leonardo\.Ai|ComfyUI|InvokeAI|Fooocus|Flux)", re.IGNORECASE)
XMP_DST = re.compile(rb"DigitalSourceType(?:>|=\")\s*(?:<rdf:li[^>]*>)?\s*([^<\"\s]+)")
XMP_TOOL = re.compile(rb"CreatorTool(?:>|=\")([^<\"]{1,200})")
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif",
        b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff"}


@dataclass(frozen=True)
class Trust:
    """PEM trust anchors for C2PA signers (None: no list, so a valid signature is valid but untrusted)."""

    anchors: bytes | None = None


def of_file(path: str | Path, trust: Trust = Trust(), max_bytes: int = 64 << 20) -> dict:
    """`read` on a file's bytes; a file that cannot be read or is over `max_bytes` gets a note instead."""
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return {"verdict": "none", "c2pa": None,
                    "evidence": [{"source": "file", "says": f"not read for provenance: {size} bytes > {max_bytes}"}]}
        data = Path(path).read_bytes()
    except OSError as e:
        return {"verdict": "none", "c2pa": None, "evidence": [{"source": "file", "says": f"unreadable: {e}"}]}
    return read(data, trust)


def summary(prov: dict) -> str | None:
    """One line for humans where there is something to say, else None."""
    if prov["verdict"] == "none" and not prov["evidence"]:
        return None
    return f"provenance: {prov['verdict']}; " + "; ".join(f"{e['source']}: {e['says']}" for e in prov["evidence"])


def read(data: bytes, trust: Trust = Trust()) -> dict:
    """The `provenance` object for one encoded image (see the module docstring for the rules and limits)."""
    evidence: list[dict[str, str]] = []
    c2pa_part = _c2pa(data, trust, evidence)
    xmp_dst = _xmp(data, evidence)
    generator = _png_text(data, evidence) + _exif(data, evidence)
    verdict = "none"
    if c2pa_part and c2pa_part["valid"]:
        verdict = _verdict(c2pa_part["digital_source_type"], c2pa_part["actions"], captured=True)
    if verdict == "none" and xmp_dst:
        verdict = _verdict(xmp_dst, [], captured=False)
    if verdict == "none" and generator:
        verdict = "generated"
    return {"verdict": verdict, "c2pa": c2pa_part, "evidence": evidence}


def _say(evidence: list, source: str, says: str) -> None:
    evidence.append({"source": source, "says": says[: LIMITS["says"]]})


def _verdict(dst: str | None, actions: list[str], captured: bool) -> str:
    name = (dst or "").removeprefix(IPTC)
    if name in AI_EDITED or (name in GENERATED and actions and not set(actions) & CREATE_ACTIONS):
        return "ai-edited"
    if name in GENERATED:
        return "generated"
    return "captured" if captured and name in CAPTURED else "none"


def _c2pa(data: bytes, trust: Trust, evidence: list) -> dict | None:
    try:
        import c2pa
    except ImportError:  # a dependency of slsp; absent only in a broken install
        _say(evidence, "c2pa", "not read: the c2pa-python package is not installed")
        return None
    mime = next((m for sig, m in MIME.items() if data.startswith(sig)), None)
    if mime is None:
        return None
    try:
        context = None
        if trust.anchors:
            settings = c2pa.Settings.from_dict({"verify": {"verify_trust": True},
                                                "trust": {"trust_anchors": trust.anchors.decode()}})
            context = c2pa.Context(settings)
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state() or ""
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in str(e):
            return None
        _say(evidence, "c2pa", f"unreadable manifest store: {e}")
        return None
    manifest = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    issues = [f["code"] for f in results.get("failure", [])] or [s["code"] for s in store.get("validation_status", [])]
    actions, dst = [], None
    for a in manifest.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions", []):
                actions.append(act.get("action", "?"))
                if act.get("digitalSourceType") and (dst is None or act.get("action") in CREATE_ACTIONS):
                    dst = act["digitalSourceType"]
    generators = manifest.get("claim_generator_info") or [{"name": manifest.get("claim_generator", "")}]
    part = {"valid": state in ("Valid", "Trusted"), "trusted": state == "Trusted", "state": state,
            "issues": issues, "generator": ", ".join(g.get("name", "") for g in generators if g.get("name")),
            "signer": (manifest.get("signature_info") or {}).get("common_name", ""),
            "digital_source_type": dst, "actions": actions}
    ingredients = [i.get("title", "?") for i in manifest.get("ingredients", []) if i.get("active_manifest")]
    _say(evidence, "c2pa", f"{state} manifest by {part['signer'] or 'an unnamed signer'} ({part['generator']}): "
         f"{dst.removeprefix(IPTC) if dst else 'no digital source type'}"
         + (f"; ingredients with manifests: {', '.join(ingredients)}" if ingredients else ""))
    return part


def _xmp(data: bytes, evidence: list) -> str | None:
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = data.find(b"</x:xmpmeta>", start)
    if end < 0 or end - start > LIMITS["xmp_bytes"]:
        _say(evidence, "xmp", f"XMP packet skipped: unterminated or over {LIMITS['xmp_bytes']} bytes")
        return None
    packet = data[start:end]
    dst = XMP_DST.search(packet)
    tool = XMP_TOOL.search(packet)
    if dst:
        _say(evidence, "xmp", f"IPTC digital source type {dst.group(1).decode(errors='replace').removeprefix(IPTC)}")
    if tool:
        value = tool.group(1).decode(errors="replace")
        _say(evidence, "xmp", f"CreatorTool {value}" + (" (a generator)" if SOFTWARE.search(value) else ""))
    return dst.group(1).decode(errors="replace") if dst else None


def _png_text(data: bytes, evidence: list) -> list[str]:
    """Known generators' PNG text chunks (tEXt, zTXt, iTXt), read chunk by chunk within LIMITS."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return []
    found, pos, seen = [], 8, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        seen += 1
        if seen > LIMITS["text_chunks"]:
            _say(evidence, "png-text", f"text chunks after the first {LIMITS['text_chunks']} not read")
            break
        key, _, rest = body.partition(b"\0")
        name = key.decode("latin-1")
        if name not in PNG_KEYS:
            continue
        value = _chunk_text(kind, rest)
        tool, _ = PNG_KEYS[name]
        if value is None:
            _say(evidence, "png-text", f"'{name}' chunk ({tool}) unreadable or over {LIMITS['chunk_bytes']} bytes")
        elif name in ("prompt", "workflow") and not _is_json(value):
            continue  # a plain 'prompt' text is not ComfyUI's graph
        else:
            _say(evidence, "png-text", f"'{name}' chunk of {tool}: {value[:80]!r}")
        found.append(tool)
    return found


def _chunk_text(kind: bytes, rest: bytes) -> str | None:
    try:
        if kind == b"zTXt":
            return _inflate(rest[1:])
        if kind == b"iTXt":
            compressed, _method, rest = rest[0], rest[1], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            return _inflate(text) if compressed else text[: LIMITS["chunk_bytes"]].decode("utf-8", "replace")
        return rest[: LIMITS["chunk_bytes"]].decode("latin-1")
    except (zlib.error, IndexError):
        return None


def _inflate(data: bytes) -> str | None:
    d = zlib.decompressobj()
    out = d.decompress(data, LIMITS["chunk_bytes"])
    return None if d.unconsumed_tail else out.decode("utf-8", "replace")


def _is_json(text: str) -> bool:
    """Whether `text` opens like a JSON object, without parsing what may be megabytes of nesting."""
    return text.lstrip()[:1] == "{"


def _exif(data: bytes, evidence: list) -> list[str]:
    try:
        with Image.open(io.BytesIO(data)) as im:  # headers only: no pixel is decoded
            exif = im.getexif()
            taken = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
    except Exception:  # noqa: BLE001 - the pixel path reports undecodable files; provenance just has nothing
        return []
    found = []
    software = str(exif.get(0x0131) or "").strip()
    if software and SOFTWARE.search(software):
        _say(evidence, "exif", f"Software {software} (a generator)")
        found.append(software)
    make, model = str(exif.get(0x010F) or "").strip(), str(exif.get(0x0110) or "").strip()
    if make or model:
        _say(evidence, "exif", f"camera {make} {model}".strip() + (f", taken {taken}" if taken else "")
             + " (weak evidence: anyone can write it)")
    return found
