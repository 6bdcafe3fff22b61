"""Denoising in a real child Python process: result, progress, cancel and failure leave no trace."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import rotated_direction, small_volume
from LDCTDenoiseLib.errors import Cancelled, LDCTError
from LDCTDenoiseLib.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.process import CANCELLED, DONE, FAILED, BackgroundDenoise
from LDCTDenoiseLib.weights import load_model


def test_child_process_denoises_like_the_engine_and_keeps_geometry(tiny_model_dir):
    volume = small_volume(direction=rotated_direction(25.0))
    run = BackgroundDenoise(volume, weights=str(tiny_model_dir), device="cpu")
    seen = []
    result = run.wait(progress=lambda done, total: seen.append((done, total)))
    assert run.state == DONE and not run.folder.exists()
    expected = VolumeDenoiser(load_model(tiny_model_dir), EngineOptions(device="cpu"))(volume.array)
    np.testing.assert_allclose(result.array, expected, atol=1e-4)
    np.testing.assert_allclose(result.direction, volume.direction, atol=1e-9)
    np.testing.assert_allclose(result.origin, volume.origin, atol=1e-6)
    assert run.fraction == 1.0 and seen[-1] == (volume.array.shape[0], volume.array.shape[0])
    assert '"device": "cpu"' in run.summary


def test_cancel_kills_the_child_and_leaves_nothing(tiny_model_dir):
    run = BackgroundDenoise(small_volume(), weights=str(tiny_model_dir), device="cpu")
    run.cancel()  # the child is still importing torch
    assert run.state == CANCELLED and run.process.returncode is not None and not run.folder.exists()
    assert run.poll() == CANCELLED
    with pytest.raises(Cancelled):
        run.result()


def test_a_failing_child_reports_its_reason(tmp_path):
    run = BackgroundDenoise(small_volume(), weights=str(tmp_path / "no-model"), device="cpu")
    with pytest.raises(LDCTError, match="no model manifest"):
        run.wait()
    assert run.state == FAILED and not run.folder.exists()
