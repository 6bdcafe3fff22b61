"""Python packages the Slicer module needs, checked by version without importing them.

Two kinds. Packages Slicer ships (numpy, scipy, SimpleITK, pydicom) are never installed or
upgraded by pip: a Slicer whose own copy is too old is reported, and every pip run is
constrained to the versions Slicer has, so a dependency cannot drag them along. The others are
pip-installed at first use, after asking. torch is neither: it comes through the PyTorch
extension (``PyTorchUtils``), which picks the build that matches the GPU and its driver; a torch
already there that is too old is reported with what to do. Standard library only, so the module
can call this before anything is installed.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path


@dataclass(frozen=True)
class Package:
    module: str  # import name
    distribution: str  # pip name
    minimum: str
    shipped_by_slicer: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.distribution}>={self.minimum}"


# The minimums match pyproject.toml's dependencies; Slicer 5.8 ships numpy 1.26.4, scipy 1.13.1,
# SimpleITK 2.3.1 and pydicom 2.4.4 (the CI's second test run uses exactly these).
PACKAGES = (
    Package("numpy", "numpy", "1.24", shipped_by_slicer=True),
    Package("scipy", "scipy", "1.10", shipped_by_slicer=True),
    Package("SimpleITK", "SimpleITK", "2.3", shipped_by_slicer=True),
    Package("pydicom", "pydicom", "2.4", shipped_by_slicer=True),
    Package("skimage", "scikit-image", "0.22"),
    Package("safetensors", "safetensors", "0.4"),
    Package("platformdirs", "platformdirs", "3"),
    Package("matplotlib", "matplotlib", "3.7"),
    Package("tqdm", "tqdm", "4.60"),
    Package("openvino", "openvino", "2025.0"),  # Slicer 5.8's Python 3.9 gets 2025.3, its last cp39 wheel
    Package("onnxruntime", "onnxruntime", "1.17"),
    Package("onnx", "onnx", "1.15"),
)
TORCH = Package("torch", "torch", "2.4")
COMPARISON_MODULES = {"numpy", "scipy", "SimpleITK", "pydicom", "skimage", "matplotlib"}  # Compute: no torch
COMPARISON_PACKAGES = tuple(package for package in PACKAGES if package.module in COMPARISON_MODULES)
_installing = threading.Event()  # one install at a time: pip pumps Slicer's events, so a button can be pressed again


def install_running() -> bool:
    """True while a first-run install is under way (the panel disables Apply and Compute meanwhile)."""
    return _installing.is_set()


@dataclass
class Plan:
    """What the first-run step does: pip requirements to install, and problems pip must not fix."""

    install: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def installed_version(package: Package) -> str | None:
    """The installed distribution's version, or None when it cannot be imported."""
    if find_spec(package.module) is None:
        return None
    try:
        return metadata.version(package.distribution)
    except metadata.PackageNotFoundError:  # importable but not pip-installed (Slicer's own build): trust it
        return package.minimum


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version ("2.4.1+cu121" -> (2, 4, 1)); enough to compare minimums."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def is_at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def plan(packages: tuple[Package, ...] = PACKAGES) -> Plan:
    """Which packages pip installs now, and which shipped packages are missing or too old."""
    result = Plan()
    for package in packages:
        version = installed_version(package)
        if version is not None and is_at_least(version, package.minimum):
            continue
        if package.shipped_by_slicer:
            found = f"has {package.distribution} {version}" if version else f"lacks {package.distribution}"
            result.problems.append(
                f"this Slicer {found}; LDCTDenoise needs {package.requirement}, which Slicer itself provides. "
                "Use Slicer 5.8 or newer (this module does not pip-install over Slicer's own packages)"
            )
        else:
            result.install.append(package.requirement)
    return result


def torch_problem(version: str | None, minimum: str = TORCH.minimum) -> str | None:
    """Why an installed torch cannot be used (None when it can, or when none is installed yet)."""
    if version is None or is_at_least(version, minimum):
        return None
    return (
        f"torch {version} is installed, but LDCTDenoise needs torch>={minimum}. Open the PyTorch Utils module, "
        "uninstall torch there, restart Slicer and press Apply again (the newest build for your GPU is installed)"
    )


def write_constraints(path: Path, packages: tuple[Package, ...] = PACKAGES) -> Path:
    """A pip constraints file that holds every package Slicer ships at its installed version."""
    lines = []
    for package in packages:
        if package.shipped_by_slicer:
            try:
                lines.append(f"{package.distribution}=={metadata.version(package.distribution)}")
            except metadata.PackageNotFoundError:
                continue
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def pip_arguments(install: list[str], constraints: Path) -> list[str]:
    """Arguments for ``slicer.util.pip_install``: the requirements, constrained to Slicer's own packages."""
    return ["--constraint", str(constraints), *install]


class FirstRunInstaller:
    """The module's first-run step, with Slicer's calls passed in (so it runs and is tested without Slicer).

    ``torch_logic`` is the PyTorch extension's logic (``torchInstalled``, ``installTorch``), or None when
    that extension is missing; ``confirm(question)`` asks the user; ``pip_install(arguments)`` is
    ``slicer.util.pip_install``.
    """

    def __init__(self, torch_logic, confirm: Callable[[str], bool], pip_install: Callable[[list[str]], None],
                 packages: tuple[Package, ...] = PACKAGES) -> None:
        self.torch_logic, self.confirm, self.pip_install, self.packages = torch_logic, confirm, pip_install, packages

    def run(self, ask: bool = True, torch_needed: bool = True) -> bool:
        """Install what is missing (torch through the PyTorch extension, the rest with pip, after asking);
        Slicer's own packages are never upgraded. False when the user declines; an error says what blocks.

        ``torch_needed`` False (the region comparison) neither asks for the PyTorch extension nor installs torch.
        """
        if _installing.is_set():
            raise RuntimeError("Python packages are being installed for LDCTDenoise; wait until that finishes.")
        _installing.set()
        try:
            return self._run(ask, torch_needed)
        finally:
            _installing.clear()

    def _run(self, ask: bool, torch_needed: bool) -> bool:
        if not torch_needed:
            return self._pip_missing(ask)
        if self.torch_logic is None:
            raise RuntimeError("This module needs the PyTorch extension: install 'PyTorch' from the Extensions "
                               "Manager, restart Slicer, and try again.")
        if not self.torch_logic.torchInstalled():
            if self.torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=f">={TORCH.minimum}") is None:
                return False
        problem = torch_problem(installed_version(TORCH))
        if problem:
            raise RuntimeError(problem)
        return self._pip_missing(ask)

    def _pip_missing(self, ask: bool) -> bool:
        needed = plan(self.packages)
        if needed.problems:
            raise RuntimeError("\n".join(needed.problems))
        if needed.install:
            question = (f"LDCTDenoise needs these Python packages: {', '.join(needed.install)}. "
                        "Install them now (pip)?")
            if ask and not self.confirm(question):
                return False
            constraints = write_constraints(Path(tempfile.mkdtemp()) / "slicer-packages.txt", self.packages)
            self.pip_install(pip_arguments(needed.install, constraints))
        return True


if __name__ == "__main__":  # what the first-run step would pip-install here (CI builds Slicer's environment with it)
    print(" ".join(package.requirement for package in PACKAGES if not package.shipped_by_slicer))
