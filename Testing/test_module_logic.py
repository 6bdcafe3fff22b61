"""The module's logic on a real MRML scene (slicer-core) with real child processes: what a Slicer
user's Apply, Cancel, Compute and Export do to the scene."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
import slicer  # the slicer-core wheel (MRML without Qt), installed by `make test`
import vtk

from conftest import add_volume_node, rotated_direction, small_volume
from LDCTDenoiseLib.compare.metrics import FULL_RANGE, SOFT_TISSUE
from LDCTDenoiseLib.compare.report import compare
from LDCTDenoiseLib.compare.roi import Region, box_mask, labelmap_mask
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.errors import Cancelled, InputError, LDCTError, OutputError
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.models.weights import load_model
from LDCTDenoiseLib.simulation import make_phantom
from LDCTDenoiseLib.slicer.logic import (
    CompareJob,
    DenoiseJob,
    child_python,
    column_name,
    compare_nodes,
    denoise,
    export_chart,
    export_table,
)
from LDCTDenoiseLib.slicer.mrml_bridge import roi_box, segment_mask, volume_from_node
from LDCTDenoiseLib.slicer.process import CANCELLED, FAILED


def _volume_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]


def test_blocking_denoise_creates_a_new_node_with_the_inputs_geometry(scene, tiny_model_dir):
    volume = small_volume(direction=rotated_direction(25.0))
    ldct = add_volume_node(scene, volume, "LDCT")
    ldct.GetDisplayNode().SetAutoWindowLevel(False)
    ldct.GetDisplayNode().SetWindowLevel(400, 40)
    seen = []
    output = denoise(scene, ldct, weights=str(tiny_model_dir), options=EngineOptions(device="cpu"),
                     progress=lambda done, total: seen.append((done, total)))
    assert output.GetID() != ldct.GetID() and output.GetName() == "LDCT denoised"
    result = volume_from_node(output)
    expected = VolumeDenoiser(load_model(tiny_model_dir), EngineOptions(device="cpu"))(volume.array)
    np.testing.assert_allclose(result.array, expected, atol=1e-4)
    np.testing.assert_allclose(result.direction, volume.direction, atol=1e-9)
    np.testing.assert_allclose(result.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(result.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_array_equal(volume_from_node(ldct).array, volume.array)  # the input is untouched
    assert (output.GetDisplayNode().GetWindow(), output.GetDisplayNode().GetLevel()) == (400, 40)
    assert seen[-1] == (volume.array.shape[0],) * 2
    job = denoise(scene, ldct, weights=str(tiny_model_dir), wait_for_completion=False,
                  options=EngineOptions(device="cpu"))
    assert job.wait().GetName() not in ("LDCT", "LDCT denoised")  # a second run never replaces the first's node
    assert job.status.startswith(f"Done: {volume.array.shape[0]} slices on cpu (fp32)")


def test_a_chosen_output_node_is_filled_and_the_input_can_never_be_the_output(scene, tiny_model_dir):
    ldct = add_volume_node(scene, small_volume(), "LDCT")
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    chosen.SetName("mine")
    assert denoise(scene, ldct, chosen, weights=str(tiny_model_dir), options=EngineOptions(device="cpu")) is chosen
    assert volume_from_node(chosen).array.shape == small_volume().array.shape
    with pytest.raises(InputError, match="the output volume is the input volume"):
        denoise(scene, ldct, ldct, weights=str(tiny_model_dir))
    with pytest.raises(InputError, match="choose the low-dose CT"):
        denoise(scene, None)


def test_an_int16_ct_gives_an_int16_output_unless_float32_is_asked_for(scene, tiny_model_dir):
    volume = small_volume()
    ldct = add_volume_node(scene, volume.with_array(volume.array.astype(np.int16)), "LDCT")
    expected = VolumeDenoiser(load_model(tiny_model_dir), EngineOptions(device="cpu"))(volume.array)
    stored = denoise(scene, ldct, weights=str(tiny_model_dir), options=EngineOptions(device="cpu"))
    assert slicer.util.arrayFromVolume(stored).dtype == np.int16
    np.testing.assert_allclose(slicer.util.arrayFromVolume(stored), np.rint(expected), atol=1.0)
    floats = denoise(scene, ldct, weights=str(tiny_model_dir), output_type="float32",
                     options=EngineOptions(device="cpu"))
    assert slicer.util.arrayFromVolume(floats).dtype == np.float32
    np.testing.assert_allclose(slicer.util.arrayFromVolume(floats), expected, atol=1e-3)
    with pytest.raises(InputError, match="output type"):
        denoise(scene, ldct, weights=str(tiny_model_dir), output_type="uint8")


def test_strength_scales_the_correction_and_names_and_marks_the_output(scene, tiny_model_dir):
    volume = small_volume()
    ldct = add_volume_node(scene, volume, "LDCT")
    full = volume_from_node(denoise(scene, ldct, weights=str(tiny_model_dir),
                                    options=EngineOptions(device="cpu"))).array
    job = denoise(scene, ldct, weights=str(tiny_model_dir), wait_for_completion=False,
                  options=EngineOptions(device="cpu", strength=0.5))
    half = job.wait()
    assert half.GetName() == "LDCT denoised 50%"
    assert (half.GetAttribute("LDCTDenoise.strength_percent"), half.GetAttribute("LDCTDenoise.model")) == ("50", "tiny")
    np.testing.assert_allclose(volume_from_node(half).array - volume.array, 0.5 * (full - volume.array), atol=1e-3)
    assert any("strength 50 %" in line for line in job.log)  # the child's own account, for the log pane
    with pytest.raises(InputError, match="strength must be between 0 and 100 %"):
        denoise(scene, ldct, weights=str(tiny_model_dir), options=EngineOptions(strength=2.0))


def test_the_models_keep_noise_applies_in_the_child_and_zero_gives_the_whole_correction(scene, tmp_path):
    from conftest import tiny_generator
    from LDCTDenoiseLib.models.normalization import Normalization
    from LDCTDenoiseLib.models.weights import save_model

    kept_model = save_model(tiny_generator(), tmp_path / "kept", Normalization(), provenance={}, name="kept",
                            inference={"keep_noise_hu": 8.0}).parent
    volume = make_phantom((2, 96, 96))
    ldct = add_volume_node(scene, volume, "LDCT")
    whole = VolumeDenoiser(load_model(kept_model), EngineOptions(device="cpu", keep_noise_hu=0.0))(volume.array)
    job = denoise(scene, ldct, weights=str(kept_model), output_type="float32", wait_for_completion=False,
                  options=EngineOptions(device="cpu", kernel="standard"))  # x1: the model's own
    adapted = job.wait()
    assert adapted.GetAttribute("LDCTDenoise.keep_noise_hu") == "8"
    assert "keep 8 HU for a standard kernel (option: --kernel standard): " in job.status
    assert any("Kept 8 HU of noise for a standard kernel" in line for line in job.log)
    assert not np.allclose(volume_from_node(adapted).array, whole, atol=1e-2)
    entire = denoise(scene, ldct, weights=str(kept_model), output_type="float32",
                     options=EngineOptions(device="cpu", keep_noise_hu=0.0))
    assert entire.GetAttribute("LDCTDenoise.keep_noise_hu") == "0"
    np.testing.assert_allclose(volume_from_node(entire).array, whole, atol=1e-2)


def test_a_series_the_keep_noise_rule_leaves_almost_untouched_says_so_and_how_to_denoise_further(scene, tmp_path):
    from conftest import tiny_generator
    from LDCTDenoiseLib.models.normalization import Normalization
    from LDCTDenoiseLib.models.weights import save_model

    kept_model = save_model(tiny_generator(), tmp_path / "kept", Normalization(), provenance={}, name="kept",
                            inference={"keep_noise_hu": 20.0}).parent
    quiet = make_phantom((5, 128, 128))  # a few HU of texture: already below the 20 HU the model keeps
    job = denoise(scene, add_volume_node(scene, quiet, "routine dose"), weights=str(kept_model),
                  wait_for_completion=False, options=EngineOptions(device="cpu"))
    node = job.wait()
    hint = "% applied. Little was changed: its noise measures"
    assert hint in job.status and "--keep-noise 0" in job.status
    assert hint in node.GetDescription() and node.GetDescription().startswith("Denoised by LDCTDenoise. Done:")


def test_the_self_ensemble_applies_in_the_child_and_a_bad_view_count_starts_nothing(scene, tiny_model_dir):
    volume = make_phantom((2, 96, 96))
    ldct = add_volume_node(scene, volume, "LDCT")
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="self-ensemble must be one of"):
        denoise(scene, ldct, weights=str(tiny_model_dir), options=EngineOptions(device="cpu", self_ensemble=3))
    assert scene.GetNumberOfNodes() == nodes
    expected = VolumeDenoiser(load_model(tiny_model_dir), EngineOptions(device="cpu", self_ensemble=2))(volume.array)
    mirrored = denoise(scene, ldct, weights=str(tiny_model_dir), output_type="float32",
                       options=EngineOptions(device="cpu", self_ensemble=2))
    assert mirrored.GetAttribute("LDCTDenoise.self_ensemble") == "2"
    np.testing.assert_allclose(volume_from_node(mirrored).array, expected, atol=1e-2)


def test_a_cancelled_background_run_leaves_the_scene_unchanged(scene, tiny_model_dir):
    ldct = add_volume_node(scene, small_volume(), "LDCT")
    before = scene.GetNumberOfNodes()
    job = denoise(scene, ldct, weights=str(tiny_model_dir), wait_for_completion=False,
                  options=EngineOptions(device="cpu"))
    assert isinstance(job, DenoiseJob) and job.poll() == "running"
    job.cancel()
    assert job.poll() == CANCELLED and job.output_node is None
    assert scene.GetNumberOfNodes() == before and _volume_nodes(scene) == [ldct]
    assert job.status == "Cancelled; nothing was added to the scene"
    assert not job.background.folder.exists()
    with pytest.raises(Cancelled):
        job.result()


def test_a_failed_run_reports_the_childs_reason_and_adds_nothing(scene, tmp_path):
    ldct = add_volume_node(scene, small_volume(), "LDCT")
    before = scene.GetNumberOfNodes()
    job = DenoiseJob(scene, ldct, weights=str(tmp_path / "no-model"), options=EngineOptions(device="cpu"))
    with pytest.raises(LDCTError, match="no model manifest"):
        job.wait()
    assert job.poll() == FAILED and "no model manifest" in job.status
    assert scene.GetNumberOfNodes() == before


def test_a_transformed_volume_is_refused_with_the_fix(scene):
    ldct = add_volume_node(scene, small_volume(), "LDCT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    ldct.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="Harden transform"):
        DenoiseJob(scene, ldct)


def test_child_python_is_this_interpreter_outside_slicer(monkeypatch):
    import sys

    assert child_python(inside_slicer=False) == sys.executable
    monkeypatch.setenv("PATH", "")
    with pytest.raises(InputError, match="PythonSlicer was not found"):
        child_python(inside_slicer=True)


# --- Compare regions ------------------------------------------------------------------------------

@pytest.fixture
def ct_scene(scene):
    """NDCT, a noisy LDCT and a smoothed 'denoised' volume on one rotated grid, as nodes."""
    clean = make_phantom((5, 64, 64), seed=3)
    grid = Volume(clean.array, spacing=(1.2, 1.2, 2.5), origin=(-40.0, -35.0, 10.0),
                  direction=rotated_direction(15.0))
    noise = np.random.default_rng(0).normal(0, 40, grid.array.shape).astype(np.float32)
    nodes = {"NDCT": add_volume_node(scene, grid, "NDCT"),
             "LDCT": add_volume_node(scene, grid.with_array(grid.array + noise), "LDCT"),
             "Denoised": add_volume_node(scene, grid.with_array(grid.array + noise / 3), "Denoised")}
    return scene, grid, nodes


def _roi_at(scene, grid: Volume, index, size_mm=(30.0, 30.0, 8.0)):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetName("liver box")
    center_lps = grid.index_to_world([index])[0]
    roi.SetCenter(*(center_lps * [-1, -1, 1]))
    roi.SetSize(*size_mm)
    return roi


def test_compute_with_an_roi_fills_the_table_and_the_density_chart(ct_scene):
    scene, grid, nodes = ct_scene
    roi = _roi_at(scene, grid, [32, 32, 2])
    result = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]], roi_node=roi)
    table = result.table.GetTable()
    headers = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    assert headers[0] == "Volume"
    assert column_name("SSIM", FULL_RANGE) == "SSIM full range [-1024, 3072] HU, data range 4096 HU"
    for metric in ("PSNR (dB)", "SSIM", "RMSE (HU)"):
        assert column_name(metric, SOFT_TISSUE) in headers and column_name(metric, FULL_RANGE) in headers
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == ["LDCT", "Denoised"]
    # The numbers are the library's, in the ROI taken as a world box on the LDCT grid.
    box = Region("liver box", box_mask(grid, roi_box(roi)), "")
    expected = compare(grid, {"LDCT": volume_from_node(nodes["LDCT"]),
                              "Denoised": volume_from_node(nodes["Denoised"])}, [box])
    means = {(m["method"], m["window"]): m for m in expected.regions[0].metrics["means"]}
    psnr = headers.index(column_name("PSNR (dB)", SOFT_TISSUE))
    assert table.GetValue(1, psnr).ToDouble() == pytest.approx(means[("Denoised", SOFT_TISSUE.label)]["psnr"])
    assert table.GetValue(1, psnr).ToDouble() > table.GetValue(0, psnr).ToDouble()  # less noise, higher PSNR
    chart = result.chart
    names = [chart.GetNthPlotSeriesNode(n).GetName() for n in range(chart.GetNumberOfPlotSeriesNodes())]
    assert names == ["NDCT", "LDCT", "Denoised"]
    reference = chart.GetNthPlotSeriesNode(0)
    assert reference.GetLineStyle() == reference.LineStyleDash and chart.GetXAxisTitle() == "HU"


def test_compute_runs_in_a_worker_thread_and_touches_the_scene_only_when_the_caller_collects(ct_scene):
    scene, grid, nodes = ct_scene
    roi = _roi_at(scene, grid, [32, 32, 2])
    count = scene.GetNumberOfNodes()
    job = CompareJob(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]], roi_node=roi, register=True)
    stages = {job.stage}
    while job.poll() == "running":
        stages.add(job.stage)
        time.sleep(0.01)
    assert scene.GetNumberOfNodes() == count  # the worker thread made no node
    result = job.result()
    assert scene.GetNumberOfNodes() > count and scene.GetNodeByID(result.table.GetID()) is not None
    assert job.poll() == "done" and job.result() is result  # filled once
    assert stages & {"registering the NDCT to the compared volumes", "metrics in liver box",
                     "HU density curves in liver box", "starting"}
    waited = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]], roi_node=roi, register=True)
    assert result.rows == waited.rows


def test_a_cancelled_compute_fills_no_node_and_its_worker_stops(ct_scene):
    scene, grid, nodes = ct_scene
    roi = _roi_at(scene, grid, [32, 32, 2])
    count = scene.GetNumberOfNodes()
    job = CompareJob(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]], roi_node=roi, register=True)
    job.cancel()  # the scene closes
    assert job.poll() == CANCELLED
    job._thread.join(timeout=60)
    assert not job._thread.is_alive()
    with pytest.raises(Cancelled, match="no table or chart was filled"):
        job.result()
    assert scene.GetNumberOfNodes() == count


def test_a_failing_compute_reports_the_reason_on_the_callers_thread_and_adds_nothing(ct_scene):
    scene, grid, nodes = ct_scene
    far = Volume(grid.array, spacing=grid.spacing, origin=(500.0, 500.0, 500.0), direction=grid.direction)
    elsewhere = add_volume_node(scene, far, "NDCT elsewhere")
    roi = _roi_at(scene, grid, [32, 32, 2])
    count = scene.GetNumberOfNodes()
    job = CompareJob(scene, elsewhere, [nodes["LDCT"]], roi_node=roi)
    with pytest.raises(InputError, match="outside the NDCT's field of view"):
        job.wait()
    assert job.poll() == "failed" and scene.GetNumberOfNodes() == count


def test_a_second_compute_refills_the_same_table_and_chart(ct_scene):
    scene, grid, nodes = ct_scene
    roi = _roi_at(scene, grid, [32, 32, 2])
    first = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]], roi_node=roi)
    count = scene.GetNumberOfNodes()
    second = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"]], roi_node=roi, table=first.table,
                           chart=first.chart)
    assert second.table is first.table and second.chart is first.chart
    assert second.chart.GetNumberOfPlotSeriesNodes() == 2 and second.table.GetTable().GetNumberOfRows() == 1
    assert scene.GetNumberOfNodes() == count - 1  # one series fewer; the old curve table replaced


def _segmentation_with(scene, grid: Volume, masks: dict[str, np.ndarray]):
    """A segmentation node whose segments are given as masks on a (coarser, shifted) labelmap grid."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    for name, mask in masks.items():
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        from vtk.util.numpy_support import vtk_to_numpy

        vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
        image.SetSpacing(*grid.spacing)
        image.SetOrigin(*(np.asarray(grid.origin) * [-1, -1, 1]))
        image.SetDirections(np.diag([-1.0, -1.0, 1.0]) @ grid.direction)
        segmentation.AddSegmentFromBinaryLabelmapRepresentation(image, name)
    return segmentation


def test_segment_mask_equals_the_labelmap_mask_for_each_of_two_segments(ct_scene):
    scene, grid, _ = ct_scene
    liver = np.zeros(grid.array.shape, bool)
    liver[1:4, 20:40, 25:45] = True
    heart = np.zeros(grid.array.shape, bool)
    heart[0:3, 5:15, 5:12] = True
    segmentation = _segmentation_with(scene, grid, {"liver": liver, "heart": heart})
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(2)]
    np.testing.assert_array_equal(segment_mask(segmentation, ids[0], grid), liver)
    np.testing.assert_array_equal(segment_mask(segmentation, ids[1], grid), heart)
    # On another grid (the NDCT's, finer and shifted) it is the labelmap resampled, nearest neighbour.
    finer = Volume(np.zeros((10, 100, 100), np.float32), spacing=(0.9, 0.9, 1.25), origin=(-38.0, -30.0, 10.0),
                   direction=rotated_direction(15.0))
    np.testing.assert_array_equal(segment_mask(segmentation, ids[0], finer),
                                  labelmap_mask(finer, grid.with_array(liver.astype(np.uint8))))


def test_compute_with_a_segment_and_errors_that_name_the_fix(ct_scene):
    scene, grid, nodes = ct_scene
    liver = np.zeros(grid.array.shape, bool)
    liver[1:4, 20:40, 25:45] = True
    segmentation = _segmentation_with(scene, grid, {"liver": liver})
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    result = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"]], segmentation_node=segmentation,
                           segment_id=segment_id)
    assert result.region_name == "liver" and int(result.report.regions[0].region.mask.sum()) == int(liver.sum())
    with pytest.raises(InputError, match=r"segment 'nope' is not in .*\['liver'\]"):
        compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"]], segmentation_node=segmentation, segment_id="nope")
    with pytest.raises(InputError, match="choose a region"):
        compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"]])
    with pytest.raises(InputError, match="is the NDCT reference"):
        compare_nodes(scene, nodes["NDCT"], [nodes["NDCT"]], segmentation_node=segmentation, segment_id=segment_id)
    with pytest.raises(InputError, match="normal-dose CT"):
        compare_nodes(scene, None, [nodes["LDCT"]], segmentation_node=segmentation, segment_id=segment_id)


def test_export_writes_the_table_as_csv_and_the_chart_as_png_and_svg(ct_scene, tmp_path):
    scene, grid, nodes = ct_scene
    result = compare_nodes(scene, nodes["NDCT"], [nodes["LDCT"], nodes["Denoised"]],
                           roi_node=_roi_at(scene, grid, [32, 32, 2]))
    with open(export_table(result.table, tmp_path / "metrics.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["Volume"] for row in rows] == ["LDCT", "Denoised"]
    ssim = column_name("SSIM", SOFT_TISSUE)
    assert float(rows[1][ssim]) == pytest.approx(result.rows[1][ssim])
    assert export_chart(result, tmp_path / "density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in export_chart(result, tmp_path / "density.svg").read_bytes()[:400]
    with pytest.raises(OutputError, match=".png or .svg"):
        export_chart(result, tmp_path / "density.jpg")
    with pytest.raises(OutputError, match=".csv"):
        export_table(result.table, tmp_path / "metrics.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["density.png", "density.svg", "metrics.csv"]
