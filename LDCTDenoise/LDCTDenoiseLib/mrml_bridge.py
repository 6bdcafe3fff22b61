"""The bridge between MRML nodes and the library: volumes, output nodes, ROIs, tables and plots.

Uses only what both Slicer and the ``slicer-core`` wheel (MRML without Qt) provide, and takes the
scene explicitly (slicer-core has no ``slicer.mrmlScene``), so CI tests it against the real MRML
classes. MRML works in RAS; the library in LPS (as DICOM and ITK): the conversion flips x and y.
"""

from __future__ import annotations

import numpy as np

from .density import Densities
from .errors import InputError
from .io.volume import Volume
from .roi import OrientedBox, box_mask

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def volume_from_node(node) -> Volume:
    """A copy of a scalar volume node's voxels (k, j, i) with its geometry in LPS."""
    import slicer.util

    if node is None or node.GetImageData() is None:
        raise InputError("the volume node holds no image data; load or create a volume first")
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32)  # a copy: the node stays untouched
    return Volume(
        array,
        spacing=node.GetSpacing(),
        origin=tuple(LPS_FROM_RAS @ np.asarray(node.GetOrigin())),
        direction=LPS_FROM_RAS @ directions,
        metadata={"source": node.GetName(), "node_id": node.GetID()},
    )


def update_node_from_volume(node, volume: Volume) -> None:
    """Voxels and geometry of ``volume`` into ``node`` (IJK-to-RAS including the direction)."""
    import slicer.util

    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(LPS_FROM_RAS @ np.asarray(volume.origin)))
    node.SetIJKToRASDirections(LPS_FROM_RAS @ volume.direction)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))


def new_output_node(scene, input_node, name: str | None = None):
    """A new scalar volume node with the input's orientation and a unique name; never the input."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetName(scene.GenerateUniqueName(name or f"{input_node.GetName()} denoised"))
    node.CopyOrientation(input_node)
    return node


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


def roi_mask(roi_node, volume: Volume) -> np.ndarray:
    """Voxels of ``volume`` whose centres lie in the ROI node's box."""
    return box_mask(volume, roi_box(roi_node))


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


def density_chart(scene, densities: Densities, title: str):
    """A plot chart node with one line series per curve (the reference dashed) over a table of curves."""
    grid = densities.curves[0].hu
    rows = [{"HU": float(hu), **{c.name: float(c.density[i]) for c in densities.curves}} for i, hu in enumerate(grid)]
    table = table_from_rows(scene, rows, f"{title} densities")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode")
    chart.SetName(scene.GenerateUniqueName(f"{title} HU density"))
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
