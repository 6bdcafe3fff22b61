"""Python packages the Slicer module needs beyond what Slicer ships, checked without importing them.

torch is not listed: it comes through the PyTorch extension (``PyTorchUtils``), which picks the
build that matches the GPU and its driver. Standard library only, so the module can call this
before anything is installed.
"""

from __future__ import annotations

from importlib.util import find_spec

# import name -> pip requirement; the versions match pyproject.toml's dependencies
SLICER_PACKAGES = {
    "numpy": "numpy>=1.24",
    "scipy": "scipy>=1.10",
    "SimpleITK": "SimpleITK>=2.3",
    "safetensors": "safetensors>=0.4",
    "platformdirs": "platformdirs>=3",
    "matplotlib": "matplotlib>=3.7",
}


def missing_packages(packages: dict[str, str] | None = None) -> list[str]:
    """The pip requirements of the packages that cannot be imported here."""
    packages = SLICER_PACKAGES if packages is None else packages
    return [requirement for module, requirement in packages.items() if find_spec(module) is None]
