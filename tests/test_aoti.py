"""The AOTInductor-compiled TrSOR (trsor.pt2) against PyTorch eager: same crops, masks and positions at every
size class, including the smallest legal image and sizes that are no multiple of the crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import aoti_package, real_photo, synthetic_photo
from slsp import contract
from slsp import detector as det_io
from slsp.errors import RuntimeMissing
from slsp.export import torch2aoti

DET = det_io.load()


@pytest.fixture(scope="module")
def runner(served_artifacts: Path) -> torch2aoti.AotiRunner:
    return torch2aoti.AotiRunner(aoti_package(served_artifacts))


def eager(image: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = DET.trsor(torch.from_numpy(image))
    return {n: getattr(out, n).numpy() for n in contract.TRSOR.output_names}


@pytest.mark.parametrize("size", [(64, 64), (65, 99), (129, 64), (200, 333), (128, 192)])
def test_matches_eager_at_odd_sizes(runner: torch2aoti.AotiRunner, size: tuple[int, int]) -> None:
    image = synthetic_photo(*size, seed=sum(size))
    got, want = runner.infer({"image": image}), eager(image)
    for name in ("crops", "crop_phi", "positions", "valid"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} at {size}")
    np.testing.assert_allclose(got["sigma"], want["sigma"], rtol=1e-4)


@pytest.mark.parametrize("name", ["kodim13", "kodim01", "kodim03 as jpeg"])
def test_matches_eager_on_real_photos(runner: torch2aoti.AotiRunner, name: str) -> None:
    image = real_photo(name)
    got, want = runner.infer({"image": image}), eager(image)
    for key in ("crops", "crop_phi", "positions", "valid"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_allclose(got["sigma"], want["sigma"], rtol=1e-4)


def test_thread_count_is_restored(served_artifacts: Path) -> None:
    before = torch.get_num_threads()
    torch2aoti.AotiRunner(aoti_package(served_artifacts), threads=1).infer({"image": synthetic_photo(64, 80)})
    assert torch.get_num_threads() == before


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeMissing, match="--aoti"):
        torch2aoti.AotiRunner(tmp_path / contract.TRSOR_AOTI)
