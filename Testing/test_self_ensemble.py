"""The self-ensemble: the engine's correction averaged over mirrored and transposed views of each slice."""

import numpy as np
import pytest

from conftest import tiny_generator
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser, denoise_volume
from LDCTDenoiseLib.engine.self_ensemble import DIHEDRAL_VIEWS, unview, view
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import LoadedModel
from LDCTDenoiseLib.simulation import make_phantom


@pytest.fixture
def model() -> LoadedModel:
    return LoadedModel(tiny_generator(), Normalization(), manifest={}, name="tiny")


@pytest.fixture
def hu() -> np.ndarray:
    return make_phantom((3, 48, 40)).array  # not square: transposed views have another shape


def test_every_view_is_undone_by_its_inverse_and_the_eight_views_differ(hu):
    seen = [view(hu, *v) for v in DIHEDRAL_VIEWS]
    for stack, v in zip(seen, DIHEDRAL_VIEWS):
        np.testing.assert_array_equal(unview(stack, *v), hu)
        assert stack.flags.c_contiguous
    square = hu[:, :40, :40]
    as_bytes = {view(square, *v).tobytes() for v in DIHEDRAL_VIEWS}
    assert len(as_bytes) == 8


@pytest.mark.parametrize("views", [2, 4, 8])
def test_the_correction_is_the_mean_of_each_views_correction_mapped_back(model, hu, views):
    def corrected(stack):
        return denoise_volume(stack, model, EngineOptions(compile="off")) - stack

    by_hand = np.mean([unview(corrected(view(hu, *v)), *v) for v in DIHEDRAL_VIEWS[:views]], axis=0)
    ensemble = denoise_volume(hu, model, EngineOptions(compile="off", self_ensemble=views))
    np.testing.assert_allclose(ensemble - hu, by_hand, atol=1e-3)
    assert not np.allclose(ensemble - hu, corrected(hu), atol=1e-2)  # the random model is not mirror-symmetric


def test_one_view_is_the_plain_correction(model, hu):
    np.testing.assert_array_equal(denoise_volume(hu, model, EngineOptions(compile="off", self_ensemble=1)),
                                  denoise_volume(hu, model, EngineOptions(compile="off")))


def test_the_views_are_recorded_in_the_run_the_file_header_and_the_series_description(model, hu):
    denoiser = VolumeDenoiser(model, EngineOptions(compile="off", self_ensemble=4))
    denoiser(hu)
    assert denoiser.last_run["self_ensemble"] == 4
    assert denoiser.header["LDCTDenoise_self_ensemble"] == "4"
    assert denoiser.description == "denoised 100%, 4 views (LDCTDenoise)"


@pytest.mark.parametrize("views", [0, 3, 16])
def test_other_view_counts_are_refused(views):
    with pytest.raises(InputError, match=r"self-ensemble must be one of \(1, 2, 4, 8\) views"):
        EngineOptions(self_ensemble=views)
