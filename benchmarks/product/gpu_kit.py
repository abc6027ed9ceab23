"""The device kit (issue 40): what a bare GPU machine lacks to serve slsp on the bundled Triton server, packed here
and unpacked there by benchmarks/product/gpu_check.sh.

A GPU machine with PyTorch, torchvision, grpcio and protobuf but no registry lacks the `tritonserver` binary, its
Python backend and their libraries (inside the nvidia-pytriton wheel, 55 MB, and `import pytriton` pulls in numpy < 2
and more), and the `tritonclient` package with the gRPC client's own needs. `pack` copies from this machine's
nvidia-pytriton install only the server tree, the backend stub of the target Python and the libraries they link
(`ldd`), as one xz tarball (26 MB), plus the client's wheels for that Python (9 MB), into a folder that git ignores
(`.kit/`, carried to the device), so the tree and the kit fit the 64 MiB a device call accepts. It also packs numpy
1.26 for that Python (8 MB xz, tests left out): the server's Python backend stub reads numpy 1.x arrays and dies on
the first request under the numpy 2 of a GPU machine's PyTorch environment (reproduced on CPU, issue 40).
`unpack` (on the GPU machine) extracts the server in the wheel's own layout (the binaries find their libraries by
their run path) and numpy into TO/stub-site, and installs the client into a site folder; `slsp serve` and
`slsp.server.Server` find the server through SLSP_TRITON_ROOT and the members' numpy through SLSP_STUB_SITE.

    python benchmarks/product/gpu_kit.py pack [--python 3.12] [--out .kit]    # here, with the serve extra
    python benchmarks/product/gpu_kit.py unpack --kit .kit --to /tmp/kit --site /tmp/site   # there
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

TARBALL = "tritonserver.tar.xz"
STUB_TARBALL = "stub-site.tar.xz"
STUB_NUMPY = "numpy==1.26.4"  # the numpy 1.x the cluster image pins too (slsp.deploy.IMAGE_PACKAGES)
PLATFORMS = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                         "manylinux_2_27_x86_64")]
CLIENT = ("tritonclient", "python-rapidjson", "grpcio", "protobuf")


def linked(files: list[Path], libs: Path) -> set[str]:
    """Names of the libraries in `libs` that `files` link, directly or through each other."""
    todo, seen = list(files), set()
    while todo:
        out = subprocess.run(["ldd", str(todo.pop())], capture_output=True, text=True).stdout
        for name in re.findall(r"^\s*(\S+) =>", out, re.M):
            if (libs / name).is_file() and name not in seen:
                seen.add(name)
                todo.append(libs / name)
    return seen


def pack(python: str, out: Path) -> dict:
    import pytriton  # the serve extra's package: the server tree is inside it

    root = Path(pytriton.__file__).parent / "tritonserver"
    libs = root.parent.parent / "nvidia_pytriton.libs"
    stub = root / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"nvidia-pytriton ships no Python backend stub for Python {python}")
    tree = [root / "bin" / "tritonserver", *sorted((root / "backends").rglob("*")), stub,
            *sorted((root / "caches").rglob("*"))]
    tree = [f for f in tree if f.is_file() and "__pycache__" not in f.parts]
    needed = sorted(linked([f for f in tree if f.suffix == ".so" or f.name in ("tritonserver", stub.name)], libs))
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / TARBALL, "w:xz", preset=9) as tar:
        for f in tree:
            tar.add(f, arcname=str(Path("pytriton", "tritonserver") / f.relative_to(root)))
        for name in needed:
            tar.add(libs / name, arcname=str(Path("nvidia_pytriton.libs") / name))
    wheels = out / "wheels"
    wheels.mkdir(exist_ok=True)
    from importlib.metadata import version

    # The gRPC client and what it needs at the versions tested here (a GPU machine's own grpcio / protobuf may be
    # older than tritonclient's generated code accepts; python-rapidjson is on few machines).
    pins = [f"{name}=={version(name)}" for name in CLIENT]
    target = ["--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp", *PLATFORMS]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", *target, "-d", str(wheels), *pins], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *target, "--target", tmp, STUB_NUMPY],
                       check=True)
        with tarfile.open(out / STUB_TARBALL, "w:xz", preset=9) as tar:
            tar.add(tmp, arcname="stub-site",
                    filter=lambda t: None if {"tests", "__pycache__"} & set(Path(t.name).parts) else t)
    info = {"python": python, "pytriton": version("nvidia-pytriton"), "client": pins, "stub_site": STUB_NUMPY,
            "files": len(tree), "libraries": needed, "tarball_bytes": (out / TARBALL).stat().st_size,
            "stub_site_bytes": (out / STUB_TARBALL).stat().st_size,
            "wheels": sorted(p.name for p in wheels.iterdir())}
    (out / "kit.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def unpack(kit: Path, to: Path, site: Path) -> Path:
    """Extract the server and the members' numpy (TO/stub-site, for SLSP_STUB_SITE) under `to` and install the
    wheels into `site`; returns the server root for SLSP_TRITON_ROOT."""
    to.mkdir(parents=True, exist_ok=True)
    for name in (TARBALL, STUB_TARBALL):
        if (kit / name).is_file():
            with tarfile.open(kit / name) as tar:
                tar.extractall(to, filter="tar")
    wheels = sorted(str(p) for p in (kit / "wheels").glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *wheels], check=True)
    return to / "pytriton" / "tritonserver"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python (its backend stub is packed)")
    p.add_argument("--out", type=Path, default=Path(".kit"))
    u = sub.add_parser("unpack")
    u.add_argument("--kit", type=Path, default=Path(".kit"))
    u.add_argument("--to", type=Path, required=True)
    u.add_argument("--site", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.python, args.out), indent=2))
    else:
        print(unpack(args.kit, args.to, args.site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
