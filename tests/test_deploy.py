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
from slsp.deploy import INTERNAL_ENV, KUBERNETES, MOUNT, PORTS, Cluster, manifests
from slsp.errors import SlspError
from slsp.server import Server, free_port

KEY, INTERNAL = "test-admin-key", "test-internal-key"


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
    assert [o["kind"] for o in objects.values()] == ["Namespace", "Secret", "Deployment", "Service",
                                                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objects.values()} == {"slsp"}
    for obj in objects.values():
        validate(obj)
    c = container(objects)
    assert "127.0.0.1:8010/v2/health/ready" in c["startupProbe"]["exec"]["command"][2]
    for probe in ("readinessProbe", "livenessProbe"):  # a canary inference through the whole ensemble
        assert c[probe]["exec"]["command"][:3] == ["python3", "-m", "slsp.canary"], probe
        assert "http://127.0.0.1:8010" in c[probe]["exec"]["command"]
    # tritonserver on loopback (8010/8011) serves only its metrics to the pod network; the edge container the rest.
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8002}
    assert "--http-address=127.0.0.1" in c["args"] and "--grpc-address=127.0.0.1" in c["args"]
    edge = objects["deployment.yaml"]["spec"]["template"]["spec"]["containers"][1]
    assert edge["command"][:3] == ["python3", "-m", "slsp.edge"] and edge["image"] == c["image"]
    assert {p["name"]: p["containerPort"] for p in edge["ports"]} == {"http": 8000, "grpc": 8001}
    assert edge["securityContext"] == c["securityContext"] and "readinessProbe" in edge and "livenessProbe" in edge
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
    # No model-control API: new versions arrive by polling. tritonserver's operator APIs need the Secret's internal
    # key, read by the command from the Secret mounted as a file (never an environment variable, never in the
    # manifest's args); only the edge's volume holds the operator's key.
    args = c["args"]
    assert "--model-control-mode=poll" in args and not any(a.startswith("--load-model") for a in args)
    assert not any("restricted" in a for a in args) and "env" not in c
    assert c["command"][:2] == ["/bin/sh", "-c"] and c["command"][2].count(f"{ADMIN_HEADER}=$key") == 2
    assert f"{deploy.KEY_DIR}/internal-key" in c["command"][2]
    volumes = {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert {v["secretName"] for v in volumes.values()} == {objects["secret.yaml"]["metadata"]["name"]}
    assert {v["defaultMode"] for v in volumes.values()} == {0o400}
    assert [i["key"] for i in volumes["internal-key"]["items"]] == ["internal-key"]
    assert [i["key"] for i in volumes["keys"]["items"]] == ["admin-key", "internal-key"]
    assert {"name": "internal-key", "mountPath": deploy.KEY_DIR, "readOnly": True} in c["volumeMounts"]
    assert edge["volumeMounts"] == [{"name": "keys", "mountPath": deploy.KEY_DIR, "readOnly": True}]
    assert set(objects["secret.yaml"]["stringData"]) == {"admin-key", "internal-key"}
    assert pod["spec"]["securityContext"]["runAsUser"] >= 10000 and c["imagePullPolicy"] == "Always"
    # Only the ingress controller reaches 8000/8001 and only Prometheus 8002; one pod at a time may be evicted.
    rules = objects["networkpolicy.yaml"]["spec"]["ingress"]
    assert [([s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in r["from"]],
             [p["port"] for p in r["ports"]]) for r in rules] == [(["ingress-nginx"], [8000, 8001]),
                                                                   (["monitoring"], [8002])]
    assert objects["pdb.yaml"]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": pod["metadata"]["labels"]}}
    # An image by tag skips the digest check with its reason; one pinned by digest needs no skip.
    assert "CKV_K8S_43" in objects["deployment.yaml"]["metadata"]["annotations"]["checkov.io/skip1"]
    pinned = manifests(Cluster(target=target, image="r.example/slsp@sha256:" + "0" * 64), admin_key=KEY)
    assert "annotations" not in pinned["deployment.yaml"]["metadata"]


def test_object_store_repository_and_credentials() -> None:
    objects = manifests(Cluster(repository="s3://bucket/models", repository_secret="aws"), admin_key=KEY)
    c = container(objects)
    assert "--model-repository=s3://bucket/models" in c["args"] and c["envFrom"] == [{"secretRef": {"name": "aws"}}]
    assert all(m["mountPath"] != MOUNT for m in c["volumeMounts"])
    validate(objects["deployment.yaml"])
    sub = container(manifests(Cluster(repository="pvc://claim/v1/repo"), admin_key=KEY))
    assert {"name": "models", "mountPath": MOUNT, "readOnly": True, "subPath": "v1/repo"} in sub["volumeMounts"]
    for bad in ({"repository": "/local/path"}, {"target": "tpu"}, {"replicas": 5, "max_replicas": 2},
                {"namespace": "default"}):
        with pytest.raises(SlspError):
            Cluster(**bad)


def test_kserve_inference_service() -> None:
    objects = manifests(Cluster(target="gpu", repository="gs://b/repo", repository_secret="gcs"), kserve=True,
                        admin_key=KEY)
    assert list(objects) == ["namespace.yaml", "secret.yaml", "inferenceservice.yaml", "networkpolicy.yaml"]
    isvc = objects["inferenceservice.yaml"]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = dict(isvc["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    kserve = {k: model.pop(k) for k in ("modelFormat", "runtime", "storageUri", "protocolVersion")}
    assert kserve == {"modelFormat": {"name": "triton"}, "runtime": "kserve-tritonserver",
                      "storageUri": "gs://b/repo", "protocolVersion": "v2"}
    scaling = {k: predictor.pop(k) for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")}
    assert scaling == {"minReplicas": 1, "maxReplicas": 4, "scaleMetric": "cpu", "scaleTarget": 70}
    # What is left is Kubernetes' own: the predictor's pod fields and the containers' fields, strictly (below).
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # KServe gives the model store; our arguments, after the runtime's, move tritonserver to loopback behind the edge,
    # which KServe routes to as the predictor's transformer-container; the security arguments are still there.
    assert not any(a.startswith("--model-repository") for a in model["args"])
    assert model["args"][-4:] == ["--http-address=127.0.0.1", "--http-port=8085", "--grpc-address=127.0.0.1",
                                  "--grpc-port=8086"]
    assert sum(f"{ADMIN_HEADER}=$({INTERNAL_ENV})" in a for a in model["args"]) == 2  # the runtime owns the command
    assert model["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "internal-key"
    assert "http://127.0.0.1:8085" in model["readinessProbe"]["exec"]["command"]
    assert "envFrom" not in model  # the storage initializer downloads the repository: no credentials here
    [edge] = predictor.pop("containers")
    assert edge["name"] == "transformer-container" and edge["ports"][0]["containerPort"] == 8080
    cmd = edge["command"]
    assert [cmd[cmd.index(f"--{o}") + 1] for o in ("http-port", "grpc-port", "upstream-http", "upstream-grpc")] == \
        ["8080", "8081", "8085", "8086"]
    definition("io.k8s.api.core.v1.PodSpec").validate({**predictor, "containers": [{"name": "kserve-container",
                                                                                    **model}, edge]})
    assert [p["port"] for p in objects["networkpolicy.yaml"]["spec"]["ingress"][0]["ports"]] == [8080, 8081]
    validate(objects["secret.yaml"])


def test_cli_writes_manifests_image_context_and_keeps_the_key(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    keys = []
    for _ in range(2):  # writing into the same folder again keeps the keys
        r = subprocess.run([*SLSP, "deploy", "kubernetes", "--out", str(out), "--replicas", "2", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        keys.append(yaml.safe_load((out / "secret.yaml").read_text())["stringData"])
    assert keys[0] == keys[1] and len(keys[0]["admin-key"]) >= 32 and len(keys[0]["internal-key"]) >= 32
    assert keys[0]["admin-key"] != keys[0]["internal-key"]
    assert (out / "secret.yaml").stat().st_mode & 0o077 == 0
    written = json.loads(r.stdout)["manifests"]
    for f in written:
        validate(yaml.safe_load(Path(f).read_text()))
    dockerfile = (out / "image" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile and "onnxruntime==1.20.1 " in dockerfile
    assert all("==" in p for p in re.search(r"pip install --no-cache-dir (.*)", dockerfile)[1].split())  # pinned
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
    """The containers' commands as Kubernetes would run them (the Secret's files mounted), with only the mount point,
    key folder, addresses and ports mapped to this machine's: the server starts, serves, and locks the operator APIs
    with the internal key; the edge opens them to the operator's key, and the operator's key is in no argv."""
    from slsp.clients.client import SlspClient
    from slsp.export import repository

    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    ports = {n: free_port() for n in PORTS}
    # The command as the container runs it: the key read from the mounted file (here a file with the key),
    # tritonserver's final arguments printed instead of exec'd.
    objects = manifests(Cluster(), admin_key=KEY, internal_key=INTERNAL)
    c = container(objects)
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    for name, value in objects["secret.yaml"]["stringData"].items():
        (key_dir / name).write_text(value)
    script = c["command"][2].replace("$$(", "$(").replace(deploy.KEY_DIR, str(key_dir))
    script = script.replace("exec tritonserver", "printf '%s\\n'")
    argv = subprocess.run(["/bin/sh", "-c", script, "tritonserver", *c["args"]], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert sum(f"{ADMIN_HEADER}={INTERNAL}" in a for a in argv) == 2 and not any(KEY in a for a in argv)
    args = []
    for a in argv:
        a = a.replace(f"--model-repository={MOUNT}", f"--model-repository={repo}")
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
        with urllib.request.urlopen(urllib.request.Request(url, headers={ADMIN_HEADER: INTERNAL}), timeout=10) as ok:
            assert ok.status == 200
        with urllib.request.urlopen(f"{server.http_url}/metrics".replace(str(ports["http"]), str(ports["metrics"])),
                                    timeout=10) as metrics:
            assert b"nv_inference_request_success" in metrics.read()
        # The readiness probe's own command, pointed at this server, passes.
        probe = container(manifests(Cluster(), admin_key=KEY))["readinessProbe"]["exec"]["command"]
        probe = [a.replace(":8010", f":{ports['http']}") for a in probe]
        r = subprocess.run([sys.executable if a == "python3" else a for a in probe], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("ok: score"), r.stderr
        # The edge container's own command, its ports and key files mapped to this machine's: clients reach the
        # server through it, the operator's key opens the operator APIs there, the internal key does not.
        edge = objects["deployment.yaml"]["spec"]["template"]["spec"]["containers"][1]
        assert not any(KEY in a or INTERNAL in a for a in edge["command"])
        public = {"http": free_port(), "grpc": free_port()}
        mapping = {"8000": public["http"], "8001": public["grpc"], "8010": ports["http"], "8011": ports["grpc"]}
        cmd = [sys.executable if a == "python3" else str(mapping.get(a, a)).replace(deploy.KEY_DIR, str(key_dir))
               for a in edge["command"]]
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().startswith("slsp edge:")
            assert SlspClient(f"grpc://127.0.0.1:{public['grpc']}").detect(photo).score == pytest.approx(
                SlspClient(server.grpc_url).detect(photo).score)
            url = f"http://127.0.0.1:{public['http']}/v2/systemsharedmemory/status"
            with urllib.request.urlopen(urllib.request.Request(url, headers={ADMIN_HEADER: KEY}), timeout=10) as ok:
                assert ok.status == 200
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers={ADMIN_HEADER: INTERNAL}), timeout=10)
            assert refused.value.code in (401, 403)
        finally:
            proc.terminate()
            assert proc.wait(30) == 0


@pytest.mark.slow
def test_checkov_passes_the_manifests(tmp_path: Path) -> None:
    """checkov's Kubernetes checks (issue 38, finding 10) on the written manifests, offline: every check passes
    except the image digest for an image given by tag, skipped with its reason in the manifest (README). Runs where
    checkov installs from the registry into a venv of its own (its pins would fight this one's)."""
    venv = tmp_path / "checkov-venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "checkov"], capture_output=True, text=True,
                         timeout=600) if r.returncode == 0 else r
    if pip.returncode != 0:
        pytest.skip(f"checkov does not install here (no registry?): {pip.stderr[-300:]}")
    for name, extra, skipped in (("tag", [], 1), ("digest", ["--image", "r.example/slsp@sha256:" + "0" * 64], 0)):
        out = tmp_path / name
        assert subprocess.run([*SLSP, "deploy", "kubernetes", "--out", str(out), *extra], capture_output=True,
                              timeout=120).returncode == 0
        res = subprocess.run([str(venv / "bin" / "checkov"), "-d", str(out), "--framework", "kubernetes", "-o", "json",
                              "--quiet", "--skip-download"], capture_output=True, text=True, timeout=600)
        summary = json.loads(res.stdout)["summary"]
        assert summary["failed"] == 0 and summary["skipped"] == skipped and summary["passed"] >= 80, summary
