"""The module's own Logic and in-Slicer self-test, run here on the real MRML classes (slicer-core) and
real child processes. Slicer's application shell cannot run here, so the parts of it the module
imports are replaced by named stand-ins: ``qt`` (icon, timer), ``slicer.i18n``,
``slicer.parameterNodeWrapper``, ``slicer.ScriptedLoadableModule``, ``slicer.app`` (no layout
manager, as with --no-main-window) and the PyTorch extension's ``PyTorchUtils`` (torch is installed
here). The panel (``LDCTDenoiseLib.slicer.widget``) is covered only by the self-test inside Slicer; what it hands
the engine is ``slicer.settings``, tested in ``test_engine_options.py``."""

from __future__ import annotations

import os
import sys
import types
import unittest
from pathlib import Path

import pytest
import slicer
import slicer.util

from LDCTDenoiseLib.engine.options import EngineOptions

MODULE_DIR = Path(__file__).resolve().parent.parent / "LDCTDenoise"


def _standin_modules() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    qt.QIcon = lambda path: ("QIcon stand-in", path)
    qt.QTimer = type("QTimerStandIn", (), {"setInterval": lambda self, ms: None,
                                           "connect": lambda self, signal, slot: None})

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = lambda values: ("Choice stand-in", values)
    wrapper.WithinRange = lambda low, high: ("WithinRange stand-in", low, high)

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleTestStandIn(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            print(message)

    scripted.ScriptedLoadableModule = type("ScriptedLoadableModuleStandIn", (), {
        "__init__": lambda self, parent: setattr(self, "parent", parent)})
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidgetStandIn", (), {})
    scripted.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogicStandIn", (), {})
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTestStandIn

    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = type("PyTorchUtilsLogicStandIn", (), {"torchInstalled": lambda self: True})
    return {"qt": qt, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": scripted, "PyTorchUtils": torch_utils}


@pytest.fixture
def module(monkeypatch, tmp_path):
    """LDCTDenoise.py imported in the stand-in host, with a fresh scene and PythonSlicer on PATH."""
    for name, standin in _standin_modules().items():
        monkeypatch.setitem(sys.modules, name, standin)
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None, layoutManager=lambda: None),
                        raising=False)
    launcher = tmp_path / "bin" / "PythonSlicer"  # Slicer's interpreter is this one here
    launcher.parent.mkdir()
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{launcher.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "LDCTDenoise", raising=False)
    import LDCTDenoise

    yield LDCTDenoise
    sys.modules.pop("LDCTDenoise", None)


def test_the_in_slicer_self_test_passes(module):
    module.LDCTDenoiseTest().runTest()


def test_the_self_test_passes_the_way_ctest_runs_it_each_method_alone_in_alphabetical_order(module, monkeypatch):
    import LDCTDenoiseSelfTest

    calls = []
    real = module.LDCTDenoiseLogic.setupPythonRequirements

    def recorded(self, *args, **kwargs):
        calls.append(args or kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(module.LDCTDenoiseLogic, "setupPythonRequirements", recorded)
    monkeypatch.setattr(LDCTDenoiseSelfTest.LDCTDenoiseSelfTest, "requirementsReady", False)
    suite = unittest.TestLoader().loadTestsFromTestCase(module.LDCTDenoiseTest)
    names = [test._testMethodName for test in suite]
    assert names == sorted(names) and len(names) == 4  # ctest's order: not the order runTest uses
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
    assert result.wasSuccessful(), result.errors + result.failures
    assert len(calls) == 1  # the first test's setUp installs; the others find it done


def test_module_metadata_names_the_category_and_links_the_paper(module):
    parent = module.LDCTDenoise(types.SimpleNamespace()).parent
    assert parent.categories == ["Filtering"] and module.PAPER_URL in parent.helpText
    assert Path(parent.icon[1]).is_file() and parent.contributors


def test_console_logic_denoises_blocking_and_reports_progress(module, tiny_model_dir):
    from LDCTDenoiseSelfTest import _test_volumes

    clean, noisy = _test_volumes()
    seen = []
    output = module.LDCTDenoiseLogic().denoise(noisy, weights=str(tiny_model_dir), options=EngineOptions(device="cpu"),
                                               progressCallback=lambda done, total: seen.append(done))
    assert output.GetName() == "LDCT test denoised" and seen[-1] == 6
    assert slicer.util.arrayFromVolume(output).shape == slicer.util.arrayFromVolume(noisy).shape
