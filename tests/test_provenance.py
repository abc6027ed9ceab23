"""Provenance from the file's bytes (slsp/provenance.py): C2PA signed here with a test certificate made here (no
network), IPTC XMP, generator PNG chunks, camera EXIF, and hostile metadata; never part of the pixel score."""

from __future__ import annotations

import datetime
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from conftest import PHOTO
from slsp import detector as det_io
from slsp import provenance
from slsp.imaging import decode

c2pa = pytest.importorskip("c2pa")
IPTC = provenance.IPTC


@pytest.fixture(scope="module")
def credentials() -> tuple[bytes, bytes, bytes]:
    """(certificate chain PEM, private key PEM, CA PEM): an ES256 signer under a test CA, valid for a month."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "slsp tests")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, issuer: x509.Name, public, ca: bool):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
             .add_extension(usage(not ca), critical=True))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                critical=False))
        return b.sign(ca_key, hashes.SHA256())

    ca = cert("slsp test CA", name("slsp test CA"), ca_key.public_key(), ca=True)
    leaf = cert("slsp test signer", ca.subject, key.public_key(), ca=False)
    pem = serialization.Encoding.PEM
    return (leaf.public_bytes(pem) + ca.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            ca.public_bytes(pem))


def encoded(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    Image.open(PHOTO).convert("RGB").save(buf, format=fmt, **save)
    return buf.getvalue()


def sign(data: bytes, mime: str, credentials, dst: str, action: str = "c2pa.created") -> bytes:
    chain, key, _ = credentials
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, key, None))
    manifest = {"claim_generator_info": [{"name": "slsp-tests", "version": "1"}], "title": "test",
                "assertions": [{"label": "c2pa.actions",
                                "data": {"actions": [{"action": action, "digitalSourceType": IPTC + dst}]}}]}
    out = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
@pytest.mark.parametrize("dst, verdict", [("trainedAlgorithmicMedia", "generated"),
                                          ("compositeWithTrainedAlgorithmicMedia", "ai-edited"),
                                          ("digitalCapture", "captured")])
def test_signed_images_give_their_verdict(credentials, fmt: str, mime: str, dst: str, verdict: str) -> None:
    p = provenance.read(sign(encoded(fmt), mime, credentials, dst))
    assert p["verdict"] == verdict
    c = p["c2pa"]
    assert c["valid"] and not c["trusted"] and c["state"] == "Valid" and "signingCredential.untrusted" in c["issues"]
    assert c["signer"] == "slsp test signer" and c["generator"] == "slsp-tests"
    assert c["digital_source_type"] == IPTC + dst and c["actions"] == ["c2pa.created"]
    assert p["evidence"][0]["source"] == "c2pa"


def test_a_configured_trust_anchor_makes_the_signer_trusted(credentials) -> None:
    signed = sign(encoded("PNG"), "image/png", credentials, "trainedAlgorithmicMedia")
    p = provenance.read(signed, provenance.Trust(credentials[2]))
    assert p["c2pa"]["trusted"] and p["c2pa"]["state"] == "Trusted" and p["verdict"] == "generated"


def test_pixels_changed_after_signing_invalidate_the_manifest(credentials) -> None:
    signed = bytearray(sign(encoded("JPEG", quality=90), "image/jpeg", credentials, "trainedAlgorithmicMedia"))
    signed[-200] ^= 0x55  # inside the entropy-coded scan, which the data hash covers
    p = provenance.read(bytes(signed))
    assert p["c2pa"] is not None and not p["c2pa"]["valid"]
    assert any("dataHash" in i for i in p["c2pa"]["issues"])
    assert p["verdict"] == "none"  # an invalid manifest never sets the verdict


def test_a_broken_manifest_store_sets_nothing(credentials) -> None:
    signed = sign(encoded("PNG"), "image/png", credentials, "trainedAlgorithmicMedia")
    at = signed.index(b"caBX") + 4
    broken = bytearray(signed)
    for i in range(at + 400, at + 1400, 7):  # through the claim and its signature
        broken[i] ^= 0xFF
    p = provenance.read(bytes(broken))
    assert p["verdict"] == "none"
    assert p["c2pa"] is None or not p["c2pa"]["valid"]
    assert p["evidence"]


def test_signing_leaves_the_pixel_score_unchanged(credentials) -> None:
    plain = encoded("PNG")
    signed = sign(plain, "image/png", credentials, "trainedAlgorithmicMedia")
    assert np.array_equal(decode(plain), decode(signed))
    det = det_io.load()
    assert float(det.detect(decode(signed)).score) == float(det.detect(decode(plain)).score)


def png_with_text(chunks: dict[str, str], compressed: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_itxt(k, v, zip=True) if compressed else info.add_text(k, v)
    return encoded("PNG", pnginfo=info)


def test_generator_chunks_of_comfyui_and_automatic1111() -> None:
    comfy = png_with_text({"prompt": json.dumps({"3": {"class_type": "KSampler"}}), "workflow": "{}"})
    p = provenance.read(comfy)
    assert p["verdict"] == "generated" and p["c2pa"] is None
    assert [e["source"] for e in p["evidence"]] == ["png-text", "png-text"] and "ComfyUI" in p["evidence"][0]["says"]
    a1111 = png_with_text({"parameters": "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7"}, compressed=True)
    p = provenance.read(a1111)
    assert p["verdict"] == "generated" and "AUTOMATIC1111" in p["evidence"][0]["says"]
    # A plain 'prompt' text that is not ComfyUI's JSON graph names no generator.
    assert provenance.read(png_with_text({"prompt": "a caption"}))["verdict"] == "none"


def xmp(dst: str, tool: str = "") -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" Iptc4xmpExt:DigitalSourceType="{IPTC}{dst}"'
            f'{f" xmp:CreatorTool={chr(34)}{tool}{chr(34)}" if tool else ""}/></rdf:RDF></x:xmpmeta>').encode()


def test_iptc_type_in_xmp_and_never_captured_from_xmp() -> None:
    p = provenance.read(encoded("JPEG", xmp=xmp("trainedAlgorithmicMedia", "Adobe Firefly")))
    assert p["verdict"] == "generated" and p["c2pa"] is None
    assert {e["source"] for e in p["evidence"]} == {"xmp"} and "(a generator)" in p["evidence"][1]["says"]
    assert provenance.read(encoded("JPEG", xmp=xmp("compositeWithTrainedAlgorithmicMedia")))["verdict"] == "ai-edited"
    assert provenance.read(encoded("JPEG", xmp=xmp("digitalCapture")))["verdict"] == "none"


def test_camera_exif_is_weak_evidence_and_no_metadata_is_none() -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Canon", "Canon EOS 5D", "2020:01:02 03:04:05"
    p = provenance.read(encoded("JPEG", exif=exif.tobytes()))
    assert p["verdict"] == "none" and p["evidence"][0]["source"] == "exif"
    assert "Canon EOS 5D" in p["evidence"][0]["says"] and "weak evidence" in p["evidence"][0]["says"]
    exif[0x0131] = "NovelAI"
    assert provenance.read(encoded("JPEG", exif=exif.tobytes()))["verdict"] == "generated"
    assert provenance.read(PHOTO.read_bytes()) == {"verdict": "none", "c2pa": None, "evidence": []}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunks(png: bytes, extra: bytes) -> bytes:
    return png[:33] + extra + png[33:]  # after the signature and IHDR


@pytest.mark.parametrize("case", ["many-chunks", "huge-comfy", "zip-bomb", "huge-xmp", "garbage-jumbf"])
def test_hostile_metadata_is_bounded_and_never_fatal(case: str) -> None:
    png = encoded("PNG")
    if case == "many-chunks":
        data = with_chunks(png, b"".join(_chunk(b"tEXt", b"k%d\0v" % i) for i in range(20000)))
    elif case == "huge-comfy":  # 20 MB of nesting: never parsed
        data = with_chunks(png, _chunk(b"tEXt", b"prompt\0" + b'{"a":' * 4_000_000 + b"1" + b"}" * 4_000_000))
    elif case == "zip-bomb":  # 1 GiB of zeros in a zTXt chunk of 1 MB
        data = with_chunks(png, _chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"\0" * (1 << 30), 9)))
    elif case == "huge-xmp":
        data = encoded("JPEG") + b"<x:xmpmeta>" + b" " * (8 << 20) + b"</x:xmpmeta>"
    else:
        data = with_chunks(png, _chunk(b"caBX", b"\0\0\0\x10jumb" + bytes(range(256)) * 64))
    p = provenance.read(data)
    assert p["verdict"] in ("none", "generated")
    if case != "many-chunks":
        assert p["evidence"], p
    if case == "zip-bomb":
        assert "over" in p["evidence"][0]["says"]
    if case == "many-chunks":
        assert "not read" in p["evidence"][-1]["says"]
