"""Static checks on the Slicer module (Slicer itself cannot run here): the module file compiles, the
widgets it uses exist in the .ui, parameter bindings match widget kinds, the CMake lists are complete,
and resources are found both in the checkout and in the built extension's layout."""

from __future__ import annotations

import ast
import py_compile
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "LDCTDenoise"
MODULE_FILE = MODULE_DIR / "LDCTDenoise.py"
WIDGET_FILE = MODULE_DIR / "LDCTDenoiseLib" / "slicer" / "widget.py"  # the panel and its parameter node
UI_FILE = ROOT / "Resources" / "UI" / "LDCTDenoise.ui"
# Parameters with no widget connector in the wrapper: the widget synchronises them by hand, or they
# only remember the result nodes.
MANUAL_PARAMETERS = {"regionSegmentation", "regionSegmentId", "otherVolumes", "metricsTable", "densityChart",
                     "weightsPath", "model"}  # synchronised by hand in the widget
SLICER_APPLICATION_MODULES = {"slicer", "qt", "ctk", "vtk", "PyTorchUtils"}  # Slicer and its PyTorch extension
MRML_WIDGETS = {"qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "qMRMLSegmentSelectorWidget"}


def _ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).getroot().iter("widget")}


def _parameters() -> dict[str, str]:
    """The parameter node wrapper's fields and their annotations, read from the panel's source."""
    tree = ast.parse(WIDGET_FILE.read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LDCTDenoiseParameterNode")
    return {f.target.id: ast.unparse(f.annotation) for f in wrapper.body if isinstance(f, ast.AnnAssign)}


def _cmake_list(variable: str) -> list[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    body = re.search(rf"set\({variable}\n(.*?)\n\s*\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "LDCTDenoise") for line in body.splitlines() if line.strip()]


def test_the_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "LDCTDenoise.pyc"), doraise=True)


def test_the_module_file_is_thin_metadata_panel_logic_and_test():
    """SlicerNNUnet's shape: the panel, the installer and the self-test live elsewhere."""
    tree = ast.parse(MODULE_FILE.read_text())
    assert len(MODULE_FILE.read_text().splitlines()) <= 200
    assert {n.name for n in tree.body if isinstance(n, ast.ClassDef)} == {
        "LDCTDenoise", "LDCTDenoiseWidget", "LDCTDenoiseLogic", "LDCTDenoiseTest"}


def test_every_widget_the_module_uses_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", WIDGET_FILE.read_text()))
    assert used, "the module uses no widget of its .ui"
    assert used - set(_ui_widgets()) == set()


def test_every_bound_widget_names_a_parameter_of_the_right_kind():
    parameters = _parameters()
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = (name, widget.get("class"))
    assert set(bound) - set(parameters) == set(), "a .ui widget is bound to a parameter that does not exist"
    assert set(parameters) - set(bound) - MANUAL_PARAMETERS == set(), "a parameter has no widget"
    expected = {"Choice": "QComboBox", "bool": "QCheckBox", "int": "QSpinBox", "float": "ctkSliderWidget",
                "pathlib.Path": "ctkPathLineEdit", "vtkMRML": "qMRMLNodeComboBox"}
    for parameter, (name, widget_class) in bound.items():
        kind = next(k for k in expected if k in parameters[parameter])
        assert widget_class == expected[kind], f"{name} ({widget_class}) bound to {parameter}: {parameters[parameter]}"


def test_every_mrml_widget_gets_the_scene_from_the_ui():
    root = ElementTree.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in _ui_widgets().items() if w.get("class") in MRML_WIDGETS}
    assert mrml and mrml <= receivers


def test_cmake_lists_every_library_file_and_every_resource():
    scripts = _cmake_list("MODULE_PYTHON_SCRIPTS")
    library = sorted(str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "LDCTDenoiseLib").rglob("*.py"))
    assert sorted(s for s in scripts if s.startswith("LDCTDenoiseLib/")) == library
    assert "LDCTDenoise.py" in scripts
    resources = _cmake_list("MODULE_PYTHON_RESOURCES")
    catalog_image = ROOT / "Resources" / "Screenshots"  # the extension index shows it; the module does not install it
    on_disk = sorted("../" + str(p.relative_to(ROOT)) for p in (ROOT / "Resources").rglob("*")
                     if p.is_file() and catalog_image not in p.parents)
    assert sorted(resources) == on_disk
    for listed in scripts + resources:
        assert (MODULE_DIR / listed).is_file(), listed


@pytest.mark.parametrize("layout", ["checkout", "built extension"])
def test_resources_are_found_in_the_checkout_and_in_the_built_layout(tmp_path, layout):
    """The built layout is made the way Slicer's build copies files (each listed path appended to the
    destination folder, qt-scripted-modules): a stand-in for the build, which cannot run here."""
    if layout == "checkout":
        module_dir = MODULE_DIR
    else:
        module_dir = tmp_path / "lib" / "Slicer-5.8" / "qt-scripted-modules"
        for listed in _cmake_list("MODULE_PYTHON_SCRIPTS") + _cmake_list("MODULE_PYTHON_RESOURCES"):
            target = (module_dir / listed).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(MODULE_DIR / listed, target)
    code = ("from LDCTDenoiseLib.resources import resource_path; "
            "print(resource_path('UI/LDCTDenoise.ui')); print(resource_path('Models/default/manifest.json'))")
    env = {"PYTHONPATH": str(module_dir), "PATH": ""}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    ui, manifest = (Path(line) for line in found.stdout.split())
    assert ui.is_file() and manifest.is_file()
    assert ui.parent.parent.parent == module_dir.resolve().parent  # Resources/ sits beside the module folder


def test_every_package_the_module_needs_is_a_pyproject_dependency_with_the_same_minimum():
    import tomllib

    from LDCTDenoiseLib.slicer.requirements import PACKAGES, TORCH

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    minimums = {re.split(r"[>=<]", d)[0]: d.split(">=")[1].split(",")[0] for d in dependencies if ">=" in d}
    assert {p.distribution: p.minimum for p in (*PACKAGES, TORCH)}.items() <= minimums.items()


def test_every_package_the_module_imports_is_installed_by_the_first_run_step():
    """A new import of a third-party package fails here until requirements.PACKAGES installs it."""
    from LDCTDenoiseLib.slicer.requirements import PACKAGES, TORCH

    provided = {p.module for p in (*PACKAGES, TORCH)} | SLICER_APPLICATION_MODULES
    provided |= {"LDCTDenoiseLib", "LDCTDenoise", "LDCTDenoiseSelfTest"}
    imported = set()
    for path in MODULE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert sorted(imported - set(sys.stdlib_module_names) - provided) == []
