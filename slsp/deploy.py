"""Kubernetes manifests for serving an exported model repository on Triton (`slsp deploy kubernetes`).

The objects are built as data and written as YAML, one file each, so `kubectl apply -f DIR` applies them: a Secret
(the key that unlocks Triton's operator APIs), then either a Deployment of `tritonserver` with its Service and
HorizontalPodAutoscaler, or (`kserve`) one InferenceService on KServe's Triton runtime. The container runs the
image written beside them (`image/Dockerfile`): the NGC Triton release of the bundled server plus Pillow, ONNX
Runtime and this slsp package, which the Python-backend members import. The server's arguments are the bundled
server's (`slsp.server.triton_args`).

Clients reach tritonserver only through the edge (slsp/edge.py), a second container of the pod, as under
`slsp serve`. The Secret holds two keys: the operator's (`admin-key`), mounted into the edge alone, and the one
tritonserver is started with (`internal-key`), which the edge puts in place of the operator's. tritonserver takes
its key on its command line only, so the internal key is in its argv (inside its own container) and the
operator's is in none; the edge refuses the internal key from outside.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml

import slsp
from slsp import contract
from slsp.canary import CANARY_FAILURES
from slsp.contract import ADMIN_HEADER
from slsp.errors import SlspError
from slsp.server import ADMIN_APIS, HEADER_ALLOWANCE, TRITON_IMAGE, triton_args

MOUNT = "/models"  # where a volume-backed repository is mounted
# KServe: the edge is the predictor's `transformer-container` (KServe routes the InferenceService to its first port);
# tritonserver moves to loopback ports its runtime's arguments are overridden with.
KSERVE_PORTS = {"http": 8080, "grpc": 8081}
KSERVE_INNER = {"http": 8085, "grpc": 8086}
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Where tritonserver listens inside the pod (loopback): clients reach it through the edge container on PORTS
# (slsp/edge.py: tritonserver 2.51 can be crashed by cancelled gRPC calls and inflates compressed bodies unchecked).
INNER = {"http": 8010, "grpc": 8011}
OBJECT_STORES = ("s3://", "gs://", "as://")  # repositories Triton reads from object storage itself
KUBERNETES = "1.30"  # the API version the manifests are written (and validated in tests) for
INTERNAL_ENV = "SLSP_INTERNAL_KEY"  # KServe's model container only: its runtime owns the command (inference_service)
KEY_DIR = "/var/run/secrets/slsp"  # the keys as files (mounted from the Secret), never an environment variable
ADMIN_FILE, INTERNAL_FILE = "admin-key", "internal-key"  # the Secret's keys, and their file names under KEY_DIR
NON_ROOT = 10001  # above the host's user range (checkov CKV_K8S_40); the image's files are world-readable
# The image's Python packages, pinned: the NGC image's Python is 3.10 (tritonserver 2.51).
# c2pa-python: the decode member reads provenance; grpcio: the edge container's (python3 -m slsp.edge).
IMAGE_PACKAGES = {t: ("numpy==1.26.4", "pillow==11.0.0", ort, "c2pa-python==0.38.1", "grpcio==1.67.1")
                  for t, ort in (("cpu", "onnxruntime==1.20.1"), ("gpu", "onnxruntime-gpu==1.20.1"))}
# The packages the image needs: the Python-backend members import these (never torch: AOTI repositories are refused).
PACKAGES = ("slsp", "slsp.families", "slsp.families.fluct", "slsp.families.recipe", "slsp.export",
            "slsp.export.triton")


@dataclass(frozen=True)
class Cluster:
    """Where and how the repository is served; the defaults are a small CPU deployment."""

    repository: str = "pvc://slsp-model-repository"  # pvc://CLAIM[/PATH], or s3:// / gs:// / as:// URI
    target: str = "cpu"
    name: str = "slsp"
    namespace: str = "slsp"  # its own (namespace.yaml), never "default"
    ingress_namespace: str = "ingress-nginx"  # the only namespace whose pods may reach 8000/8001 (NetworkPolicy)
    metrics_namespace: str = "monitoring"  # the only namespace whose pods may reach 8002 (Prometheus)
    image: str = ""  # default: slsp-triton:VERSION-TARGET, built from image/Dockerfile
    replicas: int = 1
    max_replicas: int = 4
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 1  # per pod, for target gpu
    repository_secret: str | None = None  # a Secret with the object store's credentials (AWS_*, GOOGLE_*, AZURE_*)
    poll_seconds: int = 30
    cpu_utilization: int = 70  # the autoscaler's target, percent of the CPU request
    max_bytes: int = 64 << 20  # the repository's largest image (`slsp export --max-bytes`): the edge's body limit

    def __post_init__(self) -> None:
        if self.target not in ("cpu", "gpu"):
            raise SlspError(f"--target must be 'cpu' or 'gpu', got {self.target!r}")
        if not self.repository.startswith(("pvc://", *OBJECT_STORES)):
            raise SlspError(f"--repository-uri must start with pvc://, {', '.join(OBJECT_STORES)}; got "
                            f"{self.repository!r}")
        if not 1 <= self.replicas <= self.max_replicas:
            raise SlspError(f"need 1 <= --replicas ({self.replicas}) <= --max-replicas ({self.max_replicas})")
        if self.namespace == "default":
            raise SlspError("--namespace default: give slsp a namespace of its own (its NetworkPolicy and budget "
                            "apply per namespace)")

    @property
    def pinned(self) -> bool:
        """Whether the image is pinned by digest (REPO@sha256:...), as a cluster should pull it."""
        return "@sha256:" in self.container_image

    @property
    def container_image(self) -> str:
        return self.image or f"slsp-triton:{slsp.__version__}-{self.target}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "triton"}

    def meta(self, name: str, **extra: Any) -> dict:
        return {"name": name, "namespace": self.namespace, "labels": self.labels, **extra}


def secret_name(c: Cluster) -> str:
    return f"{c.name}-admin"


def admin_secret(c: Cluster, key: str, internal: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": c.meta(secret_name(c)), "type": "Opaque",
            "stringData": {ADMIN_FILE: key, INTERNAL_FILE: internal}}


def server_args(c: Cluster, admin_key: str | None = None) -> list[str]:
    """The container's tritonserver arguments: HTTP and gRPC on loopback (INNER, behind the edge container), the
    metrics on all addresses, polling for new versions, and (with `admin_key`) the operator APIs locked with it.
    The Deployment leaves the key out: `LAUNCH` adds it from the mounted Secret."""
    repo = c.repository if c.repository.startswith(OBJECT_STORES) else MOUNT
    return triton_args(repo, "127.0.0.1", INNER["http"], INNER["grpc"], PORTS["metrics"], "poll", c.poll_seconds,
                       admin_key=admin_key, metrics_host="0.0.0.0")


# The Deployment's command: the internal key read from the mounted Secret file, the operator APIs locked with it,
# then tritonserver with the container's arguments ("$@"). `$$(` is Kubernetes' escape for a literal `$(`.
LAUNCH = (f'key=$$(cat {KEY_DIR}/{INTERNAL_FILE}) && exec tritonserver "$@" '
          f'"--http-restricted-api={",".join(ADMIN_APIS)}:{ADMIN_HEADER}=$key" '
          f'"--grpc-restricted-protocol={",".join(ADMIN_APIS)}:{ADMIN_HEADER}=$key"')


def _pvc(c: Cluster) -> tuple[str, str]:
    claim, _, sub = c.repository.removeprefix("pvc://").partition("/")
    return claim, sub


def _container(c: Cluster, args: list[str], ports: tuple[str, ...], credentials: bool = True) -> dict:
    """`ports`: the names of PORTS it serves. `credentials`: the object store's Secret as environment (the server
    reads the repository itself; not under KServe, whose storage initializer downloads it)."""
    limits = {"cpu": c.cpu, "memory": c.memory}
    if c.target == "gpu":
        limits["nvidia.com/gpu"] = str(c.gpus)
    container = {
        "image": c.container_image,
        "imagePullPolicy": "Always",
        "args": args,
        "resources": {"requests": {"cpu": c.cpu, "memory": c.memory}, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if c.repository_secret and credentials:
        container["envFrom"] = [{"secretRef": {"name": c.repository_secret}}]
    if ports:
        container["ports"] = [{"name": n, "containerPort": PORTS[n], "protocol": "TCP"} for n in ports]
    return container


def key_volume(c: Cluster, name: str, *keys: str) -> tuple[dict, dict]:
    """A volume of the Secret's `keys`, each a read-only file under KEY_DIR, and its mount."""
    volume = {"name": name, "secret": {"secretName": secret_name(c), "defaultMode": 0o400,
                                       "items": [{"key": k, "path": k} for k in keys]}}
    return volume, {"name": name, "mountPath": KEY_DIR, "readOnly": True}


def _volumes(c: Cluster, pvc: bool, key_file: bool = True) -> tuple[list[dict], list[dict]]:
    """Writable /tmp and a RAM-backed /dev/shm (the Python backend's tensors travel through it) on a read-only root,
    tritonserver's internal key as a read-only file (`key_file`), plus the repository's claim, read-only."""
    volumes = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
               {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    if key_file:
        volume, mount = key_volume(c, "internal-key", INTERNAL_FILE)
        volumes.append(volume)
        mounts.append(mount)
    if pvc:
        claim, sub = _pvc(c)
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "models", "mountPath": MOUNT, "readOnly": True, **({"subPath": sub} if sub else {})})
    return volumes, mounts


def _pod_security(c: Cluster) -> dict:
    pod = {"automountServiceAccountToken": False,
           "securityContext": {"runAsNonRoot": True, "runAsUser": NON_ROOT, "runAsGroup": NON_ROOT,
                               "fsGroup": NON_ROOT, "seccompProfile": {"type": "RuntimeDefault"}}}
    if c.target == "gpu":
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return pod


PROMETHEUS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]),
              "prometheus.io/path": "/metrics"}


def canary_probes(http_port: int) -> dict:
    """Readiness and liveness from a canary inference through the whole ensemble (slsp/canary.py): Triton's own
    ready endpoint stays 200 while a stalled member hangs every request. Not ready while busy or stalled,
    CANARY_FAILURES checks in a row (traffic goes to other pods); restarted only when stalled as many times (a busy
    pod, its queue full or its canary slow while other requests complete, is never restarted)."""
    command = ["python3", "-m", "slsp.canary", "--url", f"http://127.0.0.1:{http_port}", "--timeout", "6"]
    probe = {"timeoutSeconds": 15, "failureThreshold": CANARY_FAILURES}
    return {"readinessProbe": {"exec": {"command": [*command, "--ready"]}, **probe, "periodSeconds": 10},
            "livenessProbe": {"exec": {"command": command}, **probe, "periodSeconds": 20}}


READY = ("import sys, urllib.request as u; "
         "sys.exit(u.urlopen('http://127.0.0.1:%d/v2/health/ready', timeout=4).status != 200)")


def edge_container(c: Cluster, name: str = "edge", ports: dict[str, int] = PORTS,
                   inner: dict[str, int] = INNER) -> dict:
    """The edge (slsp/edge.py) on the public HTTP and gRPC `ports`, forwarding to tritonserver on loopback `inner`
    in the same pod. It reads both keys from the Secret's files (volume `keys`): a request with the operator's key
    goes upstream with the internal one; any other key value is dropped."""
    container = _container(c, [], ports=(), credentials=False)
    del container["args"]
    container["ports"] = [{"name": n, "containerPort": ports[n], "protocol": "TCP"} for n in ("http", "grpc")]
    # Bodies are held whole while forwarded: up to its workers' worth of max_bytes.
    container["resources"] = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    return {
        "name": name,
        "command": ["python3", "-m", "slsp.edge", "--host", "0.0.0.0", "--http-port", str(ports["http"]),
                    "--grpc-port", str(ports["grpc"]), "--upstream-http", str(inner["http"]),
                    "--upstream-grpc", str(inner["grpc"]), "--max-body", str(c.max_bytes + HEADER_ALLOWANCE),
                    "--admin-key-file", f"{KEY_DIR}/{ADMIN_FILE}", "--internal-key-file", f"{KEY_DIR}/{INTERNAL_FILE}"],
        **container,
        "volumeMounts": [key_volume(c, "keys", ADMIN_FILE, INTERNAL_FILE)[1]],
        "readinessProbe": {"tcpSocket": {"port": ports["http"]}, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": ports["grpc"]}, "periodSeconds": 20},
    }


def deployment(c: Cluster) -> dict:
    container = {
        "name": "tritonserver",
        "command": ["/bin/sh", "-c", LAUNCH, "tritonserver"],
        **_container(c, server_args(c), ports=("metrics",)),
        # Loading and warming the members takes a while; until then only the startup probe runs (up to 5 minutes).
        "startupProbe": {"exec": {"command": ["python3", "-c", READY % INNER["http"]]}, "periodSeconds": 5,
                         "timeoutSeconds": 5, "failureThreshold": 60},
        **canary_probes(INNER["http"]),
    }
    volumes, container["volumeMounts"] = _volumes(c, pvc=c.repository.startswith("pvc://"))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": c.meta(c.name, **_unpinned(c)),
        "spec": {
            "replicas": c.replicas,
            "selector": {"matchLabels": c.labels},
            # A new pod serves before an old one goes: no capacity lost while the image or settings roll out.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": c.labels, "annotations": PROMETHEUS},
                "spec": {**_pod_security(c), "terminationGracePeriodSeconds": 30,
                         "containers": [container, edge_container(c)],
                         "volumes": [*volumes, key_volume(c, "keys", ADMIN_FILE, INTERNAL_FILE)[0]]},
            },
        },
    }


def _unpinned(c: Cluster) -> dict:
    """For an image given by tag (the default, built by the user from image/Dockerfile before it has a digest), the
    checkov skip of the digest check with the reason; none for an image pinned by digest."""
    if c.pinned:
        return {}
    return {"annotations": {"checkov.io/skip1": "CKV_K8S_43=the image is built from image/Dockerfile by the user; "
                                                "pass --image REPO@sha256:DIGEST once it is pushed"}}


def namespace(c: Cluster) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": c.namespace, "labels": c.labels}}


def network_policy(c: Cluster, public: dict[str, int] = PORTS) -> dict:
    """Only the ingress controller's namespace reaches the edge's HTTP and gRPC ports (`public`), only Prometheus's
    the metrics; nothing else reaches the pods (the probes are exec, or the kubelet's own TCP checks of the edge)."""
    def source(ns: str, *ports: int) -> dict:
        return {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}],
                "ports": [{"protocol": "TCP", "port": p} for p in ports]}

    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": c.meta(c.name),
            "spec": {"podSelector": {"matchLabels": c.labels}, "policyTypes": ["Ingress"],
                     "ingress": [source(c.ingress_namespace, public["http"], public["grpc"]),
                                 source(c.metrics_namespace, PORTS["metrics"])]}}


def disruption_budget(c: Cluster) -> dict:
    """Voluntary evictions (node drains, upgrades) take one pod at a time."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": c.meta(c.name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": c.labels}}}


def service(c: Cluster) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": c.meta(c.name, annotations=PROMETHEUS),
        "spec": {"type": "ClusterIP", "selector": c.labels,
                 "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in PORTS.items()]},
    }


def autoscaler(c: Cluster) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": c.meta(c.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": c.name},
            "minReplicas": c.replicas,
            "maxReplicas": c.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": c.cpu_utilization}}}],
        },
    }


def inference_service(c: Cluster) -> dict:
    """KServe's Triton runtime (`kserve-tritonserver`) with the edge collocated as the predictor's
    `transformer-container`, which KServe routes to. KServe copies `storageUri` to /mnt/models and gives the
    model store; the runtime's arguments come first and ours after them (KServe concatenates; tritonserver keeps
    an option's last value), moving HTTP and gRPC to loopback behind the edge."""
    skip = ("--model-repository=", "--http-", "--grpc-address", "--grpc-port", "--metrics-address",
            "--model-control-mode", "--repository-poll-secs")
    # KServe's runtime owns the command, so the internal key comes as an environment variable it substitutes.
    args = [a for a in server_args(c, f"$({INTERNAL_ENV})") if not a.startswith(skip) or "restricted" in a]
    args += [f"--{p}-{k}" for p in ("http", "grpc") for k in ("address=127.0.0.1", f"port={KSERVE_INNER[p]}")]
    model = {"modelFormat": {"name": "triton"}, "runtime": "kserve-tritonserver", "protocolVersion": "v2",
             "storageUri": c.repository, **_container(c, args, ports=(), credentials=False),
             "env": [{"name": INTERNAL_ENV,
                      "valueFrom": {"secretKeyRef": {"name": secret_name(c), "key": INTERNAL_FILE}}}],
             **canary_probes(KSERVE_INNER["http"])}
    volumes, model["volumeMounts"] = _volumes(c, pvc=False, key_file=False)
    edge = edge_container(c, "transformer-container", KSERVE_PORTS, KSERVE_INNER)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": c.meta(c.name, annotations=PROMETHEUS),
        "spec": {"predictor": {"minReplicas": c.replicas, "maxReplicas": c.max_replicas, "scaleMetric": "cpu",
                               "scaleTarget": c.cpu_utilization, **_pod_security(c),
                               "volumes": [*volumes, key_volume(c, "keys", ADMIN_FILE, INTERNAL_FILE)[0]],
                               "model": model, "containers": [edge]}},
    }


def manifests(c: Cluster, kserve: bool = False, admin_key: str | None = None,
              internal_key: str | None = None) -> dict[str, dict]:
    """File name -> object. New random keys unless given."""
    objects = {"namespace.yaml": namespace(c),
               "secret.yaml": admin_secret(c, admin_key or secrets.token_urlsafe(32),
                                           internal_key or secrets.token_urlsafe(32))}
    if kserve:
        objects["inferenceservice.yaml"] = inference_service(c)
    else:
        objects.update({"deployment.yaml": deployment(c), "service.yaml": service(c), "hpa.yaml": autoscaler(c),
                        "pdb.yaml": disruption_budget(c)})
    objects["networkpolicy.yaml"] = network_policy(c, KSERVE_PORTS if kserve else PORTS)
    return objects


def dockerfile(c: Cluster) -> str:
    return (
        f"# The slsp serving image: {TRITON_IMAGE} (tritonserver 2.51, as bundled with nvidia-pytriton) plus what the\n"
        "# Python-backend members import. Build it beside this file and push it where the cluster pulls from:\n"
        f"#   docker build -t REGISTRY/{c.container_image} . && docker push REGISTRY/{c.container_image}\n"
        f"FROM {TRITON_IMAGE}\n"
        f"RUN pip install --no-cache-dir {' '.join(IMAGE_PACKAGES[c.target])}\n"
        "COPY slsp /opt/slsp/slsp\n"
        "RUN python3 -m compileall -q /opt/slsp\n"
        "ENV SLSP_PYTHONPATH=/opt/slsp PYTHONPATH=/opt/slsp\n"
        f"USER {NON_ROOT}\n"
    )


def copy_package(dst: Path) -> None:
    """The installed slsp packages the members import, as one tree under `dst` (editable and wheel installs alike:
    slsp.export lives in export/ in a checkout)."""
    for name in PACKAGES:
        src = Path(import_module(name).__path__[0])
        out = dst.joinpath(*name.split("."))
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.suffix == ".py":
                shutil.copy2(f, out / f.name)


def check_repository(repo: Path, target: str | None = None) -> str:
    """A local repository's target, after checking it is of `target` (when given) and serves a TrSOR the image can
    run (no torch in it)."""
    from slsp.export import repository

    decode = Path(repo) / repository.DECODE / "config.pbtxt"
    if not decode.is_file():
        raise SlspError(f"{repo}: not a model repository written by `slsp export --repo`")
    served = "cpu" if repository.read_config(Path(repo) / repository.MODEL / "config.pbtxt").backend == "python" \
        else "gpu"
    if target not in (None, served):
        raise SlspError(f"{repo} was exported for --target {served}, not {target}")
    trsor = repository.read_config(decode).parameters["trsor_file"].string_value
    if trsor == contract.WEIGHTS:
        raise SlspError(f"{repo} is a gpu-python repository (its members run PyTorch, for the bundled server on a GPU "
                        "machine); the cluster image serves --target cpu or gpu: export one of those")
    if trsor.endswith(".pt2"):
        raise SlspError(f"{repo} serves the AOTInductor TrSOR ({trsor}), which needs torch in the image; export the "
                        "repository without --aoti (or with --native on the cluster's CPU type)")
    return served


class _Dumper(yaml.SafeDumper):
    """Objects shared between manifests (labels, probes) are written out in full, never as YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write(c: Cluster, out: Path, kserve: bool = False) -> list[Path]:
    """Write the manifests and the image's build context under `out`; returns the manifest files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = out / "secret.yaml"  # written before: keep its keys, so applying again does not lock out the running pods
    keys = yaml.safe_load(old.read_text())["stringData"] if old.is_file() else {}
    written = []
    for name, obj in manifests(c, kserve, keys.get(ADMIN_FILE), keys.get(INTERNAL_FILE)).items():
        text = yaml.dump(obj, Dumper=_Dumper, sort_keys=False)
        if name == "secret.yaml":  # created 0600, written to a new file and renamed in: never readable by others
            tmp = out / f".{name}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, out / name)
        else:
            (out / name).write_text(text)
        written.append(out / name)
    image = out / "image"
    shutil.rmtree(image, ignore_errors=True)
    copy_package(image)
    (image / "Dockerfile").write_text(dockerfile(c))
    return written

