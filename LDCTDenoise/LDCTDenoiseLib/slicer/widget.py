"""The LDCTDenoise panel (Qt): denoise a volume node, then compare regions with a normal-dose CT.

A reusable widget in SlicerNNUnet's shape: ``DenoisePanel(logic).widget`` is the whole panel, which
the module file (or another module) places in its layout. It only wires widgets to the parameter
node and calls ``logic`` (the module's console logic); what a run gets is decided in ``settings``
and ``logic`` (tested in CI), so little lives only here, where the in-Slicer self-test covers it.
"""

import logging
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsROINode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

from ..engine.options import COMPILE_MODES, DEVICE_CHOICES, KERNELS, PRECISIONS, RUNTIMES, SELF_ENSEMBLE_SIZES
from ..resources import resource_path
from .requirements import install_running
from .settings import SessionSettings, engine_options

DEFAULT_MODEL, WEIGHTS_FILE = "default", "Weights file"  # model: an installed model's name, or a chosen folder
ROI, SEGMENT = "Markups ROI", "Segment"
POLL_MILLISECONDS = 250


@parameterNodeWrapper
class LDCTDenoiseParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL  # synchronised by hand: the selector lists the models installed now
    weightsPath: str = ""  # synchronised by hand: a pathlib.Path parameter shows "." when empty
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    batchSize: Annotated[int, WithinRange(0, 512)] = 0  # 0: automatic
    strength: Annotated[float, WithinRange(0.0, 100.0)] = 100.0  # percent of the network's correction
    adaptToScan: bool = False  # fine-tune a copy of the model on this scan's neighbouring slices first
    adaptMinutes: Annotated[float, WithinRange(0.5, 30.0)] = 5.0  # its budget
    keepNoise: bool = True  # keep the normal-dose noise of the series' kernel (keep-noise); off: maximum denoising
    kernel: Annotated[str, Choice(list(KERNELS))] = "auto"  # the kernel's kind, which scales the noise kept
    precision: Annotated[str, Choice(list(PRECISIONS))] = "auto"
    runtime: Annotated[str, Choice(list(RUNTIMES))] = "auto"
    compile: Annotated[str, Choice(list(COMPILE_MODES))] = "auto"
    selfEnsemble: Annotated[str, Choice([str(n) for n in SELF_ENSEMBLE_SIZES])] = "1"  # views of each slice averaged
    outputFloat32: bool = False
    ndctVolume: vtkMRMLScalarVolumeNode
    regionKind: Annotated[str, Choice([ROI, SEGMENT])] = ROI
    regionRoi: vtkMRMLMarkupsROINode
    regionSegmentation: vtkMRMLSegmentationNode
    regionSegmentId: str
    compareInput: bool = True
    compareOutput: bool = True
    otherVolumes: list[vtkMRMLScalarVolumeNode]
    registerNdct: bool = False
    metricsTable: vtkMRMLTableNode
    densityChart: vtkMRMLPlotChartNode


class DenoisePanel(VTKObservationMixin):
    """The module's panel; ``widget`` is its Qt widget, ``logic`` the module's console logic."""

    def __init__(self, logic):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._entered = False
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._compareJob = None
        self._comparison = None
        self._logLines = 0
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MILLISECONDS)
        self._timer.connect("timeout()", self._poll)
        self._compareTimer = qt.QTimer()
        self._compareTimer.setInterval(POLL_MILLISECONDS)
        self._compareTimer.connect("timeout()", self._pollCompare)
        self._install = None  # a model downloading (ModelInstall), polled by its own timer
        self._installTimer = qt.QTimer()
        self._installTimer.setInterval(POLL_MILLISECONDS)
        self._installTimer.connect("timeout()", self._pollInstall)

        self.widget = slicer.util.loadUI(str(resource_path("UI/LDCTDenoise.ui")))
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.computeButton.connect("clicked(bool)", self.onComputeButton)
        self.ui.exportTableButton.connect("clicked(bool)", self.onExportTable)
        self.ui.exportChartButton.connect("clicked(bool)", self.onExportChart)
        self.ui.installModelButton.connect("clicked(bool)", self.onInstallModel)
        # Widgets the parameter node wrapper has no connector for are synchronised here.
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentSelectionChanged)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelectionChanged)
        self.ui.otherVolumesSelector.connect("checkedNodesChanged()", self.onOtherVolumesChanged)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsPathChanged)
        self._fillModelSelector()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.initializeParameterNode()

    def cleanup(self):
        self._cancelRun()
        self._cancelComparison()
        self._installTimer.stop()
        if self._install is not None:
            self._install.cancel()  # the thread stops at its next chunk; nothing is installed
        self.removeObservers()

    def enter(self):
        self._entered = True
        self.initializeParameterNode()

    def exit(self):
        # A run goes on in the background while another module is shown; the timer still polls it.
        self._entered = False
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
        self._cancelRun()  # the scene the output would go into is going away
        self._cancelComparison()  # its table and chart would go into removed nodes
        self._comparison = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self._entered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        _restoreSettings(self._parameterNode)
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._updateGui()

    def _updateGui(self, caller=None, event=None):
        p = self._parameterNode
        running = self._job is not None
        installing = install_running()  # pip pumps events: a second press would start a second install
        self.ui.applyButton.enabled = not installing and (running or bool(p and p.inputVolume))
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = _("Stop denoising; nothing is added") if running else _("Denoise the input")
        if p is None:
            return
        index = self.ui.modelComboBox.findData(p.model)
        if index < 0:  # a model remembered from a session where it was installed: the default stands in
            index = self.ui.modelComboBox.findData(DEFAULT_MODEL)
        if self.ui.modelComboBox.currentIndex != index:
            wasBlocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.currentIndex = index
            self.ui.modelComboBox.blockSignals(wasBlocked)
        self.ui.weightsPathLineEdit.enabled = p.model == WEIGHTS_FILE
        self.ui.adaptMinutesSliderWidget.enabled = p.adaptToScan
        if self.ui.weightsPathLineEdit.currentPath != p.weightsPath:
            wasBlocked = self.ui.weightsPathLineEdit.blockSignals(True)
            self.ui.weightsPathLineEdit.currentPath = p.weightsPath
            self.ui.weightsPathLineEdit.blockSignals(wasBlocked)
        for widget in (self.ui.roiLabel, self.ui.roiSelector):
            widget.visible = p.regionKind == ROI
        for widget in (self.ui.segmentLabel, self.ui.segmentSelector):
            widget.visible = p.regionKind == SEGMENT
        wasBlocked = self.ui.segmentSelector.blockSignals(True)
        self.ui.segmentSelector.setCurrentNode(p.regionSegmentation)
        self.ui.segmentSelector.setCurrentSegmentID(p.regionSegmentId)
        self.ui.segmentSelector.blockSignals(wasBlocked)
        wasBlocked = self.ui.otherVolumesSelector.blockSignals(True)
        checked = {node.GetID() for node in p.otherVolumes if node}
        for index in range(self.ui.otherVolumesSelector.nodeCount()):
            node = self.ui.otherVolumesSelector.nodeFromIndex(index)
            state = qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked
            self.ui.otherVolumesSelector.setCheckState(node, state)
        self.ui.otherVolumesSelector.blockSignals(wasBlocked)
        hasRegion = bool(p.regionRoi) if p.regionKind == ROI else bool(p.regionSegmentation and p.regionSegmentId)
        computing = self._compareJob is not None
        self.ui.computeButton.enabled = (not installing and not running and not computing and bool(p.ndctVolume)
                                         and hasRegion)
        self.ui.exportTableButton.enabled = bool(p.metricsTable)
        self.ui.exportChartButton.enabled = self._comparison is not None

    def onSegmentSelectionChanged(self, *_):
        if self._parameterNode is None:
            return
        self._parameterNode.regionSegmentation = self.ui.segmentSelector.currentNode()
        self._parameterNode.regionSegmentId = self.ui.segmentSelector.currentSegmentID() or ""

    def _fillModelSelector(self):
        """Every installed model (bundled or in the cache) with its card's one-line summary, then 'Model folder'."""
        from ..models.catalog import installed_models

        combo = self.ui.modelComboBox
        combo.clear()
        for model in installed_models():
            combo.addItem(f"{model.name}: {model.summary}", model.name)
            combo.setItemData(combo.count - 1, f"{model.architecture}, {model.folder}", qt.Qt.ToolTipRole)
        if combo.findData(DEFAULT_MODEL) < 0:
            combo.insertItem(0, _("default (not installed: run ldct-train export)"), DEFAULT_MODEL)
        combo.addItem(_("Model folder (choose it below)"), WEIGHTS_FILE)

    def onInstallModel(self):
        """Ask for a published model's URL and SHA-256 and download it in the background (the button cancels)."""
        if self._install is not None:
            self._install.cancel()  # the poll reports it at the thread's next chunk
            return
        title = _("Install a model")
        url = qt.QInputDialog.getText(self.widget, title, _("URL of the zipped model folder (https://...):")).strip()
        sha256 = url and qt.QInputDialog.getText(
            self.widget, title, _("Its SHA-256, as published with it (64 hexadecimal digits):")).strip()
        if not url or not sha256:
            return
        from .model_install import ModelInstall

        self._install = ModelInstall(url, sha256)
        self.ui.installModelButton.text = _("Cancel download")
        self._installTimer.start()

    def _pollInstall(self):
        job = self._install
        if job.state == "running":
            size = f"{job.received / 1e6:.1f}" + (f" / {job.total / 1e6:.1f}" if job.total else "")
            slicer.util.showStatusMessage(_("Downloading the model: {size} MB").format(size=size))
            return
        self._installTimer.stop()
        self._install = None
        self.ui.installModelButton.text = _("Install from URL...")
        if job.state == "done":
            self._fillModelSelector()
            self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.findData(job.folder.name)
            slicer.util.showStatusMessage(_("Model {name} installed").format(name=job.folder.name), 5000)
        elif job.state == "cancelled":
            slicer.util.showStatusMessage(_("Download cancelled; nothing was installed"), 5000)
        else:
            slicer.util.errorDisplay(_("The model was not installed: {reason}").format(reason=job.error))

    def onModelChanged(self, index):
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def onWeightsPathChanged(self, path):
        if self._parameterNode is not None:
            self._parameterNode.weightsPath = path

    def onOtherVolumesChanged(self):
        if self._parameterNode is None:
            return
        self._parameterNode.otherVolumes = list(self.ui.otherVolumesSelector.checkedNodes())

    # --- Denoise ----------------------------------------------------------------------------------

    def onApplyButton(self):
        if self._job is not None:
            self._cancelRun()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Denoising could not start."), waitCursor=True):
            if not self._installed(forComparison=False):
                self.ui.statusLabel.text = _("Python packages not installed; nothing was run")
                return
            self._job = self.logic.denoise(p.inputVolume, p.outputVolume, options=engine_options(p),
                                           weights=self._weights(), waitForCompletion=False,
                                           outputType="float32" if p.outputFloat32 else "input")
            SessionSettings.fromParameters(p).toSettings(qt.QSettings())
            self.ui.logTextEdit.clear()
            self._logLines = 0
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self._timer.start()
        self._updateGui()

    def _weights(self):
        if self._parameterNode.model == DEFAULT_MODEL or self.ui.modelComboBox.findData(self._parameterNode.model) < 0:
            return None  # the search path: $LDCTDENOISE_WEIGHTS, then the bundled default
        if self._parameterNode.model != WEIGHTS_FILE:
            return self._parameterNode.model  # an installed model, by name
        path = self._parameterNode.weightsPath.strip()
        if not path:
            raise ValueError(_("Choose the model folder or its manifest.json under Weights, or use the bundled model."))
        return path

    def _poll(self):
        job = self._job
        try:
            state = job.poll()
        except Exception as error:  # the output could not be stored: shown like the child's failures
            self._endRun(str(error))
            return
        self._showLog(job)
        self.ui.progressBar.value = round(100 * job.fraction)
        self.ui.statusLabel.text = job.status
        self.ui.elapsedLabel.text = _format_seconds(job.elapsed)
        if state != "running":
            self._endRun(None if state in ("done", "cancelled") else job.status)

    def _showLog(self, job):
        """Append the child's new lines to the log pane (the pane opens by itself on a failure)."""
        lines = job.log[self._logLines:]
        self._logLines += len(lines)
        for line in lines:
            self.ui.logTextEdit.appendPlainText(line)
            logging.info(f"LDCTDenoise child: {line}")

    def _endRun(self, error):
        job, self._job = self._job, None
        self._timer.stop()
        self._showLog(job)
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = error or job.status
        self.ui.elapsedLabel.text = _format_seconds(job.elapsed)
        if job.output_node is not None:
            if self._parameterNode:
                self._parameterNode.outputVolume = job.output_node
            slicer.util.setSliceViewerLayers(background=job.output_node, fit=True)
        if error:
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(_("Denoising failed: {reason}").format(reason=error))
        self._updateGui()

    def _cancelRun(self):
        if self._job is not None:
            self._job.cancel()
            self._endRun(None)

    # --- Compare regions --------------------------------------------------------------------------

    def _cancelComparison(self):
        self._compareTimer.stop()
        if self._compareJob is not None:
            self._compareJob.cancel()
            self._compareJob = None
            self.ui.compareProgressBar.hide()
            self.ui.compareStatusLabel.text = ""

    def onComputeButton(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Comparison failed."), waitCursor=True):
            if not self._installed(forComparison=True):
                return
            inROI = p.regionKind == ROI
            self._compareJob = self.logic.compare(
                p.ndctVolume, self._comparedVolumes(), roiNode=p.regionRoi if inROI else None,
                segmentationNode=None if inROI else p.regionSegmentation,
                segmentId=None if inROI else p.regionSegmentId, register=p.registerNdct,
                tableNode=p.metricsTable, chartNode=p.densityChart, waitForCompletion=False)
            self.ui.compareProgressBar.show()
            self._compareTimer.start()
        self._updateGui()

    def _installed(self, forComparison: bool) -> bool:
        """The first-run install (the comparison needs no torch), with Apply and Compute disabled meanwhile."""
        self.ui.applyButton.enabled = self.ui.computeButton.enabled = False
        try:
            return self.logic.setupPythonRequirements(forComparison=forComparison)
        finally:
            self._updateGui()

    def _pollCompare(self):
        job = self._compareJob
        state = job.poll()
        self.ui.compareStatusLabel.text = _("Computing: {stage} ({seconds})").format(
            stage=job.stage, seconds=_format_seconds(job.elapsed))
        if state == "running":
            return
        self._compareJob = None
        self._compareTimer.stop()
        self.ui.compareProgressBar.hide()
        with slicer.util.tryWithErrorDisplay(_("Comparison failed."), waitCursor=True):
            self.ui.compareStatusLabel.text = ""
            comparison = job.result()  # raises the worker's error here, on the GUI thread
            self._comparison = comparison
            p = self._parameterNode
            if p:
                p.metricsTable, p.densityChart = comparison.table, comparison.chart
            self.logic.showResults(comparison)
            region = comparison.report.regions[0].region
            lines = [_("{name}: {voxels} voxels; table '{table}', chart '{chart}'").format(
                name=region.name, voxels=region.voxels, table=comparison.table.GetName(),
                chart=comparison.chart.GetName())]
            self.ui.compareStatusLabel.text = "\n".join(lines + comparison.report.warnings + comparison.report.notes)
        self._updateGui()

    def _comparedVolumes(self):
        p = self._parameterNode
        chosen = [p.inputVolume if p.compareInput else None, p.outputVolume if p.compareOutput else None]
        nodes, seen = [], set()
        for node in chosen + list(p.otherVolumes):
            if node is not None and node.GetID() not in seen:
                nodes.append(node)
                seen.add(node.GetID())
        return nodes

    def onExportTable(self):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export table"),
                                              f"{self._parameterNode.metricsTable.GetName()}.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                from .logic import export_table

                export_table(self._parameterNode.metricsTable, path)

    def onExportChart(self):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export chart"),
                                              f"{self._comparison.region_name} density.png",
                                              "PNG image (*.png);;SVG image (*.svg)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                from .logic import export_chart

                export_chart(self._comparison, path)


def _restoreSettings(parameterNode):
    """The choices the user last made (Slicer's settings), once per parameter node."""
    raw = parameterNode.parameterNode
    if raw.GetAttribute("LDCTDenoise.settingsRestored"):
        return
    raw.SetAttribute("LDCTDenoise.settingsRestored", "1")
    SessionSettings.fromSettings(qt.QSettings()).applyTo(parameterNode)


def _format_seconds(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"
