"""End-to-end against the real bundled Triton server: gRPC and HTTP, batching, bad inputs, parity, CLI."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, FAKES, PHOTO, PHOTOS, jpeg, synthetic_photo
from slsp import contract
from slsp import detector as det_io
from slsp.clients.client import InvalidInput, ServerUnavailable, SlspClient
from slsp.clients.runner import ServerRunner
from slsp.export import build, repository
from slsp.imaging import decode
from slsp.server import Server, free_port

pytestmark = pytest.mark.server

K = det_io.load().cfg.trsor.slots
MIN = det_io.load().min_input_side  # one crop at native scale: the low-resolution floor
FULL = det_io.load().canonical.full_side  # one crop after the model's canonical transform


@pytest.fixture(scope="session")
def server(served_artifacts: Path, tmp_path_factory):
    repo = tmp_path_factory.mktemp("serve") / "model_repository"
    repository.write(served_artifacts, repo)
    log = repo.parent / "tritonserver.log"
    srv = Server(repo, log_path=log)
    try:
        srv.start(timeout=180)  # raises with the log tail: a server that cannot start fails the suite
    except Exception:
        print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    yield srv
    srv.stop()
    assert srv.proc.returncode is not None


def png(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", **kw)
    return buf.getvalue()


def local(data: bytes):
    return det_io.load().detect(decode(data))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_end_to_end_matches_library(server: Server, protocol: str, tmp_path: Path) -> None:
    client = SlspClient(server.grpc_url if protocol == "grpc" else server.http_url)
    files = [PHOTOS[1], jpeg(PHOTO, tmp_path / "photo.jpg"), FAKES[0]]
    datas = [f.read_bytes() for f in files] + [png(synthetic_photo(s, s + 34, seed=1)) for s in (MIN, FULL - 1, FULL)]
    lows = []
    for data, res in zip(datas, client.detect_many(datas, concurrency=4)):
        ref = local(data)
        assert res.score == pytest.approx(float(ref.score), abs=1e-4)
        assert res.verdict == bool(ref.verdict)
        lows.append(res.low_resolution)
        assert res.low_resolution == bool(ref.low_resolution)
        np.testing.assert_array_equal(res.positions[res.valid], ref.positions.numpy()[ref.valid.numpy()])
        # Only the valid crops reach the model; an invalid slot scores 0 (the library scores every slot).
        np.testing.assert_allclose(res.crop_scores[res.valid], ref.crop_scores.numpy()[ref.valid.numpy()], atol=1e-4)
        assert res.crop_scores.shape == ref.crop_scores.shape and not res.crop_scores[~res.valid].any()
        assert (~res.valid).any()  # every image here leaves slots of a coarser level empty
    assert lows == [False, False, False, True, True, False]


def test_shared_memory_client(server: Server) -> None:
    data = PHOTO.read_bytes()
    a = SlspClient(server.grpc_url, shared_memory=True).detect(data)
    b = SlspClient(server.http_url, shared_memory=True).detect(data)
    assert a.score == pytest.approx(float(local(data).score), abs=1e-4) and a.score == pytest.approx(b.score, abs=1e-6)


def test_concurrent_requests_are_batched(server: Server) -> None:
    client = SlspClient(server.grpc_url)
    datas = [png(synthetic_photo(192, 256, seed=s)) for s in range(24)]
    results = client.detect_many(datas, concurrency=12)
    assert all(not isinstance(r, Exception) for r in results)
    stats = client.statistics("slsp_model")["model_stats"]
    sizes = [int(b["batch_size"]) for m in stats for b in m.get("batch_stats", [])]
    one = max(int(r.valid.sum()) for r in results)  # the model gets each image's valid crops only
    assert max(sizes) > one, f"model step never ran more than one image's {one} crops at once: {sizes}"


def _bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_bad_inputs_fail_alone_and_the_server_stays_up(server: Server) -> None:
    photo = synthetic_photo(160, 200, seed=9)
    jpeg = _encode(Image.fromarray(photo), "JPEG")
    errors = {
        "corrupt": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50,
        "truncated-jpeg": jpeg[: len(jpeg) // 3],
        "zero-bytes": b"",
        "1x1": png(np.zeros((1, 1, 3), np.uint8)),
        "below-min-side": png(synthetic_photo(MIN - 1, 300, seed=2)),
        "over-pixel-limit": _bomb(),
        "elongated": png(synthetic_photo(MIN, 40 * MIN, seed=3)),
        "blp-as-png": b"BLP1" + bytes(range(256)) * 4,
        "ico": _encode(Image.fromarray(photo[:64, :64]), "ICO"),
        "flat-gray": png(np.full((MIN + 20, MIN + 40, 3), 128, np.uint8)),
        "black": png(np.zeros((MIN + 20, MIN + 40, 3), np.uint8)),
    }
    policy = {  # decoded under the documented policy: a real result
        "cmyk": _encode(Image.fromarray(photo).convert("CMYK"), "JPEG"),
        "16-bit": png((photo[..., 0].astype(np.uint16) << 8)),
        "alpha": png(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])),
        "grayscale": png(photo[..., 1]),
    }
    good = [png(synthetic_photo(128, 128, seed=s)) for s in range(6)]
    good += [png(synthetic_photo(MIN + 30, MIN + 50, seed=s)) for s in range(2)]  # low resolution
    names = list(errors) + list(policy) + ["good"] * len(good)
    datas = list(errors.values()) + list(policy.values()) + good
    before, low_before = _image_counts(server), _low_resolution_count(server)
    for protocol_url in (server.grpc_url, server.http_url):
        results = SlspClient(protocol_url).detect_many(datas, concurrency=8)
        for name, data, res in zip(names, datas, results):
            if name in errors:
                assert isinstance(res, InvalidInput), (name, res)  # by status code: INVALID_ARGUMENT / 400
                assert "internal" not in str(res) and "0x" not in str(res), (name, res)
            else:
                assert not isinstance(res, Exception), (name, res)
                assert res.score == pytest.approx(float(local(data).score), abs=1e-4), name
        assert server.ready() and server.proc.poll() is None
    after = _image_counts(server)  # each bad image counted once, as invalid (Triton's own counters do not)
    assert {k: after[k] - before[k] for k in after} == {"accepted": 2 * (len(policy) + len(good)),
                                                        "invalid": 2 * len(errors), "error": 0}
    assert _low_resolution_count(server) - low_before == 2 * 2


def _metrics(server: Server) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()


def _image_counts(server: Server) -> dict[str, float]:
    found = re.findall(rf'^{contract.IMAGES_METRIC}{{outcome="(\w+)"}} (\S+)$', _metrics(server), re.M)
    return {k: float(v) for k, v in found}


def _low_resolution_count(server: Server) -> float:
    found = re.findall(rf"^{contract.LOW_RESOLUTION_METRIC}(?:{{}})? (\S+)$", _metrics(server), re.M)
    return float(found[0]) if found else 0.0


@pytest.mark.slow
def test_operator_apis_need_the_admin_key(served_artifacts: Path, tmp_path: Path) -> None:
    """With an admin key (what `slsp serve` always sets), shared-memory registration needs it on both protocols; a
    client without it gets AccessDenied, not a retry loop, and leaves no region behind."""
    from slsp.clients.client import AccessDenied

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    data = PHOTO.read_bytes()
    before = set(Path("/dev/shm").glob("slsp-*"))
    with Server(repo, admin_key="k-123", log_path=tmp_path / "log") as srv:
        for url in (srv.grpc_url, srv.http_url):
            with pytest.raises(AccessDenied, match="admin key"):
                SlspClient(url, shared_memory=True).detect(data)
            assert SlspClient(url, shared_memory=True, admin_key="k-123").detect(data).score == pytest.approx(
                float(local(data).score), abs=1e-4)
            assert SlspClient(url).detect(data).verdict in (True, False)  # inference itself stays open
    assert set(Path("/dev/shm").glob("slsp-*")) == before


@pytest.mark.slow
def test_a_full_queue_refuses_at_once_and_the_rest_is_served(served_artifacts: Path, tmp_path: Path) -> None:
    """max_inflight bounds the decode member's queue: a burst beyond it is refused with "Exceeds maximum queue size"
    (the client's ServerUnavailable, after its bounded retries); everything admitted is answered; the server stays
    up."""
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo, repository.ServingConfig(max_inflight=2))
    decode = repository.read_config(repo / repository.DECODE / "config.pbtxt").dynamic_batching.default_queue_policy
    assert (decode.max_queue_size, decode.default_timeout_microseconds) == (2, 30_000_000)
    data = PHOTO.read_bytes()
    with Server(repo, log_path=tmp_path / "log") as srv:
        results = SlspClient(srv.grpc_url, retries=0).detect_many([data] * 24, concurrency=24)
        refused = [r for r in results if isinstance(r, ServerUnavailable)]
        served = [r for r in results if not isinstance(r, Exception)]
        assert refused and served and len(refused) + len(served) == 24
        assert all("maximum queue size" in str(r) for r in refused)
        assert srv.ready() and SlspClient(srv.grpc_url).detect(data).score == pytest.approx(served[0].score)
        # Issue 38, finding 4: the members are bounded too. A flood of full batches sent to slsp_model directly,
        # around the decode member's queue, is refused beyond the bound instead of queueing without end.
        flooded = _flood_model(srv, threads=16, batch=192)
        assert flooded["refused"] and flooded["answered"] and flooded["other"] == []
        assert SlspClient(srv.grpc_url).detect(data).score == pytest.approx(served[0].score)
    model = repository.read_config(repo / repository.MODEL / "config.pbtxt").dynamic_batching.default_queue_policy
    score = repository.read_config(repo / repository.SCORE / "config.pbtxt").dynamic_batching.default_queue_policy
    assert model.max_queue_size == score.max_queue_size == 2


def _flood_model(srv: Server, threads: int, batch: int) -> dict[str, list]:
    """`threads` clients each sending one batch of `batch` random crops straight to slsp_model at once."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = det_io.load().cfg.trsor.crop
    crops = np.random.default_rng(0).integers(0, 256, (batch, c, c, 3), dtype=np.uint8)
    phi = np.ones((batch, c, c), np.float32)

    def one(_: int) -> str:
        client = grpcclient.InferenceServerClient(srv.grpc_url.removeprefix("grpc://"))
        a = grpcclient.InferInput(contract.CROPS, list(crops.shape), "UINT8")
        a.set_data_from_numpy(crops)
        b = grpcclient.InferInput(contract.CROP_PHI, list(phi.shape), "FP32")
        b.set_data_from_numpy(phi)
        try:
            client.infer(repository.MODEL, [a, b], client_timeout=120)
            return "answered"
        except InferenceServerException as e:
            return "refused" if "maximum queue size" in str(e) else f"other: {e}"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(one, range(threads)))
    return {"answered": [o for o in outcomes if o == "answered"], "refused": [o for o in outcomes if o == "refused"],
            "other": [o for o in outcomes if o.startswith("other")]}


def test_any_subset_of_outputs_can_be_requested(server: Server) -> None:
    """All 127 non-empty subsets of the seven outputs, over gRPC: each answers, with what was asked for."""
    import itertools

    import tritonclient.grpc as grpcclient

    data = PHOTO.read_bytes()
    ref = local(data)
    client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    image = grpcclient.InferInput(contract.ENSEMBLE_INPUT.name, [1], "BYTES")
    image.set_data_from_numpy(np.array([data], dtype=object))
    names = [t.name for t in contract.ENSEMBLE_OUTPUTS]
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(names, k):
            res = client.infer(contract.ENSEMBLE, [image], outputs=[grpcclient.InferRequestedOutput(n) for n in subset],
                               client_timeout=30)
            assert {o["name"] for o in res.get_response(as_json=True)["outputs"]} == set(subset)
            if "SCORE" in subset:
                assert float(res.as_numpy("SCORE")[0]) == pytest.approx(float(ref.score), abs=1e-4)


class _BusyRegions:
    """The one tritonclient call `_drop_shm` makes, answering "in use" as Triton does for its first `busy` calls
    (the real race cannot be forced on a live server), or failing otherwise with `other`."""

    def __init__(self, busy: int, other: str = "") -> None:
        self.busy, self.other, self.calls = busy, other, 0

    def unregister_system_shared_memory(self, name: str, headers: dict | None = None) -> None:
        from tritonclient.utils import InferenceServerException

        self.calls += 1
        if self.other:
            raise InferenceServerException(msg=self.other)
        if self.calls <= self.busy:
            raise InferenceServerException(msg=f"Cannot unregister shared memory region '{name}', it is currently "
                                               "in use.")


@pytest.mark.parametrize("busy, other, wait, calls, fails", [
    (2, "", 5.0, (3, 3), False),  # released soon after the response: retried, and the image's result stands
    (10**6, "", 0.05, (2, 10), True),  # never released: retried, then gives up after `wait`, in the server's words
    (0, "Unable to find system shared memory region", 5.0, (1, 1), True),  # any other error: not retried
])
def test_a_region_in_use_after_its_response_is_unregistered_on_retry(busy: int, other: str, wait: float,
                                                                     calls: tuple[int, int], fails: bool) -> None:
    """Regression (a CI run): Triton answered an ensemble request before releasing its input region, so the
    client's unregister failed with "currently in use" and a scored image was reported as a server error. The
    local region is destroyed whatever happens."""
    import uuid

    import tritonclient.utils.shared_memory as shm

    name = f"slsp-test-{uuid.uuid4().hex[:8]}"
    region = (name, shm.create_shared_memory_region(name, f"/{name}", 16), 16)
    c = _BusyRegions(busy, other)
    if fails:
        with pytest.raises(Exception, match=other or "currently in use"):
            SlspClient._drop_shm(c, region, None, wait=wait)
    else:
        SlspClient._drop_shm(c, region, None, wait=wait)
    assert calls[0] <= c.calls <= calls[1]
    assert not Path(f"/dev/shm/{name}").exists()


def test_connection_refused_is_not_a_timeout() -> None:
    with pytest.raises(ServerUnavailable):
        SlspClient(f"grpc://127.0.0.1:{free_port()}", retries=1).detect(b"x")
    with pytest.raises(ServerUnavailable):
        SlspClient(f"http://127.0.0.1:{free_port()}", retries=0).detect(b"x")


def test_parity_with_server(server: Server, served_artifacts: Path, tmp_path: Path) -> None:
    det = det_io.load()
    sources = [PHOTOS[1], PHOTOS[2], jpeg(PHOTOS[1], tmp_path / "camera.jpg", quality=85)]
    report = build.check(det, served_artifacts, sources, sizes=1, runtimes=["ort-cpu", "aoti-cpu", "native-cpu"],
                         extra=[ServerRunner(server.grpc_url), ServerRunner(server.http_url)])
    assert report["ok"], report["table"]
    assert {r["runtime"] for r in report["runtimes"]} == {
        "ort-cpu",
        "aoti-cpu",
        "native-cpu",
        "server-grpc",
        "server-http",
    }


def test_query_cli(server: Server) -> None:
    files = [str(PHOTO), str(EXAMPLES)]
    r = subprocess.run([sys.executable, "-c", "from slsp.cli import main; main()", "query", *files,
                        "--url", server.http_url, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) > 2 and all(row["verdict"] in ("real", "synthetic") for row in rows)


def test_configs_parse_back_through_the_schema(server: Server) -> None:
    for name in (*repository.MEMBERS, repository.ENSEMBLE):
        cfg = repository.read_config(server.repo / name / "config.pbtxt")
        assert cfg.name == name
    model = repository.read_config(server.repo / repository.MODEL / "config.pbtxt")
    assert model.max_batch_size >= K and model.dynamic_batching.max_queue_delay_microseconds > 0


def test_bench_server_smoke(server: Server, served_artifacts: Path, tmp_path: Path) -> None:
    from slsp.bench import server as bench_server
    from slsp.bench.timing import save

    images = [PHOTO, FAKES[0]]
    for url in (server.grpc_url, server.http_url):
        res = bench_server.measure(url, images, served_artifacts, concurrencies=(1, 2), requests=4, quiet=True)
        assert [r["concurrency"] for r in res["rows"]] == [1, 2]
        for r in res["rows"]:
            assert r["requests"] == 4 and r["errors"] == 0 and r["p50_ms"] <= r["p99_ms"]
            assert {"slsp_decode_trsor", "slsp_model", "slsp_score"} <= set(r["server_split"])
        assert res["served_engines"] == "native-cpu" and res["inprocess_served_engines"]["requests"] == 4  # same run
        assert "vs ORT" in bench_server.table(res) and r["throughput_vs_inprocess_served_engines"] > 0
        assert json.loads(save(res, tmp_path).read_text())["kind"] == "server"


def test_killed_server_leaves_no_shared_memory(server: Server) -> None:
    """A server that must be killed (no time to exit) cannot unlink its stubs' /dev/shm regions itself."""
    srv = Server(server.repo).start(timeout=180)
    regions = srv.shm_regions()
    assert regions and all(r.exists() for r in regions)
    srv.stop(grace=0)
    assert srv.proc.returncode == -signal.SIGKILL
    assert not [r for r in regions if r.exists()]


def test_a_server_that_died_by_itself_leaves_no_shared_memory(server: Server) -> None:
    """Issue 38, finding 6: once tritonserver has crashed, /proc no longer lists its regions; the ones recorded at
    start are removed by stop() all the same (a crash loop would fill /dev/shm)."""
    srv = Server(server.repo).start(timeout=180)
    regions = srv.shm_regions()
    assert regions and all(r.exists() for r in regions)
    os.killpg(srv.proc.pid, signal.SIGKILL)  # the server and its stubs die without a chance to clean up
    srv.proc.wait()
    assert srv.shm_regions() == [] and all(r.exists() for r in regions)  # left behind, and invisible to /proc
    srv.stop()
    assert not [r for r in regions if r.exists()]


def _live_group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that still run (zombies awaiting their reaper are not running)."""
    live = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat_file.parent.name))
    return live


def test_private_shared_memory_and_an_interrupted_stop_leaves_nothing(served_artifacts: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend's /dev/shm regions are readable by this user only (created 0644 by the backend); a stop
    interrupted by a second Ctrl-C or SIGTERM kills the whole process group at once and still removes the backend
    folder."""
    import stat

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    srv = Server(repo, log_path=tmp_path / "log").start(timeout=180)
    regions = srv.shm_regions()
    assert regions and all(stat.S_IMODE(r.stat().st_mode) & 0o077 == 0 for r in regions)
    pgid, backends = srv.proc.pid, srv._tmp
    wait = srv.proc.wait
    calls = []

    def interrupted(timeout=None):
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the second signal arrives during the graceful wait
        return wait(timeout)

    monkeypatch.setattr(srv.proc, "wait", interrupted)
    srv.stop()
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously: give the kernel a moment
    while _live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calls and not _live_group_members(pgid)  # killed at once: no process left running in the server's group
    assert not backends.exists() and not [r for r in regions if r.exists()]


def test_canary_answers_and_a_dead_server_fails_it(server: Server) -> None:
    from slsp.canary import canary, health

    assert 0 <= canary(server.http_url) <= 1
    with pytest.raises(RuntimeError, match="canary inference"):
        canary(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert health(server.http_url)[0] == "ok"
    assert health(f"http://127.0.0.1:{free_port()}", timeout=2)[0] == "stalled"  # nothing answers, nothing completes


@pytest.mark.slow
def test_a_busy_server_is_busy_not_stalled(served_artifacts: Path, tmp_path: Path) -> None:
    """Issue 38, finding 3: under valid load the canary is refused by the full queue or times out while other
    requests complete; that is `busy` (readiness sheds load, liveness keeps the pod), never `stalled`."""
    import threading

    from slsp.bench.timing import photo_at
    from slsp.canary import health
    from slsp.imaging import load

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo, repository.ServingConfig(max_inflight=1))
    buf = io.BytesIO()
    Image.fromarray(photo_at(load(PHOTO), 1500, 2000)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    with Server(repo, log_path=tmp_path / "log") as srv:
        stop = threading.Event()

        def flood() -> None:
            client = SlspClient(srv.grpc_url, retries=0)
            while not stop.is_set():
                client.detect_many([data] * 8, concurrency=8)

        threads = [threading.Thread(target=flood) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(2)
            states = [health(srv.http_url, timeout=0.3)[0] for _ in range(6)]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert "stalled" not in states and "busy" in states, states
        # The canaries that timed out client-side are still queued or running server-side; once they drain, the
        # canary is answered again (on a contended 2-core CI machine that can take a while: wait, don't race it).
        deadline = time.monotonic() + 180
        while (state := health(srv.http_url, timeout=10))[0] != "ok" and time.monotonic() < deadline:
            time.sleep(1)
        assert state[0] == "ok", state


@pytest.mark.slow
def test_serve_stops_a_stalled_pipeline_that_still_reports_ready(served_artifacts: Path, tmp_path: Path) -> None:
    """The decode member's processes frozen (SIGSTOP): Triton still answers ready, every request hangs. The
    canary fails three times, and `slsp serve` stops the server and exits 1 for its supervisor."""
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-c", "from slsp.cli import main; main()", "serve", "--repo", str(repo),
                             "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
                             "--log", str(tmp_path / "server.log"), "--canary-every", "1", "--canary-timeout", "2"],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("serving "):
                break
        # This server's decode stubs only (their model path is under this test's repository): the session's
        # server runs stubs of the same name, which must keep running for the tests after this one.
        stubs = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")
                 if b"triton_python_backend_stub" in _read(p) and repository.DECODE.encode() in _read(p)
                 and str(repo.resolve()).encode() in _read(p)]
        assert stubs, "".join(lines)
        for pid in stubs:
            os.kill(pid, signal.SIGSTOP)
        assert Server(repo, http_port=int(ports[0])).ready()  # what a health check alone would believe
        rest = proc.communicate(timeout=120)[1]
        assert proc.returncode == 1 and "the pipeline stopped answering" in rest, rest[-2000:]
        assert rest.count("canary ") >= 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_serve_cli_exports_when_missing_then_stops_on_sigterm(tmp_path: Path) -> None:
    """`slsp serve` on a fresh machine: export with a quick gate, serve, answer a query, and exit cleanly on
    SIGTERM (what docker stop and systemd send; handled like Ctrl-C)."""
    repo = tmp_path / "model_repository"
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-c", "from slsp.cli import main; main()", "serve", "--repo", str(repo),
                             "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
                             "--log", str(tmp_path / "server.log")],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "SLSP_PARITY_IMAGES": str(EXAMPLES)})
    try:
        lines = []
        for line in proc.stderr:  # ends when the process does
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines)
        assert "parity gate on 3 images" in "".join(lines)
        assert repository.versions(repo, repository.MODEL) == [1]
        data = PHOTO.read_bytes()
        assert SlspClient(f"grpc://127.0.0.1:{ports[1]}").detect(data).score == pytest.approx(
            float(local(data).score), abs=1e-4
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, rc
    assert "stopping" in proc.stderr.read()


def test_served_provenance_equals_the_library_and_leaves_the_score_alone(server: Server) -> None:
    """The decode member reads provenance from the bytes it already has; the client returns it as the library
    computes it, over both protocols, and the pixel score is that of the same pixels without metadata."""
    from PIL import PngImagePlugin

    from slsp import provenance

    img = np.asarray(Image.open(PHOTO).convert("RGB"))
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}))
    comfy, plain = png(img, pnginfo=info), png(img)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    for url in (server.grpc_url, server.http_url):
        client = SlspClient(url)
        for data in (comfy, buf.getvalue(), plain):
            got = client.detect(data)
            assert got.provenance == provenance.read(data)
            assert got.as_dict()["provenance"] == got.provenance
        assert client.detect(comfy).provenance["verdict"] == "generated"
        assert client.detect(comfy).score == client.detect(plain).score
