"""The module's in-Slicer self-test: Slicer's *Reload and Test*, the ctest entry and
``run_self_test.py`` run it through ``LDCTDenoiseTest`` in the module file.

It needs a running Slicer (or CI's named stand-ins, ``Testing/test_module_self_test.py``): a blocking
denoise with a tiny model the test writes, geometry, comparison nodes, a cancelled run that leaves
the scene as it was, int16 output, and an installed model of another method run by name.
"""

import logging
import pathlib
import tempfile

import numpy as np
import slicer
import vtk


def _logic():
    from LDCTDenoise import LDCTDenoiseLogic

    return LDCTDenoiseLogic()


def _cpu(**settings):
    from LDCTDenoiseLib.engine.options import EngineOptions

    return EngineOptions(device="cpu", **settings)


class LDCTDenoiseSelfTest:
    """In-Slicer self-test (mixed into the module file's ``LDCTDenoiseTest``): blocking denoise with a tiny
    model the test writes, geometry, comparison nodes, and a cancelled run that leaves the scene as it was."""

    requirementsReady = False

    def setUp(self):
        """A clear scene, and the Python packages in place before any test runs: ctest runs the test_*
        methods in alphabetical order and *Reload and Test* runs runTest, so every test starts here."""
        slicer.mrmlScene.Clear()
        if not LDCTDenoiseSelfTest.requirementsReady:
            self.assertTrue(_logic().setupPythonRequirements(askConfirmation=False))
            LDCTDenoiseSelfTest.requirementsReady = True

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
        logic = _logic()
        clean, noisy = _test_volumes()
        weights = _write_tiny_model()
        before = slicer.util.arrayFromVolume(noisy).copy()
        output = logic.denoise(noisy, weights=weights, options=_cpu())
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
        job = _logic().denoise(noisy, weights=_write_tiny_model(), options=_cpu(), waitForCompletion=False)
        job.cancel()
        self.assertEqual(job.poll(), "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Test passed")

    def test_an_installed_model_of_another_method_is_listed_and_runs_by_name(self):
        self.delayDisplay("Listing and running an installed WGAN-VGG-architecture model by name")
        import shutil

        from LDCTDenoiseLib.models.catalog import cached_models_dir, installed_models
        from LDCTDenoiseLib.models.normalization import Normalization
        from LDCTDenoiseLib.models.weights import save_model
        from LDCTDenoiseLib.networks import architecture

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
            output = _logic().denoise(noisy, weights=name, options=_cpu())
            self.assertEqual(output.GetAttribute("LDCTDenoise.model"), name)
            self.assertEqual(slicer.util.arrayFromVolume(output).shape, slicer.util.arrayFromVolume(noisy).shape)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_int16_ct_stays_int16_and_strength_zero_gives_the_input_back(self):
        self.delayDisplay("An int16 CT at strength 0 % and 100 %")
        _, noisy = _test_volumes()
        int16 = slicer.util.addVolumeFromArray(np.rint(slicer.util.arrayFromVolume(noisy)).astype(np.int16),
                                               name="LDCT int16")
        logic, weights = _logic(), _write_tiny_model()
        unchanged = logic.denoise(int16, weights=weights, options=_cpu(strength=0.0))
        self.assertEqual(slicer.util.arrayFromVolume(unchanged).dtype, np.int16)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(unchanged), slicer.util.arrayFromVolume(int16))
        self.assertEqual(unchanged.GetAttribute("LDCTDenoise.strength_percent"), "0")
        full = logic.denoise(int16, weights=weights, options=_cpu())
        self.assertFalse(np.array_equal(slicer.util.arrayFromVolume(full), slicer.util.arrayFromVolume(int16)))
        self.assertEqual(full.GetAttribute("LDCTDenoise.keep_noise_hu"), "0")  # the tiny model sets none
        mirrored = logic.denoise(int16, weights=weights, options=_cpu(self_ensemble=2))
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
    from LDCTDenoiseLib.models.normalization import Normalization
    from LDCTDenoiseLib.models.weights import save_model
    from LDCTDenoiseLib.networks.hu2024 import Generator, GeneratorConfig

    folder = pathlib.Path(tempfile.mkdtemp(prefix="LDCTDenoiseTest-")) / "tiny-model"
    save_model(Generator(GeneratorConfig(base_width=4, depth=2, cbam_reduction=2)).eval(), folder, Normalization(),
               provenance={"purpose": "LDCTDenoise self-test; random weights"}, name="tiny")
    logging.info(f"Tiny test model written to {folder}")
    return str(folder)
