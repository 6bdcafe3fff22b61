"""LDCTDenoise: denoise a low-dose CT volume, then compare regions with a normal-dose CT.

The module file in SlicerNNUnet's shape: metadata, the Lib's panel (``LDCTDenoiseLib.slicer.widget``),
the console logic, and the self-test (``Testing/Python/LDCTDenoiseSelfTest.py``). The work lives in
``LDCTDenoiseLib.slicer.logic`` (tested in CI against the real MRML classes); it needs torch, so it is
imported only once the Python requirements are in place.
"""

import sys
import time
from pathlib import Path

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from LDCTDenoiseLib.resources import resource_path

PAPER_URL = "https://doi.org/10.21037/qims-23-403"
SUPPORTED_SLICER = "5.8 (Python 3.9) and newer, 5.10 (Python 3.12) included"
SELF_TEST_DIR = Path(__file__).resolve().parent / "Testing" / "Python"


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


class LDCTDenoiseWidget(ScriptedLoadableModuleWidget):
    """Places the Lib's reusable panel in the module's layout."""

    def setup(self):
        from LDCTDenoiseLib.slicer.widget import DenoisePanel

        ScriptedLoadableModuleWidget.setup(self)
        self.panel = DenoisePanel(LDCTDenoiseLogic())
        self.layout.addWidget(self.panel.widget)

    def cleanup(self):
        self.panel.cleanup()

    def enter(self):
        self.panel.enter()

    def exit(self):
        self.panel.exit()


class LDCTDenoiseLogic(ScriptedLoadableModuleLogic):
    """What the panel does, callable from the Python console; see docs/slicer.md's console example."""

    def getParameterNode(self):
        from LDCTDenoiseLib.slicer.widget import LDCTDenoiseParameterNode

        return LDCTDenoiseParameterNode(super().getParameterNode())

    def setupPythonRequirements(self, askConfirmation=True, forComparison=False):
        """torch through the PyTorch extension (the build that fits the GPU), the rest with pip, after asking;
        Slicer's own packages are never upgraded. False when the user declines. ``forComparison``: only what
        the region comparison needs (no torch, no PyTorch extension)."""
        from LDCTDenoiseLib.slicer.requirements import COMPARISON_PACKAGES, PACKAGES, FirstRunInstaller

        if forComparison:
            installer = FirstRunInstaller(None, slicer.util.confirmOkCancelDisplay, slicer.util.pip_install,
                                          COMPARISON_PACKAGES)
            return installer.run(ask=askConfirmation, torch_needed=False)
        try:
            import PyTorchUtils

            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        except ModuleNotFoundError:
            torchLogic = None
        installer = FirstRunInstaller(torchLogic, slicer.util.confirmOkCancelDisplay, slicer.util.pip_install, PACKAGES)
        return installer.run(ask=askConfirmation)

    def denoise(self, inputNode, outputNode=None, options=None, weights=None, waitForCompletion=True,
                progressCallback=None, outputType="input"):
        """Denoise ``inputNode`` in a child PythonSlicer process with ``options`` (an
        ``LDCTDenoiseLib.engine.options.EngineOptions``; None: the defaults). Waiting (the default, for
        scripts) returns the output node; otherwise the running job, which the caller polls (``poll``,
        ``fraction``, ``status``, ``log``, ``cancel``). ``weights`` is an installed model's name or a model
        folder (None: the bundled model). A new output node is created unless one is given; never the input.
        ``outputType`` is "input" (the input's voxel type, int16 for CT) or "float32"."""
        from LDCTDenoiseLib.slicer.logic import child_python, denoise

        def progress(done, total):
            slicer.app.processEvents()  # keep the application painting while a script waits
            if progressCallback:
                progressCallback(done, total)

        return denoise(slicer.mrmlScene, inputNode, outputNode, options=options, weights=weights,
                       python=child_python(inside_slicer=True), wait_for_completion=waitForCompletion,
                       progress=progress, output_type=outputType)

    def compare(self, ndctNode, volumeNodes, roiNode=None, segmentationNode=None, segmentId=None,
                register=False, tableNode=None, chartNode=None, waitForCompletion=True):
        """PSNR/SSIM/RMSE table and HU density chart of ``volumeNodes`` against ``ndctNode`` in a region.
        Waiting (for scripts) returns the comparison; otherwise the running job, computed in a worker
        thread, which the caller polls (``poll``, ``stage``) and collects with ``result()``."""
        from LDCTDenoiseLib.slicer.logic import CompareJob

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


def _selfTest():
    """The self-test's mixin, from Testing/Python beside this file (the checkout and the built extension)."""
    if str(SELF_TEST_DIR) not in sys.path:
        sys.path.append(str(SELF_TEST_DIR))
    import LDCTDenoiseSelfTest

    return LDCTDenoiseSelfTest.LDCTDenoiseSelfTest


class LDCTDenoiseTest(_selfTest(), ScriptedLoadableModuleTest):
    """In-Slicer self-test: see ``Testing/Python/LDCTDenoiseSelfTest.py``."""
