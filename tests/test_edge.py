"""The edge in front of the bundled tritonserver (slsp/edge.py): cancelled gRPC calls absorbed, compressed and
oversized bodies refused before they are read or inflated, malformed inference headers answered 400, everything
else the same as tritonserver's own answer (issue 38, findings 1, 2 and 9)."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from conftest import PHOTO
from slsp.clients.client import SlspClient
from slsp.edge import Edge, infer_header_error
from slsp.export import repository
from slsp.server import HEADER_ALLOWANCE, Server, free_port

pytestmark = pytest.mark.server


@pytest.mark.parametrize("header, why", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"inputs": [{"name": "IMAGE", "shape": [-1], "datatype": "BYTES"}]}', "non-negative"),
    (b'{"inputs": [{"name": "IMAGE", "shape": [1, 2.5]}]}', "non-negative"),
    (b'{"inputs": [{"name": "IMAGE", "shape": [1], "parameters": {"binary_data_size": -5}}]}', "binary_data_size"),
    (b'{"inputs": [{"name": "IMAGE", "shape": [1], "parameters": {"binary_data_size": true}}]}', "binary_data_size"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_inference_headers_are_named(header: bytes, why: str) -> None:
    assert why in infer_header_error(header)


def test_well_formed_inference_headers_pass() -> None:
    ok = {"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}],
          "outputs": [{"name": "SCORE", "parameters": {"binary_data": True}}]}
    assert infer_header_error(json.dumps(ok).encode()) is None


KEY, INTERNAL = "edge-test-key", "made-at-start"


@pytest.fixture(scope="module")
def edged(served_artifacts: Path, tmp_path_factory):
    """tritonserver on loopback with a small queue (a full queue is half of what crashes it), the edge in front."""
    repo = tmp_path_factory.mktemp("edge") / "repo"
    repository.write(served_artifacts, repo, repository.ServingConfig(max_inflight=4))
    srv = Server(repo, log_path=repo.parent / "tritonserver.log", admin_key=INTERNAL).start(timeout=180)
    edge = Edge("127.0.0.1", free_port(), free_port(), srv.http_port, srv.grpc_port,
                repository.max_bytes(repo) + HEADER_ALLOWANCE, admin_key=KEY, internal_key=INTERNAL).start()
    yield srv, edge
    edge.stop()
    srv.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_answers_through_the_edge_equal_tritonservers_own(edged) -> None:
    srv, edge = edged
    data = PHOTO.read_bytes()
    direct = SlspClient(srv.grpc_url).detect(data)
    for url in (f"grpc://127.0.0.1:{edge.grpc_port}", f"http://127.0.0.1:{edge.http_port}"):
        got = SlspClient(url).detect(data)
        assert got.score == direct.score and got.verdict == direct.verdict
        assert (got.crop_scores == direct.crop_scores).all()


def test_compressed_and_oversized_bodies_are_refused_unread(edged) -> None:
    """Finding 2: a 1 MB deflate body that inflates to 1 GiB never reaches tritonserver (415); a body over the
    limit is refused from its Content-Length (413); neither moves tritonserver's memory."""
    srv, edge = edged
    url = f"http://127.0.0.1:{edge.http_port}/v2/models/slsp/infer"
    before = rss_mb(srv.proc.pid)
    bomb = zlib.compress(b"\0" * (1 << 30), 9)
    assert len(bomb) < 2 << 20
    code, body = post(url, bomb, {"Content-Encoding": "deflate", "Content-Type": "application/octet-stream"})
    assert code == 415 and "Content-Encoding" in body
    # Only the headers are sent: the edge answers from Content-Length, without waiting for the body.
    with socket.create_connection(("127.0.0.1", edge.http_port), timeout=30) as s:
        s.sendall(f"POST /v2/models/slsp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {edge.max_body + 1}\r\n\r\n"
                  .encode())
        chunks = []
        while chunk := s.recv(4096):  # the edge closes the connection after a refusal
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 413") and "over the limit" in answer
    assert rss_mb(srv.proc.pid) - before < 50
    assert SlspClient(f"http://127.0.0.1:{edge.http_port}").detect(PHOTO.read_bytes()).score > 0


def test_malformed_headers_get_400_not_500(edged) -> None:
    """Finding 9: what tritonserver answers 500 to is the client's fault, and the edge says so."""
    srv, edge = edged
    url = f"http://127.0.0.1:{edge.http_port}/v2/models/slsp/infer"
    assert post(url, b"{nope", {"Content-Type": "application/json"})[0] == 400
    neg = json.dumps({"inputs": [{"name": "IMAGE", "shape": [-3], "datatype": "BYTES", "data": ["x"]}]}).encode()
    assert post(url, neg, {"Content-Type": "application/json"})[0] == 400
    assert post(f"http://127.0.0.1:{srv.http_port}/v2/models/slsp/infer", b"{nope", {})[0] == 500  # without it


def test_operator_calls_without_the_key_are_denied_not_unavailable(edged) -> None:
    """Finding 9, gRPC: tritonserver refuses a restricted call with UNAVAILABLE (which clients retry); through the
    edge it is PERMISSION_DENIED. Finding 5: the operator's key opens it through the edge and appears in no command
    line; tritonserver's own key (made at start) is refused at the edge."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from slsp.contract import ADMIN_GRPC_HEADER, ADMIN_HEADER

    srv, edge = edged
    assert KEY.encode() not in Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes()
    for port, want in ((srv.grpc_port, "StatusCode.UNAVAILABLE"), (edge.grpc_port, "StatusCode.PERMISSION_DENIED")):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        with pytest.raises(InferenceServerException) as e:
            client.get_model_repository_index()
        assert e.value.status() == want
        client.close()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{edge.grpc_port}")
    assert client.get_model_repository_index(headers={ADMIN_GRPC_HEADER: KEY}).models
    with pytest.raises(InferenceServerException):
        client.get_model_repository_index(headers={ADMIN_GRPC_HEADER: INTERNAL})
    client.close()
    http = httpclient.InferenceServerClient(f"127.0.0.1:{edge.http_port}")
    assert http.get_model_repository_index(headers={ADMIN_HEADER: KEY})
    with pytest.raises(InferenceServerException):
        http.get_model_repository_index(headers={ADMIN_HEADER: "wrong"})
    http.close()


GRPC_BOMB = """
import sys, grpc
from tritonclient.grpc import service_pb2
req = service_pb2.ModelInferRequest(model_name="slsp")
req.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
req.raw_input_contents.append(b"\\0" * (200 << 20))
call = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_send_message_length", -1)]).unary_unary(
    "/inference.GRPCInferenceService/ModelInfer")
try:
    call(req.SerializeToString(), compression=grpc.Compression.Gzip, timeout=60)
    print("ANSWERED")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""


def test_grpc_compression_is_capped_while_it_inflates(edged) -> None:
    """Finding 2, gRPC: 200 MB of zeros sent gzip-compressed is refused at the edge's message limit, and the edge
    (this process) does not inflate it whole."""
    srv, edge = edged
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = subprocess.run([sys.executable, "-c", GRPC_BOMB, f"127.0.0.1:{edge.grpc_port}"], capture_output=True,
                         text=True, timeout=120).stdout
    assert out.startswith("RESOURCE_EXHAUSTED"), out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak < 150


def test_cancelled_calls_on_a_full_queue_do_not_reach_tritonserver(edged) -> None:
    """Finding 1: bursts of 200 gRPC calls with every other one given a 50 ms deadline, on a queue of 4 (what crashed
    tritonserver 2.51 in 8 of 15 bursts when sent to it directly): every deadline is absorbed at the edge, and the
    server stays up and answers."""
    import tritonclient.grpc as grpcclient

    srv, edge = edged
    data = PHOTO.read_bytes()
    want = SlspClient(srv.grpc_url).detect(data).score
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{edge.grpc_port}")
    inp = grpcclient.InferInput("IMAGE", [1], "BYTES")
    import numpy as np

    inp.set_data_from_numpy(np.array([data], dtype=object))
    for _ in range(3):
        done: list = []
        for i in range(200):
            client.async_infer("slsp", [inp], lambda result, error, d=done: d.append(error),
                               client_timeout=0.05 if i % 2 else None)
        deadline = time.monotonic() + 300
        while len(done) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(done) == 200
        assert srv.proc.poll() is None, srv.log_tail()
    client.close()
    time.sleep(1)
    assert edge.absorbed > 0
    assert SlspClient(f"grpc://127.0.0.1:{edge.grpc_port}").detect(data).score == want
