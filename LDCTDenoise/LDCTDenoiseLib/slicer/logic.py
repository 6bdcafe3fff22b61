"""The Slicer module's logic without Qt: denoise volume nodes in the background, compare regions.

``LDCTDenoise.py`` only wires the GUI to this. Everything here takes the MRML scene explicitly, so
it runs the same in Slicer, in Slicer's Python console and against the slicer-core wheel in CI.
A denoising run touches the scene only when it has succeeded: cancelled or failed runs leave no
node behind, and the input node is never written. The output node stores the input's voxel type
(int16 HU for CT, as PACS expects) unless float32 is asked for, and carries the model and the
strength that made it as node attributes.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomically
from ..compare.density import Densities
from ..compare.metrics import DEFAULT_WINDOWS, Window
from ..compare.report import REFERENCE, ComparisonReport, compare, plot_densities, write_csv
from ..compare.roi import Region
from ..engine.noise_level import applied_summary
from ..engine.options import EngineOptions
from ..errors import Cancelled, InputError, OutputError
from ..io import cast_voxels
from .mrml_bridge import (
    density_chart,
    new_output_node,
    roi_region,
    segment_mask,
    show_like,
    table_from_rows,
    update_node_from_volume,
    volume_from_node,
)
from .process import CANCELLED, DONE, FAILED, RUNNING, BackgroundDenoise

CHART_FORMATS = (".png", ".svg")
OUTPUT_TYPES = ("input", "float32")  # the input node's voxel type, or float32


def child_python(inside_slicer: bool) -> str:
    """The interpreter for the child process: PythonSlicer inside Slicer (``sys.executable`` is the
    application there), this interpreter elsewhere."""
    if not inside_slicer:
        return sys.executable
    found = shutil.which("PythonSlicer")
    if not found:
        raise InputError("PythonSlicer was not found on PATH; start Slicer from its installation folder "
                         "(the launcher sets PATH) and try again")
    return found


class DenoiseJob:
    """One volume node denoised in a child process; the output node appears only on success."""

    def __init__(self, scene, input_node, output_node=None, options: EngineOptions | None = None,
                 weights: str | None = None, python: str | None = None, output_type: str = "input") -> None:
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        if input_node is None:
            raise InputError("choose the low-dose CT volume to denoise")
        if output_node is not None and output_node.GetID() == input_node.GetID():
            raise InputError("the output volume is the input volume; choose another output or leave it empty "
                             "to create a new one (the input is never overwritten)")
        self.scene, self.input_node, self.requested_output = scene, input_node, output_node
        self.options, self.output_type = options or EngineOptions(), output_type
        self.output_node = None
        self.started = time.monotonic()
        volume = volume_from_node(input_node, _dicom_file_finder())
        self.stored_dtype = volume.metadata["stored_dtype"] if output_type == "input" else "float32"
        self.background = BackgroundDenoise(volume, self.options, weights=weights, python=python)

    @property
    def fraction(self) -> float:
        return self.background.fraction

    @property
    def log(self) -> list[str]:
        """The child's output so far (model, device, warnings), for the log pane."""
        return self.background.log

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def status(self) -> str:
        """A line for the status bar: slices done, the run's figures, or the child's reason for failing."""
        run = self.background
        if run.state == RUNNING and run.stage == "adapting":
            unit = "steps" if self.options.adapt_minutes == 0 else "s"
            return f"Adapting the model to this scan: {run.done} of {run.total} {unit}"
        if run.state == RUNNING:
            return f"Denoising: {run.done} of {run.total} slices"
        if run.state == DONE and run.summary:
            figures = json.loads(run.summary)
            adapted = {True: ", adapted to this scan", False: ", not adapted (see the log)"}.get(figures.get("adapted"))
            return (f"Done: {figures['slices']} slices on {figures['device']} ({figures['precision']}), "
                    f"{figures['slices_per_second']} slices/s, model {figures['model']}" + applied_summary(figures)
                    + (adapted or ""))
        if run.state == CANCELLED:
            return "Cancelled; nothing was added to the scene"
        return run.error or run.state

    def poll(self) -> str:
        """The state now (running, done, failed, cancelled); on success the output node is filled."""
        state = self.background.poll()
        if state == DONE:
            self.result()
        return state

    def wait(self, progress: Callable[[int, int], None] | None = None):
        """Block until the child ends; the output node, or the child's reason as an error."""
        self.background.wait(progress)
        return self.result()

    def cancel(self) -> None:
        self.background.cancel()

    def result(self):
        """The output node (filled once); raises ``Cancelled`` or the failure."""
        volume = self.background.result()
        if self.output_node is None:
            percent = f"{100 * self.options.strength:g}"
            name = f"{self.input_node.GetName()} denoised" + ("" if percent == "100" else f" {percent}%")
            node = self.requested_output or new_output_node(self.scene, self.input_node, name)
            update_node_from_volume(node, volume.with_array(cast_voxels(volume.array, self.stored_dtype)))
            for key, value in volume.metadata.get("header", {}).items():
                node.SetAttribute(key.replace("_", ".", 1), value)  # LDCTDenoise.model, LDCTDenoise.strength_percent
            if self.background.summary:  # what made it, and a hint when the keep-noise rule left it almost as it was
                node.SetDescription(f"Denoised by LDCTDenoise. {self.status}")
            show_like(node, self.input_node)
            self.output_node = node
        return self.output_node


def denoise(scene, input_node, output_node=None, options: EngineOptions | None = None, weights: str | None = None,
            python: str | None = None, wait_for_completion: bool = True,
            progress: Callable[[int, int], None] | None = None, output_type: str = "input"):
    """Denoise ``input_node`` with ``options``: the output node when waiting, else the running ``DenoiseJob``.

    ``weights`` is a model's name or folder (None: the bundled model); ``output_type`` is "input" (the
    input node's voxel type) or "float32".
    """
    job = DenoiseJob(scene, input_node, output_node, options, weights, python, output_type)
    return job.wait(progress) if wait_for_completion else job


@dataclass
class RegionComparison:
    """What Compute produced: the report, the table's rows, and the nodes that show them."""

    report: ComparisonReport
    rows: list[dict]
    table: object
    chart: object

    @property
    def densities(self) -> Densities:
        return self.report.regions[0].densities

    @property
    def region_name(self) -> str:
        return self.report.regions[0].region.name


class CompareJob:
    """Compute off the GUI thread: volumes against the NDCT in one region, in a worker thread.

    The nodes are read when the job is made (on the caller's thread, as MRML wants); the worker
    touches no node; ``result()`` fills the table and chart on the caller's thread once it is done.
    The region is a Markups ROI node or one segment, taken on the first volume's grid. With
    ``register`` the NDCT is rigidly registered to that volume first. ``table`` and ``chart`` are
    refilled when given (a second Compute replaces the first one's figures).
    """

    def __init__(self, scene, ndct_node, volume_nodes: list, roi_node=None, segmentation_node=None,
                 segment_id: str | None = None, register: bool = False, table=None, chart=None,
                 windows: tuple[Window, ...] = DEFAULT_WINDOWS) -> None:
        if ndct_node is None:
            raise InputError("choose the normal-dose CT (NDCT) volume to compare against")
        nodes = [node for node in volume_nodes if node is not None]
        if not nodes:
            raise InputError("choose at least one volume to compare with the NDCT")
        if any(node.GetID() == ndct_node.GetID() for node in nodes):
            raise InputError(f"{ndct_node.GetName()} is the NDCT reference; leave it out of the compared volumes")
        volumes = _named_volumes(nodes)
        region = _region(next(iter(volumes.values())), roi_node, segmentation_node, segment_id)
        self.scene, self.table, self.chart = scene, table, chart
        self.stage, self.started = "starting", time.monotonic()
        self._report: ComparisonReport | None = None
        self._error: Exception | None = None
        self._comparison: RegionComparison | None = None
        self._cancelled = threading.Event()
        arguments = (volume_from_node(ndct_node), volumes, [region], "rigid" if register else "none", windows)
        self._thread = threading.Thread(target=self._run, args=arguments, daemon=True)
        self._thread.start()

    def _run(self, ndct, volumes, regions, registration, windows) -> None:
        try:
            self._report = compare(ndct, volumes, regions, registration, windows, stage=self._at)
        except Exception as error:  # handed to the caller's thread by result()
            self._error = error

    def _at(self, stage: str) -> None:
        if self._cancelled.is_set():  # the worker stops at its next stage
            raise Cancelled("comparison cancelled")
        self.stage = stage

    def cancel(self) -> None:
        """Abandon the comparison (the scene is closing): it fills no node, and its worker stops at its next stage."""
        self._cancelled.set()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> str:
        """running, done, failed or cancelled (non-blocking)."""
        if self._cancelled.is_set():
            return CANCELLED
        if self._thread.is_alive():
            return RUNNING
        return FAILED if self._error is not None else DONE

    def wait(self) -> RegionComparison:
        self._thread.join()
        return self.result()

    def result(self) -> RegionComparison:
        """The comparison, its table and chart filled (once); raises what the worker raised."""
        if self._cancelled.is_set():
            raise Cancelled("the comparison was cancelled (its scene closed); no table or chart was filled")
        if self._error is not None:
            raise self._error
        if self._comparison is None:
            report = self._report
            rows = metric_rows(report)
            name = report.regions[0].region.name
            table = table_from_rows(self.scene, rows, f"{name} metrics", node=self.table)
            chart = density_chart(self.scene, report.regions[0].densities, name, chart=self.chart)
            self._comparison = RegionComparison(report, rows, table, chart)
        return self._comparison


def compare_nodes(scene, ndct_node, volume_nodes: list, roi_node=None, segmentation_node=None,
                  segment_id: str | None = None, register: bool = False, table=None, chart=None,
                  windows: tuple[Window, ...] = DEFAULT_WINDOWS) -> RegionComparison:
    """Volumes (input, denoised, others) against the NDCT in one region, waiting: see ``CompareJob``."""
    return CompareJob(scene, ndct_node, volume_nodes, roi_node, segmentation_node, segment_id, register, table,
                      chart, windows).wait()


def metric_rows(report: ComparisonReport) -> list[dict]:
    """One row per volume: PSNR, SSIM, RMSE per window (window and data range in the header)."""
    result = report.regions[0]
    divergence = {curve.name: curve.js_divergence for curve in result.densities.curves}
    rows = []
    for method in report.methods:
        row: dict = {"Volume": method}
        for window in report.windows:
            means = next(m for m in result.metrics["means"] if m["method"] == method and m["window"] == window.label)
            for metric, key in (("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("RMSE (HU)", "rmse_hu")):
                row[column_name(metric, window)] = means[key]
        row["Slices"] = means["slices"]
        row[f"JS divergence from {REFERENCE} (bits)"] = divergence[method]
        rows.append(row)
    return rows


def column_name(metric: str, window: Window) -> str:
    """A table header that carries the window and its data range, e.g. for PSNR and SSIM."""
    return f"{metric} {window.label}, data range {window.data_range:g} HU"


def export_table(table_node, path: str | Path) -> Path:
    """The table node as CSV (written whole or not at all)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise OutputError(f"{path.name}: the table is exported as .csv")
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    rows = [{column.GetName(): column.GetValue(r) for column in columns} for r in range(table.GetNumberOfRows())]
    write_atomically(path, lambda tmp: write_csv(tmp, rows))
    return path


def export_chart(comparison: RegionComparison, path: str | Path) -> Path:
    """The density curves as a PNG or SVG figure (the same figure as the command line's report)."""
    path = Path(path)
    if path.suffix.lower() not in CHART_FORMATS:
        raise OutputError(f"{path.name}: the chart is exported as {' or '.join(CHART_FORMATS)}")
    write_atomically(path, lambda tmp: plot_densities(comparison.densities, comparison.region_name, tmp))
    return path


def _named_volumes(nodes: list) -> dict:
    """Volumes keyed by node name, made unique (two nodes may share a name in a scene)."""
    volumes = {}
    for node in nodes:
        name, count = node.GetName(), 1
        while name in volumes or name == REFERENCE:
            count += 1
            name = f"{node.GetName()} ({count})"
        volumes[name] = volume_from_node(node)
    return volumes


def _region(grid, roi_node, segmentation_node, segment_id: str | None) -> Region:
    if roi_node is not None and segmentation_node is not None:
        raise InputError("give the region as a Markups ROI or as a segment, not both")
    if roi_node is not None:
        return roi_region(roi_node, grid)
    if segmentation_node is not None:
        mask = segment_mask(segmentation_node, segment_id, grid)  # refuses an absent segment
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        return Region(name, mask, f"segment {name} of {segmentation_node.GetName()}")
    raise InputError("choose a region: a Markups ROI node, or a segmentation node and one of its segments")


def _dicom_file_finder() -> Callable[[str], str] | None:
    """Slicer's DICOM database lookup (instance UID -> file), or None where there is none (slicer-core)."""
    import slicer

    database = getattr(slicer, "dicomDatabase", None)
    return database.fileForInstance if database is not None else None
