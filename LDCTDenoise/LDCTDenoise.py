"""LDCTDenoise: denoise a low-dose CT volume, then compare regions with a normal-dose CT.

GUI wiring only. The work lives in ``LDCTDenoiseLib.module_logic`` (tested in CI against the real
MRML classes); it needs torch, so it is imported only once the Python requirements are in place.
``LDCTDenoiseLib.requirements`` and ``LDCTDenoiseLib.resources`` use the standard library only.
"""

import logging
import pathlib
import tempfile
import time
from typing import Annotated

import numpy as np
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
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LDCTDenoiseLib.resources import resource_path
from LDCTDenoiseLib.self_ensemble import SELF_ENSEMBLE_SIZES

PAPER_URL = "https://doi.org/10.21037/qims-23-403"
DEFAULT_MODEL, WEIGHTS_FILE = "default", "Weights file"  # model: an installed model's name, or a chosen folder
ROI, SEGMENT = "Markups ROI", "Segment"
POLL_MILLISECONDS = 250
SUPPORTED_SLICER = "5.8 (Python 3.9) and newer, 5.10 (Python 3.12) included"
SETTINGS = {"device": "LDCTDenoise/device", "model": "LDCTDenoise/model", "weightsPath": "LDCTDenoise/weightsPath"}


class LDCTDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LDCT Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["LDCTDenoise developers"]
        self.parent.helpText = _(
            "Denoises a low-dose CT volume slice by slice with the attention residual U-Net of Hu et al., "
            '<a href="{url}">"A two-stage deep-learning framework for CT denoising based on a clinically '
            'structure-unaligned paired data set"</a>, Quant Imaging Med Surg 2024;14(1):335-351. '
            "<b>Compare regions</b> measures PSNR, SSIM, RMSE and HU density curves of the input and the "
            "denoised volume against a normal-dose CT of the same patient inside a ROI or a segment. "
            "<b>Strength</b> scales the network's correction (0 % gives the input back). "
            "Runs in Slicer {versions}; needs the PyTorch extension. A research tool, not clinically validated."
        ).format(url=PAPER_URL, versions=SUPPORTED_SLICER)
        self.parent.acknowledgementText = _(
            "The method is that of Hu et al. (QIMS 2024). The bundled model was trained on public CT from "
            "The Cancer Imaging Archive (LIDC-IDRI) with simulated low-dose noise; see its model card."
        )
        self.parent.icon = qt.QIcon(str(resource_path("Icons/LDCTDenoise.png")))


@parameterNodeWrapper
class LDCTDenoiseParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL  # synchronised by hand: the selector lists the models installed now
    weightsPath: str = ""  # synchronised by hand: a pathlib.Path parameter shows "." when empty
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    batchSize: Annotated[int, WithinRange(0, 512)] = 0  # 0: automatic
    strength: Annotated[float, WithinRange(0.0, 100.0)] = 100.0  # percent of the network's correction
    adaptToDose: bool = True  # keep the model's normal-dose noise (keep-noise); off: the whole correction
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


class LDCTDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
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

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(str(resource_path("UI/LDCTDenoise.ui")))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LDCTDenoiseLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.computeButton.connect("clicked(bool)", self.onComputeButton)
        self.ui.exportTableButton.connect("clicked(bool)", self.onExportTable)
        self.ui.exportChartButton.connect("clicked(bool)", self.onExportChart)
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
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        # A run goes on in the background while another module is shown; the timer still polls it.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
        self._cancelRun()  # the scene the output would go into is going away
        self._comparison = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        restoreSettings(self._parameterNode)
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
        self.ui.applyButton.enabled = running or bool(p and p.inputVolume)
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
        self.ui.computeButton.enabled = not running and not computing and bool(p.ndctVolume) and hasRegion
        self.ui.exportTableButton.enabled = bool(p.metricsTable)
        self.ui.exportChartButton.enabled = self._comparison is not None

    def onSegmentSelectionChanged(self, *_):
        if self._parameterNode is None:
            return
        self._parameterNode.regionSegmentation = self.ui.segmentSelector.currentNode()
        self._parameterNode.regionSegmentId = self.ui.segmentSelector.currentSegmentID() or ""

    def _fillModelSelector(self):
        """Every installed model (bundled or in the cache) with its card's one-line summary, then 'Weights file'."""
        from LDCTDenoiseLib.model_catalog import installed_models

        combo = self.ui.modelComboBox
        combo.clear()
        for model in installed_models():
            combo.addItem(f"{model.name}: {model.summary}", model.name)
            combo.setItemData(combo.count - 1, f"{model.architecture}, {model.folder}", qt.Qt.ToolTipRole)
        if combo.findData(DEFAULT_MODEL) < 0:
            combo.insertItem(0, _("default (not installed: run ldct-train export)"), DEFAULT_MODEL)
        combo.addItem(_("Weights file (choose a model folder below)"), WEIGHTS_FILE)

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
            if not self.logic.setupPythonRequirements():
                self.ui.statusLabel.text = _("Python packages not installed; nothing was run")
                return
            self._job = self.logic.denoise(p.inputVolume, p.outputVolume, weights=self._weights(), device=p.device,
                                           batchSize=p.batchSize or None, waitForCompletion=False,
                                           strength=p.strength / 100.0, keepNoiseHu=None if p.adaptToDose else 0.0,
                                           selfEnsemble=int(p.selfEnsemble),
                                           outputType="float32" if p.outputFloat32 else "input")
            saveSettings(p)
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

    def onComputeButton(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Comparison failed."), waitCursor=True):
            if not self.logic.setupPythonRequirements():
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
                from LDCTDenoiseLib.module_logic import export_table

                export_table(self._parameterNode.metricsTable, path)

    def onExportChart(self):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export chart"),
                                              f"{self._comparison.region_name} density.png",
                                              "PNG image (*.png);;SVG image (*.svg)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                from LDCTDenoiseLib.module_logic import export_chart

                export_chart(self._comparison, path)


def restoreSettings(parameterNode):
    """Device and model as the user last chose them (Slicer's settings), once per parameter node."""
    raw = parameterNode.parameterNode
    if raw.GetAttribute("LDCTDenoise.settingsRestored"):
        return
    raw.SetAttribute("LDCTDenoise.settingsRestored", "1")
    settings = qt.QSettings()
    for name, key in SETTINGS.items():
        if settings.contains(key):
            try:
                setattr(parameterNode, name, str(settings.value(key)))
            except ValueError:  # a choice this version no longer offers
                pass


def saveSettings(parameterNode):
    settings = qt.QSettings()
    for name, key in SETTINGS.items():
        settings.setValue(key, getattr(parameterNode, name))


def _format_seconds(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class LDCTDenoiseLogic(ScriptedLoadableModuleLogic):
    """What the panel does, callable from the Python console; see the README's console example."""

    def getParameterNode(self):
        return LDCTDenoiseParameterNode(super().getParameterNode())

    def setupPythonRequirements(self, askConfirmation=True):
        """torch through the PyTorch extension (the build that fits the GPU), the rest with pip, after asking;
        Slicer's own packages are never upgraded. False when the user declines."""
        from LDCTDenoiseLib import requirements

        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_("This module needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                 "Manager, restart Slicer, and try again.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=askConfirmation,
                                       torchVersionRequirement=f">={requirements.TORCH.minimum}") is None:
                return False
        problem = requirements.torch_problem(requirements.installed_version(requirements.TORCH))
        plan = requirements.plan()
        if problem or plan.problems:
            raise RuntimeError("\n".join(([problem] if problem else []) + plan.problems))
        if plan.install:
            question = _("LDCTDenoise needs these Python packages: {packages}. Install them now (pip)?").format(
                packages=", ".join(plan.install))
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(question):
                return False
            constraints = requirements.write_constraints(pathlib.Path(tempfile.mkdtemp()) / "slicer-packages.txt")
            slicer.util.pip_install(requirements.pip_arguments(plan.install, constraints))
        return True

    def denoise(self, inputNode, outputNode=None, weights=None, device="auto", batchSize=None,
                waitForCompletion=True, progressCallback=None, strength=1.0, outputType="input", keepNoiseHu=None,
                selfEnsemble=1):
        """Denoise ``inputNode`` in a child PythonSlicer process. Waiting (the default, for scripts) returns
        the output node; otherwise the running job, which the caller polls (``poll``, ``fraction``,
        ``status``, ``log``, ``cancel``). A new output node is created unless one is given; never the input.
        ``strength`` (0 to 1) scales the network's correction; ``keepNoiseHu`` is the noise a normal-dose slice
        keeps (None: the model's own setting, 0: the whole correction); ``selfEnsemble`` the views of each slice
        averaged (1, 2, 4 or 8); ``outputType`` is "input" (the input's voxel type, int16 for CT) or "float32"."""
        from LDCTDenoiseLib.module_logic import child_python, denoise

        def progress(done, total):
            slicer.app.processEvents()  # keep the application painting while a script waits
            if progressCallback:
                progressCallback(done, total)

        return denoise(slicer.mrmlScene, inputNode, outputNode, weights=weights, device=device,
                       batch_size=batchSize, python=child_python(inside_slicer=True),
                       wait_for_completion=waitForCompletion, progress=progress, strength=strength,
                       output_type=outputType, keep_noise_hu=keepNoiseHu, self_ensemble=selfEnsemble)

    def compare(self, ndctNode, volumeNodes, roiNode=None, segmentationNode=None, segmentId=None,
                register=False, tableNode=None, chartNode=None, waitForCompletion=True):
        """PSNR/SSIM/RMSE table and HU density chart of ``volumeNodes`` against ``ndctNode`` in a region.
        Waiting (for scripts) returns the comparison; otherwise the running job, computed in a worker
        thread, which the caller polls (``poll``, ``stage``) and collects with ``result()``."""
        from LDCTDenoiseLib.module_logic import CompareJob

        job = CompareJob(slicer.mrmlScene, ndctNode, volumeNodes, roi_node=roiNode,
                         segmentation_node=segmentationNode, segment_id=segmentId, register=register,
                         table=tableNode, chart=chartNode)
        if not waitForCompletion:
            return job
        while job.poll() == "running":
            slicer.app.processEvents()  # keep the application painting while a script waits
            time.sleep(0.05)
        return job.result()

    def showResults(self, comparison):
        """Switch to a layout with a plot and a table view showing the chart and the metrics table."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (tests run with --no-main-window)
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        slicer.modules.plots.logic().ShowChartInLayout(comparison.chart)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(comparison.table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


class LDCTDenoiseTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: blocking denoise with a tiny model the test writes, geometry, comparison nodes,
    and a cancelled run that leaves the scene as it was."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_denoise_keeps_geometry_and_compare_fills_table_and_chart()
        self.setUp()
        self.test_cancelled_run_leaves_the_scene_unchanged()
        self.setUp()
        self.test_int16_ct_stays_int16_and_strength_zero_gives_the_input_back()
        self.setUp()
        self.test_an_installed_model_of_another_method_is_listed_and_runs_by_name()

    def test_denoise_keeps_geometry_and_compare_fills_table_and_chart(self):
        self.delayDisplay("Denoising a small rotated volume with a tiny model")
        logic = LDCTDenoiseLogic()
        self.assertTrue(logic.setupPythonRequirements(askConfirmation=False))
        clean, noisy = _test_volumes()
        weights = _write_tiny_model()
        before = slicer.util.arrayFromVolume(noisy).copy()
        output = logic.denoise(noisy, weights=weights, device="cpu")
        self.assertNotEqual(output.GetID(), noisy.GetID())
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(noisy), before)
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, before.shape)
        self.assertFalse(np.array_equal(slicer.util.arrayFromVolume(output), before))
        np.testing.assert_allclose(_ijk_to_ras(output), _ijk_to_ras(noisy), atol=1e-6)

        self.delayDisplay("Comparing input and output with the NDCT in a ROI")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "body box")
        center = _ijk_to_ras(noisy) @ np.array([32, 32, 3, 1.0])
        roi.SetCenter(*center[:3])
        roi.SetSize(40.0, 40.0, 10.0)
        comparison = logic.compare(clean, [noisy, output], roiNode=roi)
        table = comparison.table.GetTable()
        self.assertEqual(table.GetNumberOfRows(), 2)
        headers = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
        self.assertIn("PSNR (dB) soft tissue W400/L40 [-160, 240] HU, data range 400 HU", headers)
        chart = comparison.chart
        names = [chart.GetNthPlotSeriesNode(n).GetName() for n in range(chart.GetNumberOfPlotSeriesNodes())]
        self.assertEqual(names, ["NDCT", noisy.GetName(), output.GetName()])
        logic.showResults(comparison)
        self.delayDisplay("Test passed")

    def test_cancelled_run_leaves_the_scene_unchanged(self):
        self.delayDisplay("Cancelling a background run")
        _, noisy = _test_volumes()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        job = LDCTDenoiseLogic().denoise(noisy, weights=_write_tiny_model(), device="cpu", waitForCompletion=False)
        job.cancel()
        self.assertEqual(job.poll(), "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Test passed")


    def test_an_installed_model_of_another_method_is_listed_and_runs_by_name(self):
        self.delayDisplay("Listing and running an installed WGAN-VGG-architecture model by name")
        import shutil

        from LDCTDenoiseLib.model_catalog import cached_models_dir, installed_models
        from LDCTDenoiseLib.networks import architecture
        from LDCTDenoiseLib.normalization import Normalization
        from LDCTDenoiseLib.weights import save_model

        name = "LDCTDenoiseSelfTest-wgan-vgg"
        folder = cached_models_dir() / name
        save_model(architecture("wgan-vgg-cnn").build({"width": 4, "layers": 3}), folder, Normalization(),
                   provenance={"purpose": "LDCTDenoise self-test; random weights"}, name=name,
                   summary="self-test model (random weights)")
        try:
            listed = {model.name: model for model in installed_models()}
            self.assertEqual(listed[name].summary, "self-test model (random weights)")
            self.assertEqual(listed[name].architecture, "wgan-vgg-cnn")
            _, noisy = _test_volumes()
            output = LDCTDenoiseLogic().denoise(noisy, weights=name, device="cpu")
            self.assertEqual(output.GetAttribute("LDCTDenoise.model"), name)
            self.assertEqual(slicer.util.arrayFromVolume(output).shape, slicer.util.arrayFromVolume(noisy).shape)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_int16_ct_stays_int16_and_strength_zero_gives_the_input_back(self):
        self.delayDisplay("An int16 CT at strength 0 % and 100 %")
        _, noisy = _test_volumes()
        int16 = slicer.util.addVolumeFromArray(np.rint(slicer.util.arrayFromVolume(noisy)).astype(np.int16),
                                               name="LDCT int16")
        logic, weights = LDCTDenoiseLogic(), _write_tiny_model()
        unchanged = logic.denoise(int16, weights=weights, device="cpu", strength=0.0)
        self.assertEqual(slicer.util.arrayFromVolume(unchanged).dtype, np.int16)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(unchanged), slicer.util.arrayFromVolume(int16))
        self.assertEqual(unchanged.GetAttribute("LDCTDenoise.strength_percent"), "0")
        full = logic.denoise(int16, weights=weights, device="cpu")
        self.assertFalse(np.array_equal(slicer.util.arrayFromVolume(full), slicer.util.arrayFromVolume(int16)))
        self.assertEqual(full.GetAttribute("LDCTDenoise.keep_noise_hu"), "0")  # the tiny model sets none
        mirrored = logic.denoise(int16, weights=weights, device="cpu", selfEnsemble=2)
        self.assertEqual(mirrored.GetAttribute("LDCTDenoise.self_ensemble"), "2")
        self.delayDisplay("Test passed")


def _test_volumes():
    """A small CT-like pair (air, a soft-tissue body, a bone rod) on a rotated grid: NDCT and noisy LDCT."""
    k, j, i = np.mgrid[0:6, 0:64, 0:64]
    hu = np.full((6, 64, 64), -1000.0, dtype=np.float32)
    hu[((i - 32) / 26.0) ** 2 + ((j - 32) / 20.0) ** 2 < 1] = 40.0
    hu[(i - 32) ** 2 + (j - 40) ** 2 < 16] = 700.0
    noisy = hu + np.random.default_rng(0).normal(0, 30, hu.shape).astype(np.float32)
    ijkToRAS = vtk.vtkMatrix4x4()
    angle = np.radians(20.0)
    rotation = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    for row in range(3):
        for column in range(3):
            ijkToRAS.SetElement(row, column, rotation[row][column] * (0.8, 0.8, 2.5)[column])
        ijkToRAS.SetElement(row, 3, (-25.0, 10.0, -40.0)[row])
    clean = slicer.util.addVolumeFromArray(hu, ijkToRAS=ijkToRAS, name="NDCT test")
    return clean, slicer.util.addVolumeFromArray(noisy, ijkToRAS=ijkToRAS, name="LDCT test")


def _ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _write_tiny_model():
    """A small random-weight generator saved as a model folder (for tests only: it does not denoise)."""
    from LDCTDenoiseLib.model import Generator, GeneratorConfig
    from LDCTDenoiseLib.normalization import Normalization
    from LDCTDenoiseLib.weights import save_model

    folder = pathlib.Path(tempfile.mkdtemp(prefix="LDCTDenoiseTest-")) / "tiny-model"
    save_model(Generator(GeneratorConfig(base_width=4, depth=2, cbam_reduction=2)).eval(), folder, Normalization(),
               provenance={"purpose": "LDCTDenoise self-test; random weights"}, name="tiny")
    logging.info(f"Tiny test model written to {folder}")
    return str(folder)
