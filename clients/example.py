"""Minimal client without torch: `python -m slsp.clients.example grpc://127.0.0.1:8001 image.jpg ...`."""

from __future__ import annotations

import sys
from pathlib import Path

from slsp.clients.client import ClientError, SlspClient


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m slsp.clients.example URL IMAGE...", file=sys.stderr)
        return 2
    client = SlspClient(argv[0])
    failed = 0
    for path, res in zip(argv[1:], client.detect_many([Path(p).read_bytes() for p in argv[1:]])):
        if isinstance(res, ClientError):
            failed += 1
            print(f"{path}\tERROR\t{type(res).__name__}: {res}")
        else:
            print(f"{path}\t{res.score:.4f}\t{'synthetic' if res.verdict else 'real'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
