"""The live server as a parity runtime: images go over the wire PNG-encoded (lossless), outputs come back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from slsp import contract
from slsp.clients.client import SlspClient


class ServerRunner:
    # The server decodes and applies the model's canonical transform itself: the parity gate compares it with the
    # reference run on the transformed image.
    end_to_end = True

    def __init__(self, url: str) -> None:
        self.client = SlspClient(url)
        self.name = f"server-{self.client.protocol}"

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        buf = io.BytesIO()
        Image.fromarray(feed[contract.IMAGE]).save(buf, format="PNG")
        r = self.client.detect(buf.getvalue())
        # Result's fields are contract.RESULT by name.
        return {t.name: np.asarray(getattr(r, t.name), t.dtype) for t in contract.RESULT}
