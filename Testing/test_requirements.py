"""The first-run step: what is pip-installed, what is only reported, and that Slicer's packages stay put."""

from __future__ import annotations

from importlib import metadata

import pytest

from LDCTDenoiseLib.slicer.requirements import (
    PACKAGES,
    FirstRunInstaller,
    Package,
    is_at_least,
    pip_arguments,
    plan,
    torch_problem,
    version_tuple,
    write_constraints,
)


def test_packages_this_environment_has_need_nothing():
    assert plan() == plan(())  # nothing to install, nothing to report


def test_a_missing_or_old_package_slicer_does_not_ship_is_installed_with_its_minimum():
    wanted = plan((Package("no_such_module_here", "no-such-package", "1.2"), Package("numpy", "numpy", "999")))
    assert wanted.install == ["no-such-package>=1.2", "numpy>=999"] and wanted.problems == []


def test_a_package_slicer_ships_is_reported_never_installed():
    wanted = plan((Package("numpy", "numpy", "999", shipped_by_slicer=True),
                   Package("no_such_module_here", "SimpleITK-x", "2.3", shipped_by_slicer=True)))
    assert wanted.install == []
    assert [problem.split(";")[0] for problem in wanted.problems] == [
        f"this Slicer has numpy {metadata.version('numpy')}", "this Slicer lacks SimpleITK-x"]
    assert all("does not pip-install over Slicer's own packages" in problem for problem in wanted.problems)


@pytest.mark.parametrize("version", ["2.1.2+cu118", "1.13.1", "2.3.99"])
def test_an_installed_torch_below_the_minimum_says_what_to_do(version):
    problem = torch_problem(version, minimum="2.4")
    assert problem.startswith(f"torch {version} is installed, but LDCTDenoise needs torch>=2.4")
    assert "PyTorch Utils" in problem


@pytest.mark.parametrize("version", [None, "2.4.0", "2.13.0+cpu", "3.0"])
def test_a_recent_torch_or_none_yet_is_no_problem(version):
    assert torch_problem(version, minimum="2.4") is None


def test_versions_compare_by_their_release_numbers():
    assert version_tuple("2.4.1+cu121") == (2, 4, 1) and version_tuple("1.26.4rc1") == (1, 26, 4)
    assert is_at_least("2.10.0", "2.4") and not is_at_least("2.3.1", "2.4") and is_at_least("3", "3")


def test_pip_is_constrained_to_the_versions_slicer_ships(tmp_path):
    constraints = write_constraints(tmp_path / "constraints.txt")
    shipped = [p.distribution for p in PACKAGES if p.shipped_by_slicer]
    assert constraints.read_text().split() == [f"{name}=={metadata.version(name)}" for name in shipped]
    assert pip_arguments(["scikit-image>=0.22"], constraints) == ["--constraint", str(constraints),
                                                                 "scikit-image>=0.22"]


class TorchLogicStandIn:
    """The PyTorch extension's logic as the installer calls it (named stand-in: Slicer cannot run here)."""

    def __init__(self, installed: bool, accept: bool = True) -> None:
        self.installed, self.accept, self.asked = installed, accept, []

    def torchInstalled(self) -> bool:
        return self.installed

    def installTorch(self, askConfirmation: bool, torchVersionRequirement: str):
        self.asked.append(torchVersionRequirement)
        return "torch" if self.accept else None


def test_the_first_run_installer_asks_then_pip_installs_what_is_missing_constrained_to_slicers_packages():
    questions, installs = [], []
    missing = (Package("no_such_module_here", "no-such-package", "1.2"),)
    installer = FirstRunInstaller(TorchLogicStandIn(installed=True), lambda q: questions.append(q) or True,
                                  installs.append, missing)
    assert installer.run(ask=True)
    assert "no-such-package>=1.2" in questions[0]
    assert installs[0][0] == "--constraint" and installs[0][-1] == "no-such-package>=1.2"


def test_the_first_run_installer_changes_nothing_when_the_user_declines():
    installs = []
    missing = (Package("no_such_module_here", "no-such-package", "1.2"),)
    assert not FirstRunInstaller(TorchLogicStandIn(installed=True), lambda q: False, installs.append, missing).run()
    assert installs == []
    declined_torch = TorchLogicStandIn(installed=False, accept=False)
    assert not FirstRunInstaller(declined_torch, lambda q: True, installs.append, ()).run()
    assert declined_torch.asked and installs == []


def test_the_first_run_installer_names_the_missing_pytorch_extension():
    with pytest.raises(RuntimeError, match="needs the PyTorch extension"):
        FirstRunInstaller(None, lambda q: True, lambda a: None).run()


def test_the_comparison_needs_neither_torch_nor_the_pytorch_extension():
    import subprocess
    import sys

    from LDCTDenoiseLib.slicer.requirements import COMPARISON_PACKAGES

    installs = []
    assert FirstRunInstaller(None, lambda q: True, installs.append, COMPARISON_PACKAGES).run(torch_needed=False)
    assert installs == [] and "torch" not in {package.module for package in COMPARISON_PACKAGES}
    code = ("import sys, LDCTDenoiseLib.compare.report, LDCTDenoiseLib.slicer.logic; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"  # what Compute runs imports no torch (nor the engine's runtimes)


def test_a_second_install_while_one_runs_is_refused_and_the_flag_clears_afterwards():
    from LDCTDenoiseLib.slicer.requirements import install_running

    missing = (Package("no_such_module_here", "no-such-package", "1.2"),)
    refused = []

    def pip_install(arguments):  # pip pumps Slicer's events: the user presses Apply again meanwhile
        assert install_running()
        with pytest.raises(RuntimeError, match="being installed"):
            FirstRunInstaller(TorchLogicStandIn(installed=True), lambda q: True, lambda a: None, missing).run()
        refused.append(arguments)

    assert FirstRunInstaller(TorchLogicStandIn(installed=True), lambda q: True, pip_install, missing).run()
    assert refused and not install_running()
