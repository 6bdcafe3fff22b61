"""The MRML bridge against the real MRML classes of the slicer-core wheel (no Qt, no Slicer app)."""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # the slicer-core wheel (MRML without Qt), installed by `make test`
import slicer.util

from conftest import add_volume_node, rotated_direction, small_volume
from LDCTDenoiseLib.compare.density import hu_densities
from LDCTDenoiseLib.compare.roi import Box, box_mask
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.slicer.mrml_bridge import (
    density_chart,
    new_output_node,
    roi_box,
    roi_region,
    table_from_rows,
    update_node_from_volume,
    volume_from_node,
)


def test_round_trip_with_a_rotated_direction_keeps_voxels_and_geometry(scene):
    volume = small_volume(direction=rotated_direction(35.0))
    node = add_volume_node(scene, volume)
    back = volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-12)
    import vtk

    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ras = np.array(ijk_to_ras.MultiplyPoint((3.0, 2.0, 1.0, 1.0))[:3])
    lps = volume.index_to_world([[3.0, 2.0, 1.0]])[0]
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)  # the same physical point


def test_reading_a_node_copies_its_voxels(scene):
    node = add_volume_node(scene, small_volume())
    volume = volume_from_node(node)
    volume.array[:] = 0
    assert slicer.util.arrayFromVolume(node).any()


def test_output_node_copies_the_orientation_and_never_aliases_the_input(scene):
    volume = small_volume(direction=rotated_direction(20.0))
    node = add_volume_node(scene, volume)
    output = new_output_node(scene, node)
    assert output is not node and output.GetID() != node.GetID()
    assert output.GetName() == "CT denoised"
    update_node_from_volume(output, volume.with_array(volume.array + 1))
    np.testing.assert_array_equal(volume_from_node(node).array, volume.array)  # the input is untouched
    np.testing.assert_allclose(volume_from_node(output).direction, volume.direction, atol=1e-12)
    assert new_output_node(scene, node).GetName() != output.GetName()


def test_an_empty_node_is_a_clear_error(scene):
    with pytest.raises(InputError, match="no image data"):
        volume_from_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))


def test_axis_aligned_roi_mask_equals_the_librarys_world_box_mask(scene):
    volume = small_volume(direction=rotated_direction(30.0))
    centre_lps = volume.index_to_world([[24, 20, 3]])[0]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenterWorld(*(centre_lps * [-1, -1, 1]))
    roi.SetSizeWorld(12.0, 9.0, 6.0)
    mask = roi_region(roi, volume).mask
    assert mask.any()
    np.testing.assert_array_equal(mask, box_mask(volume, Box.from_center_size(centre_lps, (12.0, 9.0, 6.0))))


def test_rotated_roi_mask_agrees_with_mrmls_own_point_test(scene):
    import vtk

    volume = small_volume(direction=rotated_direction(10.0))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetSize(14.0, 8.0, 6.0)
    rotation = vtk.vtkTransform()
    centre_ras = volume.index_to_world([[24, 20, 3]])[0] * [-1, -1, 1]
    rotation.Translate(*centre_ras)
    rotation.RotateZ(33.0)
    rotation.RotateX(12.0)
    roi.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())
    mask = roi_region(roi, volume).mask
    k, j, i = np.indices(volume.array.shape)
    points = volume.index_to_world(np.stack([i.ravel(), j.ravel(), k.ravel()], 1)) * [-1, -1, 1]
    by_mrml = np.array([roi.IsPointInROIWorld(p) for p in points]).reshape(mask.shape)
    assert mask.sum() > 20
    assert np.mean(mask == by_mrml) > 0.999  # points on the faces may round either way
    assert roi_box(roi).size == pytest.approx((14.0, 8.0, 6.0))


def test_table_node_holds_one_column_per_key(scene):
    rows = [{"method": "LDCT", "PSNR (dB), soft tissue [-160, 240] HU": 27.8, "slices": 11},
            {"method": "Denoised", "PSNR (dB), soft tissue [-160, 240] HU": 32.0, "slices": 11}]
    node = table_from_rows(scene, rows, "metrics")
    assert node.GetName() == "metrics"
    table = node.GetTable()
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(rows[0])
    assert table.GetNumberOfRows() == 2
    assert table.GetColumn(0).GetValue(1) == "Denoised" and table.GetColumn(1).GetValue(1) == pytest.approx(32.0)


def test_density_chart_has_one_series_per_curve_and_the_reference_dashed(scene):
    rng = np.random.default_rng(0)
    densities = hu_densities({"NDCT": rng.normal(40, 10, 500), "LDCT": rng.normal(40, 30, 500)}, reference="NDCT")
    chart = density_chart(scene, densities, "liver")
    series = [scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(n)) for n in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetName() for s in series] == ["NDCT", "LDCT"]
    assert series[0].GetLineStyle() == series[0].LineStyleDash
    table = series[0].GetTableNode().GetTable()
    assert table.GetNumberOfRows() == densities.curves[0].hu.size
    assert {series[1].GetXColumnName(), series[1].GetYColumnName()} == {"HU", "LDCT"}
    assert "bandwidth" in chart.GetTitle()
