"""One error tree: the CLI catches `SlspError` (and only it), prints the message and exits 1."""


class SlspError(Exception):
    """Base of every error slsp raises on purpose; the message says what, why and how to fix."""


class ImageError(SlspError):
    """An image could not be decoded or is outside the documented decoding policy."""


class ConfigError(SlspError):
    """A configuration value is invalid."""


class CheckpointError(SlspError):
    """A checkpoint is missing, unreadable or does not match its config."""


class ParityError(SlspError):
    """Runtimes disagree beyond the stated tolerances."""


class RuntimeMissing(SlspError):
    """An optional runtime (TensorRT, CUDA, a server) is not available here."""
