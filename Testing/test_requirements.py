"""The first-run step: what is pip-installed, what is only reported, and that Slicer's packages stay put."""

from __future__ import annotations

from importlib import metadata

import pytest

from LDCTDenoiseLib.requirements import (
    PACKAGES,
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
