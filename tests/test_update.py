"""Safe model updates on a live server: new version while a client queries, failed export, rollback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import PHOTO, TINY_SLSP
from slsp import detector as det_io
from slsp.clients.client import SlspClient
from slsp.config import DetectorConfig
from slsp.detector import Detector
from slsp.export import build, repository, torch2onnx
from slsp.imaging import load
from slsp.server import Server

pytestmark = pytest.mark.server
IMAGE = PHOTO


def other_model(tmp: Path) -> Path:
    """A second checkpoint with the shipped TrSOR settings (shape-compatible), different weights."""
    torch.manual_seed(123)
    cfg = det_io.load().cfg
    small = DetectorConfig(trsor=cfg.trsor, model=TINY_SLSP, threshold=0.5)
    det_io.save(Detector(small), tmp / "run2")
    return tmp / "run2"


def newest_mtime(repo: Path) -> int:
    return max(p.stat().st_mtime_ns for p in repo.rglob("*"))


@pytest.mark.slow
def test_new_version_while_querying_then_rollback(tmp_path: Path, monkeypatch) -> None:
    build.build(None, tmp_path / "a1", images=[IMAGE], sizes=0)
    build.build(other_model(tmp_path), tmp_path / "a2", images=[IMAGE], sizes=0)
    repo = tmp_path / "repo"
    assert repository.write(tmp_path / "a1", repo) == 1
    data = IMAGE.read_bytes()
    written = newest_mtime(repo)
    with Server(repo, log_path=tmp_path / "server.log", model_control="poll", poll_seconds=1) as srv:
        client = SlspClient(srv.grpc_url)
        v1 = client.detect(data).score
        # Loading must not write into the repository (a stub's __pycache__ would): a polling server would
        # see the new mtime and load the same version again.
        assert newest_mtime(repo) == written
        seen, failures, stop = [], [], threading.Event()

        def query() -> None:
            while not stop.is_set():
                try:
                    seen.append(client.detect(data).score)
                except Exception as e:  # noqa: BLE001 - any failure during the switch is what we test for
                    failures.append(repr(e))

        threads = [threading.Thread(target=query) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert repository.write(tmp_path / "a2", repo) == 2
        v2 = float(det_io.load(tmp_path / "run2").detect(load(IMAGE)).score)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen and abs(seen[-1] - v2) < 1e-4):
            time.sleep(0.2)
        switched = len(seen)

        # A failing export into the live repository leaves the serving version untouched.
        def broken(det, out_dir, checkpoint_hash, fp16=False, opset=torch2onnx.OPSET):
            paths = real_export(det, out_dir, checkpoint_hash, fp16, opset)
            paths["model"].write_bytes(paths["model"].read_bytes().replace(b"crop_scores", b"crop_scoreX"))
            return paths

        real_export = torch2onnx.export
        monkeypatch.setattr(torch2onnx, "export", broken)
        with pytest.raises(Exception):
            build.build(None, tmp_path / "a3", images=[IMAGE], sizes=0)
        monkeypatch.undo()
        assert repository.versions(repo, repository.MODEL) == [1, 2]

        assert repository.rollback(repo) == (3, 1)
        assert repository.versions(repo, repository.MODEL) == [1, 2, 3]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and abs(seen[-1] - v1) > 1e-4:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        # Judged on requests sent after the switch: one in flight during it may have met the new model member
        # and the old score member (members switch one by one; the ensemble does not pin their versions).
        after = [client.detect(data).score for _ in range(3)]
        log = srv.log_tail(60)
    mixed = sum(min(abs(s - v1), abs(s - v2)) > 1e-4 for s in seen)
    print(f"update: {len(seen) + len(failures)} requests during the switch to v2 and back, {len(failures)} failed, "
          f"{mixed} scored by members of both versions, v1 score {v1:.4f}, v2 score {v2:.4f}, "
          f"switched after {switched} responses")
    assert not failures, failures[:3]
    assert abs(seen[switched - 1] - v2) < 1e-4, f"the server never moved to version 2; server log:\n{log}"
    assert all(abs(s - v1) < 1e-4 for s in after), f"rollback did not bring version 1 back ({after}); log:\n{log}"
    assert len(seen) > switched > 3


def test_rollback_copies_the_previous_version_with_its_config(tmp_path: Path) -> None:
    """The copy is the previous version as written (its files and the config written with it), and loading it
    would find model.py's compiled cache valid (mtimes kept), so a polling server loads it once."""
    build.build(None, tmp_path / "a1", images=[IMAGE], sizes=0)
    repo = tmp_path / "repo"
    repository.write(tmp_path / "a1", repo)
    first = {m: (repo / m / "config.pbtxt").read_text() for m in repository.MEMBERS}
    repository.write(tmp_path / "a1", repo, repository.ServingConfig(max_batch=96))
    assert (repo / repository.MODEL / "config.pbtxt").read_text() != first[repository.MODEL]
    assert repository.rollback(repo) == (3, 1)
    for m in repository.MEMBERS:
        assert (repo / m / "config.pbtxt").read_text() == first[m]
        old, new = repo / m / "1", repo / m / "3"
        names = sorted(p.relative_to(old) for p in old.rglob("*"))
        assert names == sorted(p.relative_to(new) for p in new.rglob("*"))
        for name in names:
            assert (old / name).stat().st_mtime_ns == (new / name).stat().st_mtime_ns
            if (old / name).is_file():
                assert (old / name).read_bytes() == (new / name).read_bytes()
    assert not [p for p in repo.iterdir() if p.name.startswith(".staging-")]
    with pytest.raises(Exception, match="nothing to roll back"):
        repository.rollback(tmp_path / "a1")
