"""A Triton client for the `slsp` ensemble: gRPC or HTTP by URL, concurrency, shared memory, typed errors.

Needs only numpy and tritonclient (no torch): `pip install "slsp[client]"`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from slsp import contract


class ClientError(Exception):
    """Base of the client's errors."""


class ServerUnavailable(ClientError):
    """Nothing accepted the connection (server down, wrong port): retried, then raised."""


class RequestTimeout(ClientError):
    """The server accepted the request but did not answer in time."""


def _read(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, refused (InvalidInput) over `max_bytes` or unreadable, before it is read."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidInput(f"{path}: {size} bytes exceeds the limit of {max_bytes} bytes (not sent)")
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read ({e.strerror or e})") from e


class InvalidInput(ClientError):
    """The server rejected this request (e.g. an undecodable image); retrying will not help."""


class AccessDenied(ClientError):
    """The server restricts this API (shared-memory registration, ...) to requests carrying its admin key."""


class ServerError(ClientError):
    """Any other error the server reported for this request."""


@dataclass(frozen=True)
class Result:
    """One image's answer; the fields are named as `slsp.contract.RESULT`."""

    score: float
    verdict: bool
    # (K, 2) top-left (y, x) of each crop in the scored image's pixels; with pyramid levels, K = levels x crops per
    # level, level 0 first, and a level-l crop covers 2^l times the crop side there (`slsp detect` says "side")
    positions: np.ndarray
    crop_scores: np.ndarray  # (K,); 0 for an invalid slot, which the server does not score
    valid: np.ndarray  # (K,) bool
    sigma: float
    low_resolution: bool  # scored at native scale under the low-resolution calibration (too small to halve)
    # What the file claims about its origin (slsp.provenance's JSON contract), never part of the score; None from a
    # server that does not send it
    provenance: dict | None = None

    def as_dict(self) -> dict:
        keep = self.valid.astype(bool)
        return {
            "score": self.score,
            "verdict": "synthetic" if self.verdict else "real",
            "noise_sigma": self.sigma,
            "low_resolution": self.low_resolution,
            "crops": [{"y": int(y), "x": int(x), "score": float(s)}
                      for (y, x), s in zip(self.positions[keep], self.crop_scores[keep])],
            contract.PROVENANCE: self.provenance,
        }


# Status codes as tritonclient reports them (gRPC status name; HTTP status code as a string).
# 411/413/415: slsp's edge refusing a chunked, oversized or compressed body (slsp/edge.py), the client's fault.
INVALID_STATUS = ("StatusCode.INVALID_ARGUMENT", "400", "411", "413", "415")
TIMEOUT_STATUS = ("StatusCode.DEADLINE_EXCEEDED", "504")
# RESOURCE_EXHAUSTED: the edge's bound on concurrent gRPC calls, refused at once like a full queue.
UNAVAILABLE_STATUS = ("StatusCode.UNAVAILABLE", "503", "StatusCode.RESOURCE_EXHAUSTED")
UNREGISTER_WAIT = 5.0  # seconds a shared-memory region may stay "in use" after its response (SlspClient._drop_shm)


def _classify(e: Exception) -> ClientError:
    """The typed error for an exception from tritonclient: by the status code the server sent; by the transport's
    message where no answer came (a refused connection raises before any status exists)."""
    text = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    status = e.status() if hasattr(e, "status") and callable(e.status) else None
    if status in INVALID_STATUS:
        return InvalidInput(text)
    if status in ("403", "StatusCode.PERMISSION_DENIED") or (status in UNAVAILABLE_STATUS
                                                              and "restricted" in text.lower()):
        return AccessDenied(f"{text} (pass the server's admin key: SlspClient(admin_key=...), slsp query --admin-key)")
    if status in TIMEOUT_STATUS:
        return RequestTimeout(text)
    if status in UNAVAILABLE_STATUS:
        return ServerUnavailable(text)
    if status is None:
        low = text.lower()
        if any(s in low for s in ("connection refused", "failed to connect", "connect call failed",
                                  "name or service not known", "no route to host")):
            return ServerUnavailable(text)
        if any(s in low for s in ("deadline", "timed out", "timeout")):
            return RequestTimeout(text)
    return ServerError(text)


class SlspClient:
    """`SlspClient("grpc://127.0.0.1:8001")` or `SlspClient("http://127.0.0.1:8000")`; thread-safe."""

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 2, shared_memory: bool = False,
                 admin_key: str | None = None) -> None:
        u = urlparse(url if "://" in url else f"grpc://{url}")
        if u.scheme not in ("grpc", "http"):
            raise ValueError(f"URL scheme must be grpc:// or http://, got {url!r}")
        self.protocol = u.scheme
        self.address = f"{u.hostname or '127.0.0.1'}:{u.port or (8001 if u.scheme == 'grpc' else 8000)}"
        self.timeout, self.retries, self.shared_memory = timeout, retries, shared_memory
        # Sent with shared-memory registration, which a server restricts to its admin key (contract.ADMIN_HEADER).
        header = contract.ADMIN_GRPC_HEADER if self.protocol == "grpc" else contract.ADMIN_HEADER
        self.admin_headers = {header: admin_key} if admin_key else None
        self._local = threading.local()

    @property
    def module(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as m
        else:
            import tritonclient.http as m
        return m

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            m = self.module
            if self.protocol == "grpc":
                c = m.InferenceServerClient(self.address)
            else:
                c = m.InferenceServerClient(self.address, connection_timeout=self.timeout, network_timeout=self.timeout)
            self._local.client = c
        return c

    def ready(self) -> bool:
        try:
            return bool(self._client().is_server_ready())
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False

    def detect(self, data: bytes) -> Result:
        """Score one encoded image; retries only when the server could not be reached."""
        for attempt in range(self.retries + 1):
            try:
                return self._infer(data)
            except ClientError:
                raise
            except Exception as e:  # noqa: BLE001 - tritonclient raises several unrelated types
                err = _classify(e)
                if not isinstance(err, ServerUnavailable) or attempt == self.retries:
                    raise err from e
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def detect_many(self, images: list[bytes] | list[Path], concurrency: int = 8, max_bytes: int = 64 << 20
                    ) -> list[Result | ClientError]:
        """Score many images concurrently; each entry is a Result or that image's error. Files are read in the
        workers, so at most `concurrency` are in memory at once, and one over `max_bytes` (the server's default
        limit) is refused without being read."""

        def one(item: bytes | Path) -> Result | ClientError:
            try:
                return self.detect(item if isinstance(item, bytes) else _read(Path(item), max_bytes))
            except ClientError as e:
                return e

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, images))

    def statistics(self, model: str = "") -> dict:
        c = self._client()
        if self.protocol == "grpc":
            from google.protobuf import json_format

            return json_format.MessageToDict(
                c.get_inference_statistics(model_name=model), preserving_proto_field_name=True
            )
        return c.get_inference_statistics(model_name=model)

    def _infer(self, data: bytes) -> Result:
        m, c = self.module, self._client()
        arr = np.array([data], dtype=object)
        spec = contract.ENSEMBLE_INPUT
        inp = m.InferInput(spec.name, list(spec.dims), "BYTES")
        outputs = [m.InferRequestedOutput(t.name) for t in contract.ENSEMBLE_OUTPUTS]
        region = None
        try:
            if self.shared_memory:
                region = self._put_shm(c, arr, self.admin_headers)
                inp.set_shared_memory(region[0], region[2])
            else:
                inp.set_data_from_numpy(arr)
            kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
            res = c.infer(contract.ENSEMBLE, [inp], outputs=outputs, **kw)
        finally:
            if region is not None:
                self._drop_shm(c, region, self.admin_headers)
        # RESULT in its own dims (Triton sends scalars as (1,) and crop scores as (K, 1)).
        out = {t.name: res.as_numpy(contract.served(t.name)).reshape(t.shape()) for t in contract.RESULT}
        prov = res.as_numpy(contract.served(contract.PROVENANCE))
        return Result(float(out[contract.SCORE]), bool(out[contract.VERDICT]), out[contract.POSITIONS],
                      out[contract.CROP_SCORES], out[contract.VALID], float(out[contract.SIGMA]),
                      bool(out[contract.LOW_RESOLUTION]), json.loads(prov.reshape(-1)[0]) if prov is not None else None)

    @staticmethod
    def _put_shm(c, arr: np.ndarray, headers: dict | None):
        """Place the serialized BYTES tensor in a fresh system shared-memory region the server reads (the region is
        destroyed again if the server refuses to register it)."""
        import tritonclient.utils.shared_memory as shm
        from tritonclient.utils import serialize_byte_tensor

        payload = serialize_byte_tensor(arr)  # a 0-d object array holding the length-prefixed bytes
        size = len(payload.item())
        name = f"slsp-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, f"/{name}", size)
        try:
            shm.set_shared_memory_region(handle, [payload])
            c.register_system_shared_memory(name, f"/{name}", size, headers=headers)
        except BaseException:
            shm.destroy_shared_memory_region(handle)
            raise
        return name, handle, size

    @staticmethod
    def _drop_shm(c, region, headers: dict | None, wait: float = UNREGISTER_WAIT) -> None:
        """Unregister the region on the server, then destroy it here.

        Triton may answer an ensemble request before it releases the request's input buffer, and until then it
        refuses to unregister the region ("currently in use"): retried with backoff for up to `wait` seconds, so a
        scored image is not reported as a failure and the server keeps no stale registration."""
        import tritonclient.utils.shared_memory as shm

        try:
            deadline, pause = time.monotonic() + wait, 0.005
            while True:
                try:
                    c.unregister_system_shared_memory(region[0], headers=headers)
                    break
                except Exception as e:  # noqa: BLE001 - tritonclient raises per-protocol exception types
                    if "currently in use" not in str(e) or time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(2 * pause, 0.2)
        finally:
            shm.destroy_shared_memory_region(region[1])
