"""`slsp deploy kubernetes`: manifests built as data, validated strictly against the Kubernetes schema offline
(kubernetes-validate), and the container's tritonserver arguments run by the bundled server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from test_cli import SLSP

from slsp import deploy
from slsp.contract import ADMIN_HEADER
from slsp.deploy import ADMIN_ENV, KUBERNETES, MOUNT, PORTS, Cluster, manifests
from slsp.errors import SlspError
from slsp.server import Server, free_port

KEY = "test-admin-key"


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def definition(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one strict Kubernetes definition (io.k8s.api.core.v1.PodSpec, ...)."""
    version = next(d for d in sorted((Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema").iterdir())
                   if d.name.startswith(f"v{KUBERNETES}.") and d.name.endswith("-strict")).name
    defs = schema_contents(f"kubernetes-json-schema/{version}/_definitions.json", KUBERNETES)
    return jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{name}"})


def container(objects: dict) -> dict:
    return objects["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_manifests_validate_strictly_and_wire_probes_ports_and_resources(target: str) -> None:
    objects = manifests(Cluster(target=target, replicas=2, max_replicas=5), admin_key=KEY)
    assert [o["kind"] for o in objects.values()] == ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    for obj in objects.values():
        validate(obj)
    c = container(objects)
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    for probe in ("readinessProbe", "livenessProbe"):  # a canary inference through the whole ensemble
        assert c[probe]["exec"]["command"][:3] == ["python3", "-m", "slsp.canary"], probe
        assert "http://127.0.0.1:8000" in c[probe]["exec"]["command"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    svc = objects["service.yaml"]["spec"]
    assert {p["name"]: p["port"] for p in svc["ports"]} == PORTS and svc["type"] == "ClusterIP"
    assert svc["selector"] == objects["deployment.yaml"]["spec"]["selector"]["matchLabels"]
    pod = objects["deployment.yaml"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and not c["securityContext"]["allowPrivilegeEscalation"]
    gpu = c["resources"]["limits"].get("nvidia.com/gpu")
    assert gpu == ("1" if target == "gpu" else None)
    hpa = objects["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["scaleTargetRef"]["name"]) == (2, 5, "slsp")
    # No model-control API: new versions arrive by polling, and the operator APIs need the Secret's key.
    args = c["args"]
    assert "--model-control-mode=poll" in args and not any(a.startswith("--load-model") for a in args)
    restricted = [a for a in args if "restricted" in a]
    assert len(restricted) == 2 and all(f"{ADMIN_HEADER}=$({ADMIN_ENV})" in a for a in restricted)
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == objects["secret.yaml"]["metadata"]["name"]


def test_object_store_repository_and_credentials() -> None:
    objects = manifests(Cluster(repository="s3://bucket/models", repository_secret="aws"), admin_key=KEY)
    c = container(objects)
    assert "--model-repository=s3://bucket/models" in c["args"] and c["envFrom"] == [{"secretRef": {"name": "aws"}}]
    assert all(m["mountPath"] != MOUNT for m in c["volumeMounts"])
    validate(objects["deployment.yaml"])
    sub = container(manifests(Cluster(repository="pvc://claim/v1/repo"), admin_key=KEY))
    assert {"name": "models", "mountPath": MOUNT, "readOnly": True, "subPath": "v1/repo"} in sub["volumeMounts"]
    for bad in ({"repository": "/local/path"}, {"target": "tpu"}, {"replicas": 5, "max_replicas": 2}):
        with pytest.raises(SlspError):
            Cluster(**bad)


def test_kserve_inference_service() -> None:
    objects = manifests(Cluster(target="gpu", repository="gs://b/repo"), kserve=True, admin_key=KEY)
    assert list(objects) == ["secret.yaml", "inferenceservice.yaml"]
    isvc = objects["inferenceservice.yaml"]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = dict(isvc["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    kserve = {k: model.pop(k) for k in ("modelFormat", "runtime", "storageUri", "protocolVersion")}
    assert kserve == {"modelFormat": {"name": "triton"}, "runtime": "kserve-tritonserver",
                      "storageUri": "gs://b/repo", "protocolVersion": "v2"}
    scaling = {k: predictor.pop(k) for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")}
    assert scaling == {"minReplicas": 1, "maxReplicas": 4, "scaleMetric": "cpu", "scaleTarget": 70}
    # What is left is Kubernetes' own: the predictor's pod fields and the model's container fields, strictly.
    definition("io.k8s.api.core.v1.PodSpec").validate({**predictor, "containers": [{"name": "kserve-container",
                                                                                    **model}]})
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # KServe gives the ports and the model store; the security arguments are still there.
    assert not any(a.startswith(("--model-repository", "--http-port", "--grpc-port")) for a in model["args"])
    assert sum("restricted" in a for a in model["args"]) == 2
    validate(objects["secret.yaml"])


def test_cli_writes_manifests_image_context_and_keeps_the_key(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    keys = []
    for _ in range(2):  # writing into the same folder again keeps the key
        r = subprocess.run([*SLSP, "deploy", "kubernetes", "--out", str(out), "--replicas", "2", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        keys.append(yaml.safe_load((out / "secret.yaml").read_text())["stringData"]["admin-key"])
    assert keys[0] == keys[1] and len(keys[0]) >= 32
    assert (out / "secret.yaml").stat().st_mode & 0o077 == 0
    written = json.loads(r.stdout)["manifests"]
    for f in written:
        validate(yaml.safe_load(Path(f).read_text()))
    dockerfile = (out / "image" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile and "onnxruntime\n" in dockerfile
    # Every module the members import is in the image's context, torch-free.
    member = (out / "image" / "slsp" / "export" / "triton" / "decode_trsor.py").read_text()
    for mod in re.findall(r"^from (slsp[\w.]*) import", member, re.M):
        path = out / "image" / Path(*mod.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), mod
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import slsp, slsp.export.trsor_backends, slsp.config, "
            "slsp.imaging, slsp.onnxrt, slsp.transforms; "
            "assert slsp.export.trsor_backends.__file__.startswith(sys.argv[1]), slsp.export.trsor_backends.__file__; "
            "assert 'torch' not in sys.modules, 'torch'")
    r = subprocess.run([sys.executable, "-c", code, str(out / "image")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_refuses_a_repository_the_image_cannot_run(served_artifacts: Path, tmp_path: Path) -> None:
    from slsp.export import repository

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)  # the C++ TrSOR: runs in the image, on a CPU like the exporting one
    assert deploy.check_repository(repo) == deploy.check_repository(repo, "cpu") == "cpu"
    with pytest.raises(SlspError, match="exported for --target cpu"):
        deploy.check_repository(repo, "gpu")
    with pytest.raises(SlspError, match="not a model repository"):
        deploy.check_repository(tmp_path, "cpu")


@pytest.mark.slow
@pytest.mark.server
def test_bundled_server_runs_the_manifest_arguments(served_artifacts: Path, tmp_path: Path) -> None:
    """The container's arguments as Kubernetes would run them (the Secret's value substituted), with only the mount
    point, addresses and ports mapped to this machine's: the server starts, serves, and locks the operator APIs."""
    from slsp.clients.client import SlspClient
    from slsp.export import repository

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    ports = {n: free_port() for n in PORTS}
    args = []
    for a in container(manifests(Cluster(), admin_key=KEY))["args"]:
        a = a.replace(f"$({ADMIN_ENV})", KEY).replace(f"--model-repository={MOUNT}", f"--model-repository={repo}")
        a = re.sub(r"^--(http|grpc|metrics)-address=0\.0\.0\.0$", r"--\1-address=127.0.0.1", a)
        a = re.sub(r"^--(http|grpc|metrics)-port=\d+$", lambda m: f"--{m[1]}-port={ports[m[1]]}", a)
        args.append(a)
    with Server(repo, http_port=ports["http"], grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                args=args, log_path=tmp_path / "log") as server:
        photo = (Path(__file__).resolve().parents[1] / "examples" / "real_kodak24_kodim03.png").read_bytes()
        assert 0 <= SlspClient(server.grpc_url).detect(photo).score <= 1
        url = f"{server.http_url}/v2/systemsharedmemory/status"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code in (401, 403)
        with urllib.request.urlopen(urllib.request.Request(url, headers={ADMIN_HEADER: KEY}), timeout=10) as ok:
            assert ok.status == 200
        with urllib.request.urlopen(f"{server.http_url}/metrics".replace(str(ports["http"]), str(ports["metrics"])),
                                    timeout=10) as metrics:
            assert b"nv_inference_request_success" in metrics.read()
        # The readiness probe's own command, pointed at this server, passes.
        probe = container(manifests(Cluster(), admin_key=KEY))["readinessProbe"]["exec"]["command"]
        probe = [a.replace(":8000", f":{ports['http']}") for a in probe]
        r = subprocess.run([sys.executable if a == "python3" else a for a in probe], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("ok: score"), r.stderr
