"""Run the `tritonserver` binary shipped in the nvidia-pytriton wheel (CPU, no Docker) on a model repository.

The wheel carries the server, the Python backend and one backend stub per Python version; we assemble a
backend folder for the running interpreter, put the wheel's bundled libraries on LD_LIBRARY_PATH and our
site-packages on PYTHONPATH, bind to 127.0.0.1 unless told otherwise, and stop with SIGINT then kill.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import slsp
from slsp.contract import ADMIN_HEADER
from slsp.errors import RuntimeMissing, SlspError

PR_SET_PDEATHSIG = 1
MODEL_CONTROL = ("none", "poll", "explicit")  # Triton's --model-control-mode values
# Why `slsp serve` puts its edge (slsp/edge.py) in front of the bundled tritonserver (2.51 = NGC 24.10).
EXPOSED_RISK = ("tritonserver 2.51 can crash (SIGSEGV) when gRPC calls are cancelled while its queue is full "
                "(triton-inference-server/server#7368, fixed in 24.12 by #7840 and #7880) and inflates compressed "
                "requests before any size limit (bounded upstream by #8570)")
HEADER_ALLOWANCE = 1 << 20  # what the edge accepts beyond an image's max_bytes: the JSON inference header
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # the NGC release of the bundled tritonserver (2.51)
# APIs that only an operator should reach: behind contract.ADMIN_HEADER when restricted (`triton_args(admin_key=)`).
ADMIN_APIS = ("shared-memory", "model-repository", "logging", "trace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytriton_root() -> Path:
    """The tritonserver tree: SLSP_TRITON_ROOT where set (the device kit, benchmarks/product/gpu_kit.py, in the wheel's
    layout), else the one inside the installed nvidia-pytriton wheel."""
    if os.environ.get("SLSP_TRITON_ROOT"):
        root = Path(os.environ["SLSP_TRITON_ROOT"])
    else:
        try:
            import pytriton
        except ImportError as e:
            raise RuntimeMissing("the bundled Triton server needs nvidia-pytriton: pip install 'slsp[serve]'") from e
        root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise RuntimeMissing(f"no tritonserver binary in {root} (nvidia-pytriton install incomplete?)")
    return root


STUB_SITE = "SLSP_STUB_SITE"  # a folder with numpy 1.x for the members, where the serving Python has numpy 2


def _numpy_major(site: str | None = None) -> int | None:
    """The major version of the numpy installed in `site` (None: none there), or of this interpreter's."""
    if site is None:
        import numpy

        return int(numpy.__version__.split(".")[0])
    from importlib.metadata import distributions

    found = [d.version for d in distributions(name="numpy", path=[site])]
    return int(found[0].split(".")[0]) if found else None


def member_numpy_site() -> list[str]:
    """What goes first on the Python-backend members' path so that they import a numpy the bundled stub reads
    (slsp.onnxrt.STUB_NUMPY_MAJOR): SLSP_STUB_SITE where set, nothing where this interpreter's numpy will do. A GPU
    machine's PyTorch environment often has numpy 2; there, without SLSP_STUB_SITE, a clear error before starting."""
    from slsp.onnxrt import STUB_NUMPY_MAJOR

    site = os.environ.get(STUB_SITE)
    if site:
        major = _numpy_major(site)
        if major != STUB_NUMPY_MAJOR:
            raise RuntimeMissing(f"{STUB_SITE}={site} holds " + (f"numpy {major}.x" if major else "no numpy") +
                                 f"; the bundled server's Python backend needs numpy {STUB_NUMPY_MAJOR}.x there "
                                 "(pip install --target DIR 'numpy<2')")
        return [site]
    if _numpy_major() != STUB_NUMPY_MAJOR:
        raise RuntimeMissing(f"this Python has numpy {_numpy_major()}.x; the bundled server's Python backend stub "
                             f"reads numpy {STUB_NUMPY_MAJOR}.x arrays (with numpy 2 it dies on the first request). "
                             f"pip install --target DIR 'numpy<2', then set {STUB_SITE}=DIR")
    return []


def triton_args(repository: str, host: str, http_port: int, grpc_port: int, metrics_port: int,
                model_control: str = "none", poll_seconds: int = 2, admin_key: str | None = None,
                metrics_host: str | None = None) -> list[str]:
    """tritonserver's arguments, for the bundled server and a cluster's container alike (`slsp.deploy`).

    repository: a folder or an object-store URI (s3://, gs://, as://). admin_key: ADMIN_APIS answer only requests
    whose ADMIN_HEADER carries this value. metrics_host: where the metrics listen, when not on `host` (behind
    the edge, HTTP and gRPC listen on loopback and the metrics where Prometheus reaches them).
    """
    args = [
        f"--model-repository={repository}",
        f"--http-address={host}", f"--http-port={http_port}",
        f"--grpc-address={host}", f"--grpc-port={grpc_port}",
        f"--metrics-address={metrics_host or host}", f"--metrics-port={metrics_port}",
        "--backend-config=python,shm-default-byte-size=16777216",
        "--backend-config=python,shm-growth-byte-size=16777216",
        "--exit-on-error=true", "--strict-readiness=true", "--log-verbose=0",
        f"--model-control-mode={model_control}",
    ]
    if model_control == "poll":
        args.append(f"--repository-poll-secs={poll_seconds}")
    if model_control == "explicit":
        args.append("--load-model=*")
    if admin_key is not None:
        restricted = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={admin_key}"
        args += [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]
    return args


def _die_with_parent() -> None:
    """Runs in the child: the kernel sends SIGTERM to the server if the parent process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Server:
    """A running tritonserver; use as a context manager or call `stop()`."""

    repo: Path
    host: str = "127.0.0.1"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path | None = None
    model_control: str = "none"  # one of MODEL_CONTROL
    poll_seconds: int = 2
    args: list[str] | None = None  # tritonserver's arguments as given (a manifest's); default: `triton_args`
    admin_key: str | None = None  # restrict ADMIN_APIS to requests carrying this key (None: unrestricted)
    metrics_host: str | None = None  # the metrics' bind address (None: `host`)
    proc: subprocess.Popen | None = None
    _tmp: Path | None = None
    _regions: set[Path] = field(default_factory=set)  # every shared-memory region seen while it ran

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    def command(self, backend_dir: Path) -> list[str]:
        args = self.args or triton_args(str(Path(self.repo).resolve()), self.host, self.http_port, self.grpc_port,
                                        self.metrics_port, self.model_control, self.poll_seconds, self.admin_key,
                                        self.metrics_host)
        return [str(pytriton_root() / "bin" / "tritonserver"), *args, f"--backend-directory={backend_dir}"]

    def environment(self) -> dict[str, str]:
        root = pytriton_root()
        libs = [str(root.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        paths = [*member_numpy_site(), str(Path(slsp.__file__).resolve().parent.parent), *sys.path]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")])
        env["SLSP_PYTHONPATH"] = os.pathsep.join(p for p in paths if p and Path(p).is_dir())
        return env

    def backend_dir(self) -> Path:
        """backends/python = the wheel's python backend + the stub built for this interpreter."""
        root = pytriton_root()
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeMissing(f"nvidia-pytriton ships no Python backend stub for Python {ver}")
        self._tmp = Path(tempfile.mkdtemp(prefix="slsp-triton-"))
        py = self._tmp / "backends" / "python"
        py.mkdir(parents=True)
        for f in (root / "backends" / "python").iterdir():
            if f.is_file():
                (py / f.name).symlink_to(f)
        (py / stub.name).symlink_to(stub)
        return self._tmp / "backends"

    def start(self, timeout: float = 120.0, log=None) -> "Server":
        if not Path(self.repo).is_dir():
            raise SlspError(f"{self.repo}: no model repository (run `slsp export --repo {self.repo}` first)")
        out = log if log is not None else (open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            self.command(self.backend_dir()), env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.private_shm()
        return self

    def private_shm(self) -> None:
        """Make the Python backend's shared-memory regions readable by this user only (the backend creates them
        0644, whatever the umask), and record them, so `stop` removes them even after the server died by itself
        (then /proc no longer lists them). A region appears per member instance: call again after models
        (re)load."""
        regions = self.shm_regions()
        self._regions.update(regions)
        for region in regions:
            try:
                region.chmod(0o600)
            except OSError:  # gone in between (a member unloaded)
                pass

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SlspError(
                    f"tritonserver exited with code {self.proc.returncode} before it was ready{self._log_hint()}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise SlspError(f"tritonserver was not ready after {timeout:.0f} s{self._log_hint()}")

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the server log ('' when it is not saved to a file)."""
        if self.log_path and Path(self.log_path).is_file():
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _log_hint(self) -> str:
        tail = self.log_tail()
        return f"; last log lines:\n{tail}" if tail else ""

    def shm_regions(self) -> list[Path]:
        """The Python backend's shared-memory files mapped by the running server."""
        if self.proc is None:
            return []
        try:
            maps = Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:  # exited already, or no /proc (not Linux)
            return []
        return sorted({Path(p) for p in re.findall(r"/dev/shm/triton_python_backend_shm_region_\S+", maps)})

    def stop(self, grace: float = 15.0) -> None:
        """SIGINT, then SIGKILL after `grace` s, or at once if this wait is itself interrupted (a second Ctrl-C or
        SIGTERM); then any process left in the server's group (a stalled backend stub) is killed too, and the shared
        memory a killed server could not unlink and the backend folder are removed."""
        regions = set(self._regions)
        try:
            if self.proc is not None and self.proc.poll() is None:
                regions.update(self.shm_regions())
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(grace)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
        finally:
            if self.proc is not None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the group outlives its leader: stubs stay in it
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait()
            for region in regions:
                region.unlink(missing_ok=True)
            self._regions.clear()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> "Server":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def docker_command(repo: Path, image: str = TRITON_IMAGE) -> list[str]:
    """The NGC container command for the GPU repository (the container matching tritonserver 2.51).

    The Python-backend models need this `slsp` package (mounted read-only, found through SLSP_PYTHONPATH
    as with the bundled server) plus Pillow and ONNX Runtime, which the container does not ship.
    """
    repo = Path(repo).resolve()
    package = Path(slsp.__file__).resolve().parent
    return [
        "docker", "run", "--rm", "--gpus=all", "--shm-size=1g",
        "-p127.0.0.1:8000:8000", "-p127.0.0.1:8001:8001", "-p127.0.0.1:8002:8002",
        "-v", f"{repo}:/models:ro", "-v", f"{package}:/opt/slsp/slsp:ro", "-e", "SLSP_PYTHONPATH=/opt/slsp", image,
        "bash", "-c", "pip install pillow onnxruntime-gpu && exec tritonserver --model-repository=/models",
    ]
