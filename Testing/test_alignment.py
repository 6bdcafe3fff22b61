"""The NDCT on the LDCT grid: resampling by geometry, registration that recovers a known motion, warnings."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LDCTDenoiseLib.compare.alignment import align, misalignment, resample_onto
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, read_volume
from LDCTDenoiseLib.simulation import make_phantom


def _moved(volume: Volume, degrees: float, translation_mm: tuple[float, float, float]) -> tuple[Volume, sitk.Transform]:
    """The volume as a second scan sees it after the patient moved: moved(x) = volume(T(x))."""
    motion = sitk.Euler3DTransform()
    centre = volume.index_to_world([np.asarray(volume.array.shape[::-1]) / 2])[0]
    motion.SetCenter(tuple(centre))
    motion.SetRotation(0.0, 0.0, np.radians(degrees))
    motion.SetTranslation(translation_mm)
    return resample_onto(volume, volume, motion), motion


def test_rigid_registration_recovers_a_known_motion_on_real_ct(shared_ct):
    series = read_volume(shared_ct / "thorax-141")
    ldct = Volume(series.array[40:88].copy(), series.spacing, tuple(series.index_to_world([[0, 0, 40]])[0]),
                  series.direction)
    ndct, motion = _moved(ldct, 3.0, (3.0, -4.0, 0.0))  # 5 mm and 3 degrees
    ldct = ldct.with_array(ldct.array + np.random.default_rng(0).normal(0, 30, ldct.array.shape).astype(np.float32))
    result = align(ndct, ldct, "rigid")
    found = result.sitk_transform
    points = ldct.index_to_world([[i, j, k] for i in (120, 390) for j in (120, 390) for k in (4, 44)])
    errors = [np.linalg.norm(np.array(motion.TransformPoint(found.TransformPoint(tuple(p)))) - p) for p in points]
    assert max(errors) < 1.0  # mm, across the body
    assert result.transform["rotation_deg"] == pytest.approx(3.0, abs=0.5)
    assert result.warnings == [] and result.shift_mm < 1.0
    assert result.metric is not None and result.to_dict()["registration"] == "rigid"


def test_an_unregistered_misaligned_ndct_gets_a_warning_and_an_aligned_one_does_not():
    ldct = make_phantom((12, 96, 96), seed=0)
    moved, _ = _moved(ldct, 0.0, (4.0, 3.0, 0.0))
    warned = align(moved, ldct, "none")
    assert warned.shift_mm == pytest.approx(5.0, abs=1.0)
    assert any("misaligned" in w and "--register rigid" in w for w in warned.warnings)
    assert align(ldct, ldct, "none").warnings == []


def test_resampling_uses_both_geometries():
    ndct = make_phantom((10, 80, 80), seed=1)  # 4.5 mm pixels
    ldct_grid = Volume(np.zeros((6, 50, 60), np.float32), spacing=(3.0, 3.5, 2.5), origin=(-60.0, -70.0, 5.0))
    on_grid = resample_onto(ndct, ldct_grid)
    assert on_grid.array.shape == (6, 50, 60) and on_grid.spacing == ldct_grid.spacing
    points = ldct_grid.index_to_world([[20, 20, 2], [31, 12, 4]])
    image = ndct.to_sitk()
    assert len(points) == 2
    for (i, j, k), point in zip([(20, 20, 2), (31, 12, 4)], points):
        expected = image.EvaluateAtPhysicalPoint(tuple(point), sitk.sitkLinear)
        assert on_grid.array[k, j, i] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("kind", ["affine", "bspline"])
def test_affine_and_bspline_registrations_recover_the_motion_and_report_it(kind):
    ldct = make_phantom((16, 96, 96), seed=0)
    ndct, _ = _moved(ldct, 2.0, (2.0, 0.0, 0.0))
    result = align(ndct, ldct, kind)
    assert result.registration == kind and result.transform["kind"] in ("AffineTransform", "CompositeTransform")
    assert result.transform["rotation_deg"] == pytest.approx(2.0, abs=0.5)
    assert result.shift_mm < 1.0 and result.warnings == []


def test_registration_gives_the_same_transform_every_run():
    ldct = make_phantom((8, 64, 64), seed=0)
    ndct, _ = _moved(ldct, 2.0, (2.0, 0.0, 0.0))
    first, second = (align(ndct, ldct, "rigid").transform["parameters"] for _ in range(2))
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_misalignment_of_identical_volumes_is_zero():
    volume = make_phantom((6, 64, 64))
    assert misalignment(volume, volume) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("which", "change", "message"),
    [("ndct", "nan", "NDCT holds NaN"), ("ldct", "nan", "LDCT holds NaN"),
     ("ndct", "mr", "NDCT does not look like CT in HU")],
)
def test_nan_and_non_ct_inputs_are_refused(which, change, message):
    volumes = {"ndct": make_phantom((4, 32, 32)), "ldct": make_phantom((4, 32, 32))}
    array = volumes[which].array
    if change == "nan":
        array[0, 0, 0] = np.nan
    else:
        volumes[which] = volumes[which].with_array(np.abs(array) * 0.5 + 100)  # MR-like: no air near -1000
    with pytest.raises(InputError, match=message):
        align(volumes["ndct"], volumes["ldct"])


def test_unknown_registration_lists_the_known_ones():
    volume = make_phantom((4, 32, 32))
    with pytest.raises(InputError, match="none, rigid, affine, bspline"):
        align(volume, volume, "demons")
