"""Triton clients for the `slsp` ensemble (numpy + tritonclient, no torch): `from slsp.clients import SlspClient`."""

from slsp.clients.client import (
    AccessDenied,
    ClientError,
    InvalidInput,
    RequestTimeout,
    Result,
    ServerError,
    ServerUnavailable,
    SlspClient,
)

__all__ = [
    "AccessDenied", "ClientError", "InvalidInput", "RequestTimeout", "Result", "ServerError", "ServerUnavailable",
    "SlspClient",
]
