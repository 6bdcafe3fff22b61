"""Regions: world boxes under any direction matrix, labelmaps resampled onto the grid, HU ranges in the body."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import rotated_direction
from LDCTDenoiseLib.compare.roi import Box, body_mask, box_mask, hu_range_mask, labelmap_mask
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.simulation import make_phantom


def _grid(direction=None, shape=(10, 30, 40)) -> Volume:
    return Volume(np.zeros(shape, np.float32), spacing=(0.8, 0.7, 2.0), origin=(-10.0, 5.0, 30.0),
                  direction=np.eye(3) if direction is None else direction)


def _brute_force(volume: Volume, box: Box) -> np.ndarray:
    k, j, i = np.indices(volume.array.shape)
    world = volume.index_to_world(np.stack([i.ravel(), j.ravel(), k.ravel()], 1))
    inside = np.all((world >= np.array(box.low)) & (world <= np.array(box.high)), axis=1)
    return inside.reshape(volume.array.shape)


def test_box_mask_with_identity_direction_selects_the_voxel_centres_inside():
    volume = _grid()
    box = Box.from_center_size((0.0, 12.0, 40.0), (8.0, 7.0, 8.0))
    mask = box_mask(volume, box)
    np.testing.assert_array_equal(mask, _brute_force(volume, box))
    # by hand, edges included: x -3.6..3.6 (10 centres), y 8.5..15.5 (11), z 36..44 (5)
    assert mask.sum() == 10 * 11 * 5


@pytest.mark.parametrize("degrees", [30.0, 90.0, 147.0])
def test_box_mask_honours_a_rotated_direction_matrix(degrees):
    volume = _grid(rotated_direction(degrees))
    centre = volume.index_to_world([[20, 15, 5]])[0]
    box = Box.from_center_size(centre, (9.0, 6.0, 5.0))
    mask = box_mask(volume, box)
    assert mask.any()
    np.testing.assert_array_equal(mask, _brute_force(volume, box))


def test_ras_coordinates_flip_x_and_y():
    volume = _grid()
    lps = Box.from_center_size((0.0, 12.0, 40.0), (8.0, 7.0, 8.0))
    ras = Box.from_center_size((0.0, -12.0, 40.0), (8.0, 7.0, 8.0), coordinates="RAS")
    np.testing.assert_array_equal(box_mask(volume, lps), box_mask(volume, ras))


def test_bounds_and_centre_size_describe_the_same_box():
    by_bounds = Box.from_bounds((-4.0, 4.0, 8.5, 15.5, 36.0, 44.0))
    by_size = Box.from_center_size((0.0, 12.0, 40.0), (8.0, 7.0, 8.0))
    np.testing.assert_allclose(by_bounds.low, by_size.low)
    np.testing.assert_allclose(by_bounds.high, by_size.high)
    ras = Box.from_bounds((-4.0, 4.0, -15.5, -8.5, 36.0, 44.0), coordinates="RAS")  # Slicer's GetBounds order
    np.testing.assert_allclose(ras.low, by_size.low)


def test_a_box_outside_the_volume_is_an_error_that_shows_the_extent():
    with pytest.raises(InputError, match="lies outside the volume .*LPS"):
        box_mask(_grid(), Box.from_center_size((500.0, 0.0, 0.0), (10.0, 10.0, 10.0)))


def test_a_box_between_voxel_centres_is_an_error():
    with pytest.raises(InputError, match="no voxel centre"):
        box_mask(_grid(), Box.from_center_size((-9.6, 5.35, 31.0), (0.1, 0.1, 0.1)))


@pytest.mark.parametrize("size", [(0.0, 1.0, 1.0), (1.0, -1.0, 1.0)])
def test_a_box_needs_a_positive_size(size):
    with pytest.raises(InputError, match="positive size"):
        Box.from_center_size((0, 0, 0), size)


def test_labelmap_on_another_grid_is_resampled_onto_the_volume():
    volume = _grid(rotated_direction(20.0))
    fine = Volume(np.zeros((40, 60, 80), np.uint8), spacing=(0.5, 0.5, 0.6), origin=(-30.0, -15.0, 20.0))
    fine.array[10:30, 20:40, 30:60] = 3
    fine.array[0:5, 0:5, 0:5] = 7
    mask = labelmap_mask(volume, fine, label=3)
    k, j, i = np.nonzero(mask)
    world = volume.index_to_world(np.stack([i, j, k], 1))
    index = np.rint((world - np.array(fine.origin)) / np.array(fine.spacing)).astype(int)  # i, j, k of the labelmap
    assert mask.any() and np.all(fine.array[index[:, 2], index[:, 1], index[:, 0]] == 3)
    assert labelmap_mask(volume, fine).sum() >= mask.sum()  # any label


def test_a_label_that_covers_nothing_lists_the_labels_present():
    labels = Volume(np.zeros((10, 30, 40), np.uint8), spacing=(0.8, 0.7, 2.0), origin=(-10.0, 5.0, 30.0))
    labels.array[2:4, 3:9, 3:9] = 2
    with pytest.raises(InputError, match=r"label 5 .*labels present: \[2\]"):
        labelmap_mask(_grid(), labels, label=5)


def test_hu_range_inside_the_body_leaves_out_air_around_the_patient():
    phantom = make_phantom((2, 96, 96), seed=0)
    body = body_mask(phantom.array)
    assert body[:, 48, 48].all() and not body[:, 0, 0].any()
    soft = hu_range_mask(phantom, -100, 100)
    assert soft.any() and not (soft & ~body).any()
    lungs_filled = body & (phantom.array < -500)
    assert lungs_filled.any()  # the lungs are inside the body even though they are air-like


def test_an_empty_hu_range_is_an_error():
    with pytest.raises(InputError, match="no voxel between 5000 and 6000 HU"):
        hu_range_mask(make_phantom((2, 64, 64)), 5000, 6000)
