"""The bridge between MRML nodes and the library: volumes, output nodes, ROIs, tables and plots.

Uses only what both Slicer and the ``slicer-core`` wheel (MRML without Qt) provide, and takes the
scene explicitly (slicer-core has no ``slicer.mrmlScene``), so CI tests it against the real MRML
classes. MRML works in RAS; the library in LPS (as DICOM and ITK): the conversion flips x and y.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..compare.density import Densities
from ..compare.roi import OrientedBox, Region, box_region, labelmap_mask
from ..errors import InputError
from ..io.volume import Volume

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def volume_from_node(node, file_for_instance: Callable[[str], str] | None = None) -> Volume:
    """A copy of a scalar volume node's voxels (k, j, i) with its geometry in LPS.

    ``file_for_instance`` (Slicer's ``dicomDatabase.fileForInstance``) finds the DICOM file of a node
    loaded from DICOM, whose ConvolutionKernel the engine's keep-noise follows.
    """
    import slicer.util

    if node is None or node.GetImageData() is None:
        raise InputError("the volume node holds no image data; load or create a volume first")
    check_untransformed(node)
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    voxels = slicer.util.arrayFromVolume(node)
    array = np.array(voxels, dtype=np.float32)  # a copy: the node stays untouched
    return Volume(
        array,
        spacing=node.GetSpacing(),
        origin=tuple(LPS_FROM_RAS @ np.asarray(node.GetOrigin())),
        direction=LPS_FROM_RAS @ directions,
        metadata={"source": node.GetName(), "node_id": node.GetID(), "stored_dtype": str(voxels.dtype),
                  "convolution_kernel": dicom_kernel(node, file_for_instance) if file_for_instance else None},
    )


def dicom_kernel(node, file_for_instance: Callable[[str], str]) -> str | None:
    """The ConvolutionKernel of the series a node was loaded from (its DICOM.instanceUIDs attribute), else None."""
    import pydicom

    from ..io.dicom_read import stated_kernel

    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    path = file_for_instance(uids[0]) if uids else ""
    if not path:
        return None
    try:
        return stated_kernel(pydicom.dcmread(path, stop_before_pixels=True))
    except (OSError, pydicom.errors.InvalidDicomError):
        return None  # the database's file moved or was deleted: the engine measures the kernel from the noise


def update_node_from_volume(node, volume: Volume) -> None:
    """Voxels and geometry of ``volume`` into ``node`` (IJK-to-RAS including the direction)."""
    import slicer.util

    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(LPS_FROM_RAS @ np.asarray(volume.origin)))
    node.SetIJKToRASDirections(LPS_FROM_RAS @ volume.direction)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))


def check_untransformed(node) -> None:
    """Refuse nodes under a transform: their voxels and world boxes would not line up as shown."""
    if node.GetParentTransformNode() is not None:
        raise InputError(f"{node.GetName()} is under the transform {node.GetParentTransformNode().GetName()}; "
                         "harden it first (Data module: right-click the node, 'Harden transform')")


def new_output_node(scene, input_node, name: str | None = None):
    """A new scalar volume node with the input's orientation and a unique name; never the input."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetName(scene.GenerateUniqueName(name or f"{input_node.GetName()} denoised"))
    node.CopyOrientation(input_node)
    return node


def show_like(output_node, input_node) -> None:
    """Display nodes for the output with the input's window/level, so both read alike side by side."""
    output_node.CreateDefaultDisplayNodes()
    source, target = input_node.GetDisplayNode(), output_node.GetDisplayNode()
    if source is not None and target is not None:
        target.SetAutoWindowLevel(False)
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())
        if source.GetColorNodeID():
            target.SetAndObserveColorNodeID(source.GetColorNodeID())


def roi_box(roi_node) -> OrientedBox:
    """A Markups ROI node (possibly rotated) as an oriented box in LPS."""
    center, size = np.zeros(3), np.zeros(3)
    roi_node.GetCenterWorld(center)
    roi_node.GetSizeWorld(size)
    axes = np.zeros((3, 3))
    for column, getter in enumerate((roi_node.GetXAxisWorld, roi_node.GetYAxisWorld, roi_node.GetZAxisWorld)):
        axis = np.zeros(3)
        getter(axis)
        axes[:, column] = axis
    return OrientedBox.from_ras(center, axes, size)


def roi_region(roi_node, volume: Volume) -> Region:
    """Voxels of ``volume`` whose centres lie in the ROI node's box (noted if the box is partly outside)."""
    name = roi_node.GetName()
    return box_region(name, volume, roi_box(roi_node), f"Markups ROI {name}")


def segment_mask(segmentation_node, segment_id: str, volume: Volume) -> np.ndarray:
    """Voxels of ``volume`` inside one segment (its binary labelmap resampled, nearest neighbour)."""
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    if segmentation_node is None:
        raise InputError("choose a segmentation node for the region")
    check_untransformed(segmentation_node)
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id) if segment_id else None
    if segment is None:
        names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
        raise InputError(f"segment {segment_id!r} is not in {segmentation_node.GetName()} (segments: {names}); "
                         "choose one of them")
    if not segmentation_node.CreateBinaryLabelmapRepresentation():
        raise InputError(f"segment {segment.GetName()} cannot be converted to a binary labelmap; "
                         "convert the segmentation in the Segmentations module first")
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    extent = labelmap.GetExtent()
    if labelmap.GetPointData().GetScalars() is None or extent[1] < extent[0]:
        raise InputError(f"segment {segment.GetName()} is empty; paint it in the Segment Editor first")
    to_world = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(to_world)
    matrix = np.array([[to_world.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    array = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(shape)
    first_voxel = (matrix @ [extent[0], extent[2], extent[4], 1.0])[:3]
    labels = Volume((array != 0).astype(np.uint8), spacing=tuple(spacing), origin=tuple(LPS_FROM_RAS @ first_voxel),
                    direction=LPS_FROM_RAS @ (matrix[:3, :3] / spacing))
    return labelmap_mask(volume, labels)


def table_from_rows(scene, rows: list[dict], name: str, node=None):
    """A table node (new, or ``node`` refilled) with one column per key; numbers as double columns."""
    import vtk

    if not rows:
        raise InputError("no rows to put in a table")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode")
        node.SetName(scene.GenerateUniqueName(name))
    table = node.GetTable()
    table.Initialize()
    for key in rows[0]:
        numeric = all(isinstance(row[key], (int, float, np.floating, np.integer)) for row in rows)
        column = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        column.SetName(str(key))
        for row in rows:
            column.InsertNextValue(float(row[key]) if numeric else str(row[key]))
        table.AddColumn(column)
    node.Modified()
    return node


def density_chart(scene, densities: Densities, title: str, chart=None):
    """A plot chart node (new, or ``chart`` emptied and refilled) with one line series per curve (the
    reference dashed) over a table of the curves."""
    grid = densities.curves[0].hu
    rows = [{"HU": float(hu), **{c.name: float(c.density[i]) for c in densities.curves}} for i, hu in enumerate(grid)]
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode")
        chart.SetName(scene.GenerateUniqueName(f"{title} HU density"))
    else:
        _remove_series(scene, chart)
    table = table_from_rows(scene, rows, f"{title} densities")
    chart.SetTitle(f"{title}: HU density (KDE, bandwidth {densities.bandwidth_hu:.1f} HU)")
    chart.SetXAxisTitle("HU")
    chart.SetYAxisTitle("probability density")
    for curve in densities.curves:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode")
        series.SetName(curve.name)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("HU")
        series.SetYColumnName(curve.name)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        if curve.name == densities.reference:
            series.SetLineStyle(series.LineStyleDash)
            series.SetColor(0.0, 0.0, 0.0)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def _remove_series(scene, chart) -> None:
    """The chart's series and the tables they plot leave the scene (a refill replaces them)."""
    series = [chart.GetNthPlotSeriesNode(n) for n in range(chart.GetNumberOfPlotSeriesNodes())]
    chart.RemoveAllPlotSeriesNodeIDs()
    tables = {s.GetTableNode() for s in series if s is not None and s.GetTableNode() is not None}
    for node in [*series, *tables]:
        if node is not None:
            scene.RemoveNode(node)
