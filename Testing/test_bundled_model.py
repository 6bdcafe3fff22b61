"""The bundled model: it loads with its checksum, says what it is, and denoises held-out real CT."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.sweep import flat_noise_hu, flat_soft_tissue
from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE, psnr
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.io import Volume, read_volume
from LDCTDenoiseLib.models.weights import DEFAULT_MODEL, MANIFEST_NAME, load_model
from LDCTDenoiseLib.resources import resources_dirs
from LDCTDenoiseLib.simulation import ProjectionNoise, ScannerNoise, scanner_noise_hu, simulate_low_dose


@pytest.fixture
def bundled():
    for folder in resources_dirs():
        manifest = folder / "Models" / DEFAULT_MODEL / MANIFEST_NAME
        if manifest.is_file():
            return manifest.parent
    pytest.skip("no model bundled in Resources/Models/default")


def test_bundled_model_loads_and_documents_itself(bundled):
    model = load_model(bundled)  # verifies the SHA-256
    provenance = model.manifest["provenance"]
    assert provenance["stage"] in ("stage1", "stage2") and provenance["steps"] > 0
    assert model.generator.config.base_width == 32
    card = (bundled / "MODEL_CARD.md").read_text()
    assert "not clinically validated" in card.lower() and "LIDC-IDRI-0003" in card


def test_bundled_model_lowers_the_error_on_the_held_out_series(bundled, shared_ct):
    series = read_volume(shared_ct / "lidc-idri" / "LIDC-IDRI-0003")
    normal = Volume(series.array[5:7].copy(), series.spacing, series.origin, series.direction)
    low = simulate_low_dose(normal, ProjectionNoise(dose_fraction=0.25), seed=7).array
    denoised = VolumeDenoiser(load_model(bundled), EngineOptions(device="cpu", compile="off"))(
        low, header_kernel=series.metadata["convolution_kernel"])
    body = normal.array > -500
    error = lambda volume: float(np.sqrt(np.mean((volume - normal.array)[body] ** 2)))  # noqa: E731
    assert error(denoised) < 0.8 * error(low)


def test_bundled_model_removes_scanner_noise_on_a_vendor_it_never_saw(bundled, shared_ct):
    """Philips thorax-141 is in no training split; the noise is the sweep's sharp-filter, strong-streak
    recipe at 80 HU added (photon starvation, electronic noise), not the training draw."""
    series = read_volume(shared_ct / "thorax-141")
    ndct = series.array[70].astype(np.float32)
    scan = ScannerNoise(added_noise_hu=80.0, filter="ramp", cutoff=1.0, views=984, electronic_std=30.0,
                        bowtie=3.0, modulation=0.0)
    low = ndct + scanner_noise_hu(ndct, float(series.spacing[0]), scan, np.random.default_rng(11))
    denoised = VolumeDenoiser(load_model(bundled), EngineOptions(device="cpu", compile="off"))(
        low[None], header_kernel=series.metadata["convolution_kernel"])[0]  # Philips C: a standard kernel
    flat = flat_soft_tissue(ndct)
    assert psnr(denoised, ndct, SOFT_TISSUE) > psnr(low, ndct, SOFT_TISSUE) + 6.0  # measured +7.2 dB
    assert psnr(denoised, ndct, FULL_RANGE) > psnr(low, ndct, FULL_RANGE)
    assert flat_noise_hu(denoised, flat) < 1.5 * flat_noise_hu(ndct, flat)
    assert abs(float((denoised - ndct)[flat].mean())) < 3.0


def test_bundled_model_does_little_harm_on_a_scan_already_near_normal_dose(bundled, shared_ct):
    """10 HU added to a held-out Philips slice with about 20 HU of noise and texture of its own: with the
    model's keep-noise the result is within 0.3 dB of its input in both windows (measured +0.10 soft
    tissue, -0.14 full range); the network's whole correction loses more than 2 dB (it removes the
    reference's own noise too)."""
    series = read_volume(shared_ct / "thorax-141")
    ndct = series.array[40].astype(np.float32)
    scan = ScannerNoise(added_noise_hu=10.0, filter="ramp", cutoff=1.0, views=984, electronic_std=2.0,
                        bowtie=1.0, modulation=1.0)
    low = ndct + scanner_noise_hu(ndct, float(series.spacing[0]), scan, np.random.default_rng(5))
    model = load_model(bundled)
    kept = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off"))(
        low[None], header_kernel=series.metadata["convolution_kernel"])[0]
    whole = VolumeDenoiser(model, EngineOptions(device="cpu", compile="off", keep_noise_hu=0.0))(low[None])[0]
    for window in (SOFT_TISSUE, FULL_RANGE):
        assert psnr(kept, ndct, window) > psnr(low, ndct, window) - 0.3
        assert psnr(whole, ndct, window) < psnr(low, ndct, window) - 2.0


def test_no_committed_manifest_holds_an_absolute_path_of_the_machine_that_made_it():
    from pathlib import Path

    repository = Path(__file__).resolve().parents[1]
    manifests = sorted(repository.glob("Resources/Models/*/manifest.json")) + sorted(
        repository.glob("evaluation/models/*/manifest.json"))
    assert manifests
    for manifest in manifests:
        text = manifest.read_text()
        assert '"/' not in text and ':\\\\' not in text, f"{manifest.relative_to(repository)} names a machine's path"
