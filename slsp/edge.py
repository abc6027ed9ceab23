"""The edge `slsp serve` puts between clients and the bundled tritonserver, which listens on loopback only.

Three things tritonserver 2.51 (the bundled one, NGC 24.10) gets wrong with hostile or merely impatient clients:
- a gRPC call cancelled while its queue is full can crash it (SIGSEGV; triton-inference-server/server#7368, fixed in
  24.12 by #7840/#7880). The gRPC edge absorbs cancellations: it forwards each call without a deadline and never
  cancels it upstream, so tritonserver never sees a cancelled call; the client that left gets nothing.
- it inflates compressed requests before any size limit (HTTP Content-Encoding, gRPC compression; bounded upstream
  by #8570). The HTTP edge refuses a Content-Encoding (415) and any body over the limit before reading it (413);
  the gRPC edge caps every message at the same limit, which gRPC enforces while it decompresses.
- a malformed inference header or a negative shape gets HTTP 500, and an operator call without the admin key gets
  gRPC UNAVAILABLE, which clients retry. The HTTP edge checks the JSON header of every inference request and
  answers 400 itself; the gRPC edge turns that refusal into PERMISSION_DENIED.
The admin key: tritonserver takes its restricted-API key on its command line only, where any local user reads it.
Behind the edge, tritonserver gets a key of its own (`internal_key`: made at each start by `slsp serve`, the
Secret's `internal-key` in a cluster's pod), and the operator's key (`admin_key`)
never reaches an argv: a request carrying the operator's key in the admin header has it swapped for the internal one,
any other value of that header is dropped, so tritonserver refuses the call as it would without a key.
Everything else passes through unchanged.
"""

from __future__ import annotations

import hmac
import http.client
import http.server
import json
import re
import socketserver
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from slsp.contract import ADMIN_GRPC_HEADER, ADMIN_HEADER

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}
INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
STREAMING = "/inference.GRPCInferenceService/ModelStreamInfer"


def infer_header_error(header: bytes) -> str | None:
    """Why an HTTP inference request's JSON header is malformed (None: well-formed as far as sizes go)."""
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"the inference header is not JSON ({e})"
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs", []), list):
        return "the inference header must be a JSON object with a list of inputs"
    for t in [*doc.get("inputs", []), *doc.get("outputs", [])]:
        if not isinstance(t, dict):
            return "every input and output must be a JSON object"
        shape = t.get("shape", [])
        if not isinstance(shape, list) or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
            return f"{t.get('name', '?')}: shape must be a list of non-negative integers, got {shape!r}"
        size = (t.get("parameters") or {}).get("binary_data_size", 0) if isinstance(t.get("parameters"), dict) else 0
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"{t.get('name', '?')}: binary_data_size must be a non-negative integer, got {size!r}"
    return None


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    edge: Edge  # set on the subclass Edge makes

    def log_message(self, *args) -> None:  # tritonserver logs requests; the edge logs only its refusals
        pass

    def _refuse(self, code: int, why: str) -> None:
        body = json.dumps({"error": why}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # the unread body must not be taken for the next request
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
        self.edge.refused[code] = self.edge.refused.get(code, 0) + 1

    def _forward(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "chunked bodies are refused: send a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._refuse(400, "Content-Length is not an integer")
        if length < 0 or length > self.edge.max_body:
            return self._refuse(413, f"a body of {length} bytes is over the limit of {self.edge.max_body}")
        body = self.rfile.read(length) if length else b""  # within the limit: read, so the refusal below is heard
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # never inflated: the 1 MB that becomes 1 GiB stays 1 MB
            return self._refuse(415, f"Content-Encoding {encoding!r} is refused: send the body uncompressed")
        if self.command == "POST" and INFER_PATH.match(self.path.split("?", 1)[0]):
            cut = self.headers.get("Inference-Header-Content-Length")
            try:
                header = body[: int(cut)] if cut is not None else body
            except ValueError:
                return self._refuse(400, "Inference-Header-Content-Length is not an integer")
            why = infer_header_error(header)
            if why:
                return self._refuse(400, why)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {ADMIN_HEADER}}
        key = self.edge.admin(self.headers.get(ADMIN_HEADER))
        if key:
            headers[ADMIN_HEADER] = key
        conn = self.edge.upstream_http()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.edge.drop_http()
            return self._refuse(502, f"the inference server did not answer ({type(e).__name__}: {e})")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server's naming


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _GrpcForwarder(grpc.GenericRpcHandler):
    """Every unary method forwarded as raw bytes; streaming refused (slsp's clients never stream)."""

    def __init__(self, channel: grpc.Channel, edge: Edge) -> None:
        self.channel, self.edge = channel, edge
        self.calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        self.absorbed = 0  # calls whose client left before the answer

    def service(self, details: grpc.HandlerCallDetails):
        method = details.method
        if method == STREAMING:
            return grpc.stream_stream_rpc_method_handler(self._no_streaming)
        if method not in self.calls:
            self.calls[method] = self.channel.unary_unary(method)
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self._unary(method, req, ctx))

    def _unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        given = dict(context.invocation_metadata())
        metadata = [(k, v) for k, v in given.items() if not k.startswith((":", "grpc-"))
                    and k not in ("user-agent", "content-type", "te", ADMIN_GRPC_HEADER)]
        key = self.edge.admin(given.get(ADMIN_GRPC_HEADER))
        if key:
            metadata.append((ADMIN_GRPC_HEADER, key))
        # No timeout and no cancellation upstream: tritonserver 2.51 may crash on a cancelled call (module docstring).
        future = self.calls[method].future(request, metadata=metadata)
        try:
            answer = future.result()
        except grpc.RpcError as e:
            if context.is_active():
                code, details = e.code(), e.details() or ""
                if code == grpc.StatusCode.UNAVAILABLE and "restricted" in details.lower():
                    code = grpc.StatusCode.PERMISSION_DENIED  # tritonserver's UNAVAILABLE invites a retry
                context.abort(code, details)
            self.absorbed += 1
            return b""
        if not context.is_active():
            self.absorbed += 1
        return answer

    @staticmethod
    def _no_streaming(requests, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming inference is not served here: use ModelInfer")


@dataclass
class Edge:
    """HTTP and gRPC listeners on `host` that forward to tritonserver's loopback ports (see the module docstring).

    max_body: the largest request body or gRPC message accepted (an image's max_bytes plus HEADER_ALLOWANCE).
    """

    host: str
    http_port: int
    grpc_port: int
    upstream_http_port: int
    upstream_grpc_port: int
    max_body: int
    admin_key: str | None = None  # the operator's key (None: operator calls closed)
    internal_key: str | None = None  # the key tritonserver was started with (None: operator calls closed)
    workers: int = 64  # concurrent gRPC calls; more are refused RESOURCE_EXHAUSTED at once
    refused: dict[int, int] = field(default_factory=dict)  # HTTP refusals by status code
    _local: threading.local = field(default_factory=threading.local)
    _http: _ThreadingServer | None = None
    _grpc: grpc.Server | None = None
    _forwarder: _GrpcForwarder | None = None

    def admin(self, given: str | None) -> str | None:
        """The key to send upstream for an admin header holding `given`: the internal key for the operator's, none
        for anything else (tritonserver then refuses the call as it would without a key)."""
        if given and self.admin_key and self.internal_key and hmac.compare_digest(given, self.admin_key):
            return self.internal_key
        return None

    def upstream_http(self) -> http.client.HTTPConnection:
        """This thread's keep-alive connection to tritonserver's HTTP port."""
        if getattr(self._local, "conn", None) is None:
            self._local.conn = http.client.HTTPConnection("127.0.0.1", self.upstream_http_port, timeout=600)
        return self._local.conn

    def drop_http(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            conn.close()

    @property
    def absorbed(self) -> int:
        return self._forwarder.absorbed if self._forwarder else 0

    def start(self) -> Edge:
        handler = type("Handler", (_HttpHandler,), {"edge": self})
        self._http = _ThreadingServer((self.host, self.http_port), handler)
        threading.Thread(target=self._http.serve_forever, name="slsp-edge-http", daemon=True).start()
        limit = [("grpc.max_receive_message_length", self.max_body), ("grpc.max_send_message_length", -1)]
        channel = grpc.insecure_channel(f"127.0.0.1:{self.upstream_grpc_port}",
                                        options=[("grpc.max_receive_message_length", -1),
                                                 ("grpc.max_send_message_length", -1)])
        self._forwarder = _GrpcForwarder(channel, self)
        self._grpc = grpc.server(ThreadPoolExecutor(self.workers, thread_name_prefix="slsp-edge-grpc"),
                                 handlers=[self._forwarder], options=limit, maximum_concurrent_rpcs=self.workers)
        if not self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}"):
            self.stop()
            raise OSError(f"the gRPC edge could not bind {self.host}:{self.grpc_port}")
        self._grpc.start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._forwarder is not None:
            self._forwarder.channel.close()
            self._forwarder = None

    def __enter__(self) -> Edge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`python3 -m slsp.edge`: the edge alone, as a cluster's pod runs it beside tritonserver (slsp.deploy); needs
    only grpcio beside the standard library."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python3 -m slsp.edge", description=main.__doc__)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--upstream-http", type=int, required=True, help="tritonserver's HTTP port on 127.0.0.1")
    ap.add_argument("--upstream-grpc", type=int, required=True, help="tritonserver's gRPC port on 127.0.0.1")
    ap.add_argument("--max-body", type=int, required=True, help="largest body or gRPC message accepted, bytes")
    ap.add_argument("--admin-key-file", type=Path, help="the operator's key (a mounted secret); without it and "
                    "--internal-key-file, operator calls are closed")
    ap.add_argument("--internal-key-file", type=Path, help="the key tritonserver was started with")
    a = ap.parse_args(argv)
    keys = [f.read_text().strip() if f else None for f in (a.admin_key_file, a.internal_key_file)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Edge(a.host, a.http_port, a.grpc_port, a.upstream_http, a.upstream_grpc, a.max_body, *keys):
        print(f"slsp edge: http {a.host}:{a.http_port}, grpc {a.host}:{a.grpc_port} -> 127.0.0.1:"
              f"{a.upstream_http}/{a.upstream_grpc}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
